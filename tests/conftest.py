"""Session fixtures: one Temporal dev server per test process, and one running stack (API +
worker) per database backend. Tests that take ``stack`` run on SQLite and on PostgreSQL."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from db.migrate import upgrade
from tests.harness import InfraLoop, Stack, build_stack, connect, make_settings, start_dev_server

POSTGRES_URL = os.environ.get("TEST_DATABASE_URL", "postgresql+psycopg://root@127.0.0.1:5432/test")
IN_CI = os.environ.get("CI", "").lower() == "true"


@pytest.fixture
def tmp_path(tmp_path: Path) -> Iterator[Path]:
    """Tests pass files to and from their steps through ``tmp_path``. Under a root worker a step
    runs as another uid (activities.workspaces), which cannot pass pytest's 0700 directories: as
    root, a scratch directory it can use instead (a test's own, removed after it)."""
    if os.geteuid() != 0:
        yield tmp_path
        return
    parent = Path(tempfile.gettempdir()) / "devops-test-scratch"
    parent.mkdir(mode=0o711, exist_ok=True)
    parent.chmod(0o711)
    scratch = Path(tempfile.mkdtemp(dir=parent))
    scratch.chmod(0o777)  # noqa: S103 - test scratch shared with the step users
    yield scratch
    shutil.rmtree(scratch, ignore_errors=True)


@pytest.fixture(scope="session")
def infra() -> Iterator[InfraLoop]:
    loop = InfraLoop()
    yield loop
    loop.close()


@pytest.fixture(scope="session")
def temporal_env(infra: InfraLoop):
    env = infra.run(start_dev_server(), timeout=120)
    yield env
    infra.run(env.shutdown(), timeout=60)


def _postgres_database(worker: str) -> Iterator[str]:
    admin_url = make_url(POSTGRES_URL)
    name = f"devops_test_{worker}_{uuid.uuid4().hex[:6]}"
    try:
        admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except OperationalError as exc:
        message = f"PostgreSQL is not reachable at {admin_url.render_as_string(hide_password=True)}: {exc}"
        if IN_CI:
            pytest.fail(f"{message} (under CI=true a skipped PostgreSQL run is a failure)")
        pytest.skip(message)
    url = admin_url.set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A migrated, empty database of each backend."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'devops.db'}"
        upgrade(url)
        yield url
        return
    for url in _postgres_database(os.environ.get("PYTEST_XDIST_WORKER", "main")):
        upgrade(url)
        yield url


@pytest.fixture(scope="session")
def stack(database_url: str, infra: InfraLoop, temporal_env, tmp_path_factory) -> Iterator[Stack]:
    backend = "sqlite" if database_url.startswith("sqlite") else "postgresql"
    target = temporal_env.client.service_client.config.target_host
    settings = make_settings(database_url, tmp_path_factory.mktemp(f"data-{backend}"), target,
                             temporal_namespace=backend)
    client = infra.run(connect(target, backend))
    running = build_stack(backend, settings, infra, client)
    yield running
    running.close()
