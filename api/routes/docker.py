"""Docker hosts, what runs on them, and image registries (the seed's Docker Host Management and
``RegistryService``), under ``/docker``.

- Hosts are rows; each host with auto-sync has a ``HostSyncWorkflow`` ``host-sync-<id>`` started when
  the host is created (or auto-sync is turned on) and terminated when it is deleted (or auto-sync is
  turned off). An interval change reaches it through its ``set_interval`` signal, an endpoint or TLS
  change through ``sync_now``. ``POST .../sync`` runs one round through the workflow (its
  ``sync_round`` update, or a one-round workflow when auto-sync is off) and answers that round's counts.
- Container, image, network and volume actions call the engine from the API (in a thread, short
  timeouts) and every one is recorded as a ``DockerActivity`` (user, action, target, parameters
  without values that could be secret, result, error).
- Engine failures answer a clear 4xx (404 for a missing container or image, 409 for a conflict, 400
  when the engine refuses the request, 422 for a failed build) or 502 when the engine cannot be
  reached or fails; never 500.
- An endpoint is an outbound connection: ``tcp://`` to loopback/private addresses follows
  ``DEVOPS_NOTIFY_ALLOW_PRIVATE_TARGETS`` like providers; ``unix://`` must name an existing socket.
- Tenant isolation (see :mod:`activities.docker_hosts`): local engines need the operator's
  ``DEVOPS_ENGINE_ALLOWLIST`` (outside development), and on a *shared* engine every container,
  network and volume route sees only objects labelled ``devops.account=<caller's account>`` (others
  answer 404). Images built through the API carry the account's label; on a shared engine the image
  list shows the account's own, an image labelled with another account answers 404 (inspect, run),
  unlabelled images (the engine's shared cache) may be inspected, pulled and run, only the account's
  own images may be tagged, pushed or removed, and a build or tag never takes over a tag the account
  does not own (409). Containers are created with the hardened defaults of container
  templates and pass the account's container policy; their logs are masked with the account's secrets.
"""

from __future__ import annotations

import asyncio
import io
import ipaddress
import os
import socket
import stat
from collections.abc import Callable
from dataclasses import asdict, dataclass, is_dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
from fastapi import APIRouter, HTTPException, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
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
    allowlisted,
    classify,
    container_values,
    docker_client,
    endpoint_refusal,
    engine_shared,
    host_target,
    image_values,
    is_local_endpoint,
    owns,
    scope_of,
    secret_box,
)
from adapters.temporal import TemporalGateway
from api import errors
from api.deps import Caller, CurrentCaller, SessionDep, SettingsDep, TemporalDep, WriterCaller
from api.docker_schemas import (
    ActivitiesPublic,
    ActivityPublic,
    ContainerActionPublic,
    ContainerCreate,
    ContainerLogsPublic,
    ContainerPublic,
    ContainersPublic,
    EventPublic,
    EventsPublic,
    HostCreate,
    HostPublic,
    HostsPublic,
    HostSyncPublic,
    HostTestPublic,
    HostUpdate,
    ImageActionPublic,
    ImagePublic,
    ImagePull,
    ImagePush,
    ImagesPublic,
    ImageTagRequest,
    NetworkCreate,
    NetworkPublic,
    NetworksPublic,
    RegistriesPublic,
    RegistryCreate,
    RegistryPublic,
    RegistryRepositoriesPublic,
    RegistryTagsPublic,
    RegistryTestPublic,
    RegistryUpdate,
    SyncCountsPublic,
    VolumeCreate,
    VolumePublic,
    VolumesPublic,
)
from db.models import (
    ContainerRegistry,
    DockerActivity,
    DockerContainer,
    DockerEvent,
    DockerHost,
    DockerImage,
    Secret,
)
from domain.masking import Masker
from services.container_specs import (
    RESERVED_LABEL_PREFIX,
    check_spec,
    normalized_spec,
    require_public_registries,
    require_public_registry_url,
    resolve_spec,
)
from settings import Settings
from workflows.host_sync import HostSyncInput, HostSyncWorkflow, host_sync_workflow_id

router = APIRouter(prefix="/docker", tags=["docker"])

#: How long ``POST .../sync`` waits for its round before answering 202 with the workflow id.
SYNC_WAIT_SECONDS = 60.0
SINGLE_ROUND_TIMEOUT = timedelta(minutes=10)
#: Uploaded build contexts larger than this are refused (413).
MAX_BUILD_CONTEXT_BYTES = 200 * 1024 * 1024
MAX_LOG_BYTES = 1024 * 1024
REGISTRY_TIMEOUT = httpx.Timeout(15.0)
MANIFEST_TYPES = ", ".join([
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
])
_STATUS_OF = {"not_found": status.HTTP_404_NOT_FOUND, "conflict": status.HTTP_409_CONFLICT,
              "bad_request": status.HTTP_400_BAD_REQUEST, "build_failed": 422,
              "unreachable": status.HTTP_502_BAD_GATEWAY, "engine_error": status.HTTP_502_BAD_GATEWAY,
              "registry_error": status.HTTP_502_BAD_GATEWAY}


class EngineRefused(Exception):
    """A failure we found in an engine's streamed answer (build, pull, push)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.problem = EngineProblem(kind, message)


def _problem(exc: BaseException, endpoint: str) -> EngineProblem | None:
    if isinstance(exc, EngineRefused):
        return exc.problem
    import docker.errors

    if isinstance(exc, (docker.errors.InvalidArgument, docker.errors.InvalidRepository)):
        return EngineProblem("bad_request", str(exc))
    return classify(exc, endpoint)


def _http(problem: EngineProblem) -> HTTPException:
    return HTTPException(_STATUS_OF.get(problem.kind, status.HTTP_502_BAD_GATEWAY), problem.message)


# ---- endpoint checks ------------------------------------------------------------------------------


async def _refusal(settings: Settings, host: str, port: int, what: str) -> str | None:
    """Why ``host`` must not be connected to (an internal address while they are not allowed)."""
    if settings.private_targets_allowed:
        return None
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        return f"the {what}'s host {host!r} does not resolve"
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if not address.is_global or address.is_multicast:
            return (f"the {what}'s host {host} resolves to {address}, a loopback, private or link-local address; "
                    "refused (set DEVOPS_NOTIFY_ALLOW_PRIVATE_TARGETS=true to allow internal targets)")
    return None


def endpoint_policy_refusal(settings: Settings, endpoint: str) -> str | None:
    """The engine allowlist's word on ``endpoint`` (blocking: may resolve the host name)."""
    local = is_local_endpoint(endpoint)
    return endpoint_refusal(endpoint, settings.engine_allowlist, settings.environment, local)


async def _check_endpoint(settings: Settings, endpoint: str) -> None:
    refusal = await run_in_threadpool(endpoint_policy_refusal, settings, endpoint)
    if refusal:
        raise errors.field_error(["endpoint"], refusal, "endpoint")
    parts = urlsplit(endpoint)
    if parts.scheme == "unix":
        try:
            mode = (await run_in_threadpool(os.stat, parts.path)).st_mode
        except OSError:
            raise errors.field_error(["endpoint"], f"{parts.path} does not exist on the API's machine",
                                     "endpoint") from None
        if not stat.S_ISSOCK(mode):
            raise errors.field_error(["endpoint"], f"{parts.path} is not a socket", "endpoint")
        return
    if allowlisted(endpoint, settings.engine_allowlist):
        return  # the operator listed it: internal addresses are expected there
    refusal = await _refusal(settings, parts.hostname or "", parts.port or 2375, "endpoint")
    if refusal:
        raise errors.field_error(["endpoint"], refusal, "endpoint")


# ---- hosts: rows -----------------------------------------------------------------------------------


def _host(session: Session, caller: Caller, host_id: int) -> DockerHost:
    host = session.scalar(select(DockerHost).where(DockerHost.id == host_id,
                                                   DockerHost.account_id == caller.account_id))
    if host is None:
        raise errors.not_found("docker host")
    return host


def _counts(session: Session, model: Any, host_ids: list[int]) -> dict[int, int]:
    if not host_ids:
        return {}
    return dict(session.execute(select(model.host_id, func.count()).where(model.host_id.in_(host_ids))
                                .group_by(model.host_id)).all())


def _host_public(row: DockerHost, temporal: TemporalGateway, containers: int, images: int) -> HostPublic:
    return HostPublic(
        id=row.id, name=row.name, endpoint=row.endpoint, environment=row.environment, status=row.status,
        auto_sync=row.auto_sync, sync_interval_seconds=row.sync_interval_seconds,
        consecutive_failures=row.consecutive_failures, last_error=row.last_error, last_synced_at=row.last_synced_at,
        metrics=dict(row.metrics or {}), tls_configured=bool(row.encrypted_tls_cert or row.encrypted_tls_ca),
        workflow_id=row.workflow_id, temporal_ui_url=temporal.ui_url(row.workflow_id) if row.workflow_id else None,
        containers=containers, images=images, created_at=row.created_at, updated_at=row.updated_at)


def _show_host(session: Session, caller: Caller, temporal: TemporalGateway, host_id: int) -> HostPublic:
    row = _host(session, caller, host_id)
    return _host_public(row, temporal, _counts(session, DockerContainer, [row.id]).get(row.id, 0),
                        _counts(session, DockerImage, [row.id]).get(row.id, 0))


def _record(session: Session, caller: Caller, host_id: int | None, action: str, target: str,
            params: dict[str, Any], problem: EngineProblem | None) -> None:
    session.rollback()
    session.add(DockerActivity(account_id=caller.account_id, host_id=host_id, user_id=caller.user_id, action=action,
                               target=target[:500], params=params, result="failure" if problem else "success",
                               error=problem.message if problem else None))
    session.commit()


def _tls_changes(body: HostCreate | HostUpdate, settings: Settings, fields: set[str]) -> dict[str, bytes | None]:
    box = secret_box(settings)
    changes: dict[str, bytes | None] = {}
    for name in ("tls_ca", "tls_cert", "tls_key"):
        if name in fields:
            value = getattr(body, name)
            changes[f"encrypted_{name}"] = box.encrypt(value) if value else None
    return changes


# ---- hosts: the sync workflow ------------------------------------------------------------------------


def _sync_input(row: DockerHost, single_round: bool = False) -> HostSyncInput:
    return HostSyncInput(host_id=row.id, account_id=row.account_id, interval_seconds=row.sync_interval_seconds,
                         single_round=single_round)


async def _start_sync(temporal: TemporalGateway, settings: Settings, row: DockerHost) -> str:
    """Start the host's looping sync workflow (replacing a one-round one that may be running)."""
    workflow_id = host_sync_workflow_id(row.id)
    client = await temporal.client()
    await client.start_workflow(HostSyncWorkflow.run, _sync_input(row), id=workflow_id, task_queue=settings.task_queue,
                                id_conflict_policy=WorkflowIDConflictPolicy.TERMINATE_EXISTING)
    return workflow_id


async def _stop_sync(temporal: TemporalGateway, host_id: int, reason: str) -> None:
    client = await temporal.client()
    try:
        await client.get_workflow_handle(host_sync_workflow_id(host_id)).terminate(reason=reason)
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:  # not running: nothing to stop
            raise


async def _signal(temporal: TemporalGateway, host_id: int, signal: Any, *args: Any) -> None:
    client = await temporal.client()
    try:
        await client.get_workflow_handle(host_sync_workflow_id(host_id)).signal(signal, *args)
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:
            raise


def _temporal_down(what: str) -> HTTPException:
    return HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, f"Temporal is unavailable; {what}")


def _as_dict(value: Any) -> dict[str, Any]:
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    return dict(value or {})


# ---- hosts: routes ---------------------------------------------------------------------------------


@router.get("/hosts", response_model=HostsPublic)
def list_hosts(session: SessionDep, caller: CurrentCaller, temporal: TemporalDep,
               environment: str | None = Query(None, max_length=20), status_filter: str | None = Query(
                   None, alias="status", max_length=20),
               limit: int = Query(100, ge=1, le=500), offset: int = Query(0, ge=0)) -> HostsPublic:
    query = select(DockerHost).where(DockerHost.account_id == caller.account_id)
    if environment:
        query = query.where(DockerHost.environment == environment)
    if status_filter:
        query = query.where(DockerHost.status == status_filter)
    count = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = list(session.scalars(query.order_by(DockerHost.id).limit(limit).offset(offset)))
    ids = [r.id for r in rows]
    containers, images = _counts(session, DockerContainer, ids), _counts(session, DockerImage, ids)
    return HostsPublic(data=[_host_public(r, temporal, containers.get(r.id, 0), images.get(r.id, 0)) for r in rows],
                       count=count)


@router.post("/hosts", response_model=HostPublic, status_code=status.HTTP_201_CREATED)
async def create_host(body: HostCreate, session: SessionDep, caller: WriterCaller, settings: SettingsDep,
                      temporal: TemporalDep) -> HostPublic:
    """Register an engine; with auto-sync its ``HostSyncWorkflow`` starts at once (first round now)."""
    if bool(body.tls_cert) != bool(body.tls_key):
        raise errors.field_error(["tls_key" if body.tls_cert else "tls_cert"],
                                 "a client certificate and its key come together")
    await _check_endpoint(settings, body.endpoint)

    def insert() -> DockerHost:
        row = DockerHost(account_id=caller.account_id, name=body.name, endpoint=body.endpoint,
                         environment=body.environment, auto_sync=body.auto_sync,
                         sync_interval_seconds=body.sync_interval_seconds, status="pending", metrics={},
                         **_tls_changes(body, settings, body.model_fields_set))
        session.add(row)
        try:
            session.commit()
        except IntegrityError:
            session.rollback()
            raise errors.conflict(f"a docker host named {body.name!r} already exists") from None
        return row

    row = await run_in_threadpool(insert)
    if row.auto_sync:
        try:
            workflow_id = await _start_sync(temporal, settings, row)
        except RPCError:
            await run_in_threadpool(lambda: (session.delete(row), session.commit()))
            raise _temporal_down("the host was not created (its sync workflow could not start)") from None

        def remember() -> None:
            row.workflow_id = workflow_id
            session.commit()

        await run_in_threadpool(remember)
    return await run_in_threadpool(_show_host, session, caller, temporal, row.id)


@router.get("/hosts/{host_id}", response_model=HostPublic)
def show_host(host_id: int, session: SessionDep, caller: CurrentCaller, temporal: TemporalDep) -> HostPublic:
    return _show_host(session, caller, temporal, host_id)


@router.patch("/hosts/{host_id}", response_model=HostPublic)
async def update_host(host_id: int, body: HostUpdate, session: SessionDep, caller: WriterCaller,
                      settings: SettingsDep, temporal: TemporalDep) -> HostPublic:
    """Only the fields sent change; the sync workflow follows (started, stopped, re-timed, woken)."""
    fields = body.model_fields_set
    row = await run_in_threadpool(_host, session, caller, host_id)
    cert_set = row.encrypted_tls_cert is not None if "tls_cert" not in fields else bool(body.tls_cert)
    key_set = row.encrypted_tls_key is not None if "tls_key" not in fields else bool(body.tls_key)
    if cert_set != key_set:
        raise errors.field_error(["tls_key" if cert_set else "tls_cert"],
                                 "a client certificate and its key come together")
    if "endpoint" in fields and body.endpoint != row.endpoint:
        await _check_endpoint(settings, body.endpoint or "")
    was_auto, old_interval, old_endpoint = row.auto_sync, row.sync_interval_seconds, row.endpoint
    tls = _tls_changes(body, settings, fields)

    def apply() -> DockerHost:
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
            raise errors.conflict(f"a docker host named {body.name!r} already exists") from None
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
                await _signal(temporal, row.id, HostSyncWorkflow.set_interval, row.sync_interval_seconds)
            if row.endpoint != old_endpoint or tls:
                await _signal(temporal, row.id, HostSyncWorkflow.sync_now)
    except RPCError:
        raise _temporal_down("the host was saved but its sync workflow did not take the change yet") from None
    return await run_in_threadpool(_show_host, session, caller, temporal, row.id)


@router.delete("/hosts/{host_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_host(host_id: int, session: SessionDep, caller: WriterCaller, temporal: TemporalDep) -> Response:
    """Stop the host's sync workflow, then forget the host and its synced rows (activities stay)."""
    await run_in_threadpool(lambda: (_host(session, caller, host_id), session.rollback()))
    try:
        await _stop_sync(temporal, host_id, "host deleted")
    except RPCError:
        raise _temporal_down("the host was not deleted (its sync workflow could not be stopped)") from None

    def remove() -> None:
        for model in (DockerContainer, DockerImage, DockerEvent):
            session.execute(delete(model).where(model.host_id == host_id, model.account_id == caller.account_id))
        session.delete(_host(session, caller, host_id))
        session.commit()

    await run_in_threadpool(remove)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/hosts/{host_id}/test", response_model=HostTestPublic)
async def test_host(host_id: int, session: SessionDep, caller: WriterCaller,
                    settings: SettingsDep) -> HostTestPublic:
    """Ping the engine and read its version; the outcome is recorded as a ``host.test`` activity."""
    target = await run_in_threadpool(_target_of, session, caller, settings, host_id)

    def probe() -> dict[str, Any]:
        with docker_client(target) as client:
            client.api.ping()
            return client.api.version()

    try:
        version = await run_in_threadpool(probe)
    except Exception as exc:  # noqa: BLE001 - classified; anything else re-raised
        problem = _problem(exc, target.endpoint)
        if problem is None:
            raise
        await run_in_threadpool(_record, session, caller, host_id, "host.test", target.endpoint, {}, problem)
        return HostTestPublic(ok=False, error=problem.message)
    await run_in_threadpool(_record, session, caller, host_id, "host.test", target.endpoint, {}, None)
    return HostTestPublic(ok=True, docker_version=version.get("Version"), api_version=version.get("ApiVersion"),
                          os=version.get("Os"), architecture=version.get("Arch"))


@router.post("/hosts/{host_id}/sync", response_model=HostSyncPublic,
             responses={202: {"description": "the round is still running after the wait"}})
async def sync_host(host_id: int, session: SessionDep, caller: WriterCaller, settings: SettingsDep,
                    temporal: TemporalDep) -> Any:
    """Run one sync round now, through the host's workflow, and answer its counts: the looping
    workflow's ``sync_round`` update when auto-sync is on, else a one-round ``host-sync-<id>``."""
    def load() -> DockerHost:
        row = _host(session, caller, host_id)
        session.expunge(row)
        return row

    row = await run_in_threadpool(load)
    workflow_id = host_sync_workflow_id(row.id)
    client = await temporal.client()
    try:
        if row.auto_sync:
            waiting = _round_through_update(client, settings, row)
        else:
            handle = await client.start_workflow(
                HostSyncWorkflow.run, _sync_input(row, single_round=True), id=workflow_id,
                task_queue=settings.task_queue, id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                execution_timeout=SINGLE_ROUND_TIMEOUT)
            waiting = handle.result()
        result = await asyncio.wait_for(waiting, SYNC_WAIT_SECONDS)
    except TimeoutError:
        answer = HostSyncPublic(status="running", workflow_id=workflow_id, temporal_ui_url=temporal.ui_url(workflow_id))
        return JSONResponse(answer.model_dump(mode="json"), status_code=status.HTTP_202_ACCEPTED)
    except (WorkflowFailureError, WorkflowUpdateFailedError) as exc:
        raise HTTPException(status.HTTP_502_BAD_GATEWAY, f"the sync round did not finish: {exc.cause}") from None
    except RPCError:
        raise _temporal_down("no sync round was run") from None
    values = _as_dict(result)
    return HostSyncPublic(
        status="completed", workflow_id=workflow_id, temporal_ui_url=temporal.ui_url(workflow_id), ok=values["ok"],
        host_status=values.get("host_status") or None, containers=SyncCountsPublic(**values["containers"]),
        images=SyncCountsPublic(**values["images"]), events=values["events"], rows_written=values["rows_written"],
        consecutive_failures=values.get("consecutive_failures"), error=values.get("error"))


async def _round_through_update(client: Any, settings: Settings, row: DockerHost) -> Any:
    handle = client.get_workflow_handle(host_sync_workflow_id(row.id))
    try:
        return await handle.execute_update(HostSyncWorkflow.sync_round)
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:
            raise
    # The looping workflow is gone (terminated by hand in the Temporal UI): start it again.
    handle = await client.start_workflow(HostSyncWorkflow.run, _sync_input(row), id=host_sync_workflow_id(row.id),
                                         task_queue=settings.task_queue,
                                         id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING)
    return await handle.execute_update(HostSyncWorkflow.sync_round)


# ---- talking to an engine ------------------------------------------------------------------------------


def _target_of(session: Session, caller: Caller, settings: Settings, host_id: int) -> HostTarget:
    """The host's engine, scoped to the caller's account when it is shared; 422 on ``endpoint``
    when the engine allowlist no longer lets accounts use it (settings changed since it was saved)."""
    host = _host(session, caller, host_id)
    refusal = endpoint_policy_refusal(settings, host.endpoint)
    if refusal:
        session.rollback()
        raise errors.field_error(["endpoint"], refusal, "endpoint")
    shared = engine_shared(session, settings, caller.account_id, host.endpoint)
    target = host_target(host, secret_box(settings), caller.account_id if shared else None)
    session.rollback()  # no transaction stays open while the engine answers
    return target


def _scope(client: Any) -> HostTarget:
    """The target ``_engine`` opened ``client`` for (its account scope says what may be seen)."""
    return client.devops_target


def _not_found(kind: str, ident: str) -> EngineRefused:
    return EngineRefused("not_found", f"No such {kind}: {ident}")


def _own_container(client: Any, container_id: str) -> str:
    """The container's full id; on a shared engine 404 unless it carries the caller's label."""
    target = _scope(client)
    if target.scope_account is None:
        return container_id
    found = client.api.inspect_container(container_id)
    if not owns(target, (found.get("Config") or {}).get("Labels")):
        raise _not_found("container", container_id)
    return found["Id"]


def _image_owned(client: Any, reference: str) -> bool | None:
    """Whether the image carries the caller's label (None: no such image)."""
    import docker.errors

    try:
        found = client.api.inspect_image(reference)
    except docker.errors.ImageNotFound:
        return None
    return owns(_scope(client), (found.get("Config") or {}).get("Labels"))


def _visible_image(client: Any, reference: str) -> dict[str, Any]:
    """``inspect_image``; on a shared engine an image labelled with another account (built by it)
    answers 404. Unlabelled images are the engine's shared cache: they may be inspected and run."""
    found = client.api.inspect_image(reference)
    target = _scope(client)
    owner = ((found.get("Config") or {}).get("Labels") or {}).get(ACCOUNT_LABEL)
    if target.scope_account is not None and owner is not None and owner != str(target.scope_account):
        raise _not_found("image", reference)
    return found


def _own_image(client: Any, reference: str) -> None:
    """On a shared engine, only the account's own images may be tagged, pushed or removed."""
    if _scope(client).scope_account is not None and _image_owned(client, reference) is False:
        raise _not_found("image", reference)


def _free_tag(client: Any, reference: str) -> None:
    """On a shared engine a build or tag may not move a tag the account does not own."""
    if _scope(client).scope_account is not None and _image_owned(client, reference) is False:
        raise EngineRefused("conflict", f"the tag {reference} exists on this shared engine and is not this "
                                        "account's image: choose another name")


def _own_object(client: Any, kind: str, ident: str) -> str:
    """A network's id or a volume's name; on a shared engine 404 unless it carries the caller's label."""
    target = _scope(client)
    if target.scope_account is None:
        return ident
    found = client.api.inspect_network(ident) if kind == "network" else client.api.inspect_volume(ident)
    if not owns(target, found.get("Labels")):
        raise _not_found(kind, ident)
    return found["Id"] if kind == "network" else found["Name"]


def _reserved_labels(labels: dict[str, str]) -> None:
    for key in labels:
        if key.startswith(RESERVED_LABEL_PREFIX):
            raise errors.field_error(["labels", key], f"label keys starting with {RESERVED_LABEL_PREFIX!r} are "
                                                      "reserved for the service")


def _account_masker(session: Session, settings: Settings, account_id: int) -> Masker:
    """Every secret of the account, decrypted here only to mask output (like a step's masker)."""
    box = secret_box(settings)
    values = []
    for token in session.scalars(select(Secret.encrypted_value).where(Secret.account_id == account_id)):
        try:
            values.append(box.decrypt(token))
        except Exception:  # noqa: BLE001, S112 - a value the keys cannot read cannot leak either
            continue
    session.rollback()
    return Masker(values)


@dataclass
class _Action:
    """A DockerActivity to record around an engine call."""

    name: str
    target: str
    params: dict[str, Any]


async def _engine(session: Session, caller: Caller, settings: Settings, host_id: int, call: Callable[[Any], Any],
                  action: _Action | None = None, timeout: float | None = None) -> Any:
    """Run ``call(client)`` against the host in a thread; record ``action``; map engine failures."""
    target = await run_in_threadpool(_target_of, session, caller, settings, host_id)

    def run() -> Any:
        with (docker_client(target) if timeout is None else docker_client(target, timeout=timeout)) as client:
            client.devops_target = target
            return call(client)

    try:
        result = await run_in_threadpool(run)
    except Exception as exc:  # noqa: BLE001 - classified; anything else re-raised
        problem = _problem(exc, target.endpoint)
        if problem is None:
            raise
        if action is not None:
            await run_in_threadpool(_record, session, caller, host_id, action.name, action.target, action.params,
                                    problem)
        raise _http(problem) from None
    if action is not None:
        await run_in_threadpool(_record, session, caller, host_id, action.name, action.target, action.params, None)
    return result


def _consume(stream: Any, failure_kind: str) -> list[dict[str, Any]]:
    """Read a streamed engine answer (build, pull, push); an ``error`` entry raises."""
    chunks = []
    for chunk in stream:
        if isinstance(chunk, dict):
            if chunk.get("error") or chunk.get("errorDetail"):
                detail = chunk.get("errorDetail") or {}
                raise EngineRefused(failure_kind, str(detail.get("message") or chunk.get("error")).strip())
            chunks.append(chunk)
    return chunks


def _container_state(client: Any, container_id: str) -> ContainerActionPublic:
    found = client.api.inspect_container(container_id)
    state = found.get("State") or {}
    return ContainerActionPublic(container_id=found["Id"], name=(found.get("Name") or "").lstrip("/"),
                                 state=state.get("Status") or "", status=_describe_state(state))


def _describe_state(state: dict[str, Any]) -> str:
    if state.get("Running"):
        return "running"
    if state.get("Status") == "exited":
        return f"exited ({state.get('ExitCode')})"
    return state.get("Status") or ""


def _redact_env(inspected: dict[str, Any]) -> dict[str, Any]:
    """Environment values may hold injected secrets: only their names leave the API."""
    config = inspected.get("Config") or {}
    if config.get("Env"):
        config["Env"] = [entry.split("=", 1)[0] + "=***" if "=" in entry else entry for entry in config["Env"]]
    return inspected


# ---- containers ----------------------------------------------------------------------------------------------


def _label_filter(labels: list[str]) -> Callable[[dict[str, Any]], bool]:
    wanted = [item.split("=", 1) if "=" in item else [item, None] for item in labels]
    return lambda have: all(k in have and (v is None or have[k] == v) for k, v in wanted)


@router.get("/hosts/{host_id}/containers", response_model=ContainersPublic)
async def list_containers(host_id: int, session: SessionDep, caller: CurrentCaller, settings: SettingsDep,
                          live: bool = False, state: str | None = Query(None, max_length=30),
                          label: list[str] = Query([], description="key or key=value; all must match"),
                          limit: int = Query(500, ge=1, le=5000), offset: int = Query(0, ge=0)) -> ContainersPublic:
    """The host's containers from the last sync (``?live=true``: asked from the engine now)."""
    matches = _label_filter(label)
    if live:
        listed = await _engine(session, caller, settings, host_id,
                               lambda c: c.api.containers(all=True, filters=scope_of(_scope(c)) or None))
        rows = [ContainerPublic(container_id=c["Id"], **container_values(c)) for c in listed]
    else:
        def load() -> list[ContainerPublic]:
            host = _host(session, caller, host_id)
            shared = engine_shared(session, settings, caller.account_id, host.endpoint)
            found = session.scalars(select(DockerContainer).where(
                DockerContainer.host_id == host.id, DockerContainer.account_id == caller.account_id)
                .order_by(DockerContainer.id))
            # rows synced before the engine became shared may still hold other objects
            return [ContainerPublic(container_id=r.container_id, name=r.name, image=r.image, image_id=r.image_id,
                                    state=r.state, status=r.status, labels=dict(r.labels or {}),
                                    ports=list(r.ports or []), created=r.created, synced_at=r.synced_at)
                    for r in found
                    if not shared or (r.labels or {}).get(ACCOUNT_LABEL) == str(caller.account_id)]

        rows = await run_in_threadpool(load)
    rows = [r for r in rows if (state is None or r.state == state) and matches(r.labels)]
    return ContainersPublic(data=rows[offset:offset + limit], count=len(rows), live=live)


@router.post("/hosts/{host_id}/containers", response_model=ContainerActionPublic,
             status_code=status.HTTP_201_CREATED)
async def create_container(host_id: int, body: ContainerCreate, session: SessionDep, caller: WriterCaller,
                           settings: SettingsDep) -> ContainerActionPublic:
    """Create a container from a local image (and start it with ``start``); env values are not recorded.
    It runs with the hardened defaults of container templates (uid 65534, every capability dropped,
    no-new-privileges, read-only root with a /tmp tmpfs, no network, memory/CPU/pids limits) unless the
    body asks otherwise, and privileged / host network / cap_add / bind_mounts need the account's
    container policy. It is labelled ``devops.account=<account id>``."""
    await require_public_registries(settings.private_targets_allowed, (body.image, ["image"]))
    spec = await run_in_threadpool(_checked_container_spec, session, caller.account_id, body)
    labels = {**spec["labels"], ACCOUNT_LABEL: str(caller.account_id)}

    def call(client: Any) -> ContainerActionPublic:
        from docker.types import Mount

        if _scope(client).scope_account is not None:
            _visible_image(client, body.image)  # never run another account's image

        mounts = [Mount(target=m["target"], source=m["source"], type="bind", read_only=m["read_only"])
                  for m in spec["bind_mounts"]]
        host_config = client.api.create_host_config(
            mem_limit=spec["memory_mb"] * 1024 * 1024, memswap_limit=spec["memory_mb"] * 1024 * 1024,
            nano_cpus=int(spec["cpu_limit"] * 1e9), pids_limit=spec["pids_limit"], cap_drop=["ALL"],
            cap_add=spec["cap_add"] or None, security_opt=["no-new-privileges"], read_only=spec["read_only_rootfs"],
            privileged=spec["privileged"], network_mode=spec["network_mode"], mounts=mounts or None,
            tmpfs={"/tmp": "size=64m,mode=1777"})
        created = client.api.create_container(
            body.image, command=body.command, environment=dict(body.env), name=body.name, labels=labels,
            working_dir=body.working_dir, user=spec["user"] or "", host_config=host_config)
        if body.start:
            client.api.start(created["Id"])
        return _container_state(client, created["Id"])

    params = {"image": body.image, "command": body.command, "env_names": sorted(body.env), "name": body.name,
              "labels": dict(body.labels), "start": body.start,
              **{name: spec[name] for name in _HARDENING_FIELDS}}
    return await _engine(session, caller, settings, host_id, call,
                         _Action("container.create", body.name or body.image, params))


_HARDENING_FIELDS = ("user", "read_only_rootfs", "network_mode", "cpu_limit", "memory_mb", "pids_limit",
                     "privileged", "cap_add", "bind_mounts")


def _checked_container_spec(session: Session, account_id: int, body: ContainerCreate) -> dict[str, Any]:
    """The create request as a container spec, checked against the account's container policy
    like a template (422 naming each refused field)."""
    from services.containers import policy_view

    overrides = {name: getattr(body, name) for name in _HARDENING_FIELDS}
    overrides.update(image=body.image, command=list(body.command or []), labels=dict(body.labels))
    spec = resolve_spec(None, overrides)
    problems = check_spec(spec, policy_view(session, account_id))
    session.rollback()
    # env names, the working dir and the image reference keep this route's own (engine) rules
    problems = [p for p in problems if p["loc"][1] in (*_HARDENING_FIELDS, "labels")]
    if problems:
        raise errors.unprocessable(problems)
    return normalized_spec(spec)


@router.get("/hosts/{host_id}/containers/{container_id}")
async def inspect_container(host_id: int, container_id: str, session: SessionDep, caller: CurrentCaller,
                            settings: SettingsDep) -> dict[str, Any]:
    """The engine's ``docker inspect`` of the container, environment values replaced by ``***``."""
    return _redact_env(await _engine(session, caller, settings, host_id,
                                     lambda c: c.api.inspect_container(_own_container(c, container_id))))


def _container_action(verb: str) -> Callable[..., Any]:
    async def act(host_id: int, container_id: str, session: SessionDep, caller: WriterCaller, settings: SettingsDep,
                  timeout: int = Query(10, ge=0, le=600, description="stop/restart: seconds before SIGKILL")
                  ) -> ContainerActionPublic:
        def call(client: Any) -> ContainerActionPublic:
            own = _own_container(client, container_id)
            if verb == "start":
                client.api.start(own)
            elif verb == "stop":
                client.api.stop(own, timeout=timeout)
            else:
                client.api.restart(own, timeout=timeout)
            return _container_state(client, own)

        params = {} if verb == "start" else {"timeout": timeout}
        return await _engine(session, caller, settings, host_id, call, _Action(f"container.{verb}", container_id,
                                                                                  params), timeout=timeout + 30)

    act.__name__ = f"{verb}_container"
    act.__doc__ = f"``docker {verb}`` the container; answers its state afterwards."
    return act


for _verb in ("start", "stop", "restart"):
    router.add_api_route(f"/hosts/{{host_id}}/containers/{{container_id}}/{_verb}", _container_action(_verb),
                         methods=["POST"], response_model=ContainerActionPublic)


@router.delete("/hosts/{host_id}/containers/{container_id}", status_code=status.HTTP_204_NO_CONTENT)
async def remove_container(host_id: int, container_id: str, session: SessionDep, caller: WriterCaller,
                           settings: SettingsDep, force: bool = False, volumes: bool = False) -> Response:
    """Remove the container (a running one only with ``force``: 409 otherwise)."""
    await _engine(session, caller, settings, host_id,
                  lambda c: c.api.remove_container(_own_container(c, container_id), force=force, v=volumes),
                  _Action("container.remove", container_id, {"force": force, "volumes": volumes}))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/hosts/{host_id}/containers/{container_id}/logs", response_model=ContainerLogsPublic)
async def container_logs(host_id: int, container_id: str, session: SessionDep, caller: CurrentCaller,
                         settings: SettingsDep, tail: int | None = Query(None, ge=0, le=100_000)) -> ContainerLogsPublic:
    """stdout and stderr of the container (the last ``tail`` lines), at most 1 MB (the end is kept),
    with every secret of the account masked (``***``)."""
    def call(client: Any) -> bytes:
        return client.api.logs(_own_container(client, container_id), stdout=True, stderr=True,
                               tail="all" if tail is None else tail)

    raw: bytes = await _engine(session, caller, settings, host_id, call,
                               _Action("container.logs", container_id, {"tail": tail}))
    masker = await run_in_threadpool(_account_masker, session, settings, caller.account_id)
    text = raw[-MAX_LOG_BYTES:].decode("utf-8", errors="replace")
    return ContainerLogsPublic(container_id=container_id, tail=tail, logs=masker.mask(text) if masker else text)


# ---- images ----------------------------------------------------------------------------------------------------


@router.get("/hosts/{host_id}/images", response_model=ImagesPublic)
async def list_images(host_id: int, session: SessionDep, caller: CurrentCaller, settings: SettingsDep,
                      live: bool = False, limit: int = Query(500, ge=1, le=5000),
                      offset: int = Query(0, ge=0)) -> ImagesPublic:
    if live:
        listed = await _engine(session, caller, settings, host_id,
                               lambda c: c.api.images(filters=scope_of(_scope(c)) or None))
        rows = [ImagePublic(image_id=i["Id"], **image_values(i)) for i in listed]
    else:
        def load() -> list[ImagePublic]:
            host = _host(session, caller, host_id)
            found = session.scalars(select(DockerImage).where(DockerImage.host_id == host.id,
                                                              DockerImage.account_id == caller.account_id)
                                    .order_by(DockerImage.id))
            return [ImagePublic(image_id=r.image_id, repo_tags=list(r.repo_tags or []),
                                repo_digests=list(r.repo_digests or []), size_bytes=r.size_bytes, created=r.created,
                                synced_at=r.synced_at) for r in found]

        rows = await run_in_threadpool(load)
    return ImagesPublic(data=rows[offset:offset + limit], count=len(rows), live=live)


def _image_public(client: Any, reference: str, detail: str | None = None) -> ImageActionPublic:
    found = client.api.inspect_image(reference)
    return ImageActionPublic(image_id=found.get("Id"), repo_tags=list(found.get("RepoTags") or []), detail=detail)


@router.post("/hosts/{host_id}/images/pull", response_model=ImageActionPublic)
async def pull_image(host_id: int, body: ImagePull, session: SessionDep, caller: WriterCaller,
                     settings: SettingsDep) -> ImageActionPublic:
    """Pull ``image:tag`` (from a registry of the account with ``registry_id``, with its credentials)."""
    registry = (await _registry_access(session, caller, settings, body.registry_id, in_body=True)
                if body.registry_id else None)
    repository = f"{registry.host}/{body.image}" if registry else body.image
    await require_public_registries(settings.private_targets_allowed,
                                    (repository, ["registry_id"] if registry else ["image"]))

    def call(client: Any) -> ImageActionPublic:
        stream = client.api.pull(repository, tag=body.tag, stream=True, decode=True,
                                 auth_config=registry.auth_config if registry else None)
        _consume(stream, "registry_error")
        return _image_public(client, f"{repository}:{body.tag}")

    return await _engine(session, caller, settings, host_id, call,
                         _Action("image.pull", f"{repository}:{body.tag}", {"registry_id": body.registry_id}),
                         timeout=600)


@router.post("/hosts/{host_id}/images/build", response_model=ImageActionPublic,
             openapi_extra={"requestBody": {"required": True, "content": {
                 "application/x-tar": {"schema": {"type": "string", "format": "binary"}}}}})
async def build_image(host_id: int, request: Request, session: SessionDep, caller: WriterCaller,
                      settings: SettingsDep,
                      tag: str = Query(..., min_length=1, max_length=300, pattern=r"^[a-z0-9][a-z0-9._/:-]*$"),
                      dockerfile: str = Query("Dockerfile", min_length=1, max_length=300)) -> ImageActionPublic:
    """Build from a context tar sent as the body (``Content-Type: application/x-tar``), tagged ``tag``.
    A failing build step answers 422 with the engine's message."""
    content_type = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    if content_type not in ("application/x-tar", "application/tar", "application/octet-stream"):
        raise HTTPException(status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
                            "send the build context as a tar body with Content-Type: application/x-tar")
    context = bytearray()
    async for chunk in request.stream():
        context.extend(chunk)
        if len(context) > MAX_BUILD_CONTEXT_BYTES:
            raise HTTPException(status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
                                f"the build context is larger than {MAX_BUILD_CONTEXT_BYTES} bytes")
    if not context:
        raise errors.field_error([], "the build context tar is empty")
    body = bytes(context)

    def call(client: Any) -> ImageActionPublic:
        _free_tag(client, tag)
        stream = client.api.build(fileobj=io.BytesIO(body), custom_context=True, tag=tag, dockerfile=dockerfile,
                                  rm=True, forcerm=True, decode=True,
                                  labels={ACCOUNT_LABEL: str(caller.account_id)})
        _consume(stream, "build_failed")
        return _image_public(client, tag)

    return await _engine(session, caller, settings, host_id, call,
                         _Action("image.build", tag, {"dockerfile": dockerfile, "context_bytes": len(body)}),
                         timeout=1800)


@router.post("/hosts/{host_id}/images/push", response_model=ImageActionPublic)
async def push_image(host_id: int, body: ImagePush, session: SessionDep, caller: WriterCaller,
                     settings: SettingsDep) -> ImageActionPublic:
    """Tag a local image as ``<registry host>/<repository>:<tag>`` and push it with the registry's
    credentials; ``detail`` is the pushed manifest's digest."""
    registry = await _registry_access(session, caller, settings, body.registry_id, in_body=True)
    target = f"{registry.host}/{body.repository}"
    await require_public_registries(settings.private_targets_allowed, (target, ["registry_id"]))

    def call(client: Any) -> ImageActionPublic:
        _own_image(client, body.image)
        _free_tag(client, f"{target}:{body.tag}")
        client.api.tag(body.image, target, body.tag)
        chunks = _consume(client.api.push(target, tag=body.tag, stream=True, decode=True,
                                          auth_config=registry.auth_config), "registry_error")
        digest = next((c["aux"].get("Digest") for c in chunks if isinstance(c.get("aux"), dict)), None)
        return _image_public(client, f"{target}:{body.tag}", detail=digest)

    return await _engine(session, caller, settings, host_id, call,
                         _Action("image.push", f"{target}:{body.tag}",
                                 {"image": body.image, "registry_id": body.registry_id}), timeout=600)


@router.post("/hosts/{host_id}/images/{image:path}/tag", response_model=ImageActionPublic)
async def tag_image(host_id: int, image: str, body: ImageTagRequest, session: SessionDep, caller: WriterCaller,
                    settings: SettingsDep) -> ImageActionPublic:
    def call(client: Any) -> ImageActionPublic:
        _own_image(client, image)
        _free_tag(client, f"{body.repository}:{body.tag}")
        client.api.tag(image, body.repository, body.tag)
        return _image_public(client, f"{body.repository}:{body.tag}")

    return await _engine(session, caller, settings, host_id, call,
                         _Action("image.tag", image, {"repository": body.repository, "tag": body.tag}))


@router.get("/hosts/{host_id}/images/{image:path}")
async def inspect_image(host_id: int, image: str, session: SessionDep, caller: CurrentCaller,
                        settings: SettingsDep) -> dict[str, Any]:
    return _redact_env(await _engine(session, caller, settings, host_id, lambda c: _visible_image(c, image)))


@router.delete("/hosts/{host_id}/images/{image:path}", status_code=status.HTTP_204_NO_CONTENT)
async def remove_image(host_id: int, image: str, session: SessionDep, caller: WriterCaller, settings: SettingsDep,
                       force: bool = False) -> Response:
    """Remove an image or one of its tags (409 while a container uses it, unless ``force``)."""
    def call(client: Any) -> None:
        _own_image(client, image)
        client.api.remove_image(image, force=force)

    await _engine(session, caller, settings, host_id, call, _Action("image.remove", image, {"force": force}))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# ---- networks and volumes -------------------------------------------------------------------------------------------


def _network_public(found: dict[str, Any]) -> NetworkPublic:
    return NetworkPublic(id=found["Id"], name=found.get("Name") or "", driver=found.get("Driver"),
                         scope=found.get("Scope"), internal=bool(found.get("Internal")),
                         labels=dict(found.get("Labels") or {}), containers=sorted(found.get("Containers") or {}),
                         created=found.get("Created"))


def create_owned_volume(client: Any, body: VolumeCreate, account_id: int, where: str) -> VolumePublic:
    """Create a volume labelled with its account. On a shared engine Docker's "create" of an
    existing name answers that volume: refuse instead, never hand another account's volume over."""
    import docker.errors

    if _scope(client).scope_account is not None:
        try:
            client.api.inspect_volume(body.name)
        except docker.errors.NotFound:
            pass
        else:
            raise EngineRefused("conflict", f"a volume named {body.name!r} already exists on the {where}")
    return _volume_public(client.api.create_volume(body.name, driver=body.driver,
                                                   labels={**body.labels, ACCOUNT_LABEL: str(account_id)}))


def _volume_public(found: dict[str, Any]) -> VolumePublic:
    return VolumePublic(name=found["Name"], driver=found.get("Driver"), mountpoint=found.get("Mountpoint"),
                        scope=found.get("Scope"), labels=dict(found.get("Labels") or {}),
                        created=found.get("CreatedAt"))


@router.get("/hosts/{host_id}/networks", response_model=NetworksPublic)
async def list_networks(host_id: int, session: SessionDep, caller: CurrentCaller,
                        settings: SettingsDep) -> NetworksPublic:
    found = await _engine(session, caller, settings, host_id,
                          lambda c: c.api.networks(filters=scope_of(_scope(c)) or None))
    return NetworksPublic(data=[_network_public(n) for n in found], count=len(found))


@router.post("/hosts/{host_id}/networks", response_model=NetworkPublic, status_code=status.HTTP_201_CREATED)
async def create_network(host_id: int, body: NetworkCreate, session: SessionDep, caller: WriterCaller,
                         settings: SettingsDep) -> NetworkPublic:
    _reserved_labels(body.labels)

    def call(client: Any) -> NetworkPublic:
        # the engine itself accepts duplicate network names; two networks of one name confuse everyone
        if any(n.get("Name") == body.name for n in client.api.networks(names=[body.name])):
            raise EngineRefused("conflict", f"a network named {body.name!r} already exists on the host")
        created = client.api.create_network(body.name, driver=body.driver, internal=body.internal,
                                            labels={**body.labels, ACCOUNT_LABEL: str(caller.account_id)})
        return _network_public(client.api.inspect_network(created["Id"]))

    return await _engine(session, caller, settings, host_id, call,
                         _Action("network.create", body.name, body.model_dump()))


@router.get("/hosts/{host_id}/networks/{network_id}", response_model=NetworkPublic)
async def inspect_network(host_id: int, network_id: str, session: SessionDep, caller: CurrentCaller,
                          settings: SettingsDep) -> NetworkPublic:
    return _network_public(await _engine(session, caller, settings, host_id,
                                         lambda c: c.api.inspect_network(_own_object(c, "network", network_id))))


@router.delete("/hosts/{host_id}/networks/{network_id}", status_code=status.HTTP_204_NO_CONTENT)
async def remove_network(host_id: int, network_id: str, session: SessionDep, caller: WriterCaller,
                         settings: SettingsDep) -> Response:
    await _engine(session, caller, settings, host_id,
                  lambda c: c.api.remove_network(_own_object(c, "network", network_id)),
                  _Action("network.remove", network_id, {}))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/hosts/{host_id}/volumes", response_model=VolumesPublic)
async def list_volumes(host_id: int, session: SessionDep, caller: CurrentCaller,
                       settings: SettingsDep) -> VolumesPublic:
    found = await _engine(session, caller, settings, host_id,
                          lambda c: c.api.volumes(filters=scope_of(_scope(c)) or None).get("Volumes") or [])
    return VolumesPublic(data=[_volume_public(v) for v in found], count=len(found))


@router.post("/hosts/{host_id}/volumes", response_model=VolumePublic, status_code=status.HTTP_201_CREATED)
async def create_volume(host_id: int, body: VolumeCreate, session: SessionDep, caller: WriterCaller,
                        settings: SettingsDep) -> VolumePublic:
    _reserved_labels(body.labels)

    def call(client: Any) -> VolumePublic:
        return create_owned_volume(client, body, caller.account_id, "host")

    return await _engine(session, caller, settings, host_id, call,
                         _Action("volume.create", body.name, body.model_dump()))


@router.get("/hosts/{host_id}/volumes/{name}", response_model=VolumePublic)
async def inspect_volume(host_id: int, name: str, session: SessionDep, caller: CurrentCaller,
                         settings: SettingsDep) -> VolumePublic:
    return _volume_public(await _engine(session, caller, settings, host_id,
                                        lambda c: c.api.inspect_volume(_own_object(c, "volume", name))))


@router.delete("/hosts/{host_id}/volumes/{name}", status_code=status.HTTP_204_NO_CONTENT)
async def remove_volume(host_id: int, name: str, session: SessionDep, caller: WriterCaller, settings: SettingsDep,
                        force: bool = False) -> Response:
    await _engine(session, caller, settings, host_id,
                  lambda c: c.api.remove_volume(_own_object(c, "volume", name), force=force),
                  _Action("volume.remove", name, {"force": force}))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# ---- events and activities ---------------------------------------------------------------------------------------------


@router.get("/hosts/{host_id}/events", response_model=EventsPublic)
def list_events(host_id: int, session: SessionDep, caller: CurrentCaller,
                event_type: str | None = Query(None, alias="type", max_length=50),
                action: str | None = Query(None, max_length=100),
                since_nano: int | None = Query(None, ge=0), limit: int = Query(100, ge=1, le=1000),
                offset: int = Query(0, ge=0)) -> EventsPublic:
    """Engine events stored by the sync rounds, newest first."""
    host = _host(session, caller, host_id)
    query = select(DockerEvent).where(DockerEvent.host_id == host.id, DockerEvent.account_id == caller.account_id)
    if event_type:
        query = query.where(DockerEvent.event_type == event_type)
    if action:
        query = query.where(DockerEvent.action == action)
    if since_nano is not None:
        query = query.where(DockerEvent.time_nano >= since_nano)
    count = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(query.order_by(DockerEvent.time_nano.desc(), DockerEvent.id.desc())
                           .limit(limit).offset(offset))
    return EventsPublic(data=[EventPublic(id=e.id, host_id=e.host_id,
                                          time=datetime.fromtimestamp(e.time_nano / 1e9, UTC), time_nano=e.time_nano,
                                          event_type=e.event_type, action=e.action, actor_id=e.actor_id,
                                          attributes=dict(e.attributes or {})) for e in rows], count=count)


@router.get("/activities", response_model=ActivitiesPublic)
def list_activities(session: SessionDep, caller: CurrentCaller, host_id: int | None = None,
                    action: str | None = Query(None, max_length=100), limit: int = Query(100, ge=1, le=1000),
                    offset: int = Query(0, ge=0)) -> ActivitiesPublic:
    """What was done on the account's hosts and registries, newest first."""
    query = select(DockerActivity).where(DockerActivity.account_id == caller.account_id)
    if host_id is not None:
        query = query.where(DockerActivity.host_id == _host(session, caller, host_id).id)
    if action:
        query = query.where(DockerActivity.action == action)
    count = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(query.order_by(DockerActivity.id.desc()).limit(limit).offset(offset))
    return ActivitiesPublic(data=[ActivityPublic(id=a.id, host_id=a.host_id, user_id=a.user_id, action=a.action,
                                                 target=a.target, params=dict(a.params or {}), result=a.result,
                                                 error=a.error, created_at=a.created_at) for a in rows], count=count)


# ---- registries ------------------------------------------------------------------------------------------------------------


def _registry(session: Session, caller: Caller, registry_id: int) -> ContainerRegistry:
    row = session.scalar(select(ContainerRegistry).where(ContainerRegistry.id == registry_id,
                                                         ContainerRegistry.account_id == caller.account_id))
    if row is None:
        raise errors.not_found("registry")
    return row


def _registry_public(row: ContainerRegistry) -> RegistryPublic:
    return RegistryPublic(id=row.id, name=row.name, url=row.url, username=row.username,
                          password_set=row.encrypted_password is not None, created_at=row.created_at,
                          updated_at=row.updated_at)


@dataclass(frozen=True)
class _RegistryAccess:
    id: int
    url: str
    username: str | None
    password: str | None

    @property
    def host(self) -> str:
        """How image references name the registry (``host:port``)."""
        return urlsplit(self.url).netloc

    @property
    def auth_config(self) -> dict[str, str] | None:
        if not self.username:
            return None
        return {"username": self.username, "password": self.password or "", "serveraddress": self.host}

    @property
    def auth(self) -> tuple[str, str] | None:
        return (self.username, self.password or "") if self.username else None


async def _registry_access(session: Session, caller: Caller, settings: Settings, registry_id: int,
                           in_body: bool = False) -> _RegistryAccess:
    """The registry with its password decrypted: 404, or 422 on ``registry_id`` when the body named it."""
    def load() -> _RegistryAccess:
        row = session.scalar(select(ContainerRegistry).where(ContainerRegistry.id == registry_id,
                                                             ContainerRegistry.account_id == caller.account_id))
        if row is None:
            if in_body:
                raise errors.field_error(["registry_id"], f"registry {registry_id} not found in this account",
                                         "not_found")
            raise errors.not_found("registry")
        password = secret_box(settings).decrypt(row.encrypted_password) if row.encrypted_password else None
        access = _RegistryAccess(row.id, row.url, row.username, password)
        session.rollback()
        return access

    return await run_in_threadpool(load)


async def _registry_call(settings: Settings, access: _RegistryAccess, method: str, path: str,
                         headers: dict[str, str] | None = None) -> httpx.Response:
    """One Registry HTTP API v2 request with the registry's basic auth; 502 when it cannot be reached."""
    parts = urlsplit(access.url)
    refusal = await _refusal(settings, parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80),
                             "registry URL")
    if refusal:
        raise errors.conflict(refusal)
    try:
        async with httpx.AsyncClient(timeout=REGISTRY_TIMEOUT, follow_redirects=False) as client:
            return await client.request(method, access.url + path, auth=access.auth, headers=headers)
    except httpx.HTTPError as exc:
        raise HTTPException(status.HTTP_502_BAD_GATEWAY,
                            f"the registry at {access.url} cannot be reached ({type(exc).__name__})") from None


def _registry_failure(response: httpx.Response, doing: str) -> HTTPException:
    if response.status_code == 401:
        return HTTPException(status.HTTP_502_BAD_GATEWAY,
                             f"the registry refused the credentials (HTTP 401) while {doing}")
    if response.status_code == 404:
        return errors.not_found(doing.removeprefix("reading ").removeprefix("deleting "))
    if response.status_code == 405:
        return errors.conflict(f"the registry does not allow {doing} (HTTP 405; deletion is disabled there)")
    return HTTPException(status.HTTP_502_BAD_GATEWAY, f"the registry answered HTTP {response.status_code} "
                                                      f"while {doing}")


@router.get("/registries", response_model=RegistriesPublic)
def list_registries(session: SessionDep, caller: CurrentCaller) -> RegistriesPublic:
    rows = list(session.scalars(select(ContainerRegistry).where(ContainerRegistry.account_id == caller.account_id)
                                .order_by(ContainerRegistry.id)))
    return RegistriesPublic(data=[_registry_public(r) for r in rows], count=len(rows))


@router.post("/registries", response_model=RegistryPublic, status_code=status.HTTP_201_CREATED)
def create_registry(body: RegistryCreate, session: SessionDep, caller: WriterCaller,
                    settings: SettingsDep) -> RegistryPublic:
    require_public_registry_url(body.url, settings.private_targets_allowed, ["url"])
    row = ContainerRegistry(account_id=caller.account_id, name=body.name, url=body.url, username=body.username,
                            encrypted_password=secret_box(settings).encrypt(body.password) if body.password else None)
    session.add(row)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise errors.conflict(f"a registry named {body.name!r} already exists") from None
    return _registry_public(row)


@router.get("/registries/{registry_id}", response_model=RegistryPublic)
def show_registry(registry_id: int, session: SessionDep, caller: CurrentCaller) -> RegistryPublic:
    return _registry_public(_registry(session, caller, registry_id))


@router.patch("/registries/{registry_id}", response_model=RegistryPublic)
def update_registry(registry_id: int, body: RegistryUpdate, session: SessionDep, caller: WriterCaller,
                    settings: SettingsDep) -> RegistryPublic:
    row = _registry(session, caller, registry_id)
    fields = body.model_fields_set
    if "url" in fields:
        require_public_registry_url(body.url, settings.private_targets_allowed, ["url"])
    for name in ("name", "url", "username"):
        if name in fields:
            setattr(row, name, getattr(body, name))
    if "password" in fields:
        row.encrypted_password = secret_box(settings).encrypt(body.password) if body.password else None
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise errors.conflict(f"a registry named {body.name!r} already exists") from None
    return _registry_public(row)


@router.delete("/registries/{registry_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_registry(registry_id: int, session: SessionDep, caller: WriterCaller) -> Response:
    session.delete(_registry(session, caller, registry_id))
    session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/registries/{registry_id}/test", response_model=RegistryTestPublic)
async def test_registry(registry_id: int, session: SessionDep, caller: WriterCaller,
                        settings: SettingsDep) -> RegistryTestPublic:
    """Log in: ``GET /v2/`` with the stored credentials (200 means they are accepted)."""
    access = await _registry_access(session, caller, settings, registry_id)
    try:
        response = await _registry_call(settings, access, "GET", "/v2/")
    except HTTPException as exc:
        result = RegistryTestPublic(ok=False, error=str(exc.detail))
    else:
        ok = response.status_code == 200
        error = None if ok else (
            "the registry refused the credentials (HTTP 401)" if response.status_code == 401
            else f"the registry answered HTTP {response.status_code} to GET /v2/")
        result = RegistryTestPublic(ok=ok, status_code=response.status_code, error=error,
                                    api_version=response.headers.get("Docker-Distribution-API-Version"))
    problem = None if result.ok else EngineProblem("registry_error", result.error or "")
    await run_in_threadpool(_record, session, caller, None, "registry.test", access.url,
                            {"registry_id": access.id}, problem)
    return result


@router.get("/registries/{registry_id}/repositories", response_model=RegistryRepositoriesPublic)
async def list_registry_repositories(registry_id: int, session: SessionDep, caller: CurrentCaller,
                                     settings: SettingsDep, n: int = Query(1000, ge=1, le=10_000)
                                     ) -> RegistryRepositoriesPublic:
    access = await _registry_access(session, caller, settings, registry_id)
    response = await _registry_call(settings, access, "GET", f"/v2/_catalog?n={n}")
    if response.status_code != 200:
        raise _registry_failure(response, "reading the catalog")
    return RegistryRepositoriesPublic(registry_id=access.id, repositories=list(response.json().get("repositories")
                                                                               or []))


_REPOSITORY_PATH = "{name:path}"


@router.get(f"/registries/{{registry_id}}/repositories/{_REPOSITORY_PATH}/tags", response_model=RegistryTagsPublic)
async def list_registry_tags(registry_id: int, name: str, session: SessionDep, caller: CurrentCaller,
                             settings: SettingsDep) -> RegistryTagsPublic:
    access = await _registry_access(session, caller, settings, registry_id)
    response = await _registry_call(settings, access, "GET", f"/v2/{quote(name)}/tags/list")
    if response.status_code != 200:
        raise _registry_failure(response, f"reading repository {name}")
    return RegistryTagsPublic(registry_id=access.id, repository=name, tags=sorted(response.json().get("tags") or []))


@router.delete(f"/registries/{{registry_id}}/repositories/{_REPOSITORY_PATH}/tags/{{tag}}",
               status_code=status.HTTP_204_NO_CONTENT)
async def delete_registry_tag(registry_id: int, name: str, tag: str, session: SessionDep, caller: WriterCaller,
                              settings: SettingsDep) -> Response:
    """Delete the manifest the tag points at (found by its digest): the registry must allow deletion.
    Other tags of the same manifest go with it, as the Registry API defines."""
    access = await _registry_access(session, caller, settings, registry_id)
    target = f"{name}:{tag}"
    problem: EngineProblem | None = None
    try:
        head = await _registry_call(settings, access, "HEAD", f"/v2/{quote(name)}/manifests/{quote(tag)}",
                                    headers={"Accept": MANIFEST_TYPES})
        if head.status_code != 200 or not head.headers.get("Docker-Content-Digest"):
            raise _registry_failure(head, f"reading tag {target}")
        digest = head.headers["Docker-Content-Digest"]
        deleted = await _registry_call(settings, access, "DELETE", f"/v2/{quote(name)}/manifests/{digest}")
        if deleted.status_code not in (200, 202):
            raise _registry_failure(deleted, f"deleting tag {target}")
    except HTTPException as exc:
        problem = EngineProblem("registry_error", str(exc.detail))
        raise
    finally:
        await run_in_threadpool(_record, session, caller, None, "registry.tag.delete", f"{access.host}/{target}",
                                {"registry_id": access.id}, problem)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
