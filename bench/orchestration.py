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
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from common import (  # noqa: E402
    admin_token,
    cpu_seconds,
    drop_database,
    percentile,
    prepare_database,
    service_env,
    start_api,
    start_temporal,
    start_worker,
    stop,
    temporal_server_pid,
    wait_http,
)
from raw_workflow import RAW_QUEUE, RawThreeActivities  # noqa: E402


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


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sequential", type=int, default=40)
    parser.add_argument("--total", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--database-url", default="")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-orch-"))
    env = await start_temporal(work)
    address = env.client.service_client.config.target_host
    database_url = prepare_database(args.database_url, work)
    token = admin_token(database_url)

    port = 18000 + os.getpid() % 1000
    child_env = service_env(database_url, work, address, port, "bench-ours")
    logs = open(work / "children.log", "ab")  # noqa: SIM115
    children = [
        subprocess.Popen([sys.executable, str(REPO / "bench" / "raw_workflow.py"), address], cwd=REPO, stdout=logs, stderr=logs),
        start_worker(child_env, logs),
        start_api(child_env, port, logs),
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
        stop(children)
        await env.shutdown()
        drop_database(database_url)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
