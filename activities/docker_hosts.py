"""Docker hosts (the seed's ``DockerHost``): one sync round.

Connecting to the engine (``docker_client``, TLS, which endpoints are local or shared) is
:mod:`adapters.docker_engine` and :mod:`adapters.engine_access`.

:meth:`DockerHostActivities.sync_host` is one round of ``HostSyncWorkflow``: engine metrics,
every container (stopped ones too), every image and the events since the host's cursor. Rows are
keyed by the engine's ids and carry a fingerprint (sha256 of the stored fields), so a round only
writes what changed, deletes what the engine no longer has, and a round in which nothing changed
writes no row at all, not even the host's (its ``last_synced_at`` is the last round that wrote
something; the workflow's ``state`` query tells when the last round ran). Everything is done with
one listing per kind and bulk statements, so a round is linear in the number of containers.

A host that cannot be reached is an answer, not an activity failure: the round records it
(``consecutive_failures`` + 1, ``last_error``; status ``disconnected``, then ``error`` from the
5th consecutive failure, the seed's rule) and returns ``ok=False``, so the workflow never retries
or fails because of a host. Database failures do raise and are retried by Temporal.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import docker
from sqlalchemy import delete, insert, select, update
from sqlalchemy.orm import Session, sessionmaker
from temporalio import activity

from adapters.docker_engine import (
    classify,
    container_values,
    docker_client,
    image_values,
)
from adapters.engine_access import ACCOUNT_LABEL
from db.models import DockerContainer, DockerEvent, DockerHost, DockerImage
from services.engine_rounds import finish_round, record_failed_round, round_target
from settings import Settings

#: How far back the first round of a host reads events (the engine keeps only recent ones anyway).
FIRST_EVENTS_WINDOW_SECONDS = 3600
_NANO = 1_000_000_000


# ---- one sync round ----------------------------------------------------------------------------------


@dataclass
class SyncHostInput:
    host_id: int
    account_id: int


@dataclass
class SyncCounts:
    created: int = 0
    updated: int = 0
    deleted: int = 0
    unchanged: int = 0


@dataclass
class SyncHostResult:
    ok: bool
    host_status: str = ""
    containers: SyncCounts = field(default_factory=SyncCounts)
    images: SyncCounts = field(default_factory=SyncCounts)
    events: int = 0
    rows_written: int = 0
    consecutive_failures: int = 0
    error: str | None = None
    host_gone: bool = False  # the host row is deleted: the workflow ends
    finished_at: str = ""  # ISO 8601


@dataclass
class _Observed:
    metrics: dict[str, Any]
    containers: dict[str, dict[str, Any]]
    images: dict[str, dict[str, Any]]
    events: list[dict[str, Any]]


def fingerprint(values: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()


def engine_metrics(info: dict[str, Any], version: dict[str, Any], images: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """System metrics kept on the host: only values that change when the engine does (no clock,
    no uptime), so an idle engine gives the same metrics every round. ``disk_images_bytes`` sums
    the image list; ``df()`` is not called because it walks every layer (slow with vfs)."""
    return {
        "docker_version": version.get("Version") or info.get("ServerVersion"),
        "api_version": version.get("ApiVersion"),
        "os": info.get("OperatingSystem"),
        "os_type": info.get("OSType"),
        "architecture": info.get("Architecture"),
        "kernel_version": info.get("KernelVersion"),
        "memory_bytes": info.get("MemTotal"),
        "cpus": info.get("NCPU"),
        "storage_driver": info.get("Driver"),
        "docker_root_dir": info.get("DockerRootDir"),
        "containers": info.get("Containers"),
        "containers_running": info.get("ContainersRunning"),
        "containers_paused": info.get("ContainersPaused"),
        "containers_stopped": info.get("ContainersStopped"),
        "images": len(images),
        "disk_images_bytes": sum(v["size_bytes"] for v in images.values()),
        "swarm": ((info.get("Swarm") or {}).get("LocalNodeState")),
    }


def _event_row(raw: dict[str, Any]) -> dict[str, Any] | None:
    time_nano = raw.get("timeNano") or (int(raw["time"]) * _NANO if raw.get("time") else None)
    if not time_nano:
        return None
    actor = raw.get("Actor") or {}
    return {"time_nano": int(time_nano), "event_type": str(raw.get("Type") or "")[:50],
            "action": str(raw.get("Action") or raw.get("status") or "")[:100],
            "actor_id": str(actor.get("ID") or raw.get("id") or "")[:200],
            "attributes": dict(actor.get("Attributes") or {})}


def observe(client: docker.DockerClient, events_cursor: int | None, scope: int | None = None) -> _Observed:
    """Everything one round reads from the engine: one call per kind. With ``scope`` (a shared
    engine) only the account's labelled containers, images and events, and no engine-wide counts."""
    api = client.api
    info = api.info()
    version = api.version()
    filters = {"label": [f"{ACCOUNT_LABEL}={scope}"]} if scope is not None else None
    containers = {c["Id"]: container_values(c) for c in api.containers(all=True, filters=filters)}
    images = {i["Id"]: image_values(i) for i in api.images(filters=filters)}
    now = time.time()
    since = (f"{events_cursor // _NANO}.{events_cursor % _NANO:09d}" if events_cursor
             else f"{int(now) - FIRST_EVENTS_WINDOW_SECONDS}")
    stream = api.events(since=since, until=f"{now:.9f}", decode=True)
    try:
        events = [row for row in (_event_row(raw) for raw in stream) if row is not None]
    finally:
        stream.close()
    metrics = engine_metrics(info, version, images)
    if scope is not None:
        # other accounts' objects are not counted, nor are their events kept (container and image
        # events carry the object's labels in their attributes)
        events = [e for e in events if e["attributes"].get(ACCOUNT_LABEL) == str(scope)]
        states = [c["state"] for c in containers.values()]
        metrics.update(containers=len(states), containers_running=states.count("running"),
                       containers_paused=states.count("paused"),
                       containers_stopped=sum(1 for state in states if state not in ("running", "paused")))
    return _Observed(metrics=metrics, containers=containers, images=images, events=events)


class DockerHostActivities:
    """Settings and the session factory are injected; Docker clients are opened per round from the
    host row (TLS material decrypted in the activity, never in workflow history)."""

    def __init__(self, settings: Settings, session_factory: sessionmaker[Session]) -> None:
        self._settings = settings
        self._sessions = session_factory

    @activity.defn(name="sync_docker_host")
    async def sync_host(self, inp: SyncHostInput) -> SyncHostResult:
        """One sync round of the host (see the module docstring); an unreachable host is ``ok=False``."""
        return await asyncio.to_thread(self.sync_round, inp)

    def sync_round(self, inp: SyncHostInput) -> SyncHostResult:
        with self._sessions() as session:
            host = session.scalar(select(DockerHost).where(DockerHost.id == inp.host_id,
                                                           DockerHost.account_id == inp.account_id))
            if host is None:
                return SyncHostResult(ok=False, host_gone=True, error="host deleted", finished_at=_now_iso())
            target = round_target(session, self._settings, host)
            cursor = host.events_cursor
            session.rollback()  # no transaction stays open while the engine answers
        try:
            with docker_client(target) as client:
                observed = observe(client, cursor, target.scope_account)
        except Exception as exc:  # noqa: BLE001 - classified; anything else is re-raised below
            problem = classify(exc, target.endpoint)
            if problem is None:
                raise
            return self._record_failure(inp, problem.message)
        return self._apply(inp, observed)

    def _record_failure(self, inp: SyncHostInput, message: str) -> SyncHostResult:
        with self._sessions() as session:
            host = session.scalar(select(DockerHost).where(DockerHost.id == inp.host_id,
                                                           DockerHost.account_id == inp.account_id))
            if host is None:
                return SyncHostResult(ok=False, host_gone=True, error="host deleted", finished_at=_now_iso())
            status, failures = record_failed_round(session, host, message)
        activity.logger.info("docker host %s: round failed (%s in a row): %s", inp.host_id, failures, message)
        return SyncHostResult(ok=False, host_status=status, consecutive_failures=failures, error=message,
                              rows_written=1, finished_at=_now_iso())

    def _apply(self, inp: SyncHostInput, observed: _Observed) -> SyncHostResult:
        now = datetime.now(UTC)
        result = SyncHostResult(ok=True)
        with self._sessions() as session:
            host = session.scalar(select(DockerHost).where(DockerHost.id == inp.host_id,
                                                           DockerHost.account_id == inp.account_id))
            if host is None:
                return SyncHostResult(ok=False, host_gone=True, error="host deleted", finished_at=_now_iso())
            base = {"account_id": inp.account_id, "host_id": host.id, "synced_at": now}
            result.containers = merge_inventory(session, DockerContainer, DockerContainer.container_id, "container_id",
                                                DockerContainer.host_id, host.id, observed.containers, base)
            result.images = merge_inventory(session, DockerImage, DockerImage.image_id, "image_id", DockerImage.host_id,
                                            host.id, observed.images, base)
            cursor = host.events_cursor
            result.events, cursor = _insert_events(session, host.id, inp.account_id, cursor, observed.events)
            changed_rows = sum(c.created + c.updated + c.deleted for c in (result.containers, result.images))
            result.host_status, changed_rows = finish_round(session, host, metrics=observed.metrics, cursor=cursor,
                                                            written=changed_rows + result.events, now=now)
            session.commit()
        result.rows_written = changed_rows
        result.finished_at = now.isoformat()
        activity.logger.info("docker host %s synced: %s", inp.host_id, result)
        return result


def merge_inventory(session: Session, model: Any, key_column: Any, key_name: str, parent_column: Any,
                    parent_id: int, observed: dict[str, dict[str, Any]], base: dict[str, Any]) -> SyncCounts:
    """Upsert ``observed`` (engine id -> stored values) into the parent's rows of ``model`` (a
    host's containers and images, a cluster's nodes and services) by fingerprint, and delete rows
    the engine no longer has: one select and at most three bulk statements, whatever the number
    of rows."""
    counts = SyncCounts()
    existing = {key: (row_id, print_) for row_id, key, print_ in session.execute(
        select(model.id, key_column, model.fingerprint).where(parent_column == parent_id))}
    inserts: list[dict[str, Any]] = []
    updates: list[dict[str, Any]] = []
    for key, values in observed.items():
        digest = fingerprint(values)
        known = existing.get(key)
        if known is None:
            inserts.append({**base, **values, key_name: key, "fingerprint": digest})
        elif known[1] != digest:
            updates.append({**values, "id": known[0], "fingerprint": digest, "synced_at": base["synced_at"]})
        else:
            counts.unchanged += 1
    gone = [row_id for key, (row_id, _) in existing.items() if key not in observed]
    if inserts:
        session.execute(insert(model), inserts)
    if updates:
        session.execute(update(model), updates)
    for start in range(0, len(gone), 500):
        session.execute(delete(model).where(model.id.in_(gone[start:start + 500])))
    counts.created, counts.updated, counts.deleted = len(inserts), len(updates), len(gone)
    return counts


def _insert_events(session: Session, host_id: int, account_id: int, cursor: int | None,
                   events: list[dict[str, Any]]) -> tuple[int, int | None]:
    """Insert events not stored yet (the window overlaps the last one by design); the new cursor is
    the newest event's time, so a round with no new event changes nothing."""
    if not events:
        return 0, cursor
    oldest = min(e["time_nano"] for e in events)
    seen = {tuple(row) for row in session.execute(
        select(DockerEvent.time_nano, DockerEvent.event_type, DockerEvent.action, DockerEvent.actor_id)
        .where(DockerEvent.host_id == host_id, DockerEvent.time_nano >= oldest))}
    fresh: list[dict[str, Any]] = []
    for event in events:
        key = (event["time_nano"], event["event_type"], event["action"], event["actor_id"])
        if key in seen:
            continue
        seen.add(key)
        fresh.append({**event, "host_id": host_id, "account_id": account_id})
    if fresh:
        session.execute(insert(DockerEvent), fresh)
    newest = max(e["time_nano"] for e in events)
    return len(fresh), max(newest, cursor or 0)


def _now_iso() -> str:
    return datetime.now(UTC).isoformat()
