"""Fixtures for the activity tests: a real migrated database, the rows its foreign keys need,
settings pointing at a per-test workspace, and a helper running an activity in an
``ActivityEnvironment`` (a real activity context, no Temporal server)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from activities.steps import StepActivities, StepInput
from db.migrate import upgrade
from db.models import Account, Pipeline, PipelineRun, StepLogChunk, User
from db.session import make_engine, make_session_factory
from settings import Settings
from tests.conftest import _postgres_database
from tests.harness import step_workspace_dir

TEST_SECRET_KEY = "test-secret-key-0123456789abcdef"


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One migrated SQLite file for the activity tests; each test makes its own rows."""
    url = f"sqlite:///{tmp_path_factory.mktemp('activities-db') / 'devops.db'}"
    upgrade(url)
    return url


@pytest.fixture(scope="session")
def sqlite_sessions(sqlite_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(sqlite_url)
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A throwaway, migrated PostgreSQL database, dropped at the end of the session."""
    for url in _postgres_database(f"act{os.getpid()}"):
        upgrade(url)
        yield url


@pytest.fixture(scope="session")
def postgresql_sessions(postgres_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(postgres_url)
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def backend_sessions(request: pytest.FixtureRequest) -> sessionmaker[Session]:
    """Sessions on a migrated database of each backend."""
    return request.getfixturevalue(f"{request.param}_sessions")


@dataclass
class RunRows:
    """The account, pipeline and run a test's rows hang off."""

    account_id: int
    user_id: int
    pipeline_id: int
    run_id: int
    run_number: int = 1
    extra: dict[str, Any] = field(default_factory=dict)


def make_run_rows(sessions: sessionmaker[Session]) -> RunRows:
    tag = uuid.uuid4().hex[:8]
    with sessions.begin() as session:
        account = Account(name=f"acct-{tag}")
        session.add(account)
        session.flush()
        user = User(account_id=account.id, email=f"{tag}@example.test", role="admin")
        pipeline = Pipeline(account_id=account.id, name=f"p-{tag}", slug=f"p-{tag}")
        session.add_all([user, pipeline])
        session.flush()
        run = PipelineRun(account_id=account.id, pipeline_id=pipeline.id, run_number=1,
                          workflow_id=f"run-{tag}")
        session.add(run)
        session.flush()
        return RunRows(account_id=account.id, user_id=user.id, pipeline_id=pipeline.id, run_id=run.id)


@pytest.fixture
def rows(sqlite_sessions: sessionmaker[Session]) -> RunRows:
    return make_run_rows(sqlite_sessions)


def make_test_settings(database_url: str, tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "environment": "test",
        "database_url": database_url,
        "data_dir": tmp_path,
        "workspace_dir": step_workspace_dir() or tmp_path / "ws",
        "secret_key": TEST_SECRET_KEY,
        "notify_allow_private_targets": True,
        "shell_executor": True,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def settings(sqlite_url: str, tmp_path: Path) -> Settings:
    return make_test_settings(sqlite_url, tmp_path)


@pytest.fixture
def steps(settings: Settings, sqlite_sessions: sessionmaker[Session]) -> StepActivities:
    return StepActivities(settings, sqlite_sessions)


def step_input(rows: RunRows, params: dict[str, Any], *, step_id: str = "step", attempt: int = 1,
               **kwargs: Any) -> StepInput:
    return StepInput(run_id=rows.run_id, account_id=rows.account_id, pipeline_id=rows.pipeline_id,
                     step_id=step_id, step_name=step_id, attempt=attempt, params=params,
                     run_number=rows.run_number, **kwargs)


def log_chunks(sessions: sessionmaker[Session], run_id: int, step_id: str = "step",
               attempt: int = 1) -> list[StepLogChunk]:
    with sessions() as session:
        return list(session.scalars(
            select(StepLogChunk)
            .where(StepLogChunk.run_id == run_id, StepLogChunk.step_id == step_id,
                   StepLogChunk.attempt == attempt)
            .order_by(StepLogChunk.seq)
        ))


def log_text(sessions: sessionmaker[Session], run_id: int, step_id: str = "step", attempt: int = 1) -> str:
    return "\n".join(chunk.content for chunk in log_chunks(sessions, run_id, step_id, attempt))
