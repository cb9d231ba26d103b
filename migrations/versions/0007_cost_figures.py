"""cost figures that survive a busy machine: CPU seconds and load average per epoch

Revision ID: 0007_cost_figures
Revises: 0006_read_indexes
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_cost_figures"
down_revision: str | None = "0006_read_indexes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("epoch_metrics", schema=None) as batch_op:
        batch_op.add_column(sa.Column("epoch_cpu_seconds", sa.Double(), nullable=True))
        batch_op.add_column(sa.Column("load_average", sa.Double(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("epoch_metrics", schema=None) as batch_op:
        batch_op.drop_column("load_average")
        batch_op.drop_column("epoch_cpu_seconds")
