"""``/swarm/clusters``: the rows of Swarm clusters, their connection test and sync rounds.

A cluster is a managed engine endpoint like a Docker host (:mod:`services.engines`, kind
:data:`services.engine_kinds.SWARM_CLUSTER`): one manager's endpoint, with auto-sync a
``SwarmSyncWorkflow`` ``swarm-sync-<id>`` that follows the row. A cluster with a rollout in
progress is not deleted (409); a test against an engine that answers but is not a swarm manager
is refused (409) rather than answered as unreachable.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session

from adapters.temporal import TemporalGateway
from api.deps import Caller, CurrentCaller, SessionDep, SettingsDep, TemporalDep, WriterCaller
from api.engine_schemas import SyncCountsPublic, endpoint_fields
from api.swarm_schemas import (
    ClusterCreate,
    ClusterPublic,
    ClustersPublic,
    ClusterSyncPublic,
    ClusterTestPublic,
    ClusterUpdate,
)
from db.models import SwarmCluster
from services import engines
from services.engine_kinds import SWARM_CLUSTER

router = APIRouter()


def _show(session: Session, caller: Caller, temporal: TemporalGateway, cluster_id: int) -> ClusterPublic:
    row = engines.get_endpoint(session, SWARM_CLUSTER, caller.account_id, cluster_id)
    return ClusterPublic(**endpoint_fields(row, temporal), swarm_id=row.swarm_id,
                         **engines.child_counts(session, SWARM_CLUSTER, [row.id])[row.id])


@router.get("/clusters", response_model=ClustersPublic)
def list_swarm_clusters(session: SessionDep, caller: CurrentCaller, temporal: TemporalDep,
                        environment: Annotated[str | None, Query(max_length=20)] = None,
                        status_filter: Annotated[str | None, Query(alias="status", max_length=20)] = None,
                        limit: Annotated[int, Query(ge=1, le=500)] = 100,
                        offset: Annotated[int, Query(ge=0)] = 0) -> ClustersPublic:
    rows, count = engines.list_endpoints(session, SWARM_CLUSTER, caller.account_id, environment, status_filter,
                                         limit, offset)
    counts = engines.child_counts(session, SWARM_CLUSTER, [r.id for r in rows])
    return ClustersPublic(data=[ClusterPublic(**endpoint_fields(r, temporal), swarm_id=r.swarm_id, **counts[r.id])
                                for r in rows], count=count)


@router.post("/clusters", response_model=ClusterPublic, status_code=status.HTTP_201_CREATED)
def create_swarm_cluster(body: ClusterCreate, session: SessionDep, caller: WriterCaller, settings: SettingsDep,
                         temporal: TemporalDep) -> ClusterPublic:
    """Register a swarm by one manager's endpoint; with auto-sync its ``SwarmSyncWorkflow`` starts at once."""
    row = engines.create_endpoint(session, SWARM_CLUSTER, caller.account_id, body.model_dump(),
                                  body.model_fields_set, settings, temporal)
    return _show(session, caller, temporal, row.id)


@router.get("/clusters/{cluster_id}", response_model=ClusterPublic)
def show_swarm_cluster(cluster_id: int, session: SessionDep, caller: CurrentCaller,
                       temporal: TemporalDep) -> ClusterPublic:
    return _show(session, caller, temporal, cluster_id)


@router.patch("/clusters/{cluster_id}", response_model=ClusterPublic)
def update_swarm_cluster(cluster_id: int, body: ClusterUpdate, session: SessionDep, caller: WriterCaller,
                         settings: SettingsDep, temporal: TemporalDep) -> ClusterPublic:
    """Only the fields sent change; the sync workflow follows (started, stopped, re-timed, woken)."""
    row = engines.update_endpoint(session, SWARM_CLUSTER, caller.account_id, cluster_id, body.model_dump(),
                                  body.model_fields_set, settings, temporal)
    return _show(session, caller, temporal, row.id)


@router.delete("/clusters/{cluster_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_swarm_cluster(cluster_id: int, session: SessionDep, caller: WriterCaller,
                         temporal: TemporalDep) -> Response:
    """Stop the sync workflow, then forget the cluster and everything we stored about it (nothing
    on the swarm itself is touched)."""
    engines.delete_endpoint(session, SWARM_CLUSTER, caller.account_id, cluster_id, temporal)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/clusters/{cluster_id}/test", response_model=ClusterTestPublic,
             responses={409: {"description": "the endpoint's engine is not a swarm manager"}})
def test_swarm_cluster(cluster_id: int, session: SessionDep, caller: WriterCaller,
                       settings: SettingsDep) -> ClusterTestPublic:
    """Ping the manager and read the swarm: ``ok=false`` when it cannot be reached, 409 when the
    engine answers but is not a swarm manager. Recorded as ``cluster.test``."""
    outcome = engines.probe_endpoint(session, SWARM_CLUSTER, caller.account_id, caller.user_id, settings,
                                     cluster_id)
    if outcome.problem is not None:
        return ClusterTestPublic(ok=False, is_manager=None, error=outcome.problem.message)
    return ClusterTestPublic(ok=True, is_manager=True, **(outcome.values or {}))


@router.post("/clusters/{cluster_id}/sync", response_model=ClusterSyncPublic,
             responses={202: {"description": "the round is still running after the wait"}})
async def sync_swarm_cluster(cluster_id: int, session: SessionDep, caller: WriterCaller,
                             temporal: TemporalDep) -> Any:
    """Run one sync round now through the cluster's workflow and answer its counts (the looping
    workflow's ``sync_round`` update, or a one-round ``swarm-sync-<id>`` when auto-sync is off)."""
    def load() -> SwarmCluster:
        row = engines.get_endpoint(session, SWARM_CLUSTER, caller.account_id, cluster_id)
        session.expunge(row)
        return row

    row = await run_in_threadpool(load)
    workflow_id = SWARM_CLUSTER.workflow_id(row.id)
    values = await engines.run_sync_round(temporal, SWARM_CLUSTER, row)
    if values is None:
        answer = ClusterSyncPublic(status="running", workflow_id=workflow_id,
                                   temporal_ui_url=temporal.ui_url(workflow_id))
        return JSONResponse(answer.model_dump(mode="json"), status_code=status.HTTP_202_ACCEPTED)
    return ClusterSyncPublic(
        status="completed", workflow_id=workflow_id, temporal_ui_url=temporal.ui_url(workflow_id), ok=values["ok"],
        cluster_status=values.get("cluster_status") or None, nodes=SyncCountsPublic(**values["nodes"]),
        services=SyncCountsPublic(**values["services"]), stacks_updated=values["stacks_updated"],
        events=values["events"], rows_written=values["rows_written"],
        consecutive_failures=values.get("consecutive_failures"), error=values.get("error"))
