"""hyperparameter searches: Optuna studies whose trials are jobs

Optuna's own tables are not here: Optuna creates and migrates them itself, in a schema (or
file) of their own; see core/search.py.

Revision ID: 0005_searches
Revises: 0002_canonical_options
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_searches"
down_revision: str | None = "0002_canonical_options"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "searches",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_name", sa.String(length=100), nullable=False),
        sa.Column("dataset_id", sa.Integer(), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "running",
                "succeeded",
                "cancelled",
                name="searchstatus",
                native_enum=False,
                length=20,
            ),
            nullable=False,
        ),
        sa.Column("architecture", sa.String(length=100), nullable=False),
        sa.Column("architecture_options", sa.JSON(), nullable=False),
        sa.Column("preset", sa.String(length=50), nullable=False),
        sa.Column("hyperparameters", sa.JSON(), nullable=False),
        sa.Column("space", sa.JSON(), nullable=False),
        sa.Column("n_trials", sa.Integer(), nullable=False),
        sa.Column("max_parallel", sa.Integer(), nullable=False),
        sa.Column("objective", sa.String(length=20), nullable=False),
        sa.Column("pruner", sa.String(length=30), nullable=False),
        sa.Column("sampler", sa.String(length=20), nullable=False),
        sa.Column("seed", sa.Integer(), nullable=True),
        sa.Column("queue", sa.String(length=50), nullable=False),
        sa.Column("group_id", sa.String(length=36), nullable=False),
        sa.Column("trials_created", sa.Integer(), nullable=False),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["dataset_id"], ["datasets.id"], name=op.f("fk_searches_dataset_id_datasets")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_searches")),
        sa.UniqueConstraint("study_name", name="uq_searches_study_name"),
    )
    with op.batch_alter_table("searches", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_searches_dataset_id"), ["dataset_id"], unique=False)

    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("search_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("trial_number", sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f("ix_jobs_search_id"), ["search_id"], unique=False)
        batch_op.create_unique_constraint("uq_jobs_search_trial", ["search_id", "trial_number"])
        batch_op.create_foreign_key(
            batch_op.f("fk_jobs_search_id_searches"),
            "searches",
            ["search_id"],
            ["id"],
            ondelete="CASCADE",
        )


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_jobs_search_id_searches"), type_="foreignkey")
        batch_op.drop_constraint("uq_jobs_search_trial", type_="unique")
        batch_op.drop_index(batch_op.f("ix_jobs_search_id"))
        batch_op.drop_column("trial_number")
        batch_op.drop_column("search_id")

    with op.batch_alter_table("searches", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_searches_dataset_id"))

    op.drop_table("searches")
