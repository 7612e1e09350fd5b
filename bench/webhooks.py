"""Webhook intake: signed GitHub push deliveries against the raw ``client.start_workflow`` rate.

(a) raw: ``--senders`` concurrent loops calling ``client.start_workflow`` (the 3-activity raw
    workflow, its worker running) on the dev server for ``--seconds``;
(b) ours: the same number of concurrent senders POSTing signed GitHub ``push`` deliveries (each
    with a new delivery id) to ``/api/v1/devops/webhooks/github/{repository}``, for a repository
    linked to one pipeline of 3 no-op steps whose ``push`` trigger matches. A 202 means the
    delivery was verified, stored and its dispatch workflow started.

Our worker and API run as separate processes. Prints accepted/s and p50/p99 time to the answer
for both, the ratio b/a (target >= 0.7), and how long the runs of (b) took to be created after the
last delivery.

    .venv/bin/python bench/webhooks.py [--seconds 20] [--senders 10] [--database-url postgresql+psycopg://...]
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
from collections.abc import Awaitable, Callable
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

PUSH_PAYLOAD = REPO / "tests" / "domain" / "webhooks" / "payloads" / "github_push.json"


@dataclass
class Figures:
    accepted: int
    per_second: float
    p50_ms: float
    p99_ms: float


async def hammer(send: Callable[[], Awaitable[bool]], senders: int, seconds: float) -> Figures:
    for _ in range(3):
        await send()
    latencies: list[float] = []
    accepted = 0
    deadline = time.perf_counter() + seconds

    async def loop() -> None:
        nonlocal accepted
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            ok = await send()
            latencies.append((time.perf_counter() - started) * 1000)
            accepted += ok

    started = time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(senders)))
    elapsed = time.perf_counter() - started
    return Figures(accepted, accepted / elapsed, statistics.median(latencies), percentile(latencies, 0.99))


def make_repository(database_url: str, account_name: str, pipeline_id: int) -> tuple[int, str]:
    """A GitHub repository row with a webhook secret, linked to the pipeline (as the routes would)."""
    from sqlalchemy import select

    from db.crypto import SecretBox
    from db.models import Account, GitProvider, GitProviderCredential, GitRepository, PipelineRepository
    from db.session import make_engine, make_session_factory
    from settings import Settings

    settings = Settings()
    box = SecretBox(settings.secret_key, settings.old_secret_keys)
    secret = uuid.uuid4().hex
    engine = make_engine(database_url)
    with make_session_factory(engine).begin() as session:
        account_id = session.scalar(select(Account.id).where(Account.name == account_name))
        provider = GitProvider(account_id=account_id, name="github", provider_type="github")
        session.add(provider)
        session.flush()
        credential = GitProviderCredential(account_id=account_id, provider_id=provider.id, name="bench",
                                           encrypted_token=box.encrypt("unused"))
        session.add(credential)
        session.flush()
        repository = GitRepository(account_id=account_id, provider_id=provider.id, credential_id=credential.id,
                                   full_name="Codertocat/Hello-World", encrypted_webhook_secret=box.encrypt(secret))
        session.add(repository)
        session.flush()
        session.add(PipelineRepository(account_id=account_id, pipeline_id=pipeline_id, repository_id=repository.id))
        repository_id = repository.id
    engine.dispose()
    return repository_id, secret


def count_runs(database_url: str, pipeline_id: int) -> int:
    from sqlalchemy import func, select

    from db.models import PipelineRun
    from db.session import make_engine, make_session_factory

    engine = make_engine(database_url)
    with make_session_factory(engine)() as session:
        count = session.scalar(select(func.count()).select_from(PipelineRun).where(PipelineRun.pipeline_id == pipeline_id))
    engine.dispose()
    return int(count or 0)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--senders", type=int, default=10)
    parser.add_argument("--database-url", default="")
    args = parser.parse_args()

    from domain.webhooks.signatures import sign

    work = Path(tempfile.mkdtemp(prefix="bench-hooks-"))
    env = await start_temporal(work)
    address = env.client.service_client.config.target_host
    database_url = prepare_database(args.database_url, work)
    token = admin_token(database_url, "bench")
    port = 18000 + os.getpid() % 1000
    child_env = service_env(database_url, work, address, port, "bench-ours")
    logs = open(work / "children.log", "ab")  # noqa: SIM115
    children = [
        subprocess.Popen([sys.executable, str(REPO / "bench" / "raw_workflow.py"), address], cwd=REPO,
                         stdout=logs, stderr=logs),
        start_worker(child_env, logs),
        start_api(child_env, port, logs),
    ]
    try:
        wait_http(f"http://127.0.0.1:{port}/health")
        dead = [c.args for c in children if c.poll() is not None]
        if dead:
            raise RuntimeError(f"a child process died at start: {dead}; see {work / 'children.log'}")
        client = env.client
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
        api = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}/api/v1/devops",
                                headers={"Authorization": f"Bearer {token}"}, timeout=120, limits=limits)
        created = await api.post("/pipelines", json={
            "name": "bench-push", "triggers": {"push": {"branches": ["main"]}},
            "steps": [{"id": f"s{i}", "type": "custom", "with": {"handler": "noop"}} for i in range(3)],
        })
        created.raise_for_status()
        pipeline_id = created.json()["id"]
        repository_id, secret = make_repository(database_url, "bench", pipeline_id)
        body = PUSH_PAYLOAD.read_bytes()
        signature = sign("github", body, secret)

        raw_handles = []

        async def raw_start() -> bool:
            raw_handles.append(await client.start_workflow(RawThreeActivities.run, id=f"raw-{uuid.uuid4().hex}",
                                                           task_queue=RAW_QUEUE))
            return True

        async def deliver() -> bool:
            response = await api.post(f"/webhooks/github/{repository_id}", content=body, headers={
                "Content-Type": "application/json", "X-GitHub-Event": "push",
                "X-GitHub-Delivery": str(uuid.uuid4()), **signature})
            if response.status_code != 202:
                raise RuntimeError(f"delivery answered {response.status_code}: {response.text}")
            return True

        print(f"dev server with a file DB; our database: {database_url.split('@')[-1].split('?')[0]}")
        print(f"{args.senders} concurrent senders, {args.seconds:g} s each side\n")
        pids = [c.pid for c in children] + [temporal_server_pid(work)]
        before = [cpu_seconds(p) for p in pids]
        raw = await hammer(raw_start, args.senders, args.seconds)
        middle = [cpu_seconds(p) for p in pids]
        # the raw workflows' backlog must not run during our measurement
        await asyncio.gather(*(h.result() for h in raw_handles))
        settled = [cpu_seconds(p) for p in pids]
        ours = await hammer(deliver, args.senders, args.seconds)
        after = [cpu_seconds(p) for p in pids]
        sent_at = time.perf_counter()
        expected = ours.accepted + 3
        drained = None
        while time.perf_counter() - sent_at < 120:
            if count_runs(database_url, pipeline_id) >= expected:
                drained = time.perf_counter() - sent_at
                break
            await asyncio.sleep(0.5)
        await api.aclose()
        print(f"{'':40}{'accepted':>10}{'per s':>10}{'p50 ms':>10}{'p99 ms':>10}")
        print(f"{'(a) raw client.start_workflow':40}{raw.accepted:10d}{raw.per_second:10.1f}{raw.p50_ms:10.1f}"
              f"{raw.p99_ms:10.1f}")
        print(f"{'(b) signed GitHub push -> 202':40}{ours.accepted:10d}{ours.per_second:10.1f}{ours.p50_ms:10.1f}"
              f"{ours.p99_ms:10.1f}")
        print()
        print(f"throughput ratio b/a: {ours.per_second / raw.per_second:.2f}   (target >= 0.7)")
        print(f"p99 time to the answer: {ours.p99_ms:.1f} ms (raw start: {raw.p99_ms:.1f} ms)")
        names = ["raw worker", "our worker", "API", "Temporal server"]
        print("CPU ms per accepted item while sending (2 cores in all):")
        print("  (a) " + "; ".join(f"{n} {(middle[i] - before[i]) / raw.accepted * 1000:.1f}"
                                   for i, n in enumerate(names) if n != "API"))
        print("  (b) " + "; ".join(f"{n} {(after[i] - settled[i]) / ours.accepted * 1000:.1f}"
                                   for i, n in enumerate(names)))
        if drained is None:
            print(f"runs created: {count_runs(database_url, pipeline_id)} of {expected} after 120 s")
        else:
            print(f"all {expected} runs created {drained:.1f} s after the last delivery was answered")
    finally:
        stop(children)
        await env.shutdown()
        drop_database(database_url)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
