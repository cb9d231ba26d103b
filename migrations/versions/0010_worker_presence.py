"""worker presence: which queues have a live consumer, so a job can say it has none

Revision ID: 0010_worker_presence
Revises: 0009_skipped_steps
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010_worker_presence"
down_revision: str | None = "0009_skipped_steps"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "workers",
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("queues", sa.JSON(), nullable=False),
        sa.Column("seen_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )


def downgrade() -> None:
    op.drop_table("workers")
