"""``/docker/hosts``: the rows of Docker hosts, their connection test and sync rounds.

A host is a managed engine endpoint (:mod:`services.engines`): with auto-sync its
``HostSyncWorkflow`` ``host-sync-<id>`` starts when it is created (or auto-sync is turned on) and
is terminated when it is deleted (or auto-sync is turned off); an interval change reaches it by its
``set_interval`` signal, an endpoint or TLS change by ``sync_now``. ``POST .../sync`` runs one
round through the workflow and answers that round's counts (202 while it still runs).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session

from adapters.temporal import TemporalGateway
from api.deps import Caller, CurrentCaller, SessionDep, SettingsDep, TemporalDep, WriterCaller
from api.docker_schemas import (
    HostCreate,
    HostPublic,
    HostsPublic,
    HostSyncPublic,
    HostTestPublic,
    HostUpdate,
    SyncCountsPublic,
)
from api.engine_schemas import endpoint_fields
from db.models import DockerHost
from services import engines
from services.engine_kinds import DOCKER_HOST

router = APIRouter()


def _show(session: Session, caller: Caller, temporal: TemporalGateway, host_id: int) -> HostPublic:
    row = engines.get_endpoint(session, DOCKER_HOST, caller.account_id, host_id)
    return HostPublic(**endpoint_fields(row, temporal), **engines.child_counts(session, DOCKER_HOST, [row.id])[row.id])


@router.get("/hosts", response_model=HostsPublic)
def list_docker_hosts(session: SessionDep, caller: CurrentCaller, temporal: TemporalDep,
                      environment: Annotated[str | None, Query(max_length=20)] = None,
                      status_filter: Annotated[str | None, Query(alias="status", max_length=20)] = None,
                      limit: Annotated[int, Query(ge=1, le=500)] = 100,
                      offset: Annotated[int, Query(ge=0)] = 0) -> HostsPublic:
    rows, count = engines.list_endpoints(session, DOCKER_HOST, caller.account_id, environment, status_filter,
                                         limit, offset)
    counts = engines.child_counts(session, DOCKER_HOST, [r.id for r in rows])
    return HostsPublic(data=[HostPublic(**endpoint_fields(r, temporal), **counts[r.id]) for r in rows], count=count)


@router.post("/hosts", response_model=HostPublic, status_code=status.HTTP_201_CREATED)
def create_docker_host(body: HostCreate, session: SessionDep, caller: WriterCaller, settings: SettingsDep,
                       temporal: TemporalDep) -> HostPublic:
    """Register an engine; with auto-sync its ``HostSyncWorkflow`` starts at once (first round now)."""
    row = engines.create_endpoint(session, DOCKER_HOST, caller.account_id, body.model_dump(), body.model_fields_set,
                                  settings, temporal)
    return _show(session, caller, temporal, row.id)


@router.get("/hosts/{host_id}", response_model=HostPublic)
def show_docker_host(host_id: int, session: SessionDep, caller: CurrentCaller, temporal: TemporalDep) -> HostPublic:
    return _show(session, caller, temporal, host_id)


@router.patch("/hosts/{host_id}", response_model=HostPublic)
def update_docker_host(host_id: int, body: HostUpdate, session: SessionDep, caller: WriterCaller,
                       settings: SettingsDep, temporal: TemporalDep) -> HostPublic:
    """Only the fields sent change; the sync workflow follows (started, stopped, re-timed, woken)."""
    row = engines.update_endpoint(session, DOCKER_HOST, caller.account_id, host_id, body.model_dump(),
                                  body.model_fields_set, settings, temporal)
    return _show(session, caller, temporal, row.id)


@router.delete("/hosts/{host_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_docker_host(host_id: int, session: SessionDep, caller: WriterCaller, temporal: TemporalDep) -> Response:
    """Stop the host's sync workflow, then forget the host and its synced rows (activities stay)."""
    engines.delete_endpoint(session, DOCKER_HOST, caller.account_id, host_id, temporal)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/hosts/{host_id}/test", response_model=HostTestPublic)
def test_docker_host(host_id: int, session: SessionDep, caller: WriterCaller,
                     settings: SettingsDep) -> HostTestPublic:
    """Ping the engine and read its version; the outcome is recorded as a ``host.test`` activity."""
    outcome = engines.probe_endpoint(session, DOCKER_HOST, caller.account_id, caller.user_id, settings, host_id)
    if outcome.problem is not None:
        return HostTestPublic(ok=False, error=outcome.problem.message)
    version = outcome.values or {}
    return HostTestPublic(ok=True, docker_version=version.get("Version"), api_version=version.get("ApiVersion"),
                          os=version.get("Os"), architecture=version.get("Arch"))


@router.post("/hosts/{host_id}/sync", response_model=HostSyncPublic,
             responses={202: {"description": "the round is still running after the wait"}})
async def sync_docker_host(host_id: int, session: SessionDep, caller: WriterCaller, temporal: TemporalDep) -> Any:
    """Run one sync round now, through the host's workflow, and answer its counts: the looping
    workflow's ``sync_round`` update when auto-sync is on, else a one-round ``host-sync-<id>``."""
    def load() -> DockerHost:
        row = engines.get_endpoint(session, DOCKER_HOST, caller.account_id, host_id)
        session.expunge(row)
        return row

    row = await run_in_threadpool(load)
    workflow_id = DOCKER_HOST.workflow_id(row.id)
    values = await engines.run_sync_round(temporal, DOCKER_HOST, row)
    if values is None:
        answer = HostSyncPublic(status="running", workflow_id=workflow_id, temporal_ui_url=temporal.ui_url(workflow_id))
        return JSONResponse(answer.model_dump(mode="json"), status_code=status.HTTP_202_ACCEPTED)
    return HostSyncPublic(
        status="completed", workflow_id=workflow_id, temporal_ui_url=temporal.ui_url(workflow_id), ok=values["ok"],
        host_status=values.get("host_status") or None, containers=SyncCountsPublic(**values["containers"]),
        images=SyncCountsPublic(**values["images"]), events=values["events"], rows_written=values["rows_written"],
        consecutive_failures=values.get("consecutive_failures"), error=values.get("error"))
