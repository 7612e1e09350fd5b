"""A unique mission key on runs: one run per (account, mission id, A2A task id), even when two
identical mission triggers race (issue 14)

Revision ID: 0013
Revises: 0012

"""
import hashlib
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0013'
down_revision: str | None = '0012'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = 'uq_pipeline_runs_account_id_mission_key'


def _key(mission_id: str, a2a_task_id: str | None) -> str:
    """services.missions.mission_key, as of this revision (a migration never imports app code)."""
    return hashlib.sha256(f"{mission_id}\0{a2a_task_id or ''}".encode()).hexdigest()


def upgrade() -> None:
    with op.batch_alter_table('pipeline_runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('mission_key', sa.String(length=64), nullable=True))

    # Backfill: the first run (lowest id) of each account's mission + task gets the key, as the
    # lookup before this revision answered that one; later duplicates (a past race) and retries of
    # a mission run (same trigger type and context) keep NULL.
    runs = sa.table('pipeline_runs', sa.column('id', sa.Integer()), sa.column('account_id', sa.Integer()),
                    sa.column('trigger_type', sa.String()), sa.column('trigger_context', sa.JSON()),
                    sa.column('a2a_task_id', sa.String()), sa.column('mission_key', sa.String()))
    bind = op.get_bind()
    rows = bind.execute(sa.select(runs.c.id, runs.c.account_id, runs.c.trigger_context, runs.c.a2a_task_id)
                        .where(runs.c.trigger_type == 'mission').order_by(runs.c.id)).all()
    taken: set[tuple[int, str]] = set()
    for run_id, account_id, context, a2a_task_id in rows:
        mission = (context or {}).get('mission') if isinstance(context, dict) else None
        mission_id = mission.get('id') if isinstance(mission, dict) else None
        if not isinstance(mission_id, str):
            continue
        key = _key(mission_id, a2a_task_id)
        if (account_id, key) in taken:
            continue
        taken.add((account_id, key))
        bind.execute(sa.update(runs).where(runs.c.id == run_id).values(mission_key=key))

    with op.batch_alter_table('pipeline_runs', schema=None) as batch_op:
        batch_op.create_index(INDEX, ['account_id', 'mission_key'], unique=True)


def downgrade() -> None:
    with op.batch_alter_table('pipeline_runs', schema=None) as batch_op:
        batch_op.drop_index(INDEX)
        batch_op.drop_column('mission_key')
