"""Live log streams under load: N SSE clients follow one run's log while its step prints 5 MB.

A pipeline of one ``run_tests`` step runs a small Python program that prints numbered lines of
fixed width, each carrying the wall-clock time at which it was written. Clients (in this
process, on the same machine, so clocks agree) follow ``GET /pipeline_runs/{id}/logs/stream``
from the start and note when each line arrives. For every line, its delay is the time until
*every* client had it; the benchmark reports p50/p99/max of that over all lines, the API
process's CPU seconds (from /proc) from the trigger to the last client's ``end``, and the same
with one client, and the ratios. The Temporal dev server, our worker and our API run as
separate processes, as in production; SQLite file DB unless ``--database-url``.

    .venv/bin/python bench/streams.py [--clients 50] [--megabytes 5] [--seconds 20]
        [--line-bytes 100] [--database-url postgresql+psycopg://root@127.0.0.1:5432/test]

``--seconds 0`` prints as fast as the step can; then the delays mostly measure the worker's
backlog, not the streams. Stops after the runs end or ``--timeout`` seconds (default 300).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import re
import shutil
import sys
import tempfile
import time
from array import array
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
    wait_http,
)

PRINTER = '''\
import sys, time
total, seconds, width, warmup = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
time.sleep(warmup)  # let the clients connect first
lines = total // width
pad = "x" * width
out = sys.stdout
start = time.time()
for i in range(lines):
    if seconds:
        ahead = start + seconds * i / lines - time.time()
        if ahead > 0.002:
            time.sleep(ahead)
    head = f"{i} {time.time():.6f} "
    out.write(head + pad[: width - len(head) - 1] + "\\n")
    out.flush()
'''

# A log line's data: ..."line":"<index> <written at> xxxx"
LINE = re.compile(rb'"line":"(\d+) (\d+\.\d+) ')


@dataclass
class Scenario:
    clients: int
    lines_per_client: list[int]
    bytes_per_client: list[int]
    delays_ms: list[float]  # per line: until the last client had it
    missing: int  # (line, client) pairs never received
    end_statuses: list[str]
    api_cpu_s: float
    worker_cpu_s: float
    wall_s: float


async def follow(http: httpx.AsyncClient, run_id: int, arrivals: array, written: array | None,
                 counts: list[int], index: int) -> str:
    """One SSE client: records when each line arrived (and, for one client, when it was
    written, parsed from the line); returns the run's final status."""
    buffer = b""
    status = "?"
    async with http.stream("GET", f"/pipeline_runs/{run_id}/logs/stream") as response:
        response.raise_for_status()
        async for chunk in response.aiter_raw():
            now = time.time()
            counts[index] += len(chunk)
            buffer += chunk
            cut = buffer.rfind(b"\n\n")
            if cut < 0:
                continue
            complete, buffer = buffer[: cut + 2], buffer[cut + 2 :]
            for match in LINE.finditer(complete):
                arrivals[int(match.group(1))] = now
                if written is not None:
                    written[int(match.group(1))] = float(match.group(2))
            if b"event: end" in complete:
                status = complete.rsplit(b'"status":"', 1)[-1].split(b'"', 1)[0].decode()
                break
    return status


async def scenario(api: str, token: str, pipeline_id: int, clients: int, lines: int, api_pid: int,
                   worker_pid: int, timeout: float) -> Scenario:
    limits = httpx.Limits(max_connections=clients + 10, max_keepalive_connections=clients + 10)
    async with httpx.AsyncClient(base_url=api, headers={"Authorization": f"Bearer {token}"}, limits=limits,
                                 timeout=httpx.Timeout(30, read=60)) as http:
        api_before, worker_before, started = cpu_seconds(api_pid), cpu_seconds(worker_pid), time.monotonic()
        run = (await http.post(f"/pipelines/{pipeline_id}/trigger", json={})).raise_for_status().json()
        arrivals = [array("d", [math.nan]) * lines for _ in range(clients)]
        written = array("d", [math.nan]) * lines
        counts = [0] * clients
        tasks = [asyncio.create_task(follow(http, run["id"], arrivals[i], written if i == 0 else None, counts, i))
                 for i in range(clients)]
        statuses = await asyncio.wait_for(asyncio.gather(*tasks), timeout)
        wall = time.monotonic() - started
        api_cpu, worker_cpu = cpu_seconds(api_pid) - api_before, cpu_seconds(worker_pid) - worker_before
    delays, missing = [], 0
    for line in range(lines):
        got = [a[line] for a in arrivals]
        missing += sum(1 for t in got if math.isnan(t))
        if not math.isnan(written[line]) and not any(math.isnan(t) for t in got):
            delays.append((max(got) - written[line]) * 1000)
    return Scenario(clients, [sum(1 for t in a if not math.isnan(t)) for a in arrivals], counts, delays, missing,
                    list(statuses), api_cpu, worker_cpu, wall)


def report(results: list[Scenario], lines: int, args: argparse.Namespace, database: str) -> None:
    megabytes = lines * args.line_bytes / 2**20
    print(f"one run_tests step printing {megabytes:.1f} MiB ({lines} lines of {args.line_bytes} B) over "
          f"{args.seconds:g} s; database: {database}")
    print("delay = from the step writing a line to the last client having it\n")
    head = (f"{'clients':>7} {'lines/client':>13} {'SSE MB/client':>14} {'missing':>8} {'p50 ms':>8} {'p99 ms':>8} "
            f"{'max ms':>8} {'API CPU s':>10} {'worker CPU s':>13} {'wall s':>7}  end")
    print(head)
    print("-" * len(head))
    for r in results:
        d = r.delays_ms or [math.nan]
        print(f"{r.clients:>7} {min(r.lines_per_client):>13} {sum(r.bytes_per_client) / len(r.bytes_per_client) / 1e6:>14.1f} "
              f"{r.missing:>8} {percentile(d, 0.5):>8.0f} {percentile(d, 0.99):>8.0f} {max(d):>8.0f} "
              f"{r.api_cpu_s:>10.2f} {r.worker_cpu_s:>13.2f} {r.wall_s:>7.1f}  {','.join(sorted(set(r.end_statuses)))}")
    if len(results) == 2:
        one, many = results
        p99 = percentile(many.delays_ms, 0.99) / percentile(one.delays_ms, 0.99)
        p50 = percentile(many.delays_ms, 0.5) / percentile(one.delays_ms, 0.5)
        print(f"\nratio {many.clients} clients / 1 client: p50 delay {p50:.2f}x, p99 delay {p99:.2f}x, "
              f"API CPU {many.api_cpu_s / one.api_cpu_s:.2f}x (for {many.clients}x the bytes sent)")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--megabytes", type=float, default=5.0, help="MiB the step prints")
    parser.add_argument("--seconds", type=float, default=20.0, help="spread over this long (0: as fast as possible)")
    parser.add_argument("--line-bytes", type=int, default=100)
    parser.add_argument("--warmup", type=float, default=3.0, help="the step waits this long before printing")
    parser.add_argument("--timeout", type=float, default=300.0, help="give up after this many seconds in all")
    parser.add_argument("--database-url", default="")
    args = parser.parse_args()
    deadline = time.monotonic() + args.timeout
    total_bytes = int(args.megabytes * 1024 * 1024)
    lines = total_bytes // args.line_bytes

    work = Path(tempfile.mkdtemp(prefix="bench-streams-"))
    (work / "printer.py").write_text(PRINTER)
    env = await start_temporal(work)
    address = env.client.service_client.config.target_host
    database_url = prepare_database(args.database_url, work)
    token = admin_token(database_url)
    port = 19000 + os.getpid() % 1000
    child_env = service_env(database_url, work, address, port, "bench-streams",
                            step_log_cap_bytes=str(total_bytes * 2 + 1_000_000))
    logs = open(work / "children.log", "ab")  # noqa: SIM115
    children = [start_worker(child_env, logs), start_api(child_env, port, logs)]
    try:
        wait_http(f"http://127.0.0.1:{port}/health")
        dead = [c.args for c in children if c.poll() is not None]
        if dead:
            raise RuntimeError(f"a child process died at start: {dead}; see {work / 'children.log'}")
        api = f"http://127.0.0.1:{port}/api/v1/devops"
        async with httpx.AsyncClient(base_url=api, headers={"Authorization": f"Bearer {token}"}, timeout=30) as http:
            # (not $SECONDS: bash keeps its own variable of that name)
            command = '"$BENCH_PY" "$BENCH_PRINTER" "$BENCH_BYTES" "$BENCH_SECONDS" "$BENCH_WIDTH" "$BENCH_WARMUP"'

            async def pipeline(name: str, size: int, seconds: float, warmup: float) -> int:
                step_env = {"BENCH_PY": sys.executable, "BENCH_PRINTER": str(work / "printer.py"),
                            "BENCH_BYTES": str(size), "BENCH_SECONDS": str(seconds),
                            "BENCH_WIDTH": str(args.line_bytes), "BENCH_WARMUP": str(warmup)}
                created = await http.post("/pipelines", json={
                    "name": name, "timeout_minutes": 10,
                    "steps": [{"id": "print", "type": "run_tests", "with": {"command": command, "env": step_env}}],
                })
                return created.raise_for_status().json()["id"]

            pipeline_id = await pipeline("bench-streams", total_bytes, args.seconds, args.warmup)
            warmup_id = await pipeline("bench-streams-warmup", 100 * args.line_bytes, 0.5, 0.5)
        # Untimed: first requests pay for imports, connections and statement compilation.
        await scenario(api, token, warmup_id, 2, 100, children[1].pid, children[0].pid, 60)
        results = []
        for clients in dict.fromkeys([1, args.clients]):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                print(f"stopped: --timeout {args.timeout:g} s reached", file=sys.stderr)
                break
            results.append(await scenario(api, token, pipeline_id, clients, lines, children[1].pid, children[0].pid,
                                          remaining))
        report(results, lines, args, database_url.split("@")[-1].split("?")[0].rsplit("/", 1)[-1]
               if database_url.startswith("postgresql") else "SQLite file")
    finally:
        stop(children)
        await env.shutdown()
        drop_database(database_url)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
