"""Docker Swarm clusters and their resources (the seed's Docker Swarm Management), under ``/swarm``.

- A cluster is a row reached through one manager's endpoint; with auto-sync its
  ``SwarmSyncWorkflow`` ``swarm-sync-<id>`` starts when the cluster is created (or auto-sync is
  turned on) and is terminated when it is deleted (or auto-sync is turned off), like Docker hosts.
- Nodes, services, stacks, networks, volumes, secrets and configs are read from and changed on the
  manager from the API (in a thread, short timeouts). Every change we make is recorded as a
  ``SwarmEvent`` with ``source="api"``: who, what (``event_type`` + ``action``), the target, the
  parameters without values that could be secret (env values, secret data), the result and the error.
- Stacks are deployed with the ``docker`` CLI (``docker stack deploy``, argv only, ``DOCKER_HOST``
  pointing at the cluster) after the compose file was validated here: YAML errors answer 422 with
  the line, a service without an image or with an image the manager does not have answers 422
  naming ``compose.services.<name>.image`` (no registry is assumed reachable).
- Engine failures answer a clear 4xx (404 missing, 409 conflict, 400 refused) or 502 when the
  manager cannot be reached or fails; never 500. ``/swarm/deployments`` belongs to the rollouts router.
"""

from __future__ import annotations

import asyncio
import copy
import os
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, is_dataclass
from datetime import timedelta
from typing import Any

import yaml
from fastapi import APIRouter, HTTPException, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from temporalio.client import WorkflowFailureError, WorkflowUpdateFailedError
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.service import RPCError, RPCStatusCode

from activities.docker_hosts import (
    ACCOUNT_LABEL,
    EngineProblem,
    HostTarget,
    docker_client,
    engine_shared,
    owns,
    scope_of,
    secret_box,
)
from activities.swarm import (
    STACK_LABEL,
    NotASwarmManager,
    cluster_target,
    manager_info,
    node_values,
    running_counts,
    service_values,
)
from adapters.temporal import TemporalGateway
from api import errors, safe_parse
from api.deps import Caller, CurrentCaller, SessionDep, SettingsDep, TemporalDep, WriterCaller
from api.docker_schemas import SyncCountsPublic
from api.routes.docker import (
    EngineRefused,
    _account_masker,
    _check_endpoint,
    _not_found,
    _problem,
    _reserved_labels,
    _scope,
    create_owned_volume,
    endpoint_policy_refusal,
)
from api.swarm_schemas import (
    ClusterCreate,
    ClusterPublic,
    ClustersPublic,
    ClusterSyncPublic,
    ClusterTestPublic,
    ClusterUpdate,
    NetworkPublic,
    NetworksPublic,
    NodePublic,
    NodesPublic,
    NodeUpdate,
    ServiceCreate,
    ServiceDetailPublic,
    ServiceLogsPublic,
    ServicePublic,
    ServiceScale,
    ServicesPublic,
    ServiceUpdate,
    StackDeploy,
    StackDetailPublic,
    StackPublic,
    StacksPublic,
    SwarmEventPublic,
    SwarmEventsPublic,
    SwarmNetworkCreate,
    SwarmObjectCreate,
    SwarmObjectPublic,
    SwarmObjectsPublic,
    TaskPublic,
    TasksPublic,
    UpdateConfigIn,
    VolumeCreate,
    VolumePublic,
    VolumesPublic,
)
from db.models import (
    ServiceRevision,
    SwarmCluster,
    SwarmDeployment,
    SwarmEvent,
    SwarmNode,
    SwarmService,
    SwarmStack,
)
from services.container_specs import RESERVED_LABEL_PREFIX, check_compose, require_public_registries
from settings import Settings
from workflows.swarm_sync import SwarmSyncInput, SwarmSyncWorkflow, swarm_sync_workflow_id

router = APIRouter(prefix="/swarm", tags=["swarm"])

SYNC_WAIT_SECONDS = 60.0
SINGLE_ROUND_TIMEOUT = timedelta(minutes=10)
STACK_CLI_TIMEOUT_SECONDS = 180
MAX_LOG_BYTES = 1024 * 1024
#: A cluster with a rollout in one of these states is not deleted (its workflow still works on it).
ACTIVE_DEPLOYMENT_STATUSES = ("pending", "progressing", "paused", "promoting")
_NANO = 1_000_000_000
_STATUS_OF = {"not_found": status.HTTP_404_NOT_FOUND, "conflict": status.HTTP_409_CONFLICT,
              "forbidden": status.HTTP_403_FORBIDDEN,
              "bad_request": status.HTTP_400_BAD_REQUEST, "unreachable": status.HTTP_502_BAD_GATEWAY,
              "engine_error": status.HTTP_502_BAD_GATEWAY}


def _http(problem: EngineProblem) -> HTTPException:
    return HTTPException(_STATUS_OF.get(problem.kind, status.HTTP_502_BAD_GATEWAY), problem.message)


def _classify(exc: BaseException, endpoint: str) -> EngineProblem | None:
    if isinstance(exc, NotASwarmManager):
        return EngineProblem("conflict", str(exc))
    return _problem(exc, endpoint)


# ---- clusters: rows ----------------------------------------------------------------------------------


def _cluster(session: Session, caller: Caller, cluster_id: int) -> SwarmCluster:
    row = session.scalar(select(SwarmCluster).where(SwarmCluster.id == cluster_id,
                                                    SwarmCluster.account_id == caller.account_id))
    if row is None:
        raise errors.not_found("swarm cluster")
    return row


def _counts(session: Session, model: Any, ids: list[int]) -> dict[int, int]:
    if not ids:
        return {}
    return dict(session.execute(select(model.cluster_id, func.count()).where(model.cluster_id.in_(ids))
                                .group_by(model.cluster_id)).all())


def _cluster_public(row: SwarmCluster, temporal: TemporalGateway, nodes: int, services: int) -> ClusterPublic:
    return ClusterPublic(
        id=row.id, name=row.name, endpoint=row.endpoint, environment=row.environment, status=row.status,
        swarm_id=row.swarm_id, auto_sync=row.auto_sync, sync_interval_seconds=row.sync_interval_seconds,
        consecutive_failures=row.consecutive_failures, last_error=row.last_error, last_synced_at=row.last_synced_at,
        metrics=dict(row.metrics or {}), tls_configured=bool(row.encrypted_tls_cert or row.encrypted_tls_ca),
        workflow_id=row.workflow_id, temporal_ui_url=temporal.ui_url(row.workflow_id) if row.workflow_id else None,
        nodes=nodes, services=services, created_at=row.created_at, updated_at=row.updated_at)


def _show_cluster(session: Session, caller: Caller, temporal: TemporalGateway, cluster_id: int) -> ClusterPublic:
    row = _cluster(session, caller, cluster_id)
    return _cluster_public(row, temporal, _counts(session, SwarmNode, [row.id]).get(row.id, 0),
                           _counts(session, SwarmService, [row.id]).get(row.id, 0))


def _record(session: Session, caller: Caller, cluster_id: int, change: _Change,
            problem: EngineProblem | None) -> None:
    """One ``SwarmEvent`` (source ``api``) for a change we made or tried."""
    session.rollback()
    payload: dict[str, Any] = {"params": change.params}
    if problem is not None:
        payload["error"] = problem.message
    session.add(SwarmEvent(account_id=caller.account_id, cluster_id=cluster_id, source="api",
                           event_type=change.kind, action=change.action, actor_id=change.target[:200],
                           user_id=caller.user_id, result="failure" if problem else "success", payload=payload))
    session.commit()


def _tls_changes(body: ClusterCreate | ClusterUpdate, settings: Settings, fields: set[str]) -> dict[str, bytes | None]:
    box = secret_box(settings)
    return {f"encrypted_{name}": (box.encrypt(getattr(body, name)) if getattr(body, name) else None)
            for name in ("tls_ca", "tls_cert", "tls_key") if name in fields}


# ---- clusters: the sync workflow ------------------------------------------------------------------------


def _sync_input(row: SwarmCluster, single_round: bool = False) -> SwarmSyncInput:
    return SwarmSyncInput(cluster_id=row.id, account_id=row.account_id, interval_seconds=row.sync_interval_seconds,
                          single_round=single_round)


async def _start_sync(temporal: TemporalGateway, settings: Settings, row: SwarmCluster) -> str:
    workflow_id = swarm_sync_workflow_id(row.id)
    client = await temporal.client()
    await client.start_workflow(SwarmSyncWorkflow.run, _sync_input(row), id=workflow_id,
                                task_queue=settings.task_queue,
                                id_conflict_policy=WorkflowIDConflictPolicy.TERMINATE_EXISTING)
    return workflow_id


async def _stop_sync(temporal: TemporalGateway, cluster_id: int, reason: str) -> None:
    client = await temporal.client()
    try:
        await client.get_workflow_handle(swarm_sync_workflow_id(cluster_id)).terminate(reason=reason)
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:
            raise


async def _signal(temporal: TemporalGateway, cluster_id: int, signal: Any, *args: Any) -> None:
    client = await temporal.client()
    try:
        await client.get_workflow_handle(swarm_sync_workflow_id(cluster_id)).signal(signal, *args)
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:
            raise


def _temporal_down(what: str) -> HTTPException:
    return HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, f"Temporal is unavailable; {what}")


def _check_tls_pair(cert_set: bool, key_set: bool) -> None:
    if cert_set != key_set:
        raise errors.field_error(["tls_key" if cert_set else "tls_cert"],
                                 "a client certificate and its key come together")


# ---- clusters: routes -------------------------------------------------------------------------------------


@router.get("/clusters", response_model=ClustersPublic)
def list_clusters(session: SessionDep, caller: CurrentCaller, temporal: TemporalDep,
                  environment: str | None = Query(None, max_length=20),
                  status_filter: str | None = Query(None, alias="status", max_length=20),
                  limit: int = Query(100, ge=1, le=500), offset: int = Query(0, ge=0)) -> ClustersPublic:
    query = select(SwarmCluster).where(SwarmCluster.account_id == caller.account_id)
    if environment:
        query = query.where(SwarmCluster.environment == environment)
    if status_filter:
        query = query.where(SwarmCluster.status == status_filter)
    count = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = list(session.scalars(query.order_by(SwarmCluster.id).limit(limit).offset(offset)))
    ids = [r.id for r in rows]
    nodes, services = _counts(session, SwarmNode, ids), _counts(session, SwarmService, ids)
    return ClustersPublic(data=[_cluster_public(r, temporal, nodes.get(r.id, 0), services.get(r.id, 0))
                                for r in rows], count=count)


@router.post("/clusters", response_model=ClusterPublic, status_code=status.HTTP_201_CREATED)
async def create_cluster(body: ClusterCreate, session: SessionDep, caller: WriterCaller, settings: SettingsDep,
                         temporal: TemporalDep) -> ClusterPublic:
    """Register a swarm by one manager's endpoint; with auto-sync its ``SwarmSyncWorkflow`` starts at once."""
    _check_tls_pair(bool(body.tls_cert), bool(body.tls_key))
    await _check_endpoint(settings, body.endpoint)

    def insert() -> SwarmCluster:
        row = SwarmCluster(account_id=caller.account_id, name=body.name, endpoint=body.endpoint,
                           environment=body.environment, auto_sync=body.auto_sync,
                           sync_interval_seconds=body.sync_interval_seconds, status="pending", metrics={},
                           **_tls_changes(body, settings, body.model_fields_set))
        session.add(row)
        try:
            session.commit()
        except IntegrityError:
            session.rollback()
            raise errors.conflict(f"a swarm cluster named {body.name!r} already exists") from None
        return row

    row = await run_in_threadpool(insert)
    if row.auto_sync:
        try:
            workflow_id = await _start_sync(temporal, settings, row)
        except RPCError:
            await run_in_threadpool(lambda: (session.delete(row), session.commit()))
            raise _temporal_down("the cluster was not created (its sync workflow could not start)") from None

        def remember() -> None:
            row.workflow_id = workflow_id
            session.commit()

        await run_in_threadpool(remember)
    return await run_in_threadpool(_show_cluster, session, caller, temporal, row.id)


@router.get("/clusters/{cluster_id}", response_model=ClusterPublic)
def show_cluster(cluster_id: int, session: SessionDep, caller: CurrentCaller, temporal: TemporalDep) -> ClusterPublic:
    return _show_cluster(session, caller, temporal, cluster_id)


@router.patch("/clusters/{cluster_id}", response_model=ClusterPublic)
async def update_cluster(cluster_id: int, body: ClusterUpdate, session: SessionDep, caller: WriterCaller,
                         settings: SettingsDep, temporal: TemporalDep) -> ClusterPublic:
    """Only the fields sent change; the sync workflow follows (started, stopped, re-timed, woken)."""
    fields = body.model_fields_set
    row = await run_in_threadpool(_cluster, session, caller, cluster_id)
    _check_tls_pair(row.encrypted_tls_cert is not None if "tls_cert" not in fields else bool(body.tls_cert),
                    row.encrypted_tls_key is not None if "tls_key" not in fields else bool(body.tls_key))
    if "endpoint" in fields and body.endpoint != row.endpoint:
        await _check_endpoint(settings, body.endpoint or "")
    was_auto, old_interval, old_endpoint = row.auto_sync, row.sync_interval_seconds, row.endpoint
    tls = _tls_changes(body, settings, fields)

    def apply() -> SwarmCluster:
        for name in ("name", "endpoint", "environment", "auto_sync", "sync_interval_seconds"):
            if name in fields:
                setattr(row, name, getattr(body, name))
        for name, value in tls.items():
            setattr(row, name, value)
        if "auto_sync" in fields and not body.auto_sync:
            row.workflow_id = None
        try:
            session.commit()
        except IntegrityError:
            session.rollback()
            raise errors.conflict(f"a swarm cluster named {body.name!r} already exists") from None
        return row

    row = await run_in_threadpool(apply)
    try:
        if row.auto_sync and not was_auto:
            workflow_id = await _start_sync(temporal, settings, row)

            def remember() -> None:
                row.workflow_id = workflow_id
                session.commit()

            await run_in_threadpool(remember)
        elif was_auto and not row.auto_sync:
            await _stop_sync(temporal, row.id, "auto-sync turned off")
        elif row.auto_sync:
            if row.sync_interval_seconds != old_interval:
                await _signal(temporal, row.id, SwarmSyncWorkflow.set_interval, row.sync_interval_seconds)
            if row.endpoint != old_endpoint or tls:
                await _signal(temporal, row.id, SwarmSyncWorkflow.sync_now)
    except RPCError:
        raise _temporal_down("the cluster was saved but its sync workflow did not take the change yet") from None
    return await run_in_threadpool(_show_cluster, session, caller, temporal, row.id)


@router.delete("/clusters/{cluster_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_cluster(cluster_id: int, session: SessionDep, caller: WriterCaller, temporal: TemporalDep) -> Response:
    """Stop the sync workflow, then forget the cluster and everything we stored about it (nothing
    on the swarm itself is touched)."""
    def check() -> None:
        _cluster(session, caller, cluster_id)
        active = session.scalar(select(func.count()).select_from(SwarmDeployment).where(
            SwarmDeployment.cluster_id == cluster_id, SwarmDeployment.status.in_(ACTIVE_DEPLOYMENT_STATUSES)))
        session.rollback()
        if active:
            raise errors.conflict(f"the cluster has {active} rollout(s) in progress: abort or finish them first")

    await run_in_threadpool(check)
    try:
        await _stop_sync(temporal, cluster_id, "cluster deleted")
    except RPCError:
        raise _temporal_down("the cluster was not deleted (its sync workflow could not be stopped)") from None

    def remove() -> None:
        # Explicit, children first: SQLite does not enforce ON DELETE CASCADE without its pragma.
        for model in (SwarmEvent, SwarmDeployment, ServiceRevision, SwarmNode, SwarmService, SwarmStack):
            session.execute(delete(model).where(model.cluster_id == cluster_id,
                                                model.account_id == caller.account_id))
        session.delete(_cluster(session, caller, cluster_id))
        session.commit()

    await run_in_threadpool(remove)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/clusters/{cluster_id}/test", response_model=ClusterTestPublic,
             responses={409: {"description": "the endpoint's engine is not a swarm manager"}})
async def test_cluster(cluster_id: int, session: SessionDep, caller: WriterCaller,
                       settings: SettingsDep) -> ClusterTestPublic:
    """Ping the manager and read the swarm: ``ok=false`` when it cannot be reached, 409 when the
    engine answers but is not a swarm manager. Recorded as ``cluster.test``."""
    target = await run_in_threadpool(_target_of, session, caller, settings, cluster_id)
    change = _Change("cluster", "test", target.endpoint, {})

    def probe() -> ClusterTestPublic:
        with docker_client(target) as client:
            client.api.ping()
            info = manager_info(client)
            swarm = client.api.inspect_swarm()
            nodes = client.api.nodes()
        return ClusterTestPublic(
            ok=True, swarm_id=swarm.get("ID"), node_id=(info.get("Swarm") or {}).get("NodeID"), is_manager=True,
            nodes=len(nodes), managers=sum(1 for n in nodes if (n.get("Spec") or {}).get("Role") == "manager"),
            docker_version=info.get("ServerVersion"))

    try:
        result = await run_in_threadpool(probe)
    except Exception as exc:  # noqa: BLE001 - classified; anything else re-raised
        problem = _classify(exc, target.endpoint)
        if problem is None:
            raise
        await run_in_threadpool(_record, session, caller, cluster_id, change, problem)
        if isinstance(exc, NotASwarmManager):
            raise _http(problem) from None
        return ClusterTestPublic(ok=False, is_manager=None, error=problem.message)

    def remember() -> None:
        row = _cluster(session, caller, cluster_id)
        row.swarm_id = result.swarm_id
        session.commit()

    await run_in_threadpool(remember)
    await run_in_threadpool(_record, session, caller, cluster_id, change, None)
    return result


def _as_dict(value: Any) -> dict[str, Any]:
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    return dict(value or {})


@router.post("/clusters/{cluster_id}/sync", response_model=ClusterSyncPublic,
             responses={202: {"description": "the round is still running after the wait"}})
async def sync_cluster(cluster_id: int, session: SessionDep, caller: WriterCaller, settings: SettingsDep,
                       temporal: TemporalDep) -> Any:
    """Run one sync round now through the cluster's workflow and answer its counts (the looping
    workflow's ``sync_round`` update, or a one-round ``swarm-sync-<id>`` when auto-sync is off)."""
    def load() -> SwarmCluster:
        row = _cluster(session, caller, cluster_id)
        session.expunge(row)
        return row

    row = await run_in_threadpool(load)
    workflow_id = swarm_sync_workflow_id(row.id)
    client = await temporal.client()
    try:
        if row.auto_sync:
            waiting = _round_through_update(client, settings, row)
        else:
            handle = await client.start_workflow(
                SwarmSyncWorkflow.run, _sync_input(row, single_round=True), id=workflow_id,
                task_queue=settings.task_queue, id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                execution_timeout=SINGLE_ROUND_TIMEOUT)
            waiting = handle.result()
        result = await asyncio.wait_for(waiting, SYNC_WAIT_SECONDS)
    except TimeoutError:
        answer = ClusterSyncPublic(status="running", workflow_id=workflow_id,
                                   temporal_ui_url=temporal.ui_url(workflow_id))
        return JSONResponse(answer.model_dump(mode="json"), status_code=status.HTTP_202_ACCEPTED)
    except (WorkflowFailureError, WorkflowUpdateFailedError) as exc:
        raise HTTPException(status.HTTP_502_BAD_GATEWAY, f"the sync round did not finish: {exc.cause}") from None
    except RPCError:
        raise _temporal_down("no sync round was run") from None
    values = _as_dict(result)
    return ClusterSyncPublic(
        status="completed", workflow_id=workflow_id, temporal_ui_url=temporal.ui_url(workflow_id), ok=values["ok"],
        cluster_status=values.get("cluster_status") or None, nodes=SyncCountsPublic(**values["nodes"]),
        services=SyncCountsPublic(**values["services"]), stacks_updated=values["stacks_updated"],
        events=values["events"], rows_written=values["rows_written"],
        consecutive_failures=values.get("consecutive_failures"), error=values.get("error"))


async def _round_through_update(client: Any, settings: Settings, row: SwarmCluster) -> Any:
    handle = client.get_workflow_handle(swarm_sync_workflow_id(row.id))
    try:
        return await handle.execute_update(SwarmSyncWorkflow.sync_round)
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:
            raise
    handle = await client.start_workflow(SwarmSyncWorkflow.run, _sync_input(row), id=swarm_sync_workflow_id(row.id),
                                         task_queue=settings.task_queue,
                                         id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING)
    return await handle.execute_update(SwarmSyncWorkflow.sync_round)


# ---- talking to the manager ---------------------------------------------------------------------------------


def _target_of(session: Session, caller: Caller, settings: Settings, cluster_id: int) -> HostTarget:
    """The manager, scoped to the caller's account when the engine is shared (see
    :mod:`activities.docker_hosts`); 422 on ``endpoint`` when the allowlist no longer allows it."""
    row = _cluster(session, caller, cluster_id)
    refusal = endpoint_policy_refusal(settings, row.endpoint)
    if refusal:
        session.rollback()
        raise errors.field_error(["endpoint"], refusal, "endpoint")
    shared = engine_shared(session, settings, caller.account_id, row.endpoint)
    target = cluster_target(row, secret_box(settings), caller.account_id if shared else None)
    session.rollback()  # no transaction stays open while the engine answers
    return target


def _own_service(client: Any, name: str) -> dict[str, Any]:
    """``inspect_service``; on a shared engine 404 unless the service carries the caller's label."""
    found = client.api.inspect_service(name)
    if not owns(_scope(client), (found.get("Spec") or {}).get("Labels")):
        raise _not_found("service", name)
    return found


def _own_swarm_object(client: Any, kind: str, ident: str) -> str:
    """A network, volume, secret or config id/name; on a shared engine 404 unless it is the caller's."""
    target = _scope(client)
    if target.scope_account is None:
        return ident
    found = getattr(client.api, f"inspect_{kind}")(ident)
    labels = found.get("Labels") if kind in ("network", "volume") else (found.get("Spec") or {}).get("Labels")
    if not owns(target, labels):
        raise _not_found(kind, ident)
    return found.get("Id") or found.get("ID") or found.get("Name") or ident


def _refuse_on_shared(client: Any, settings: Settings, what: str) -> None:
    """Nodes carry every account's tasks: on a shared engine only the operator changes them
    (in development the operator is the only user)."""
    if _scope(client).scope_account is not None and settings.environment != "development":
        raise EngineRefused("forbidden", f"{what} of a shared engine belong to its operator: refused")


@dataclass
class _Change:
    """A change to record as a ``SwarmEvent`` around an engine call."""

    kind: str  # node | service | stack | network | volume | secret | config | cluster
    action: str
    target: str
    params: dict[str, Any]


async def _engine(session: Session, caller: Caller, settings: Settings, cluster_id: int, call: Callable[[Any], Any],
                  change: _Change | None = None, timeout: float | None = None) -> Any:
    """Run ``call(client)`` against the manager in a thread; record ``change``; map engine failures."""
    target = await run_in_threadpool(_target_of, session, caller, settings, cluster_id)

    def run() -> Any:
        with (docker_client(target) if timeout is None else docker_client(target, timeout=timeout)) as client:
            client.devops_target = target
            return call(client)

    try:
        result = await run_in_threadpool(run)
    except Exception as exc:  # noqa: BLE001 - classified; anything else re-raised
        problem = _classify(exc, target.endpoint)
        if problem is None:
            raise
        if change is not None:
            await run_in_threadpool(_record, session, caller, cluster_id, change, problem)
        raise _http(problem) from None
    if change is not None:
        await run_in_threadpool(_record, session, caller, cluster_id, change, None)
    return result


def _redact_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """Environment values may hold secrets: only their names leave the API."""
    spec = copy.deepcopy(spec)
    container = (spec.get("TaskTemplate") or {}).get("ContainerSpec") or {}
    if container.get("Env"):
        container["Env"] = [e.split("=", 1)[0] + "=***" if "=" in e else e for e in container["Env"]]
    return spec


# ---- nodes ------------------------------------------------------------------------------------------------------


def _node_public(node: dict[str, Any]) -> NodePublic:
    return NodePublic(node_id=node["ID"], leader=bool((node.get("ManagerStatus") or {}).get("Leader")),
                      **node_values(node))


@router.get("/clusters/{cluster_id}/nodes", response_model=NodesPublic)
async def list_nodes(cluster_id: int, session: SessionDep, caller: CurrentCaller, settings: SettingsDep,
                     live: bool = False) -> NodesPublic:
    """The swarm's nodes from the last sync (``?live=true``: asked from the manager now)."""
    if live:
        found = await _engine(session, caller, settings, cluster_id, lambda c: c.api.nodes())
        return NodesPublic(data=[_node_public(n) for n in found], count=len(found), live=True)

    def load() -> list[NodePublic]:
        row = _cluster(session, caller, cluster_id)
        return [NodePublic(node_id=n.node_id, hostname=n.hostname, role=n.role, availability=n.availability,
                           state=n.state, address=n.address, engine_version=n.engine_version,
                           labels=dict(n.labels or {}), synced_at=n.synced_at)
                for n in session.scalars(select(SwarmNode).where(SwarmNode.cluster_id == row.id,
                                                                 SwarmNode.account_id == caller.account_id)
                                         .order_by(SwarmNode.id))]

    rows = await run_in_threadpool(load)
    return NodesPublic(data=rows, count=len(rows), live=False)


@router.get("/clusters/{cluster_id}/nodes/{node_id}")
async def inspect_node(cluster_id: int, node_id: str, session: SessionDep, caller: CurrentCaller,
                       settings: SettingsDep) -> dict[str, Any]:
    """The engine's ``docker node inspect``."""
    return await _engine(session, caller, settings, cluster_id, lambda c: c.api.inspect_node(node_id))


@router.patch("/clusters/{cluster_id}/nodes/{node_id}", response_model=NodePublic)
async def update_node(cluster_id: int, node_id: str, body: NodeUpdate, session: SessionDep, caller: WriterCaller,
                      settings: SettingsDep) -> NodePublic:
    """Availability (active / pause / drain) and labels, written with the node's current version."""
    fields = body.model_fields_set

    def call(client: Any) -> NodePublic:
        _refuse_on_shared(client, settings, "nodes")
        node = client.api.inspect_node(node_id)
        spec = copy.deepcopy(node.get("Spec") or {})
        if "availability" in fields:
            spec["Availability"] = body.availability
        if "labels" in fields:
            spec["Labels"] = dict(body.labels or {})
        client.api.update_node(node["ID"], node["Version"]["Index"], spec)
        return _node_public(client.api.inspect_node(node["ID"]))

    return await _engine(session, caller, settings, cluster_id, call,
                         _Change("node", "update", node_id, body.model_dump(exclude_unset=True)))


@router.delete("/clusters/{cluster_id}/nodes/{node_id}", status_code=status.HTTP_204_NO_CONTENT)
async def remove_node(cluster_id: int, node_id: str, session: SessionDep, caller: WriterCaller,
                      settings: SettingsDep, force: bool = False) -> Response:
    """Remove a node from the swarm (a node still up only with ``force``). The swarm's only
    manager is never removed: that would destroy the swarm (409, the engine is not asked)."""
    def call(client: Any) -> None:
        _refuse_on_shared(client, settings, "nodes")
        node = client.api.inspect_node(node_id)
        if (node.get("Spec") or {}).get("Role") == "manager":
            managers = [n for n in client.api.nodes() if (n.get("Spec") or {}).get("Role") == "manager"]
            if len(managers) <= 1:
                raise EngineRefused("conflict", f"node {node_id} is the swarm's only manager: removing it would "
                                                "leave the swarm without a manager; promote another node first")
        client.api.remove_node(node["ID"], force=force)

    await _engine(session, caller, settings, cluster_id, call, _Change("node", "remove", node_id, {"force": force}))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# ---- services ----------------------------------------------------------------------------------------------------


def _ns(seconds: float) -> int:
    return int(round(seconds * _NANO))


def _update_config(config: UpdateConfigIn) -> dict[str, Any]:
    return {"Parallelism": config.parallelism, "Delay": _ns(config.delay), "FailureAction": config.failure_action,
            "Monitor": _ns(config.monitor), "MaxFailureRatio": config.max_failure_ratio, "Order": config.order}


def _env_list(env: dict[str, str]) -> list[str]:
    return [f"{k}={v}" for k, v in env.items()]


def service_spec(body: ServiceCreate) -> dict[str, Any]:
    """The engine's ``ServiceSpec`` for a create request (pure; ``command`` becomes the args, as
    ``docker service create IMAGE COMMAND...`` does)."""
    container: dict[str, Any] = {"Image": body.image, "Env": _env_list(body.env)}
    if body.command:
        container["Args"] = list(body.command)
    if body.healthcheck is not None:
        check = body.healthcheck
        container["Healthcheck"] = {"Test": list(check.test), "Interval": _ns(check.interval),
                                    "Timeout": _ns(check.timeout), "Retries": check.retries,
                                    "StartPeriod": _ns(check.start_period)}
    spec: dict[str, Any] = {
        "Name": body.name, "Labels": dict(body.labels),
        "TaskTemplate": {"ContainerSpec": container, "Networks": [{"Target": n} for n in body.networks]},
        "Mode": {"Replicated": {"Replicas": body.replicas}} if body.mode == "replicated" else {"Global": {}},
    }
    if body.update_config is not None:
        spec["UpdateConfig"] = _update_config(body.update_config)
    if body.rollback_config is not None:
        spec["RollbackConfig"] = _update_config(body.rollback_config)
    if body.ports:
        spec["EndpointSpec"] = {"Ports": [
            {"Protocol": p.protocol, "TargetPort": p.target, "PublishMode": p.mode,
             **({"PublishedPort": p.published} if p.published else {})} for p in body.ports]}
    return spec


def _check_service_networks(session: Session, account_id: int, networks: list[str]) -> None:
    """The ``host`` network needs the account's container policy, as for templates."""
    from services.container_specs import POLICY_HINT
    from services.containers import policy_view

    allowed = policy_view(session, account_id).allow_host_network
    session.rollback()
    for index, network in enumerate(networks):
        if network == "host" and not allowed:
            raise errors.field_error(["networks", index], f"the host network is refused: {POLICY_HINT} "
                                                          "(allow_host_network)")


def _create_params(body: ServiceCreate) -> dict[str, Any]:
    params = body.model_dump(mode="json", exclude={"env"})
    params["env_names"] = sorted(body.env)
    return params


def _task_public(task: dict[str, Any]) -> TaskPublic:
    state = task.get("Status") or {}
    container = state.get("ContainerStatus") or {}
    spec = ((task.get("Spec") or {}).get("ContainerSpec") or {})
    return TaskPublic(task_id=task["ID"], service_id=task.get("ServiceID") or "", slot=task.get("Slot"),
                      node_id=task.get("NodeID"), desired_state=task.get("DesiredState") or "",
                      state=state.get("State") or "", message=state.get("Message"), error=state.get("Err"),
                      exit_code=container.get("ExitCode"), container_id=container.get("ContainerID"),
                      image=spec.get("Image") or "", created_at=task.get("CreatedAt"), updated_at=task.get("UpdatedAt"))


def _tasks_of(client: Any, service_ids: list[str]) -> list[dict[str, Any]]:
    tasks = []
    for service_id in service_ids:
        tasks.extend(client.api.tasks(filters={"service": service_id}))
    return sorted(tasks, key=lambda t: (t.get("ServiceID") or "", t.get("Slot") or 0, t.get("CreatedAt") or ""))


def _service_public(service: dict[str, Any], tasks: list[dict[str, Any]]) -> ServicePublic:
    running = running_counts(tasks).get(service["ID"], 0)
    return ServicePublic(service_id=service["ID"], **service_values(service, running))


def _service_detail(client: Any, name: str) -> ServiceDetailPublic:
    service = _own_service(client, name)
    tasks = _tasks_of(client, [service["ID"]])
    previous = service.get("PreviousSpec")
    return ServiceDetailPublic(service=_service_public(service, tasks), spec=_redact_spec(service.get("Spec") or {}),
                               previous_spec=_redact_spec(previous) if previous else None,
                               version=int((service.get("Version") or {}).get("Index") or 0),
                               update_status=service.get("UpdateStatus"), tasks=[_task_public(t) for t in tasks])


def _update_service(client: Any, name: str, mutate: Callable[[dict[str, Any]], None] | None,
                    rollback: bool = False) -> None:
    """Write the service's whole spec back (changed by ``mutate``) with its current version, or
    ask Swarm to go back to its previous spec; the engine's own endpoint, not a merge done here."""
    api = client.api
    current = _own_service(client, name)
    spec = copy.deepcopy(current.get("Spec") or {})
    params: dict[str, Any] = {"version": current["Version"]["Index"]}
    if rollback:
        if not current.get("PreviousSpec"):
            raise EngineRefused("conflict", f"service {name} has no previous spec to roll back to")
        params["rollback"] = "previous"
    if mutate is not None:
        mutate(spec)
    api._result(api._post_json(api._url("/services/{0}/update", current["ID"]), data=spec, params=params),
                json=True)


@router.get("/clusters/{cluster_id}/services", response_model=ServicesPublic)
async def list_services(cluster_id: int, session: SessionDep, caller: CurrentCaller, settings: SettingsDep,
                        live: bool = False, stack: str | None = Query(None, max_length=200)) -> ServicesPublic:
    """The swarm's services from the last sync (``?live=true``: asked from the manager now)."""
    if live:
        def call(client: Any) -> list[ServicePublic]:
            tasks = client.api.tasks()
            return [_service_public(s, tasks) for s in client.api.services(filters=scope_of(_scope(client)) or None)]

        rows = await _engine(session, caller, settings, cluster_id, call)
    else:
        def load() -> list[ServicePublic]:
            row = _cluster(session, caller, cluster_id)
            shared = engine_shared(session, settings, caller.account_id, row.endpoint)
            return [ServicePublic(service_id=s.service_id, name=s.name, image=s.image, mode=s.mode,
                                  replicas=s.replicas, running_tasks=s.running_tasks,
                                  update_config=dict(s.update_config or {}), labels=dict(s.labels or {}),
                                  ports=list(s.ports or []), stack_name=s.stack_name, synced_at=s.synced_at)
                    for s in session.scalars(select(SwarmService).where(
                        SwarmService.cluster_id == row.id, SwarmService.account_id == caller.account_id)
                        .order_by(SwarmService.name))
                    if not shared or (s.labels or {}).get(ACCOUNT_LABEL) == str(caller.account_id)]

        rows = await run_in_threadpool(load)
    if stack:
        rows = [r for r in rows if r.stack_name == stack]
    return ServicesPublic(data=rows, count=len(rows), live=live)


@router.post("/clusters/{cluster_id}/services", response_model=ServiceDetailPublic,
             status_code=status.HTTP_201_CREATED)
async def create_service(cluster_id: int, body: ServiceCreate, session: SessionDep, caller: WriterCaller,
                         settings: SettingsDep) -> ServiceDetailPublic:
    """``docker service create``; env values are not recorded, networks must exist (422). The
    service is labelled ``devops.account=<account id>``; the ``host`` network needs the account's
    container policy (allow_host_network), like templates."""
    await require_public_registries(settings.private_targets_allowed, (body.image, ["image"]))
    _reserved_labels(body.labels)
    await run_in_threadpool(_check_service_networks, session, caller.account_id, body.networks)
    spec = service_spec(body)
    spec["Labels"][ACCOUNT_LABEL] = str(caller.account_id)

    def call(client: Any) -> ServiceDetailPublic:
        from docker.errors import NotFound

        for index, network in enumerate(body.networks):
            try:
                found = client.api.inspect_network(network)
            except NotFound:
                found = None
            # on a shared engine another account's network does not exist either (the host
            # network is the engine's: the policy check above decided)
            if found is None or (found.get("Name") != "host" and not owns(_scope(client), found.get("Labels"))):
                raise errors.field_error(["networks", index], f"network {network!r} does not exist on the swarm")
        api = client.api
        api._result(api._post_json(api._url("/services/create"), data=spec), json=True)
        return _service_detail(client, body.name)

    return await _engine(session, caller, settings, cluster_id, call,
                         _Change("service", "create", body.name, _create_params(body)))


@router.get("/clusters/{cluster_id}/services/{name}", response_model=ServiceDetailPublic)
async def show_service(cluster_id: int, name: str, session: SessionDep, caller: CurrentCaller,
                       settings: SettingsDep) -> ServiceDetailPublic:
    """The service's spec (env values as ``***``), its previous spec, update status and tasks."""
    return await _engine(session, caller, settings, cluster_id, lambda c: _service_detail(c, name))


@router.patch("/clusters/{cluster_id}/services/{name}", response_model=ServiceDetailPublic)
async def update_service(cluster_id: int, name: str, body: ServiceUpdate, session: SessionDep, caller: WriterCaller,
                         settings: SettingsDep) -> ServiceDetailPublic:
    """Change image, env, command, replicas, update config or labels; Swarm rolls the tasks with
    the service's update config and keeps the old spec as the previous one (for rollback)."""
    fields = body.model_fields_set
    if "image" in fields:
        await require_public_registries(settings.private_targets_allowed, (body.image, ["image"]))
    if "labels" in fields:
        _reserved_labels(body.labels or {})

    def mutate(spec: dict[str, Any]) -> None:
        container = spec.setdefault("TaskTemplate", {}).setdefault("ContainerSpec", {})
        if "image" in fields:
            container["Image"] = body.image
        if "env" in fields:
            container["Env"] = _env_list(body.env or {})
        if "command" in fields:
            container.pop("Args", None)
            if body.command:
                container["Args"] = list(body.command)
        if "replicas" in fields:
            _set_replicas(spec, name, body.replicas or 0)
        if "update_config" in fields and body.update_config is not None:
            spec["UpdateConfig"] = _update_config(body.update_config)
        if "labels" in fields:
            # the service keeps its owner whatever labels are sent
            owner = (spec.get("Labels") or {}).get(ACCOUNT_LABEL) or str(caller.account_id)
            spec["Labels"] = {**(body.labels or {}), ACCOUNT_LABEL: owner}

    def call(client: Any) -> ServiceDetailPublic:
        _update_service(client, name, mutate)
        return _service_detail(client, name)

    params = body.model_dump(mode="json", exclude_unset=True, exclude={"env"})
    if "env" in fields:
        params["env_names"] = sorted(body.env or {})
    return await _engine(session, caller, settings, cluster_id, call, _Change("service", "update", name, params))


def _set_replicas(spec: dict[str, Any], name: str, replicas: int) -> None:
    mode = spec.get("Mode") or {}
    if "Replicated" not in mode:
        raise EngineRefused("conflict", f"service {name} is not replicated (mode {next(iter(mode), '?')}): "
                                        "it has no replica count to set")
    mode["Replicated"]["Replicas"] = replicas


@router.post("/clusters/{cluster_id}/services/{name}/scale", response_model=ServiceDetailPublic)
async def scale_service(cluster_id: int, name: str, body: ServiceScale, session: SessionDep, caller: WriterCaller,
                        settings: SettingsDep) -> ServiceDetailPublic:
    def call(client: Any) -> ServiceDetailPublic:
        _update_service(client, name, lambda spec: _set_replicas(spec, name, body.replicas))
        return _service_detail(client, name)

    return await _engine(session, caller, settings, cluster_id, call,
                         _Change("service", "scale", name, {"replicas": body.replicas}))


@router.post("/clusters/{cluster_id}/services/{name}/rollback", response_model=ServiceDetailPublic)
async def rollback_service(cluster_id: int, name: str, session: SessionDep, caller: WriterCaller,
                           settings: SettingsDep) -> ServiceDetailPublic:
    """Swarm's own rollback to the service's previous spec (409 when there is none). Rollouts keep
    their own revisions and can go further back."""
    def call(client: Any) -> ServiceDetailPublic:
        _update_service(client, name, None, rollback=True)
        return _service_detail(client, name)

    return await _engine(session, caller, settings, cluster_id, call, _Change("service", "rollback", name, {}))


@router.delete("/clusters/{cluster_id}/services/{name}", status_code=status.HTTP_204_NO_CONTENT)
async def remove_service(cluster_id: int, name: str, session: SessionDep, caller: WriterCaller,
                         settings: SettingsDep) -> Response:
    await _engine(session, caller, settings, cluster_id, lambda c: c.api.remove_service(_own_service(c, name)["ID"]),
                  _Change("service", "remove", name, {}))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/clusters/{cluster_id}/services/{name}/logs", response_model=ServiceLogsPublic)
async def service_logs(cluster_id: int, name: str, session: SessionDep, caller: CurrentCaller,
                       settings: SettingsDep, tail: int | None = Query(None, ge=0, le=100_000)) -> ServiceLogsPublic:
    """stdout and stderr of the service's tasks (the last ``tail`` lines each), at most 1 MB (the end
    kept), with every secret of the account masked (``***``)."""
    def call(client: Any) -> bytes:
        service_id = _own_service(client, name)["ID"]  # a clear 404 first
        kept = b""
        for chunk in client.api.service_logs(service_id, stdout=True, stderr=True, follow=False,
                                             tail="all" if tail is None else tail):
            kept = (kept + chunk)[-MAX_LOG_BYTES:]
        return kept

    raw = await _engine(session, caller, settings, cluster_id, call)
    masker = await run_in_threadpool(_account_masker, session, settings, caller.account_id)
    text = raw.decode("utf-8", errors="replace")
    return ServiceLogsPublic(service=name, tail=tail, logs=masker.mask(text) if masker else text)


@router.get("/clusters/{cluster_id}/services/{name}/tasks", response_model=TasksPublic)
async def service_tasks(cluster_id: int, name: str, session: SessionDep, caller: CurrentCaller,
                        settings: SettingsDep) -> TasksPublic:
    def call(client: Any) -> list[TaskPublic]:
        return [_task_public(t) for t in _tasks_of(client, [_own_service(client, name)["ID"]])]

    tasks = await _engine(session, caller, settings, cluster_id, call)
    return TasksPublic(data=tasks, count=len(tasks))


# ---- stacks ---------------------------------------------------------------------------------------------------------


def validate_compose(text: str) -> dict[str, str]:
    """Check a compose file for ``docker stack deploy`` and answer its images by service (pure).
    Problems raise a 422 on ``compose`` (YAML errors say the line and column)."""
    try:
        # bounded (alias bombs, depth, size): a refusal raises DocumentRefused → 413/422 on `compose`
        document = safe_parse.load_yaml(text, ("body", "compose"))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = " ".join(str(exc.problem or exc.context or "invalid YAML").split())
        raise errors.field_error(["compose"], f"the compose file is not valid YAML: {where}{problem}",
                                 "yaml") from None
    except yaml.YAMLError as exc:
        raise errors.field_error(["compose"], f"the compose file is not valid YAML: {exc}", "yaml") from None
    if not isinstance(document, dict):
        raise errors.field_error(["compose"], "a compose file is a mapping with a `services` key")
    version = document.get("version")
    if version is not None and (not isinstance(version, (str, int, float)) or not str(version).startswith("3")):
        raise errors.field_error(["compose", "version"], "docker stack deploy needs compose file format 3.x "
                                                         f"(version {version!r} given), or no version at all")
    services = document.get("services")
    if not isinstance(services, dict) or not services:
        raise errors.field_error(["compose", "services"], "`services` must map at least one service name to "
                                                          "its definition")
    images: dict[str, str] = {}
    for name, definition in services.items():
        if not isinstance(definition, dict):
            raise errors.field_error(["compose", "services", str(name)], "a service definition is a mapping")
        image = definition.get("image")
        if not isinstance(image, str) or not image.strip():
            raise errors.field_error(["compose", "services", str(name), "image"],
                                     "every service of a stack needs an `image` (a swarm does not build images)")
        images[str(name)] = image.strip()
    return images


def _label_map(value: Any, loc: list[Any], owner: str) -> dict[str, str]:
    """Compose labels (a mapping or a ``KEY=value`` list) with ``devops.account`` added; keys of
    the service's own prefix are refused (422)."""
    if isinstance(value, list):
        pairs = [str(item).split("=", 1) for item in value]
        labels = {pair[0]: pair[1] if len(pair) > 1 else "" for pair in pairs}
    elif isinstance(value, dict):
        labels = {str(k): "" if v is None else str(v) for k, v in value.items()}
    elif value is None:
        labels = {}
    else:
        raise errors.field_error(loc, "labels are a mapping or a list of KEY=value")
    for key in labels:
        if key.startswith(RESERVED_LABEL_PREFIX):
            raise errors.field_error([*loc, key], f"label keys starting with {RESERVED_LABEL_PREFIX!r} are reserved "
                                                  "for the service")
    return {**labels, ACCOUNT_LABEL: owner}


def _externals(document: dict[str, Any]) -> list[tuple[str, str, str]]:
    """``(kind, key, engine name)`` of the top-level networks, volumes, secrets and configs the
    stack uses without creating them (``external``)."""
    found = []
    for kind in ("networks", "volumes", "secrets", "configs"):
        entries = document.get(kind)
        for key, definition in entries.items() if isinstance(entries, dict) else ():
            if not isinstance(definition, dict) or not definition.get("external"):
                continue
            external = definition.get("external")
            name = (external.get("name") if isinstance(external, dict) else None) or definition.get("name") or key
            found.append((kind, str(key), str(name)))
    return found


def _check_externals(client: Any, externals: list[tuple[str, str, str]]) -> None:
    """On a shared engine a stack may only use the account's own existing objects (422 otherwise)."""
    import docker.errors

    target = _scope(client)
    if target.scope_account is None:
        return
    for kind, key, name in externals:
        if kind == "networks" and name in ("host", "ingress", "bridge", "none"):
            continue  # the engine's own networks: the policy check decided about host
        try:
            found = getattr(client.api, f"inspect_{kind[:-1]}")(name)
        except docker.errors.NotFound:
            continue  # the CLI says it is missing
        labels = found.get("Labels") if kind in ("networks", "volumes") else (found.get("Spec") or {}).get("Labels")
        if not owns(target, labels):
            raise errors.field_error(["compose", kind, key], f"external {kind[:-1]} {name!r} does not exist on "
                                                             "the swarm")


def _checked_compose(session: Session, account_id: int, text: str) -> tuple[str, list[tuple[str, str, str]]]:
    """The compose file checked against the account's container policy (422 naming the service and
    key) and returned with ``devops.account`` on every service, its containers, networks and volumes."""
    from api.safe_parse import load_yaml
    from services.containers import policy_view

    document = load_yaml(text, ("body", "compose"))
    problems = check_compose(document, policy_view(session, account_id))
    session.rollback()
    if problems:
        raise errors.unprocessable(problems)
    owner = str(account_id)
    for name, service in document["services"].items():
        loc = ["compose", "services", str(name)]
        service["labels"] = _label_map(service.get("labels"), [*loc, "labels"], owner)
        deploy = service.get("deploy")
        if deploy is None:
            deploy = service["deploy"] = {}
        if not isinstance(deploy, dict):
            raise errors.field_error([*loc, "deploy"], "deploy is a mapping")
        deploy["labels"] = _label_map(deploy.get("labels"), [*loc, "deploy", "labels"], owner)
    for kind in ("networks", "volumes"):
        for key, definition in (document.get(kind) or {}).items() if isinstance(document.get(kind), dict) else ():
            if definition is None:
                definition = document[kind][key] = {}
            if isinstance(definition, dict) and not definition.get("external"):
                definition["labels"] = _label_map(definition.get("labels"), ["compose", kind, str(key), "labels"],
                                                  owner)
    return yaml.safe_dump(document, sort_keys=False), _externals(document)


def _cli_env(target: HostTarget, private_dir: str) -> dict[str, str]:
    """The ``docker`` CLI's environment for the cluster: its endpoint and, for TLS, the PEMs in a
    private directory; nothing else of ours (no inherited DOCKER_* settings)."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": private_dir, "DOCKER_CONFIG": private_dir,
           "DOCKER_HOST": target.endpoint}
    if target.uses_tls:
        for name, content in (("ca.pem", target.tls_ca), ("cert.pem", target.tls_cert), ("key.pem", target.tls_key)):
            if content:
                descriptor = os.open(os.path.join(private_dir, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(descriptor, "w") as handle:
                    handle.write(content)
        env["DOCKER_CERT_PATH"] = private_dir
        env["DOCKER_TLS_VERIFY"] = "1" if target.tls_ca else ""
    return env


def _run_cli(target: HostTarget, argv: list[str], compose: str | None = None) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory(prefix="swarm-cli-") as private_dir:
        env = _cli_env(target, private_dir)
        if compose is not None:
            path = os.path.join(private_dir, "docker-compose.yml")
            with open(path, "w", encoding="utf-8") as handle:
                handle.write(compose)
            argv = [arg if arg != "{compose}" else path for arg in argv]
        return subprocess.run(["docker", *argv], env=env, cwd=private_dir, capture_output=True, text=True,
                              timeout=STACK_CLI_TIMEOUT_SECONDS, check=False)


def _stack_public(row: SwarmStack, with_compose: bool = False) -> StackPublic:
    return StackPublic(id=row.id, name=row.name, status=row.status, services=list(row.services or []),
                       compose=row.compose if with_compose else None, created_at=row.created_at,
                       updated_at=row.updated_at)


def _stack_row(session: Session, caller: Caller, cluster_id: int, name: str) -> SwarmStack | None:
    return session.scalar(select(SwarmStack).where(SwarmStack.cluster_id == cluster_id, SwarmStack.name == name,
                                                   SwarmStack.account_id == caller.account_id))


@router.post("/clusters/{cluster_id}/stacks", response_model=StackPublic, status_code=status.HTTP_201_CREATED)
async def deploy_stack(cluster_id: int, body: StackDeploy, session: SessionDep, caller: WriterCaller,
                       settings: SettingsDep) -> StackPublic:
    """Validate the compose file, check every image is on the manager, then ``docker stack deploy``
    (deploying an existing stack again updates it). The file is kept on the stack's row.
    ``resolve_image`` is the CLI's ``--resolve-image``: ``never`` by default, since images are
    checked on the manager and no registry is assumed reachable to pin digests."""
    images = validate_compose(body.compose)
    await require_public_registries(settings.private_targets_allowed, *(
        (image, ["compose", "services", service, "image"]) for service, image in images.items()))
    labelled, externals = await run_in_threadpool(_checked_compose, session, caller.account_id, body.compose)
    change = _Change("stack", "deploy", body.name, {"services": sorted(images), "images": images})
    target = await run_in_threadpool(_target_of, session, caller, settings, cluster_id)

    def check_images(client: Any) -> None:
        from docker.errors import ImageNotFound

        if _scope(client).scope_account is not None:
            # deploying over another account's stack of the same name would take its services
            existing = client.api.services(filters={"label": f"{STACK_LABEL}={body.name}"})
            if any(not owns(_scope(client), (s.get("Spec") or {}).get("Labels")) for s in existing):
                raise EngineRefused("conflict", f"a stack named {body.name!r} exists on this shared engine and is "
                                                "not this account's: choose another name")
        _check_externals(client, externals)
        for service, image in images.items():
            try:
                client.api.inspect_image(image)
            except ImageNotFound:
                raise errors.field_error(
                    ["compose", "services", service, "image"],
                    f"image {image!r} is not on the manager and no registry is assumed reachable: "
                    "load or build it on the swarm's nodes first") from None

    await _engine(session, caller, settings, cluster_id, check_images)
    done = await run_in_threadpool(_run_cli, target, ["stack", "deploy", "--resolve-image", body.resolve_image,
                                                      "-c", "{compose}", body.name], labelled)
    if done.returncode != 0:
        # The manager answered just before: the CLI refusing is about the file or its services.
        message = " ".join((done.stderr or done.stdout or "docker stack deploy failed").split())[-2000:]
        await run_in_threadpool(_record, session, caller, cluster_id, change, EngineProblem("bad_request", message))
        raise errors.field_error(["compose"], f"docker stack deploy refused the file: {message}", "stack_deploy")
    services = sorted(f"{body.name}_{name}" for name in images)

    def store() -> SwarmStack:
        row = _stack_row(session, caller, cluster_id, body.name)
        if row is None:
            row = SwarmStack(account_id=caller.account_id, cluster_id=cluster_id, name=body.name)
            session.add(row)
        row.compose, row.services, row.status = body.compose, services, "deployed"
        session.commit()
        return row

    row = await run_in_threadpool(store)
    await run_in_threadpool(_record, session, caller, cluster_id, change, None)
    return _stack_public(row, with_compose=True)


@router.get("/clusters/{cluster_id}/stacks", response_model=StacksPublic)
async def list_stacks(cluster_id: int, session: SessionDep, caller: CurrentCaller, settings: SettingsDep,
                      live: bool = False) -> StacksPublic:
    """Stacks we deployed; with ``?live=true`` also those found on the swarm (by the stack label)."""
    def load() -> list[StackPublic]:
        row = _cluster(session, caller, cluster_id)
        return [_stack_public(s) for s in session.scalars(select(SwarmStack).where(
            SwarmStack.cluster_id == row.id, SwarmStack.account_id == caller.account_id).order_by(SwarmStack.name))]

    rows = await run_in_threadpool(load)
    if live:
        found = await _engine(session, caller, settings, cluster_id, lambda c: c.api.services(
            filters={"label": [STACK_LABEL, *scope_of(_scope(c)).get("label", [])]}))
        by_stack: dict[str, list[str]] = {}
        for service in found:
            spec = service.get("Spec") or {}
            by_stack.setdefault((spec.get("Labels") or {})[STACK_LABEL], []).append(spec.get("Name") or "")
        known = {r.name for r in rows}
        rows += [StackPublic(id=None, name=name, status="deployed", services=sorted(names))
                 for name, names in sorted(by_stack.items()) if name not in known]
    return StacksPublic(data=rows, count=len(rows))


@router.get("/clusters/{cluster_id}/stacks/{name}", response_model=StackDetailPublic)
async def show_stack(cluster_id: int, name: str, session: SessionDep, caller: CurrentCaller,
                     settings: SettingsDep) -> StackDetailPublic:
    """The stack (its compose file when we deployed it), its services and their tasks, live."""
    def call(client: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        services = client.api.services(filters={"label": [f"{STACK_LABEL}={name}",
                                                          *scope_of(_scope(client)).get("label", [])]})
        return services, _tasks_of(client, [s["ID"] for s in services])

    row = await run_in_threadpool(lambda: _stack_row(session, caller, _cluster(session, caller, cluster_id).id, name))
    services, tasks = await _engine(session, caller, settings, cluster_id, call)
    if row is None and not services:
        raise errors.not_found("stack")
    stack = (_stack_public(row, with_compose=True) if row is not None
             else StackPublic(id=None, name=name, status="deployed",
                              services=sorted((s.get("Spec") or {}).get("Name") or "" for s in services)))
    return StackDetailPublic(stack=stack, services=[_service_public(s, tasks) for s in services],
                             tasks=[_task_public(t) for t in tasks])


@router.delete("/clusters/{cluster_id}/stacks/{name}", status_code=status.HTTP_204_NO_CONTENT)
async def remove_stack(cluster_id: int, name: str, session: SessionDep, caller: WriterCaller,
                       settings: SettingsDep) -> Response:
    """``docker stack rm``: its services, networks, secrets and configs go (the engine finishes
    removing networks shortly after), and so does our row."""
    row = await run_in_threadpool(lambda: _stack_row(session, caller, _cluster(session, caller, cluster_id).id, name))
    def listed(client: Any) -> list[dict[str, Any]]:
        services = client.api.services(filters={"label": f"{STACK_LABEL}={name}"})
        if any(not owns(_scope(client), (s.get("Spec") or {}).get("Labels")) for s in services):
            # another account's services carry this stack name: `stack rm` would remove them
            raise _not_found("stack", name)
        return services

    found = await _engine(session, caller, settings, cluster_id, listed)
    if row is None and not found:
        raise errors.not_found("stack")
    change = _Change("stack", "remove", name, {})
    target = await run_in_threadpool(_target_of, session, caller, settings, cluster_id)
    if found:
        # `stack rm` removes the services, then the networks; a network whose tasks are still
        # stopping is "in use" for a moment (seen on a loaded machine), so try again shortly.
        for attempt in range(3):
            done = await run_in_threadpool(_run_cli, target, ["stack", "rm", name])
            if done.returncode == 0:
                break
            await asyncio.sleep(2 * (attempt + 1))
        if done.returncode != 0:
            message = " ".join((done.stderr or done.stdout or "docker stack rm failed").split())[-2000:]
            problem = EngineProblem("engine_error", f"docker stack rm failed: {message}")
            await run_in_threadpool(_record, session, caller, cluster_id, change, problem)
            raise _http(problem)

    def forget() -> None:
        session.execute(delete(SwarmStack).where(SwarmStack.cluster_id == cluster_id, SwarmStack.name == name,
                                                 SwarmStack.account_id == caller.account_id))
        session.commit()

    await run_in_threadpool(forget)
    await run_in_threadpool(_record, session, caller, cluster_id, change, None)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# ---- events -------------------------------------------------------------------------------------------------------


@router.get("/clusters/{cluster_id}/events", response_model=SwarmEventsPublic)
def list_events(cluster_id: int, session: SessionDep, caller: CurrentCaller,
                source: str | None = Query(None, max_length=20, description="engine | api | rollout"),
                event_type: str | None = Query(None, alias="type", max_length=50),
                action: str | None = Query(None, max_length=100), deployment_id: int | None = None,
                limit: int = Query(100, ge=1, le=1000), offset: int = Query(0, ge=0)) -> SwarmEventsPublic:
    """Engine events stored by the sync rounds and our own changes, newest first."""
    row = _cluster(session, caller, cluster_id)
    query = select(SwarmEvent).where(SwarmEvent.cluster_id == row.id, SwarmEvent.account_id == caller.account_id)
    if source:
        query = query.where(SwarmEvent.source == source)
    if event_type:
        query = query.where(SwarmEvent.event_type == event_type)
    if action:
        query = query.where(SwarmEvent.action == action)
    if deployment_id is not None:
        query = query.where(SwarmEvent.deployment_id == deployment_id)
    count = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(query.order_by(SwarmEvent.id.desc()).limit(limit).offset(offset))
    return SwarmEventsPublic(data=[SwarmEventPublic(
        id=e.id, cluster_id=e.cluster_id, deployment_id=e.deployment_id, source=e.source, event_type=e.event_type,
        action=e.action, actor_id=e.actor_id, time_nano=e.time_nano, user_id=e.user_id, result=e.result,
        payload=dict(e.payload or {}), created_at=e.created_at) for e in rows], count=count)


# ---- networks and volumes ---------------------------------------------------------------------------------------


def _network_public(found: dict[str, Any]) -> NetworkPublic:
    return NetworkPublic(id=found["Id"], name=found.get("Name") or "", driver=found.get("Driver"),
                         scope=found.get("Scope"), internal=bool(found.get("Internal")),
                         labels=dict(found.get("Labels") or {}), containers=sorted(found.get("Containers") or {}),
                         created=found.get("Created"))


@router.get("/clusters/{cluster_id}/networks", response_model=NetworksPublic)
async def list_networks(cluster_id: int, session: SessionDep, caller: CurrentCaller, settings: SettingsDep,
                        scope: str | None = Query(None, pattern="^(swarm|local)$")) -> NetworksPublic:
    found = await _engine(session, caller, settings, cluster_id,
                          lambda c: c.api.networks(filters=scope_of(_scope(c)) or None))
    rows = [_network_public(n) for n in found if scope is None or n.get("Scope") == scope]
    return NetworksPublic(data=rows, count=len(rows))


@router.post("/clusters/{cluster_id}/networks", response_model=NetworkPublic, status_code=status.HTTP_201_CREATED)
async def create_network(cluster_id: int, body: SwarmNetworkCreate, session: SessionDep, caller: WriterCaller,
                         settings: SettingsDep) -> NetworkPublic:
    """An overlay network (attachable by default, so plain containers can join it too)."""
    _reserved_labels(body.labels)

    def call(client: Any) -> NetworkPublic:
        if any(n.get("Name") == body.name for n in client.api.networks(names=[body.name])):
            raise EngineRefused("conflict", f"a network named {body.name!r} already exists on the swarm")
        created = client.api.create_network(body.name, driver=body.driver, attachable=body.attachable,
                                            internal=body.internal,
                                            labels={**body.labels, ACCOUNT_LABEL: str(caller.account_id)},
                                            scope="swarm" if body.driver == "overlay" else None)
        # The manager allocates a new overlay network a moment after answering: until then its
        # inspect shows no driver yet.
        for _ in range(20):
            found = client.api.inspect_network(created["Id"])
            if found.get("Driver"):
                break
            time.sleep(0.1)
        return _network_public(found)

    return await _engine(session, caller, settings, cluster_id, call,
                         _Change("network", "create", body.name, body.model_dump()))


@router.delete("/clusters/{cluster_id}/networks/{network_id}", status_code=status.HTTP_204_NO_CONTENT)
async def remove_network(cluster_id: int, network_id: str, session: SessionDep, caller: WriterCaller,
                         settings: SettingsDep) -> Response:
    await _engine(session, caller, settings, cluster_id,
                  lambda c: c.api.remove_network(_own_swarm_object(c, "network", network_id)),
                  _Change("network", "remove", network_id, {}))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


def _volume_public(found: dict[str, Any]) -> VolumePublic:
    return VolumePublic(name=found["Name"], driver=found.get("Driver"), mountpoint=found.get("Mountpoint"),
                        scope=found.get("Scope"), labels=dict(found.get("Labels") or {}),
                        created=found.get("CreatedAt"))


@router.get("/clusters/{cluster_id}/volumes", response_model=VolumesPublic)
async def list_volumes(cluster_id: int, session: SessionDep, caller: CurrentCaller,
                       settings: SettingsDep) -> VolumesPublic:
    """The manager node's volumes (Swarm volumes are per node)."""
    found = await _engine(session, caller, settings, cluster_id,
                          lambda c: c.api.volumes(filters=scope_of(_scope(c)) or None).get("Volumes") or [])
    return VolumesPublic(data=[_volume_public(v) for v in found], count=len(found))


@router.post("/clusters/{cluster_id}/volumes", response_model=VolumePublic, status_code=status.HTTP_201_CREATED)
async def create_volume(cluster_id: int, body: VolumeCreate, session: SessionDep, caller: WriterCaller,
                        settings: SettingsDep) -> VolumePublic:
    _reserved_labels(body.labels)

    def call(client: Any) -> VolumePublic:
        return create_owned_volume(client, body, caller.account_id, "swarm")

    return await _engine(session, caller, settings, cluster_id, call,
                         _Change("volume", "create", body.name, body.model_dump()))


@router.delete("/clusters/{cluster_id}/volumes/{name}", status_code=status.HTTP_204_NO_CONTENT)
async def remove_volume(cluster_id: int, name: str, session: SessionDep, caller: WriterCaller,
                        settings: SettingsDep, force: bool = False) -> Response:
    await _engine(session, caller, settings, cluster_id,
                  lambda c: c.api.remove_volume(_own_swarm_object(c, "volume", name), force=force),
                  _Change("volume", "remove", name, {"force": force}))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# ---- secrets and configs -------------------------------------------------------------------------------------------


def _object_public(found: dict[str, Any]) -> SwarmObjectPublic:
    spec = found.get("Spec") or {}
    return SwarmObjectPublic(id=found["ID"], name=spec.get("Name") or "", labels=dict(spec.get("Labels") or {}),
                             created_at=found.get("CreatedAt"), updated_at=found.get("UpdatedAt"))


async def _object_body(request: Request) -> SwarmObjectCreate:
    """The body parsed here, not by FastAPI: its 422s would echo the input, and a secret's data
    must never come back in an answer."""
    try:
        raw = await request.json()
    except ValueError:
        raise errors.field_error([], "the body must be JSON", "json_invalid") from None
    try:
        return SwarmObjectCreate.model_validate(raw)
    except ValidationError as exc:
        raise errors.from_validation_error(exc) from None


def _object_routes(kind: str) -> None:
    """list / create / delete for ``secrets`` or ``configs`` (the engine never returns a secret's data)."""
    plural = f"{kind}s"

    async def list_objects(cluster_id: int, session: SessionDep, caller: CurrentCaller,
                           settings: SettingsDep) -> SwarmObjectsPublic:
        found = await _engine(session, caller, settings, cluster_id,
                              lambda c: getattr(c.api, plural)(filters=scope_of(_scope(c)) or None))
        rows = sorted((_object_public(o) for o in found), key=lambda o: o.name)
        return SwarmObjectsPublic(data=rows, count=len(rows))

    async def create_object(cluster_id: int, request: Request, session: SessionDep, caller: WriterCaller,
                            settings: SettingsDep) -> SwarmObjectPublic:
        body = await _object_body(request)
        _reserved_labels(body.labels)

        def call(client: Any) -> SwarmObjectPublic:
            creator = getattr(client.api, f"create_{kind}")
            created = creator(body.name, body.data.encode(),
                              labels={**body.labels, ACCOUNT_LABEL: str(caller.account_id)})
            return _object_public(getattr(client.api, f"inspect_{kind}")(created["ID"]))

        # the data is never part of the record: only its size
        params = {"labels": dict(body.labels), "data_bytes": len(body.data.encode())}
        return await _engine(session, caller, settings, cluster_id, call, _Change(kind, "create", body.name, params))

    async def remove_object(cluster_id: int, object_id: str, session: SessionDep, caller: WriterCaller,
                            settings: SettingsDep) -> Response:
        await _engine(session, caller, settings, cluster_id,
                      lambda c: getattr(c.api, f"remove_{kind}")(_own_swarm_object(c, kind, object_id)),
                      _Change(kind, "remove", object_id, {}))
        return Response(status_code=status.HTTP_204_NO_CONTENT)

    for handler, verb in ((list_objects, "list"), (create_object, "create"), (remove_object, "remove")):
        handler.__name__ = f"{verb}_{plural if verb == 'list' else kind}"
    body_doc = {"content": {"application/json": {"schema": SwarmObjectCreate.model_json_schema()}}, "required": True}
    router.add_api_route(f"/clusters/{{cluster_id}}/{plural}", list_objects, methods=["GET"],
                         response_model=SwarmObjectsPublic, summary=f"List {plural}")
    router.add_api_route(f"/clusters/{{cluster_id}}/{plural}", create_object, methods=["POST"],
                         response_model=SwarmObjectPublic, status_code=status.HTTP_201_CREATED,
                         summary=f"Create a {kind}", openapi_extra={"requestBody": body_doc})
    router.add_api_route(f"/clusters/{{cluster_id}}/{plural}/{{object_id}}", remove_object, methods=["DELETE"],
                         status_code=status.HTTP_204_NO_CONTENT, summary=f"Remove a {kind}")


_object_routes("secret")
_object_routes("config")
