"""Kill scenarios of issue 11, end to end: does anything get lost, stuck or executed twice?

One Temporal dev server (its own process, on a file DB so it can be killed and restarted), our
API and worker as separate processes, a fresh database. Every step's command appends one line
``<run id> <step id> <attempt id>:<pid>`` to a counter file, so lines per run+step count executions.

1. api-kill-burst: ``--triggers`` concurrent triggers (allow_concurrent: true); ``kill -9`` of the
   API once a quarter of them were answered; restart; wait for every run row to finish.
2. api-kill-burst-queued: the same with allow_concurrent: false (runs queue).
3. client-retry: ``--keys`` triggers with an ``Idempotency-Key``; the first attempt drops the
   connection before the answer (tiny read timeout), the client retries with the same key until
   it gets one. More than one run for a key is "executed twice".
4. worker-kill-at-step-end: ``--kill-runs`` runs of one step ``sleep 1; <append line>``; the worker
   gets ``kill -9`` as soon as the line appears, and is restarted.
5. temporal-kill-at-step-end: the same, killing the Temporal dev server, which stays down
   ``--temporal-down`` seconds (longer than the SDK retries the activity completion) and comes
   back on the same DB file.
6. cancel-while-worker-down: ``sleep 600`` (pid recorded) then a second step; ``kill -9`` of the
   worker mid-sleep, cancel over the API, restart the worker: the sleep must be gone and both
   steps ``cancelled``.

lost: a trigger answered 2xx whose run does not exist; stuck: a run row not finished by the
deadline; executed twice: a run+step with more than one line (or, in 3, a key with more than one
run); orphans: step processes of the scenario's runs still alive after the run ended.

    .venv/bin/python bench/chaos.py [--database-url postgresql+psycopg://root@127.0.0.1:5432/test]
        [--scenarios api-kill-burst,client-retry,...] [--seconds 120]

Bench settings: DEVOPS_STEP_HEARTBEAT_TIMEOUT_SECONDS=5 (``--heartbeat``; a killed worker's
step is retried that soon) and DEVOPS_RUN_OUTBOX_INTERVAL_SECONDS=5 (``--outbox-interval``;
production default 60) when the tree has that setting. ``BENCH_KEEP=1`` keeps the data dir and
the service logs. A bench never fails on its figures: it exits 0 with the table, 1 only on its
own errors (a scenario that could not be carried out says ``BENCH ERROR`` in its notes).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from common import (  # noqa: E402
    admin_token,
    drop_database,
    prepare_database,
    service_env,
    start_api,
    start_worker,
    wait_http,
)

FINISHED = {"success", "failure", "cancelled"}
API = "/api/v1/devops"


@dataclass
class Row:
    scenario: str
    runs: int = 0
    lost: int = 0
    stuck: int = 0
    twice: int = 0
    orphans: int | None = None  # None: not measured in this scenario
    notes: list[str] = field(default_factory=list)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return "zombie" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False


def step_processes(workspace_root: Path, run_ids: set[int] | None = None) -> list[int]:
    """Live processes started by our steps (their environment names our workspace root), of the
    given runs or of any run: orphans if their run has ended."""
    marker = f"DEVOPS_WORKSPACE={workspace_root}".encode()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            environ = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if not any(item.startswith(marker) for item in environ):
            continue
        if run_ids is not None:
            run = next((item[len(b"DEVOPS_RUN_ID="):] for item in environ if item.startswith(b"DEVOPS_RUN_ID=")), b"")
            if not run.isdigit() or int(run) not in run_ids:
                continue
        if alive(int(proc.name)):
            found.append(int(proc.name))
    return found


class Services:
    """The dev server, API and worker as processes this bench can ``kill -9`` and restart."""

    def __init__(self, work: Path, database_url: str, extra_env: dict[str, str]) -> None:
        self.work = work
        self.logs = work / "logs"
        self.logs.mkdir()
        self.temporal_port = free_port()
        self.api_port = free_port()
        self.address = f"127.0.0.1:{self.temporal_port}"
        self.env = service_env(database_url, work, self.address, self.api_port, "bench-chaos", **extra_env)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.starts: Counter[str] = Counter()

    def _log(self, name: str) -> tuple[Path, object]:
        self.starts[name] += 1
        path = self.logs / f"{name}-{self.starts[name]}.log"
        return path, open(path, "ab")  # noqa: SIM115 - handed to the child

    def start_temporal(self) -> None:
        from workflows.search_attributes import dev_server_args

        temporal = shutil.which("temporal") or str(Path(sys.executable).parent / "temporal")
        _, log = self._log("temporal")
        # start_new_session: a Ctrl-C in the terminal reaches us, and we stop it in order.
        self.procs["temporal"] = subprocess.Popen(
            [temporal, "server", "start-dev", "--headless", "--ip", "127.0.0.1", "--port", str(self.temporal_port),
             "--db-filename", str(self.work / "temporal.db"), "--log-level", "error",
             "--dynamic-config-value", "frontend.enableServerVersionCheck=false", *dev_server_args()],
            stdout=log, stderr=log, start_new_session=True)

    async def temporal_ready(self, timeout: float = 60) -> None:
        from temporalio.client import Client

        deadline = time.monotonic() + timeout
        while True:
            try:
                client = await Client.connect(self.address)
                await client.count_workflows()  # the namespace answers, not only the port
                return
            except Exception:  # noqa: BLE001 - not up yet
                if time.monotonic() > deadline or self.procs["temporal"].poll() is not None:
                    raise RuntimeError(f"the Temporal dev server did not come up; see {self.logs}") from None
                await asyncio.sleep(0.3)

    def start_api(self) -> None:
        _, log = self._log("api")
        self.procs["api"] = start_api(self.env, self.api_port, log)

    async def api_ready(self) -> None:
        await asyncio.to_thread(wait_http, f"http://127.0.0.1:{self.api_port}/health", 90)

    def start_worker(self) -> Path:
        path, log = self._log("worker")
        self.procs["worker"] = start_worker(self.env, log)
        return path

    async def worker_ready(self, log: Path, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while "worker polling" not in log.read_text(errors="replace"):
            if time.monotonic() > deadline or self.procs["worker"].poll() is not None:
                raise RuntimeError(f"the worker did not start polling; see {log}")
            await asyncio.sleep(0.2)

    async def restart_worker(self) -> None:
        await self.worker_ready(self.start_worker())

    def kill(self, name: str) -> None:
        """``kill -9``: no shutdown code of ours runs."""
        proc = self.procs[name]
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def stop_all(self) -> None:
        for name in ("api", "worker", "temporal"):
            proc = self.procs.get(name)
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


class Bench:
    def __init__(self, services: Services, http: httpx.AsyncClient, shared: Path, seconds: float) -> None:
        self.services = services
        self.http = http
        self.shared = shared  # world-writable: steps run as another uid when the worker is root
        self.counter = shared / "executions"
        self.seconds = seconds
        self.temporal_down = 0.0  # seconds the killed dev server stays down before its restart
        self.kill_delay = 0.0  # seconds from the step's line to the kill
        self.workspace_root = Path(services.env["DEVOPS_WORKSPACE_DIR"])

    def append(self) -> str:
        return (f'echo "$DEVOPS_RUN_ID $DEVOPS_STEP_ID ${{DEVOPS_STEP_ATTEMPT_ID:-none}}:$$" >> "{self.counter}"')

    def executions(self) -> Counter[tuple[int, str]]:
        counts: Counter[tuple[int, str]] = Counter()
        for line in self.counter.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0].isdigit():
                counts[int(parts[0]), parts[1]] += 1
        return counts

    async def create_pipeline(self, name: str, steps: list[dict], allow_concurrent: bool = True) -> int:
        response = await self.http.post("/pipelines", json={
            "name": f"{name}-{uuid.uuid4().hex[:6]}", "allow_concurrent": allow_concurrent, "timeout_minutes": 30,
            "steps": steps})
        if response.status_code != 201:
            raise RuntimeError(f"creating pipeline {name}: {response.status_code} {response.text}")
        return response.json()["id"]

    async def runs_of(self, pipeline_id: int) -> list[dict]:
        """Every run row of the pipeline, through the API (which corrects rows whose workflow
        Temporal has closed). Retries while the API is restarting."""
        for _ in range(30):
            try:
                runs: list[dict] = []
                cursor = None
                while True:
                    params = {"pipeline_id": pipeline_id, "limit": 200, **({"cursor": cursor} if cursor else {})}
                    response = await self.http.get("/pipeline_runs", params=params)
                    response.raise_for_status()
                    body = response.json()
                    runs += body["data"]
                    cursor = body["next_cursor"]
                    if not cursor:
                        return runs
            except httpx.HTTPError:
                await asyncio.sleep(1)
        raise RuntimeError(f"could not list the runs of pipeline {pipeline_id}")

    async def run(self, run_id: int, wait: float = 0) -> dict:
        for _ in range(30):
            try:
                response = await self.http.get(f"/pipeline_runs/{run_id}", params={"wait": min(wait, 60)},
                                               timeout=wait + 30)
                response.raise_for_status()
                return response.json()
            except httpx.HTTPError:
                await asyncio.sleep(1)
        raise RuntimeError(f"could not read run {run_id}")

    async def until_finished(self, pipeline_id: int, deadline: float) -> list[dict]:
        while True:
            runs = await self.runs_of(pipeline_id)
            if all(r["status"] in FINISHED for r in runs) or time.monotonic() > deadline:
                return runs
            await asyncio.sleep(1)

    async def run_finished(self, run_id: int, deadline: float) -> dict:
        while True:
            run = await self.run(run_id, wait=max(0.0, min(20.0, deadline - time.monotonic())))
            if run["status"] in FINISHED or time.monotonic() > deadline:
                return run

    async def line_for(self, run_id: int, timeout: float) -> bool:
        """Wait, polling every 2 ms, for the run's first counter line."""
        prefix = f"{run_id} ".encode()
        deadline = time.monotonic() + timeout
        size = 0
        while time.monotonic() < deadline:
            now = self.counter.stat().st_size
            if now != size:
                size = now
                if any(line.startswith(prefix) for line in self.counter.read_bytes().splitlines()):
                    return True
            await asyncio.sleep(0.002)
        return False

    async def activity_attempts(self, workflow_id: str) -> str:
        """The attempt number Temporal recorded for the last start of each activity of the
        workflow ("2" means the first attempt's outcome never reached Temporal)."""
        from temporalio.client import Client

        try:
            client = await Client.connect(self.services.address)
            numbers = [str(event.activity_task_started_event_attributes.attempt)
                       async for event in client.get_workflow_handle(workflow_id).fetch_history_events()
                       if event.HasField("activity_task_started_event_attributes")]
        except Exception as exc:  # noqa: BLE001 - a figure we could not read is a note, not the end
            return f"?({type(exc).__name__})"
        return "+".join(numbers) or "0"

    def tally(self, row: Row, runs: list[dict], answered: list[int]) -> None:
        """lost / stuck / twice of a set of run rows against the ids the client was answered."""
        ids = {r["id"] for r in runs}
        counts = self.executions()
        row.runs = len(runs)
        row.lost = sum(1 for run_id in answered if run_id not in ids)
        row.stuck = sum(1 for r in runs if r["status"] not in FINISHED)
        row.twice += sum(1 for (run_id, _), n in counts.items() if run_id in ids and n > 1)
        statuses = Counter(r["status"] for r in runs)
        row.notes.append("ended " + ", ".join(f"{n} {s}" for s, n in sorted(statuses.items())))
        never = [r["id"] for r in runs if r["status"] == "success" and not any(k[0] == r["id"] for k in counts)]
        if never:
            row.notes.append(f"{len(never)} success without executing")
        if row.stuck:
            stuck = Counter(r["status"] for r in runs if r["status"] not in FINISHED)
            row.notes.append("stuck: " + ", ".join(f"{n} {s}" for s, n in sorted(stuck.items())))

    # ---- scenarios -------------------------------------------------------------------

    async def api_kill_burst(self, triggers: int, allow_concurrent: bool) -> Row:
        row = Row("api-kill-burst" if allow_concurrent else "api-kill-burst-queued")
        pipeline_id = await self.create_pipeline(row.scenario, [{"id": "count", "type": "run_tests",
                                                                  "with": {"command": self.append()}}],
                                                 allow_concurrent)
        answered: list[int] = []
        refused: Counter[str] = Counter()
        enough = asyncio.Event()
        kill_after = max(1, triggers // 4)

        async def one() -> None:
            try:
                response = await self.http.post(f"/pipelines/{pipeline_id}/trigger", json={}, timeout=60)
            except httpx.HTTPError as exc:
                refused[type(exc).__name__] += 1
            else:
                if response.is_success:
                    answered.append(response.json()["id"])
                else:
                    refused[str(response.status_code)] += 1
            if len(answered) + sum(refused.values()) >= kill_after:
                enough.set()

        tasks = [asyncio.create_task(one()) for _ in range(triggers)]
        try:
            await asyncio.wait_for(enough.wait(), 30)
        except TimeoutError:
            row.notes.append("no answer in 30 s before the kill")
        in_flight = sum(1 for t in tasks if not t.done())
        self.services.kill("api")
        await asyncio.gather(*tasks)
        self.services.start_api()
        await self.services.api_ready()
        restarted = time.monotonic()
        runs = await self.until_finished(pipeline_id, restarted + self.seconds)
        self.tally(row, runs, answered)
        row.notes.insert(0, f"{triggers} triggers, {len(answered)} answered 2xx, killed with {in_flight} in flight"
                         + (f"; errors {dict(refused)}" if refused else "")
                         + f"; {len(runs) - len(answered)} rows of unanswered requests"
                         + (f"; all final {time.monotonic() - restarted:.0f} s after the restart" if not row.stuck
                            else ""))
        return row

    async def client_retry(self, keys: int) -> Row:
        row = Row("client-retry")
        pipeline_id = await self.create_pipeline(row.scenario, [{"id": "count", "type": "run_tests",
                                                                  "with": {"command": self.append()}}])
        deadline = time.monotonic() + self.seconds
        dropped = replayed = 0
        outcome: dict[str, int | str] = {}

        async def one(key: str) -> None:
            nonlocal dropped, replayed
            attempt = 0
            while time.monotonic() < deadline:
                attempt += 1
                # The first attempt gives up before the answer can come: the server goes on.
                timeout = httpx.Timeout(30, read=0.02) if attempt == 1 else httpx.Timeout(60)
                try:
                    response = await self.http.post(f"/pipelines/{pipeline_id}/trigger",
                                                    json={"context": {"bench_key": key}},
                                                    headers={"Idempotency-Key": key}, timeout=timeout)
                except httpx.TimeoutException:
                    dropped += 1
                    await asyncio.sleep(0.05)
                    continue
                except httpx.HTTPError:
                    await asyncio.sleep(0.3)
                    continue
                if response.is_success:
                    outcome[key] = response.json()["id"]
                    replayed += response.headers.get("Idempotent-Replayed") == "true"
                    return
                if response.status_code in (409, 429, 503):  # in progress elsewhere / busy: same key again
                    await asyncio.sleep(0.2)
                    continue
                outcome[key] = f"{response.status_code} {response.text[:120]}"
                return
            outcome[key] = "no answer before the deadline"

        names = [f"bench-{uuid.uuid4().hex}" for _ in range(keys)]
        await asyncio.gather(*(one(key) for key in names))
        runs = await self.until_finished(pipeline_id, deadline + 30)
        answered = [v for v in outcome.values() if isinstance(v, int)]
        self.tally(row, runs, answered)
        per_key = Counter(r["trigger_context"].get("bench_key") for r in runs)
        extra = sum(n - 1 for key, n in per_key.items() if key in outcome and n > 1)
        row.twice += sum(1 for key, n in per_key.items() if key in outcome and n > 1)
        failures = Counter(v for v in outcome.values() if not isinstance(v, int))
        row.notes.insert(0, f"{keys} keys, {dropped} dropped attempts, {replayed} answers replayed, {len(runs)} runs"
                         + (f" ({extra} extra)" if extra else "")
                         + (f"; unanswered {dict(failures)}" if failures else ""))
        return row

    async def kill_at_step_end(self, runs: int, target: str) -> Row:
        row = Row(f"{target}-kill-at-step-end", orphans=0)
        pipeline_id = await self.create_pipeline(row.scenario, [{"id": "work", "type": "run_tests",
                                                                  "with": {"command": f"sleep 1; {self.append()}"}}])
        finals = []
        for _ in range(runs):
            response = await self.http.post(f"/pipelines/{pipeline_id}/trigger", json={}, timeout=60)
            response.raise_for_status()
            run_id = response.json()["id"]
            if await self.line_for(run_id, 60):
                if self.kill_delay:
                    await asyncio.sleep(self.kill_delay)
                self.services.kill(target)
                if target == "temporal":
                    await asyncio.sleep(self.temporal_down)
                    self.services.start_temporal()
                    await self.services.temporal_ready()
                else:
                    await self.services.restart_worker()
            else:
                row.notes.append(f"run {run_id}: no line in 60 s, nothing killed")
            final = await self.run_finished(run_id, time.monotonic() + self.seconds / 2)
            finals.append(final)
            await asyncio.sleep(0.5)
            row.orphans = (row.orphans or 0) + len(step_processes(self.workspace_root, {run_id}))
        self.tally(row, await self.runs_of(pipeline_id), [f["id"] for f in finals])
        counts = self.executions()
        attempts = [await self.activity_attempts(f["workflow_id"]) for f in finals]
        # Temporal attempts > 1 with one execution: the kill hit the window and the retry found
        # the recorded outcome; 1 and 1: the outcome reached Temporal before the kill.
        row.notes.insert(0, "executions per run: " + " ".join(str(counts[f["id"], "work"]) for f in finals)
                         + "; Temporal attempts: " + " ".join(attempts))
        return row

    async def cancel_while_worker_down(self) -> Row:
        row = Row("cancel-while-worker-down", orphans=0)
        pidfile = self.shared / f"sleep-{uuid.uuid4().hex[:6]}.pid"
        pipeline_id = await self.create_pipeline(row.scenario, [
            {"id": "long", "type": "run_tests",
             "with": {"command": f'{self.append()}; sleep 600 & echo $! > "{pidfile}"; wait'}},
            {"id": "after", "type": "run_tests", "with": {"command": self.append()}},
        ])
        response = await self.http.post(f"/pipelines/{pipeline_id}/trigger", json={}, timeout=60)
        response.raise_for_status()
        run_id = response.json()["id"]
        deadline = time.monotonic() + 60
        while not (pidfile.exists() and pidfile.read_text().strip()):
            if time.monotonic() > deadline:
                row.notes.append("the sleep never started")
                break
            await asyncio.sleep(0.05)
        sleeper = int(pidfile.read_text().strip()) if pidfile.exists() and pidfile.read_text().strip() else 0
        self.services.kill("worker")
        cancelled = await self.http.post(f"/pipeline_runs/{run_id}/cancel", timeout=60)
        await self.services.restart_worker()
        final = await self.run_finished(run_id, time.monotonic() + self.seconds)
        await asyncio.sleep(3)
        orphaned = (sleeper and alive(sleeper)) or bool(step_processes(self.workspace_root, {run_id}))
        row.orphans = int(bool(orphaned))
        self.tally(row, await self.runs_of(pipeline_id), [run_id])
        steps = {s["step_id"]: s for s in final.get("steps") or []}
        described = ", ".join(f"{sid} {s['status']}" + (f" ({s['error'][:60]})" if s.get("error") else "")
                              for sid, s in steps.items())
        row.notes.insert(0, f"cancel answered {cancelled.status_code}; run {final['status']}; steps: {described}")
        if any(s["status"] != "cancelled" for s in steps.values()):
            row.notes.append("expected cancelled/cancelled")
        if orphaned:
            row.notes.append(f"sleep (pid {sleeper}) alive 3 s after the run ended")
        return row


SCENARIOS = ["api-kill-burst", "api-kill-burst-queued", "client-retry", "worker-kill-at-step-end",
             "temporal-kill-at-step-end", "cancel-while-worker-down"]


def print_table(rows: list[Row]) -> None:
    header = ["scenario", "runs", "lost", "stuck", "executed twice", "orphans", "notes"]
    lines = [[r.scenario, str(r.runs), str(r.lost), str(r.stuck), str(r.twice),
              "-" if r.orphans is None else str(r.orphans), "; ".join(r.notes)] for r in rows]
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join(" --- " for _ in header) + "|")
    for line in lines:
        print("| " + " | ".join(line) + " |")


def tree_state() -> str:
    try:
        head = subprocess.run(["git", "log", "-1", "--oneline"], cwd=REPO, capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--short"], cwd=REPO, capture_output=True, text=True).stdout
        return f"{head} (+{len(dirty.splitlines())} changed files in the tree)"
    except OSError:
        return "unknown"


def _interrupt(signum, frame) -> None:  # noqa: ARG001
    raise KeyboardInterrupt


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database-url", default="")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated, of: " + ", ".join(SCENARIOS))
    parser.add_argument("--seconds", type=float, default=120, help="how long each scenario waits for its runs to end")
    parser.add_argument("--triggers", type=int, default=50)
    parser.add_argument("--keys", type=int, default=30)
    parser.add_argument("--kill-runs", type=int, default=5)
    parser.add_argument("--outbox-interval", type=float, default=5.0,
                        help="DEVOPS_RUN_OUTBOX_INTERVAL_SECONDS of the API (production default 60)")
    parser.add_argument("--heartbeat", type=float, default=5.0,
                        help="DEVOPS_STEP_HEARTBEAT_TIMEOUT_SECONDS: how soon a killed worker's step is retried")
    parser.add_argument("--temporal-down", type=float, default=10.0,
                        help="seconds the killed Temporal dev server stays down before it is restarted (longer "
                             "than the SDK's retries of the activity completion, so the outcome is lost)")
    parser.add_argument("--kill-delay-ms", type=float, default=0.0,
                        help="scenarios 4/5: wait this long after the step's line before the kill (0: at once)")
    args = parser.parse_args()
    chosen = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}")
    signal.signal(signal.SIGTERM, _interrupt)

    from settings import Settings

    work = Path(tempfile.mkdtemp(prefix="bench-chaos-"))
    work.chmod(0o711)  # a root worker runs steps as uid step_uid_base + account: they pass through here
    workspaces = work / "workspaces"
    workspaces.mkdir(mode=0o711)
    # Outside the data dir: the worker makes everything in there private to itself.
    shared = Path(tempfile.mkdtemp(prefix="bench-chaos-shared-"))
    shared.chmod(0o1777)
    (shared / "executions").touch()
    (shared / "executions").chmod(0o666)
    extra = {"shell_executor": "true", "workspace_dir": str(workspaces),
             "step_heartbeat_timeout_seconds": str(args.heartbeat)}
    has_outbox = "run_outbox_interval_seconds" in Settings.model_fields
    if has_outbox:
        extra["run_outbox_interval_seconds"] = str(args.outbox_interval)
    database_url = ""
    services: Services | None = None
    rows: list[Row] = []
    try:
        database_url = prepare_database(args.database_url, work)
        token = admin_token(database_url, "bench-chaos")
        services = Services(work, database_url, extra)
        services.start_temporal()
        await services.temporal_ready()
        services.start_api()
        worker_log = services.start_worker()
        await services.api_ready()
        await services.worker_ready(worker_log)
        where = (database_url.split("@")[-1].split("?")[0] if database_url.startswith("postgresql") else "SQLite file")
        print(f"tree: {tree_state()}")
        print(f"database: {where}; step heartbeat timeout {args.heartbeat:g} s; Temporal down "
              f"{args.temporal_down:g} s; kill {args.kill_delay_ms:g} ms after the line; outbox reconciler every "
              + (f"{args.outbox_interval:g} s (DEVOPS_RUN_OUTBOX_INTERVAL_SECONDS)" if has_outbox
                 else "- (no run_outbox_interval_seconds setting in this tree)")
              + f"; wait per scenario {args.seconds:g} s\n", flush=True)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{services.api_port}{API}",
                                     headers={"Authorization": f"Bearer {token}"}, timeout=60,
                                     limits=httpx.Limits(max_connections=200, max_keepalive_connections=0)) as http:
            bench = Bench(services, http, shared, args.seconds)
            bench.temporal_down = args.temporal_down
            bench.kill_delay = args.kill_delay_ms / 1000
            plans: dict[str, Callable[[], Awaitable[Row]]] = {
                "api-kill-burst": lambda: bench.api_kill_burst(args.triggers, True),
                "api-kill-burst-queued": lambda: bench.api_kill_burst(args.triggers, False),
                "client-retry": lambda: bench.client_retry(args.keys),
                "worker-kill-at-step-end": lambda: bench.kill_at_step_end(args.kill_runs, "worker"),
                "temporal-kill-at-step-end": lambda: bench.kill_at_step_end(args.kill_runs, "temporal"),
                "cancel-while-worker-down": bench.cancel_while_worker_down,
            }
            for name in chosen:
                started = time.monotonic()
                try:
                    row = await plans[name]()
                except Exception as exc:  # noqa: BLE001 - one scenario's failure to run is a row, not the end
                    row = Row(name, notes=[f"BENCH ERROR {type(exc).__name__}: {exc}"])
                row.notes.append(f"{time.monotonic() - started:.0f} s")
                rows.append(row)
                print(f"  {name}: runs {row.runs} lost {row.lost} stuck {row.stuck} twice {row.twice}", flush=True)
                for proc_name in ("temporal", "api", "worker"):  # the next scenario starts whole
                    if services.procs[proc_name].poll() is not None:
                        if proc_name == "temporal":
                            services.start_temporal()
                            await services.temporal_ready()
                        elif proc_name == "api":
                            services.start_api()
                            await services.api_ready()
                        else:
                            await services.restart_worker()
        print()
        print_table(rows)
        if os.environ.get("BENCH_KEEP"):
            print(f"\nservice logs: {services.logs}")
        return 1 if any("BENCH ERROR" in note for r in rows for note in r.notes) else 0
    finally:
        if services is not None:
            services.stop_all()
            for pid in step_processes(work / "workspaces"):
                try:
                    os.killpg(pid, signal.SIGKILL)
                except OSError:
                    pass
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        if database_url:
            drop_database(database_url)
        if not os.environ.get("BENCH_KEEP"):
            shutil.rmtree(work, ignore_errors=True)
            shutil.rmtree(shared, ignore_errors=True)
        else:
            print(f"kept {work} and {shared}")


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
