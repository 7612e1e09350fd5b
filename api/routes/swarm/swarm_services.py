"""Swarm services: list (last sync or live), create, inspect, update, scale, roll back, remove,
logs and tasks. Specs are built and written by :mod:`.service_specs`; env values never leave the
API (``***``) nor enter a record (their names only)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response, status
from sqlalchemy import select

from adapters.docker_engine import target_scope
from adapters.engine_access import ACCOUNT_LABEL, engine_shared, owns, scope_of
from api import errors
from api.deps import CurrentCaller, SessionDep, SettingsDep, WriterCaller
from api.routes.swarm.service_specs import (
    apply_update,
    check_service_networks,
    create_on_engine,
    create_params,
    service_spec,
    set_replicas,
    update_params,
    write_service,
)
from api.routes.swarm.shared import (
    Change,
    cluster_of,
    engine_call,
    own_service,
    redact_spec,
    service_public,
    task_public,
    tasks_of,
)
from api.swarm_schemas import (
    ServiceCreate,
    ServiceDetailPublic,
    ServiceLogsPublic,
    ServicePublic,
    ServiceScale,
    ServicesPublic,
    ServiceUpdate,
    TaskPublic,
    TasksPublic,
)
from db.models import SwarmService
from services.container_specs import require_public_registry
from services.engine_kinds import account_masker, refuse_reserved_labels

router = APIRouter()

MAX_LOG_BYTES = 1024 * 1024


def _service_detail(client: Any, name: str) -> ServiceDetailPublic:
    service = own_service(client, name)
    tasks = tasks_of(client, [service["ID"]])
    previous = service.get("PreviousSpec")
    return ServiceDetailPublic(service=service_public(service, tasks), spec=redact_spec(service.get("Spec") or {}),
                               previous_spec=redact_spec(previous) if previous else None,
                               version=int((service.get("Version") or {}).get("Index") or 0),
                               update_status=service.get("UpdateStatus"), tasks=[task_public(t) for t in tasks])


@router.get("/clusters/{cluster_id}/services", response_model=ServicesPublic)
def list_swarm_services(cluster_id: int, session: SessionDep, caller: CurrentCaller, settings: SettingsDep,
                        live: bool = False,
                        stack: Annotated[str | None, Query(max_length=200)] = None) -> ServicesPublic:
    """The swarm's services from the last sync (``?live=true``: asked from the manager now)."""
    if live:
        def call(client: Any) -> list[ServicePublic]:
            tasks = client.api.tasks()
            return [service_public(s, tasks)
                    for s in client.api.services(filters=scope_of(target_scope(client)) or None)]

        rows = engine_call(session, caller, settings, cluster_id, call)
    else:
        row = cluster_of(session, caller, cluster_id)
        shared = engine_shared(session, settings, caller.account_id, row.endpoint)
        rows = [ServicePublic(service_id=s.service_id, name=s.name, image=s.image, mode=s.mode,
                              replicas=s.replicas, running_tasks=s.running_tasks,
                              update_config=dict(s.update_config or {}), labels=dict(s.labels or {}),
                              ports=list(s.ports or []), stack_name=s.stack_name, synced_at=s.synced_at)
                for s in session.scalars(select(SwarmService).where(
                    SwarmService.cluster_id == row.id, SwarmService.account_id == caller.account_id)
                    .order_by(SwarmService.name))
                if not shared or (s.labels or {}).get(ACCOUNT_LABEL) == str(caller.account_id)]
    if stack:
        rows = [r for r in rows if r.stack_name == stack]
    return ServicesPublic(data=rows, count=len(rows), live=live)


@router.post("/clusters/{cluster_id}/services", response_model=ServiceDetailPublic,
             status_code=status.HTTP_201_CREATED)
def create_swarm_service(cluster_id: int, body: ServiceCreate, session: SessionDep, caller: WriterCaller,
                         settings: SettingsDep) -> ServiceDetailPublic:
    """``docker service create``; env values are not recorded, networks must exist (422). The
    service is labelled ``devops.account=<account id>``; the ``host`` network needs the account's
    container policy (allow_host_network), like templates."""
    require_public_registry(body.image, settings.private_targets_allowed, ["image"])
    refuse_reserved_labels(body.labels)
    check_service_networks(session, caller.account_id, body.networks)
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
            if found is None or (found.get("Name") != "host" and not owns(target_scope(client), found.get("Labels"))):
                raise errors.field_error(["networks", index], f"network {network!r} does not exist on the swarm")
        create_on_engine(client, spec)
        return _service_detail(client, body.name)

    return engine_call(session, caller, settings, cluster_id, call,
                       Change("service", "create", body.name, create_params(body)))


@router.get("/clusters/{cluster_id}/services/{name}", response_model=ServiceDetailPublic)
def show_swarm_service(cluster_id: int, name: str, session: SessionDep, caller: CurrentCaller,
                       settings: SettingsDep) -> ServiceDetailPublic:
    """The service's spec (env values as ``***``), its previous spec, update status and tasks."""
    return engine_call(session, caller, settings, cluster_id, lambda c: _service_detail(c, name))


@router.patch("/clusters/{cluster_id}/services/{name}", response_model=ServiceDetailPublic)
def update_swarm_service(cluster_id: int, name: str, body: ServiceUpdate, session: SessionDep,
                         caller: WriterCaller, settings: SettingsDep) -> ServiceDetailPublic:
    """Change image, env, command, replicas, update config or labels; Swarm rolls the tasks with
    the service's update config and keeps the old spec as the previous one (for rollback)."""
    fields = body.model_fields_set
    if "image" in fields:
        require_public_registry(body.image, settings.private_targets_allowed, ["image"])
    if "labels" in fields:
        refuse_reserved_labels(body.labels or {})

    def call(client: Any) -> ServiceDetailPublic:
        write_service(client, name, lambda spec: apply_update(spec, name, body, caller.account_id))
        return _service_detail(client, name)

    return engine_call(session, caller, settings, cluster_id, call,
                       Change("service", "update", name, update_params(body)))


@router.post("/clusters/{cluster_id}/services/{name}/scale", response_model=ServiceDetailPublic)
def scale_swarm_service(cluster_id: int, name: str, body: ServiceScale, session: SessionDep, caller: WriterCaller,
                        settings: SettingsDep) -> ServiceDetailPublic:
    def call(client: Any) -> ServiceDetailPublic:
        write_service(client, name, lambda spec: set_replicas(spec, name, body.replicas))
        return _service_detail(client, name)

    return engine_call(session, caller, settings, cluster_id, call,
                       Change("service", "scale", name, {"replicas": body.replicas}))


@router.post("/clusters/{cluster_id}/services/{name}/rollback", response_model=ServiceDetailPublic)
def rollback_swarm_service(cluster_id: int, name: str, session: SessionDep, caller: WriterCaller,
                           settings: SettingsDep) -> ServiceDetailPublic:
    """Swarm's own rollback to the service's previous spec (409 when there is none). Rollouts keep
    their own revisions and can go further back."""
    def call(client: Any) -> ServiceDetailPublic:
        write_service(client, name, None, rollback=True)
        return _service_detail(client, name)

    return engine_call(session, caller, settings, cluster_id, call, Change("service", "rollback", name, {}))


@router.delete("/clusters/{cluster_id}/services/{name}", status_code=status.HTTP_204_NO_CONTENT)
def remove_swarm_service(cluster_id: int, name: str, session: SessionDep, caller: WriterCaller,
                         settings: SettingsDep) -> Response:
    engine_call(session, caller, settings, cluster_id, lambda c: c.api.remove_service(own_service(c, name)["ID"]),
                Change("service", "remove", name, {}))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/clusters/{cluster_id}/services/{name}/logs", response_model=ServiceLogsPublic)
def get_swarm_service_logs(cluster_id: int, name: str, session: SessionDep, caller: CurrentCaller,
                           settings: SettingsDep,
                           tail: Annotated[int | None, Query(ge=0, le=100_000)] = None) -> ServiceLogsPublic:
    """stdout and stderr of the service's tasks (the last ``tail`` lines each), at most 1 MB (the end
    kept), with every secret of the account masked (``***``)."""
    def call(client: Any) -> bytes:
        service_id = own_service(client, name)["ID"]  # a clear 404 first
        kept = b""
        for chunk in client.api.service_logs(service_id, stdout=True, stderr=True, follow=False,
                                             tail="all" if tail is None else tail):
            kept = (kept + chunk)[-MAX_LOG_BYTES:]
        return kept

    raw = engine_call(session, caller, settings, cluster_id, call)
    masker = account_masker(session, settings, caller.account_id)
    text = raw.decode("utf-8", errors="replace")
    return ServiceLogsPublic(service=name, tail=tail, logs=masker.mask(text) if masker else text)


@router.get("/clusters/{cluster_id}/services/{name}/tasks", response_model=TasksPublic)
def list_swarm_service_tasks(cluster_id: int, name: str, session: SessionDep, caller: CurrentCaller,
                             settings: SettingsDep) -> TasksPublic:
    def call(client: Any) -> list[TaskPublic]:
        return [task_public(t) for t in tasks_of(client, [own_service(client, name)["ID"]])]

    tasks = engine_call(session, caller, settings, cluster_id, call)
    return TasksPublic(data=tasks, count=len(tasks))
