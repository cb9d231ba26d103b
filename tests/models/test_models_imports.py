import subprocess
import sys

import pytest

FORBIDDEN = ("fastapi", "sqlalchemy", "celery", "timm", "core", "workers", "service", "cli")


@pytest.mark.slow
def test_import_models_pulls_in_no_service_code():
    code = f"import sys, models; print(','.join(m for m in {FORBIDDEN!r} if m in sys.modules))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert result.stdout.strip() == ""
