"""held-out test split: the best checkpoint's test metrics on the job

Revision ID: 0004_test_split
Revises: 0001
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_test_split"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("test_accuracy", sa.Double(), nullable=True))
        batch_op.add_column(sa.Column("test_metrics", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("test_metrics")
        batch_op.drop_column("test_accuracy")
