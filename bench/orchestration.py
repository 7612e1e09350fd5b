"""Orchestration overhead: our pipeline runs against the raw Temporal SDK, on one dev server.

(a) raw: a temporalio workflow of 3 no-op activities, started and awaited with the SDK client;
(b) ours: a pipeline of 3 no-op ``custom`` steps, triggered over HTTP and awaited over HTTP
    (``GET /pipeline_runs/{id}?wait=``), with all bookkeeping (run row, step rows, events).

Both workers, and our API, run as separate processes, as in production. Prints p50/p99
latency one run at a time, runs/s with 20 in flight, and the ratios b/a.

    .venv/bin/python bench/orchestration.py [--sequential 40] [--total 200] [--concurrency 20]
        [--database-url postgresql+psycopg://root@127.0.0.1:5432/test]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
from temporalio.testing import WorkflowEnvironment

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from raw_workflow import RAW_QUEUE, RawThreeActivities  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


@dataclass
class Figures:
    p50_ms: float
    p99_ms: float
    runs_per_second: float


async def measure(one_run, sequential: int, total: int, concurrency: int) -> Figures:
    for _ in range(3):  # warm up connections, caches and workflow code
        await one_run()
    latencies = []
    for _ in range(sequential):
        started = time.perf_counter()
        await one_run()
        latencies.append((time.perf_counter() - started) * 1000)
    remaining = total
    lock = asyncio.Lock()

    async def client_loop() -> None:
        nonlocal remaining
        while True:
            async with lock:
                if remaining == 0:
                    return
                remaining -= 1
            await one_run()

    started = time.perf_counter()
    await asyncio.gather(*(client_loop() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    return Figures(statistics.median(latencies), percentile(latencies, 0.99), total / elapsed)


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


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sequential", type=int, default=40)
    parser.add_argument("--total", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--database-url", default="")
    args = parser.parse_args()

    from api.auth import create_account_with_admin
    from db.migrate import upgrade
    from db.session import make_engine, make_session_factory
    from workflows.search_attributes import dev_server_args

    work = Path(tempfile.mkdtemp(prefix="bench-orch-"))
    temporal_bin = shutil.which("temporal") or str(Path(sys.executable).parent / "temporal")
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_bin, dev_server_database_filename=str(work / "temporal.db"),
        dev_server_extra_args=[*dev_server_args(), "--log-level", "error"], ui=False,
    )
    address = env.client.service_client.config.target_host
    database_url = args.database_url or f"sqlite:///{work / 'devops.db'}"
    if database_url.startswith("postgresql"):
        from sqlalchemy import create_engine, text
        from sqlalchemy.engine import make_url

        name = f"bench_{uuid.uuid4().hex[:8]}"
        admin = create_engine(database_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        database_url = make_url(database_url).set(database=name).render_as_string(hide_password=False)
    upgrade(database_url)
    sessions = make_session_factory(make_engine(database_url))
    with sessions.begin() as session:
        token = create_account_with_admin(session, "bench", "bench@localhost")[2].token

    port = 18000 + os.getpid() % 1000
    child_env = {**os.environ, "DEVOPS_DATABASE_URL": database_url, "DEVOPS_DATA_DIR": str(work),
                 "DEVOPS_TEMPORAL_ADDRESS": address, "DEVOPS_TASK_QUEUE": "bench-ours",
                 "DEVOPS_ENVIRONMENT": "test", "DEVOPS_API_PORT": str(port)}
    logs = open(work / "children.log", "ab")  # noqa: SIM115
    children = [
        subprocess.Popen([sys.executable, str(REPO / "bench" / "raw_workflow.py"), address], cwd=REPO, stdout=logs, stderr=logs),
        subprocess.Popen([*os.environ.get("BENCH_WORKER_PREFIX", "").split(), sys.executable, "worker.py"], cwd=REPO, env=child_env, stdout=logs, stderr=logs),
        subprocess.Popen([sys.executable, "-m", "uvicorn", "api.main:app", "--host", "127.0.0.1", "--port", str(port),
                          "--log-level", "warning", "--no-access-log"], cwd=REPO, env=child_env, stdout=logs, stderr=logs),
    ]
    try:
        wait_http(f"http://127.0.0.1:{port}/health")
        dead = [c.args for c in children if c.poll() is not None]
        if dead:
            raise RuntimeError(f"a child process died at start: {dead}; see {work / 'children.log'}")
        client = env.client

        async def raw_run() -> None:
            await client.execute_workflow(RawThreeActivities.run, id=f"raw-{uuid.uuid4().hex}", task_queue=RAW_QUEUE)

        http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}/api/v1/devops",
                                 headers={"Authorization": f"Bearer {token}"}, timeout=120,
                                 limits=httpx.Limits(max_connections=100, max_keepalive_connections=100))
        created = await http.post("/pipelines", json={
            "name": "bench-three-noops",
            "steps": [{"id": f"s{i}", "type": "custom", "with": {"handler": "noop"}} for i in range(3)],
        })
        created.raise_for_status()
        pipeline_id = created.json()["id"]

        async def our_run() -> None:
            run = (await http.post(f"/pipelines/{pipeline_id}/trigger", json={})).json()
            final = (await http.get(f"/pipeline_runs/{run['id']}", params={"wait": 60})).json()
            if final["status"] != "success":
                raise RuntimeError(f"run {run['id']} ended {final['status']}: {final.get('error')}")

        print(f"dev server with a file DB; our database: {database_url.split('@')[-1].split('?')[0]}")
        print(f"sequential runs: {args.sequential}; throughput: {args.total} runs, {args.concurrency} in flight\n")
        server = temporal_server_pid(work)
        pids = [c.pid for c in children] + [server]
        before = [cpu_seconds(p) for p in pids]
        raw = await measure(raw_run, args.sequential, args.total, args.concurrency)
        middle = [cpu_seconds(p) for p in pids]
        ours = await measure(our_run, args.sequential, args.total, args.concurrency)
        after = [cpu_seconds(p) for p in pids]
        runs = args.sequential + args.total + 3

        def per_run(start: list[float], end: list[float], i: int) -> float:
            return (end[i] - start[i]) / runs * 1000

        cpu_raw = {"worker": per_run(before, middle, 0), "Temporal server": per_run(before, middle, 3)}
        cpu_ours = {"worker": per_run(middle, after, 1), "API": per_run(middle, after, 2),
                    "Temporal server": per_run(middle, after, 3)}
        await http.aclose()
        print(f"{'':34}{'p50 ms':>10}{'p99 ms':>10}{'runs/s':>10}")
        print(f"{'(a) raw SDK, 3 no-op activities':34}{raw.p50_ms:10.1f}{raw.p99_ms:10.1f}{raw.runs_per_second:10.1f}")
        print(f"{'(b) pipeline, 3 custom steps, HTTP':34}{ours.p50_ms:10.1f}{ours.p99_ms:10.1f}{ours.runs_per_second:10.1f}")
        print()
        print(f"latency ratio b/a (p50): {ours.p50_ms / raw.p50_ms:.2f}   (target <= 1.25)")
        print(f"latency ratio b/a (p99): {ours.p99_ms / raw.p99_ms:.2f}")
        print(f"throughput ratio b/a:    {ours.runs_per_second / raw.runs_per_second:.2f}   (target >= 0.8)")
        print("\nCPU ms per run (2 cores in all):")
        print("  (a) " + "; ".join(f"{name} {value:.1f}" for name, value in cpu_raw.items()))
        print("  (b) " + "; ".join(f"{name} {value:.1f}" for name, value in cpu_ours.items()))
    finally:
        for child in children:
            child.send_signal(signal.SIGINT)
        for child in children:
            try:
                child.wait(15)
            except subprocess.TimeoutExpired:
                child.kill()
        await env.shutdown()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
