"""store architecture options in canonical form: only what differs from the preset

`foodlab study --local` stored a preset's own values (`se_resnet34` as `{"attn": "se"}`)
where `POST /jobs` stored `{}`, so equal configurations compared as different. Both now go
through `core.job_factory`; this rewrites rows stored before.

Revision ID: 0002_canonical_options
Revises: 0004_test_split
Create Date: 2026-12-01 10:40:00
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0002_canonical_options"
down_revision: str | None = "0004_test_split"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copy of the registry at this revision (models.ARCHITECTURES): a migration must mean
# the same thing whatever the registry becomes later, and must not import torch.
OPTION_DEFAULTS: dict[str, Any] = {
    "residual": True,
    "preact": False,
    "attn": "none",
    "deep_stem": False,
    "avg_down": False,
    "act": "relu",
    "drop_path_rate": 0.0,
    "dropout": 0.0,
    "zero_init_residual": False,
    "pretrained_weights": None,
}
PRESETS: dict[str, dict[str, Any]] = {
    "plain34": {"residual": False},
    "resnet34": {},
    "se_resnet34": {"attn": "se"},
    "eca_resnet34": {"attn": "eca"},
    "preact_resnet34": {"preact": True},
    "resnet34d": {"deep_stem": True, "avg_down": True},
}

jobs = sa.table(
    "jobs",
    sa.column("id", sa.Integer),
    sa.column("architecture", sa.String),
    sa.column("architecture_options", sa.JSON),
)


def canonical(architecture: str, options: dict[str, Any]) -> dict[str, Any]:
    preset = OPTION_DEFAULTS | PRESETS[architecture]
    return {key: value for key, value in options.items() if preset.get(key, ...) != value}


def upgrade() -> None:
    connection = op.get_bind()
    query = sa.select(jobs.c.id, jobs.c.architecture, jobs.c.architecture_options)
    rows = connection.execute(query)
    for job_id, architecture, options in rows.all():
        if architecture not in PRESETS or not options:
            continue
        normal = canonical(architecture, options)
        if normal != options:
            connection.execute(
                jobs.update().where(jobs.c.id == job_id).values(architecture_options=normal)
            )


def downgrade() -> None:
    # The canonical form is valid input for every earlier version: nothing to undo.
    pass
