"""Docker Swarm clusters (the seed's ``SwarmCluster``): reaching a manager, and one sync round.

A cluster is reached through one manager's engine endpoint, with the same client as Docker hosts
(:func:`adapters.docker_engine.docker_client`: ``unix://`` as is, ``tcp://`` with TLS from the
decrypted PEMs in a private temporary directory).

:meth:`SwarmActivities.sync_cluster` is one round of ``SwarmSyncWorkflow``: the swarm's id, its
nodes, its services (image, mode, replicas, running tasks, update config, labels, ports and the
stack they belong to), the stacks we deployed, and the swarm-scoped engine events since the
cluster's cursor (stored as ``SwarmEvent`` rows with ``dedupe_key`` =
``"<time_nano>:<type>:<action>:<actor>"``). Rows carry a fingerprint, so an unchanged round writes
no row at all, not even the cluster's.

An engine that cannot be reached, or one that is not a swarm manager, is a failed round recorded
on the cluster (``consecutive_failures`` + 1, ``last_error``, status ``disconnected``, then
``error`` from the 5th in a row), not an activity failure; database failures raise and are retried.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import docker
from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session, sessionmaker
from temporalio import activity

from activities.docker_hosts import (
    FIRST_EVENTS_WINDOW_SECONDS,
    SyncCounts,
    merge_inventory,
)
from adapters.docker_engine import (
    NotASwarmManager,
    classify,
    docker_client,
    manager_info,
)
from adapters.engine_access import ACCOUNT_LABEL
from adapters.swarm_engine import node_values, running_counts, service_values
from db.models import SwarmCluster, SwarmEvent, SwarmNode, SwarmService, SwarmStack
from services.engine_rounds import finish_round, record_failed_round, round_target
from settings import Settings

_NANO = 1_000_000_000



# ---- what a round reads ---------------------------------------------------------------------------


def event_row(raw: dict[str, Any]) -> dict[str, Any] | None:
    time_nano = raw.get("timeNano") or (int(raw["time"]) * _NANO if raw.get("time") else None)
    if not time_nano:
        return None
    actor = raw.get("Actor") or {}
    row = {"time_nano": int(time_nano), "event_type": str(raw.get("Type") or "")[:50],
           "action": str(raw.get("Action") or raw.get("status") or "")[:100],
           "actor_id": str(actor.get("ID") or raw.get("id") or "")[:200],
           "payload": {"attributes": dict(actor.get("Attributes") or {}), "scope": raw.get("scope")}}
    row["dedupe_key"] = f"{row['time_nano']}:{row['event_type']}:{row['action']}:{row['actor_id']}"[:200]
    return row


@dataclass
class _Observed:
    swarm_id: str
    metrics: dict[str, Any]
    nodes: dict[str, dict[str, Any]]
    services: dict[str, dict[str, Any]]
    events: list[dict[str, Any]]


def observe(client: docker.DockerClient, events_cursor: int | None, scope: int | None = None) -> _Observed:
    """Everything one round reads from the manager: one call per kind. With ``scope`` (a shared
    engine) only the account's labelled services and their events; nodes are the operator's and
    are listed read-only."""
    api = client.api
    info = manager_info(client)
    swarm = api.inspect_swarm()
    nodes = {n["ID"]: node_values(n) for n in api.nodes()}
    counts = running_counts(api.tasks())
    filters = {"label": [f"{ACCOUNT_LABEL}={scope}"]} if scope is not None else None
    services = {s["ID"]: service_values(s, counts.get(s["ID"], 0)) for s in api.services(filters=filters)}
    now = time.time()
    since = (f"{events_cursor // _NANO}.{events_cursor % _NANO:09d}" if events_cursor
             else f"{int(now) - FIRST_EVENTS_WINDOW_SECONDS}")
    stream = api.events(since=since, until=f"{now:.9f}", filters={"scope": "swarm"}, decode=True)
    try:
        events = [row for row in (event_row(raw) for raw in stream) if row is not None]
    finally:
        stream.close()
    if scope is not None:  # only events about the account's own services
        events = [e for e in events if e["actor_id"] in services]
    metrics = {"docker_version": info.get("ServerVersion"), "nodes": len(nodes),
               "managers": sum(1 for n in nodes.values() if n["role"] == "manager"),
               "services": len(services), "os": info.get("OperatingSystem"),
               "architecture": info.get("Architecture")}
    return _Observed(swarm_id=str(swarm.get("ID") or "")[:100], metrics=metrics, nodes=nodes, services=services,
                     events=events)


# ---- one round ------------------------------------------------------------------------------------------


@dataclass
class SyncClusterInput:
    cluster_id: int
    account_id: int


@dataclass
class SyncClusterResult:
    ok: bool
    cluster_status: str = ""
    nodes: SyncCounts = field(default_factory=SyncCounts)
    services: SyncCounts = field(default_factory=SyncCounts)
    stacks_updated: int = 0
    events: int = 0
    rows_written: int = 0
    consecutive_failures: int = 0
    error: str | None = None
    cluster_gone: bool = False  # the cluster row is deleted: the workflow ends
    finished_at: str = ""  # ISO 8601


class SwarmActivities:
    """Settings and the session factory are injected; a client is opened per round from the
    cluster row (TLS decrypted in the activity, never in workflow history)."""

    def __init__(self, settings: Settings, session_factory: sessionmaker[Session]) -> None:
        self._settings = settings
        self._sessions = session_factory

    @activity.defn(name="sync_swarm_cluster")
    async def sync_cluster(self, inp: SyncClusterInput) -> SyncClusterResult:
        """One sync round of the cluster (see the module docstring); a failing manager is ``ok=False``."""
        return await asyncio.to_thread(self.sync_round, inp)

    def _load(self, session: Session, inp: SyncClusterInput) -> SwarmCluster | None:
        return session.scalar(select(SwarmCluster).where(SwarmCluster.id == inp.cluster_id,
                                                         SwarmCluster.account_id == inp.account_id))

    def sync_round(self, inp: SyncClusterInput) -> SyncClusterResult:
        with self._sessions() as session:
            cluster = self._load(session, inp)
            if cluster is None:
                return SyncClusterResult(ok=False, cluster_gone=True, error="cluster deleted", finished_at=_now_iso())
            target = round_target(session, self._settings, cluster)
            cursor = cluster.events_cursor
            session.rollback()  # no transaction stays open while the engine answers
        try:
            with docker_client(target) as client:
                observed = observe(client, cursor, target.scope_account)
        except NotASwarmManager as exc:
            return self._record_failure(inp, str(exc))
        except Exception as exc:  # noqa: BLE001 - classified; anything else is re-raised below
            problem = classify(exc, target.endpoint)
            if problem is None:
                raise
            return self._record_failure(inp, problem.message)
        return self._apply(inp, observed)

    def _record_failure(self, inp: SyncClusterInput, message: str) -> SyncClusterResult:
        with self._sessions() as session:
            cluster = self._load(session, inp)
            if cluster is None:
                return SyncClusterResult(ok=False, cluster_gone=True, error="cluster deleted", finished_at=_now_iso())
            status, failures = record_failed_round(session, cluster, message)
        activity.logger.info("swarm cluster %s: round failed (%s in a row): %s", inp.cluster_id, failures, message)
        return SyncClusterResult(ok=False, cluster_status=status, consecutive_failures=failures, error=message,
                                 rows_written=1, finished_at=_now_iso())

    def _apply(self, inp: SyncClusterInput, observed: _Observed) -> SyncClusterResult:
        now = datetime.now(UTC)
        result = SyncClusterResult(ok=True)
        with self._sessions() as session:
            cluster = self._load(session, inp)
            if cluster is None:
                return SyncClusterResult(ok=False, cluster_gone=True, error="cluster deleted", finished_at=_now_iso())
            base = {"account_id": inp.account_id, "cluster_id": cluster.id, "synced_at": now}
            result.nodes = merge_inventory(session, SwarmNode, SwarmNode.node_id, "node_id", SwarmNode.cluster_id,
                                           cluster.id, observed.nodes, base)
            result.services = merge_inventory(session, SwarmService, SwarmService.service_id, "service_id",
                                              SwarmService.cluster_id, cluster.id, observed.services, base)
            result.stacks_updated = _update_stacks(session, cluster.id, observed.services)
            result.events, cursor = _insert_events(session, cluster.id, inp.account_id, cluster.events_cursor,
                                                   observed.events)
            written = sum(c.created + c.updated + c.deleted for c in (result.nodes, result.services))
            written += result.stacks_updated + result.events
            result.cluster_status, written = finish_round(session, cluster, metrics=observed.metrics, cursor=cursor,
                                                          written=written, now=now, swarm_id=observed.swarm_id)
            session.commit()
        result.rows_written = written
        result.finished_at = now.isoformat()
        activity.logger.info("swarm cluster %s synced: %s", inp.cluster_id, result)
        return result


def _update_stacks(session: Session, cluster_id: int, services: dict[str, dict[str, Any]]) -> int:
    """Our stacks' service names and status (``deployed`` while any of its services exists, else
    ``missing``), written only when they changed."""
    by_stack: dict[str, list[str]] = {}
    for values in services.values():
        if values.get("stack_name"):
            by_stack.setdefault(values["stack_name"], []).append(values["name"])
    changed = 0
    for row_id, name, listed, status in session.execute(
            select(SwarmStack.id, SwarmStack.name, SwarmStack.services, SwarmStack.status)
            .where(SwarmStack.cluster_id == cluster_id)):
        names = sorted(by_stack.get(name, []))
        wanted = "deployed" if names else "missing"
        if list(listed or []) != names or status != wanted:
            session.execute(update(SwarmStack).where(SwarmStack.id == row_id).values(services=names, status=wanted))
            changed += 1
    return changed


def _insert_events(session: Session, cluster_id: int, account_id: int, cursor: int | None,
                   events: list[dict[str, Any]]) -> tuple[int, int | None]:
    """Insert engine events not stored yet (by ``dedupe_key``); the cursor becomes the newest
    event's time, so a round with no new event changes nothing."""
    if not events:
        return 0, cursor
    oldest = min(e["time_nano"] for e in events)
    seen = set(session.scalars(select(SwarmEvent.dedupe_key).where(
        SwarmEvent.cluster_id == cluster_id, SwarmEvent.source == "engine", SwarmEvent.time_nano >= oldest)))
    fresh: list[dict[str, Any]] = []
    for event in events:
        if event["dedupe_key"] in seen:
            continue
        seen.add(event["dedupe_key"])
        fresh.append({**event, "cluster_id": cluster_id, "account_id": account_id, "source": "engine"})
    if fresh:
        session.execute(insert(SwarmEvent), fresh)
    newest = max(e["time_nano"] for e in events)
    return len(fresh), max(newest, cursor or 0)


def _now_iso() -> str:
    return datetime.now(UTC).isoformat()
