"""epoch_metrics.skipped_steps: float16 steps the loss scaler skipped

Revision ID: 0009_skipped_steps
Revises: 0008_job_leases
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009_skipped_steps"
down_revision: str | None = "0008_job_leases"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("epoch_metrics", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("skipped_steps", sa.Integer(), server_default="0", nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("epoch_metrics", schema=None) as batch_op:
        batch_op.drop_column("skipped_steps")
