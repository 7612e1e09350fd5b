"""claude_execute overhead: a pipeline step calling the model against the same call made directly.

(a) direct: ``AsyncAnthropic.messages.create`` to the fake Messages API (tests/ai/fake_model_api.py,
    127.0.0.1, answering at once), one call at a time;
(b) step: a pipeline of one ``claude_execute`` step calling that fake, triggered and awaited over
    HTTP (``GET /pipeline_runs/{id}?wait=``), with everything around it: the run and step rows,
    the secret-and-config loads, prompt rendering, the budget queries and the usage row.

Temporal dev server (file DB), our worker and API as separate processes, as in production.
Prints p50/p99 of each and the ratio b/a; the difference is what the step costs on top of the
model's own latency (with a real model, seconds, the ratio tends to 1).

    .venv/bin/python bench/ai.py [--runs 30] [--database-url postgresql+psycopg://root@127.0.0.1:5432/test]
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
from pathlib import Path

import anthropic
import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from common import (  # noqa: E402
    admin_token,
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

from tests.ai.fake_model_api import API_KEY, FakeModelApi  # noqa: E402


async def timed(one, runs: int) -> list[float]:
    for _ in range(3):  # warm-up: connections, caches, workflow code
        await one()
    latencies = []
    for _ in range(runs):
        started = time.perf_counter()
        await one()
        latencies.append((time.perf_counter() - started) * 1000)
    return latencies


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--database-url", default="")
    args = parser.parse_args()

    fake = FakeModelApi().start()
    work = Path(tempfile.mkdtemp(prefix="bench-ai-"))
    env = await start_temporal(work)
    address = env.client.service_client.config.target_host
    database_url = prepare_database(args.database_url, work)
    token = admin_token(database_url)
    port = 18000 + os.getpid() % 1000
    # the fake listens on 127.0.0.1: private targets allowed, as in the test stack
    child_env = service_env(database_url, work, address, port, "bench-ai", allow_private_targets="true",
                            secret_key=os.environ.get("DEVOPS_SECRET_KEY", "bench-secret-key-0123456789abcdef"))
    logs = open(work / "children.log", "ab")  # noqa: SIM115
    children: list[subprocess.Popen[bytes]] = [start_worker(child_env, logs), start_api(child_env, port, logs)]
    try:
        wait_http(f"http://127.0.0.1:{port}/health")
        direct_client = anthropic.AsyncAnthropic(api_key=API_KEY, base_url=fake.url, max_retries=0, timeout=30)

        async def direct() -> None:
            await direct_client.messages.create(model="claude-bench", max_tokens=64,
                                                messages=[{"role": "user", "content": "Summarise: hello"}])

        http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}/api/v1/devops",
                                 headers={"Authorization": f"Bearer {token}"}, timeout=120)
        (await http.post("/ai_configs", json={"name": "bench", "provider": "anthropic", "model": "claude-bench",
                                              "api_key": API_KEY, "base_url": fake.url, "max_tokens": 64})
         ).raise_for_status()
        created = await http.post("/pipelines", json={"name": "bench-claude-execute", "steps": [
            {"id": "ai", "type": "claude_execute", "with": {"prompt": "Summarise: {{ text }}",
                                                            "variables": {"text": "hello"}}}]})
        created.raise_for_status()
        pipeline_id = created.json()["id"]

        async def step() -> None:
            run = (await http.post(f"/pipelines/{pipeline_id}/trigger", json={})).json()
            final = (await http.get(f"/pipeline_runs/{run['id']}", params={"wait": 60})).json()
            if final["status"] != "success":
                raise RuntimeError(f"run {run['id']} ended {final['status']}: {final.get('error')}")

        print(f"dev server with a file DB; our database: {database_url.split('@')[-1].split('?')[0]}; "
              f"{args.runs} calls/runs one at a time\n")
        a = await timed(direct, args.runs)
        b = await timed(step, args.runs)
        await direct_client.close()
        await http.aclose()
        a50, a99, b50, b99 = statistics.median(a), percentile(a, 0.99), statistics.median(b), percentile(b, 0.99)
        print(f"{'':44}{'p50 ms':>10}{'p99 ms':>10}")
        print(f"{'(a) direct SDK call to the fake Messages API':44}{a50:10.1f}{a99:10.1f}")
        print(f"{'(b) pipeline run, one claude_execute step':44}{b50:10.1f}{b99:10.1f}")
        print()
        print(f"ratio b/a (p50): {b50 / a50:.1f}   step overhead over the call (p50): {b50 - a50:.1f} ms")
        print(f"ratio b/a (p99): {b99 / a99:.1f}")
    finally:
        stop(children)
        await env.shutdown()
        drop_database(database_url)
        fake.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
