"""Containers on the real engine: the cost of our execution around `docker run`, and host sync.

In one run, one at a time (``--runs`` each, after a warm-up):
(a) ``docker run --rm <busybox image> echo hi`` (the CLI, as a user would);
(b) a ContainerExecution of the same: ``POST /containers`` then polling the instance until it
    ended (quota reservation, provisioning with the safe defaults, logs, removal, events);
(c) a pipeline of one ``run_tests`` step with ``executor: docker`` running it, triggered and
    awaited over HTTP (the step's child workflow, the workspace bind mount, outputs).
Prints p50/p90 and the ratios b/a (target <= 1.5) and c/a.

Host sync: ``--containers`` labelled containers are created (not started) on the local engine, a
Docker host pointing at it is added, and rounds are run through ``POST /docker/hosts/{id}/sync``:
seconds for the first (full) round, and rows written by the next, unchanged round.

    .venv/bin/python bench/containers.py [--runs 15] [--containers 200] [--database-url ...]
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
from pathlib import Path

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

FINAL = {"completed", "failed", "cancelled", "timeout"}


def timed(samples: list[float], started: float) -> None:
    samples.append((time.perf_counter() - started) * 1000)


def figures(samples: list[float]) -> str:
    return f"{statistics.median(samples):10.1f}{percentile(samples, 0.9):10.1f}"


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--containers", type=int, default=200)
    parser.add_argument("--database-url", default="")
    args = parser.parse_args()

    import docker

    from tests.docker_support import busybox_image

    engine = docker.from_env(timeout=120)
    image = busybox_image(engine)
    work = Path(tempfile.mkdtemp(prefix="bench-containers-"))
    env = await start_temporal(work)
    address = env.client.service_client.config.target_host
    database_url = prepare_database(args.database_url, work)
    token = admin_token(database_url)
    port = 18000 + os.getpid() % 1000
    child_env = service_env(database_url, work, address, port, "bench-containers", notify_allow_private_targets="true")
    logs = open(work / "children.log", "ab")  # noqa: SIM115
    children = [start_worker(child_env, logs), start_api(child_env, port, logs)]
    label = f"devops-bench={uuid.uuid4().hex[:8]}"
    try:
        wait_http(f"http://127.0.0.1:{port}/health")
        http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}/api/v1/devops",
                                 headers={"Authorization": f"Bearer {token}"}, timeout=120)

        def docker_run() -> None:
            subprocess.run(["docker", "run", "--rm", image, "echo", "hi"], check=True, capture_output=True)

        async def execution() -> None:
            created = await http.post("/containers", json={"image": image, "command": ["echo", "hi"]})
            created.raise_for_status()
            instance_id = created.json()["id"]
            while True:
                shown = (await http.get(f"/containers/{instance_id}")).json()
                if shown["status"] in FINAL:
                    if shown["status"] != "completed":
                        raise RuntimeError(f"container {instance_id} ended {shown['status']}: {shown.get('error')}")
                    return
                await asyncio.sleep(0.02)

        made = await http.post("/pipelines", json={"name": "bench-docker-step", "steps": [
            {"id": "hi", "type": "run_tests", "with": {"executor": "docker", "image": image, "command": "echo hi"}}]})
        made.raise_for_status()
        pipeline_id = made.json()["id"]

        async def pipeline_step() -> None:
            run = (await http.post(f"/pipelines/{pipeline_id}/trigger", json={})).json()
            final = (await http.get(f"/pipeline_runs/{run['id']}", params={"wait": 60})).json()
            if final["status"] != "success":
                raise RuntimeError(f"run {run['id']} ended {final['status']}: {final.get('error')}")

        samples: dict[str, list[float]] = {"a": [], "b": [], "c": []}
        for _ in range(2):  # warm-up
            docker_run()
            await execution()
            await pipeline_step()
        for _ in range(args.runs):  # interleaved, so drift hits all three alike
            started = time.perf_counter()
            await asyncio.to_thread(docker_run)
            timed(samples["a"], started)
            started = time.perf_counter()
            await execution()
            timed(samples["b"], started)
            started = time.perf_counter()
            await pipeline_step()
            timed(samples["c"], started)

        print(f"image {image}; our database: {database_url.split('@')[-1].split('?')[0]}; {args.runs} runs each\n")
        print(f"{'':46}{'p50 ms':>10}{'p90 ms':>10}")
        print(f"{'(a) docker run --rm <image> echo hi':46}{figures(samples['a'])}")
        print(f"{'(b) ContainerExecution (POST /containers)':46}{figures(samples['b'])}")
        print(f"{'(c) pipeline step, executor: docker':46}{figures(samples['c'])}")
        base = statistics.median(samples["a"])
        print(f"\nratio b/a (p50): {statistics.median(samples['b']) / base:.2f}   (target <= 1.5)")
        print(f"ratio c/a (p50): {statistics.median(samples['c']) / base:.2f}")

        # ---- host sync ----
        print(f"\ncreating {args.containers} containers for the host sync ...")
        for _ in range(args.containers):
            engine.containers.create(image, ["true"], labels={label.split("=")[0]: label.split("=")[1]})
        host = await http.post("/docker/hosts", json={"name": f"local-{uuid.uuid4().hex[:6]}",
                                                      "endpoint": "unix:///var/run/docker.sock",
                                                      "auto_sync": False})
        host.raise_for_status()
        host_id = host.json()["id"]
        started = time.perf_counter()
        first = await http.post(f"/docker/hosts/{host_id}/sync")
        first_seconds = time.perf_counter() - started
        first.raise_for_status()
        started = time.perf_counter()
        second = await http.post(f"/docker/hosts/{host_id}/sync")
        second_seconds = time.perf_counter() - started
        second.raise_for_status()
        print(f"full round ({args.containers} new containers): {first_seconds:.2f} s; answer: {first.json()}")
        print(f"unchanged round: {second_seconds:.2f} s, rows written: "
              f"{second.json().get('rows_written', second.json())}")
        await http.aclose()
    finally:
        for container in engine.containers.list(all=True, filters={"label": label}):
            container.remove(force=True)
        stop(children)
        await env.shutdown()
        drop_database(database_url)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
