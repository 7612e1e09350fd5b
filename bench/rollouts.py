"""Rollouts on the real single-node swarm: what our canary promotion costs against Swarm alone.

In one run, ``--runs`` rounds on the same service (2 replicas of a busybox web image with a
HEALTHCHECK of 1 s × 2 retries), each round:
(a) ``docker service update --image v2 <service>`` (the CLI, waiting for convergence as it does
    by default), then back to v1 (not timed);
(b) a canary deployment v1 → v2 (``set_weight: 50``, ``pause: {}``) through the API; once it is
    paused, the time from ``POST .../promote`` to the deployment completed (stable updated
    start-first and converged on v2, canary removed);
(c) a canary deployment to its pause, then the time from ``POST .../abort`` to the canary service
    gone and the deployment aborted.
Prints p50/p90 and the ratio b/a. Services and the network are removed at the end.

    .venv/bin/python bench/rollouts.py [--runs 3] [--database-url ...]
"""

from __future__ import annotations

import argparse
import asyncio
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

HEALTHCHECK = "HEALTHCHECK --interval=1s --timeout=1s --retries=2 CMD test -f /tmp/healthy || exit 1"


def web_image(engine, version: str) -> str:
    from tests.docker_support import busybox_image

    serve = f"touch /tmp/healthy; mkdir -p /tmp/www; echo {version} > /tmp/www/index.html; exec httpd -f -p 8080 -h /tmp/www"
    return busybox_image(engine, changes=[HEALTHCHECK, f'CMD ["sh", "-c", "{serve}"]'],
                         extra_files={"etc/version": version.encode()})


def figures(samples: list[float]) -> str:
    return f"{statistics.median(samples):10.0f}{percentile(samples, 0.9):10.0f}"


def add_cluster(database_url: str, account: str) -> int:
    from sqlalchemy import select

    from db.models import Account, SwarmCluster
    from db.session import make_engine, make_session_factory

    engine = make_engine(database_url)
    with make_session_factory(engine).begin() as session:
        account_id = session.scalar(select(Account.id).where(Account.name == account))
        cluster = SwarmCluster(account_id=account_id, name="local", endpoint="unix:///var/run/docker.sock",
                               status="active", auto_sync=False)
        session.add(cluster)
        session.flush()
        cluster_id = cluster.id
    engine.dispose()
    return cluster_id


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--database-url", default="")
    args = parser.parse_args()

    import docker
    from docker.types import ServiceMode

    engine = docker.from_env(timeout=120)
    v1, v2 = web_image(engine, "v1"), web_image(engine, "v2")
    work = Path(tempfile.mkdtemp(prefix="bench-rollouts-"))
    env = await start_temporal(work)
    address = env.client.service_client.config.target_host
    database_url = prepare_database(args.database_url, work)
    token = admin_token(database_url)
    cluster_id = add_cluster(database_url, "bench")
    port = 18000 + (uuid.uuid4().int % 1000)
    child_env = service_env(database_url, work, address, port, "bench-rollouts")
    logs = open(work / "children.log", "ab")  # noqa: SIM115
    children = [start_worker(child_env, logs), start_api(child_env, port, logs)]
    network = engine.networks.create(f"bench-rollouts-{uuid.uuid4().hex[:6]}", driver="overlay", attachable=True)
    name = f"bench-{uuid.uuid4().hex[:6]}"
    try:
        wait_http(f"http://127.0.0.1:{port}/health")
        http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}/api/v1/devops",
                                 headers={"Authorization": f"Bearer {token}"}, timeout=120)
        engine.services.create(v1, name=name, networks=[network.name], mode=ServiceMode("replicated", replicas=2))

        def cli_update(image: str) -> None:
            subprocess.run(["docker", "service", "update", "--quiet", "--image", image, name], check=True,
                           capture_output=True, timeout=300)

        async def status_of(deployment_id: int) -> dict:
            return (await http.get(f"/swarm/deployments/{deployment_id}")).json()

        async def until(deployment_id: int, statuses: set[str]) -> dict:
            while True:
                shown = await status_of(deployment_id)
                if shown["status"] in statuses:
                    return shown
                if shown["status"] in {"completed", "failed", "aborted", "rolled_back"}:
                    raise RuntimeError(f"deployment {deployment_id} ended {shown['status']}: {shown['error']}")
                await asyncio.sleep(0.05)

        async def canary_to_pause(image: str) -> int:
            created = await http.post("/swarm/deployments", json={
                "cluster_id": cluster_id, "service": name, "image": image, "strategy": "canary",
                "steps": [{"set_weight": 50}, {"pause": {}}]})
            created.raise_for_status()
            deployment_id = created.json()["id"]
            await until(deployment_id, {"paused"})
            return deployment_id

        def canary_gone() -> bool:
            try:
                engine.services.get(f"{name}-canary")
            except docker.errors.NotFound:
                return True
            return False

        await asyncio.to_thread(cli_update, v1)  # settle the service's first convergence
        samples: dict[str, list[float]] = {"a": [], "b": [], "c": []}
        for _ in range(args.runs):
            started = time.perf_counter()
            await asyncio.to_thread(cli_update, v2)
            samples["a"].append((time.perf_counter() - started) * 1000)
            await asyncio.to_thread(cli_update, v1)

            deployment_id = await canary_to_pause(v2)
            started = time.perf_counter()
            (await http.post(f"/swarm/deployments/{deployment_id}/promote")).raise_for_status()
            await until(deployment_id, {"completed"})
            samples["b"].append((time.perf_counter() - started) * 1000)
            await asyncio.to_thread(cli_update, v1)

            deployment_id = await canary_to_pause(v2)
            started = time.perf_counter()
            (await http.post(f"/swarm/deployments/{deployment_id}/abort")).raise_for_status()
            await until(deployment_id, {"aborted"})
            while not canary_gone():
                await asyncio.sleep(0.05)
            samples["c"].append((time.perf_counter() - started) * 1000)

        print(f"service {name}: 2 replicas, HEALTHCHECK 1 s × 2 retries; {args.runs} rounds; "
              f"database {database_url.split('@')[-1].split('?')[0]}\n")
        print(f"{'':58}{'p50 ms':>10}{'p90 ms':>10}")
        print(f"{'(a) docker service update --image (CLI, converged)':58}{figures(samples['a'])}")
        print(f"{'(b) canary: promote request -> stable on new revision':58}{figures(samples['b'])}")
        print(f"{'(c) canary: abort request -> canary gone':58}{figures(samples['c'])}")
        print(f"\nratio b/a (p50): {statistics.median(samples['b']) / statistics.median(samples['a']):.2f}")
        print(f"ratio c/a (p50): {statistics.median(samples['c']) / statistics.median(samples['a']):.2f}")
        await http.aclose()
    finally:
        for service in (name, f"{name}-canary"):
            try:
                engine.services.get(service).remove()
            except docker.errors.NotFound:
                pass
        for _ in range(20):
            try:
                network.remove()
                break
            except docker.errors.APIError:
                time.sleep(0.5)
        stop(children)
        await env.shutdown()
        drop_database(database_url)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
