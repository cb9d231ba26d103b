"""The study report over HTTP: the same report `foodlab study --jobs` writes, as a PDF or as a
zip of report.md and its figures, in any catalogued language and template."""

from __future__ import annotations

import io
import tempfile
import zipfile
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response

import models
from analysis.i18n import LANGUAGES
from analysis.study import StoredRuns, gather_study
from analysis.writer import TEMPLATES, ReportStyle, write_report
from service.deps import SessionDep
from service.openapi import errors
from service.routes.compare import JobsQuery, parse_job_ids

router = APIRouter(prefix="/compare", tags=["experiments"])

FILES: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {"application/pdf": {}, "application/zip": {}},
        "description": "report.pdf, or a zip of report.md and its PNG figures",
    }
}


@router.get("/report", response_class=Response, responses=FILES | errors(404, 409))
def study_report(
    session: SessionDep,
    jobs: JobsQuery,
    lang: Annotated[str, Query(description=f"one of {', '.join(LANGUAGES)}")] = "en",
    template: Annotated[str, Query(description=f"one of {', '.join(TEMPLATES)}")] = "study",
    format: Literal["pdf", "zip"] = "zip",
) -> Response:
    """The study report of these jobs; the first two configurations are the baselines."""
    style = ReportStyle(lang, template, ("md", "pdf") if format == "pdf" else ("md",)).check()
    registry = {name: asdict(info) for name, info in models.ARCHITECTURES.items()}
    study = gather_study(StoredRuns(session, registry), parse_job_ids(jobs), command=None)
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder)
        write_report(study, out, style)
        if format == "pdf":
            return Response((out / "report.pdf").read_bytes(), media_type="application/pdf")
        return Response(_zip(out), media_type="application/zip")


def _zip(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.iterdir()):
            archive.write(path, path.name)
    return buffer.getvalue()
