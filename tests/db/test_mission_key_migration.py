"""Migration 0013 on both backends: the mission key of the runs that existed before it, and the
unique index that makes a second run for the same mission (+ task) impossible."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from alembic import command
from sqlalchemy import MetaData, Table, insert, select
from sqlalchemy.exc import IntegrityError

from db.migrate import alembic_config
from db.models import Account, Pipeline
from db.session import make_engine, make_session_factory, restrict_sqlite_file
from services.missions import mission_key
from tests.conftest import _postgres_database


@pytest.fixture(params=["sqlite", "postgresql"])
def at_0012(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    """An empty database migrated to 0012 only."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'devops.db'}"
        restrict_sqlite_file(url)
        command.upgrade(alembic_config(url), "0012")
        yield url
        return
    for url in _postgres_database(f"{os.environ.get('PYTEST_XDIST_WORKER', 'main')}_m13"):
        command.upgrade(alembic_config(url), "0012")
        yield url


def test_the_first_run_of_each_mission_gets_its_key_and_the_index_refuses_a_second(at_0012):
    engine = make_engine(at_0012)
    sessions = make_session_factory(engine)
    with sessions.begin() as session:
        accounts = [Account(name="a"), Account(name="b")]
        session.add_all(accounts)
        session.flush()
        pipelines = [Pipeline(account_id=a.id, name="p", slug="p") for a in accounts]
        session.add_all(pipelines)
        session.flush()
        account_ids = [a.id for a in accounts]
        pipeline_ids = [p.id for p in pipelines]
    runs = Table("pipeline_runs", MetaData(), autoload_with=engine)
    assert "mission_key" not in runs.c
    now = datetime.now(UTC)

    def add(which: int, number: int, trigger_type: str, mission_id: str | None, task: str | None) -> int:
        context = {"mission": {"id": mission_id, "context": {}}, "a2a_task_id": task} if mission_id else {}
        with engine.begin() as conn:
            return conn.execute(insert(runs).values(
                account_id=account_ids[which], pipeline_id=pipeline_ids[which], run_number=number, status="success",
                trigger_type=trigger_type, trigger_context=context, inputs={}, outputs={}, workflow_id="",
                pipeline_snapshot={}, created_at=now, a2a_task_id=task).returning(runs.c.id)).scalar_one()

    first = add(0, 1, "mission", "m-1", "t-1")
    raced = add(0, 2, "mission", "m-1", "t-1")  # a duplicate an old race let through
    retry = add(0, 3, "mission", "m-1", "t-1")  # a retry copies the trigger type and context
    no_task = add(0, 4, "mission", "m-1", None)
    other_account = add(1, 1, "mission", "m-1", "t-1")
    manual = add(0, 5, "manual", None, None)
    engine.dispose()

    command.upgrade(alembic_config(at_0012), "head")
    engine = make_engine(at_0012)
    runs = Table("pipeline_runs", MetaData(), autoload_with=engine)
    with engine.connect() as conn:
        keys = dict(conn.execute(select(runs.c.id, runs.c.mission_key)).all())
    assert keys == {first: mission_key("m-1", "t-1"), raced: None, retry: None, no_task: mission_key("m-1", None),
                    other_account: mission_key("m-1", "t-1"), manual: None}
    assert mission_key("m-1", None) == mission_key("m-1", "")  # no task and an empty task are the same trigger
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(runs.update().where(runs.c.id == raced).values(mission_key=mission_key("m-1", "t-1")))
    with engine.begin() as conn:  # NULL keys: as many as there are runs that are not a mission's first
        conn.execute(runs.update().where(runs.c.id == retry).values(mission_key=None))
    engine.dispose()
