"""read indexes: lists, counts and model selection walk an index; the serving generation

Revision ID: 0006_read_indexes
Revises: 0005_searches
Create Date: 2026-12-01 10:20:00

- Composite indexes for the job lists and counts (by status, dataset, architecture, group,
  each ending in the id the lists sort by) and for model selection (best per dataset, most
  recently finished, promoted), replacing the single-column ones.
- `serving_generation`: one row that triggers bump whenever the serving model of a dataset
  may have changed, so the API caches its choice and checks one row per request.
- SQLite gathers statistics (ANALYZE) so its planner knows which index is selective.

A later migration that rebuilds `jobs` or `checkpoints` on SQLite (batch "move and copy")
drops their triggers: it must create them again (`create_trigger` below);
tests/service/test_read_paths.py fails otherwise.

The ranking indexes order nulls last. PostgreSQL needs that written (`DESC NULLS LAST`);
SQLite cannot write it in an index, and its `DESC` already sorts nulls last.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_read_indexes"
down_revision: str | None = "0005_searches"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_INDEXES = {
    "ix_jobs_status": ["status"],
    "ix_jobs_dataset_id": ["dataset_id"],
    "ix_jobs_architecture": ["architecture"],
    "ix_jobs_group_id": ["group_id"],
}


def new_indexes(dialect: str) -> dict[str, list[str]]:
    desc_nulls_last = "DESC NULLS LAST" if dialect == "postgresql" else "DESC"
    return {
        "ix_jobs_status_id": ["status", "id"],
        "ix_jobs_dataset_id_id": ["dataset_id", "id"],
        "ix_jobs_dataset_status": ["dataset_id", "status", "id"],
        "ix_jobs_architecture_id": ["architecture", "id"],
        "ix_jobs_architecture_status": ["architecture", "status", "id"],
        "ix_jobs_group_id_id": ["group_id", "id"],
        "ix_jobs_ranking": [
            "status",
            "dataset_id",
            f"best_val_accuracy {desc_nulls_last}",
            "best_val_loss",
            f"finished_at {desc_nulls_last}",
            "id DESC",
        ],
        "ix_jobs_recent": ["status", f"finished_at {desc_nulls_last}", "id DESC"],
        "ix_jobs_promoted": ["dataset_id", "promoted_at", "id"],
    }


# A change matters to serving when the row is (or was) a succeeded job.
JOB_CHANGED = (
    "(OLD.status = 'succeeded' OR NEW.status = 'succeeded') AND ("
    + " OR ".join(
        f"OLD.{column} IS DISTINCT FROM NEW.{column}"
        for column in (
            "status",
            "dataset_id",
            "promoted_at",
            "best_val_accuracy",
            "best_val_loss",
            "best_epoch",
            "finished_at",
        )
    )
    + ")"
)
BUMP = "UPDATE serving_generation SET generation = generation + 1 WHERE id = 1"

# (name, event, table, condition)
TRIGGERS = [
    ("trg_jobs_insert_serving", "INSERT", "jobs", "NEW.status = 'succeeded'"),
    ("trg_jobs_update_serving", "UPDATE", "jobs", JOB_CHANGED),
    ("trg_jobs_delete_serving", "DELETE", "jobs", "OLD.status = 'succeeded'"),
    ("trg_checkpoints_insert_serving", "INSERT", "checkpoints", "NEW.kind = 'bundle'"),
    (
        "trg_checkpoints_update_serving",
        "UPDATE",
        "checkpoints",
        "OLD.kind = 'bundle' OR NEW.kind = 'bundle'",
    ),
    ("trg_checkpoints_delete_serving", "DELETE", "checkpoints", "OLD.kind = 'bundle'"),
]


def create_trigger(dialect: str, name: str, event: str, table: str, condition: str) -> None:
    if dialect == "postgresql":
        op.execute(
            f"CREATE TRIGGER {name} AFTER {event} ON {table} FOR EACH ROW "
            f"WHEN ({condition}) EXECUTE FUNCTION bump_serving_generation()"
        )
    else:
        # SQLite spells IS DISTINCT FROM as IS NOT.
        condition = condition.replace("IS DISTINCT FROM", "IS NOT")
        op.execute(
            f"CREATE TRIGGER {name} AFTER {event} ON {table} FOR EACH ROW "
            f"WHEN {condition} BEGIN {BUMP}; END"
        )


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    for name in OLD_INDEXES:
        op.drop_index(name, table_name="jobs")
    for name, columns in new_indexes(dialect).items():
        op.create_index(name, "jobs", [sa.text(column) for column in columns])

    generation = op.create_table(
        "serving_generation",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_serving_generation")),
    )
    op.bulk_insert(generation, [{"id": 1, "generation": 0}])
    if dialect == "postgresql":
        op.execute(
            "CREATE FUNCTION bump_serving_generation() RETURNS trigger LANGUAGE plpgsql AS "
            f"$$ BEGIN {BUMP}; RETURN NULL; END $$"
        )
    for trigger in TRIGGERS:
        create_trigger(dialect, *trigger)
    if dialect == "sqlite":
        op.execute("ANALYZE")


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    for name, _event, table, _condition in TRIGGERS:
        on_table = f" ON {table}" if dialect == "postgresql" else ""
        op.execute(f"DROP TRIGGER IF EXISTS {name}{on_table}")
    if dialect == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS bump_serving_generation()")
    op.drop_table("serving_generation")
    for name in new_indexes(dialect):
        op.drop_index(name, table_name="jobs")
    for name, columns in OLD_INDEXES.items():
        op.create_index(name, "jobs", columns)
