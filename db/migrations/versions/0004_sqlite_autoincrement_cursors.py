"""SQLite: AUTOINCREMENT on run_events and step_log_chunks

Their ids are SSE cursors. Without AUTOINCREMENT, SQLite reuses the ids of deleted newest
rows (a pipeline deletion cascades), so a client holding a higher cursor would miss new rows.
PostgreSQL sequences never go back; nothing changes there.

Revision ID: 0004
Revises: 0003
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("run_events", "step_log_chunks")


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    for table in TABLES:
        with op.batch_alter_table(table, recreate="always", table_kwargs={"sqlite_autoincrement": True}):
            pass


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    for table in TABLES:
        with op.batch_alter_table(table, recreate="always", table_kwargs={"sqlite_autoincrement": False}):
            pass
