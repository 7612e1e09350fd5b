"""SQLite: AUTOINCREMENT on the tables whose ids name Temporal workflows

``run-<id>``, ``container-<id>``, ``rollout-<id>``, ``webhook-dispatch-<id>``, ``host-sync-<id>``,
``swarm-sync-<id>`` and the schedules' ids are Temporal workflow (or schedule) ids. Without
AUTOINCREMENT SQLite hands out the id of a deleted newest row again: after a pipeline and its
runs were deleted, the next run got ``run-1`` again, Temporal refused to start a second
``run-1`` (a run's workflow runs once) and the run stayed pending. PostgreSQL sequences never go
back; nothing changes there.

Revision ID: 0010
Revises: 0009
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("pipeline_runs", "container_instances", "swarm_deployments", "git_webhook_events", "docker_hosts",
          "swarm_clusters", "schedules")


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    # Foreign keys are off on the migration's connection (db.migrations.env): recreating a
    # referenced table copies its rows and keeps the references of other tables by name.
    for table in TABLES:
        with op.batch_alter_table(table, recreate="always", table_kwargs={"sqlite_autoincrement": True}):
            pass


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    for table in TABLES:
        with op.batch_alter_table(table, recreate="always", table_kwargs={"sqlite_autoincrement": False}):
            pass
