"""``/docker/hosts/{host_id}/containers``: what runs on a host.

Containers are created with the hardened defaults of container templates and pass the account's
container policy; they carry the account's label, and on a shared engine only containers with it
can be seen or touched. Their logs are masked with the account's secrets.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from docker.types import Mount
from fastapi import APIRouter, Query, Response, status
from sqlalchemy import select
from sqlalchemy.orm import Session

from adapters.docker_engine import container_values, target_scope
from adapters.engine_access import ACCOUNT_LABEL, engine_shared, scope_of
from api import errors
from api.deps import CurrentCaller, SessionDep, SettingsDep, WriterCaller
from api.docker_schemas import (
    ContainerActionPublic,
    ContainerCreate,
    ContainerLogsPublic,
    ContainerPublic,
    ContainersPublic,
)
from api.routes.docker.shared import (
    Action,
    container_state,
    engine_call,
    own_container,
    redact_env,
    visible_image,
)
from db.models import DockerContainer
from services import engines
from services.container_specs import check_spec, normalized_spec, require_public_registry, resolve_spec
from services.containers import policy_view
from services.engine_kinds import DOCKER_HOST, account_masker
from settings import Settings

router = APIRouter()

MAX_LOG_BYTES = 1024 * 1024
_HARDENING_FIELDS = ("user", "read_only_rootfs", "network_mode", "cpu_limit", "memory_mb", "pids_limit",
                     "privileged", "cap_add", "bind_mounts")


def _label_filter(labels: list[str]) -> Callable[[dict[str, Any]], bool]:
    wanted = [item.split("=", 1) if "=" in item else [item, None] for item in labels]
    return lambda have: all(k in have and (v is None or have[k] == v) for k, v in wanted)


def _synced_containers(session: Session, account_id: int, settings: Settings, host_id: int) -> list[ContainerPublic]:
    host = engines.get_endpoint(session, DOCKER_HOST, account_id, host_id)
    shared = engine_shared(session, settings, account_id, host.endpoint)
    found = session.scalars(select(DockerContainer).where(
        DockerContainer.host_id == host.id, DockerContainer.account_id == account_id).order_by(DockerContainer.id))
    # rows synced before the engine became shared may still hold other objects
    return [ContainerPublic(container_id=r.container_id, name=r.name, image=r.image, image_id=r.image_id,
                            state=r.state, status=r.status, labels=dict(r.labels or {}), ports=list(r.ports or []),
                            created=r.created, synced_at=r.synced_at)
            for r in found if not shared or (r.labels or {}).get(ACCOUNT_LABEL) == str(account_id)]


@router.get("/hosts/{host_id}/containers", response_model=ContainersPublic)
def list_host_containers(host_id: int, session: SessionDep, caller: CurrentCaller, settings: SettingsDep,
                         live: bool = False, state: Annotated[str | None, Query(max_length=30)] = None,
                         label: Annotated[list[str], Query(description="key or key=value; all must match")] = [],  # noqa: B006
                         limit: Annotated[int, Query(ge=1, le=5000)] = 500,
                         offset: Annotated[int, Query(ge=0)] = 0) -> ContainersPublic:
    """The host's containers from the last sync (``?live=true``: asked from the engine now)."""
    matches = _label_filter(label)
    if live:
        listed = engine_call(session, caller, settings, host_id,
                             lambda c: c.api.containers(all=True, filters=scope_of(target_scope(c)) or None))
        rows = [ContainerPublic(container_id=c["Id"], **container_values(c)) for c in listed]
    else:
        rows = _synced_containers(session, caller.account_id, settings, host_id)
    rows = [r for r in rows if (state is None or r.state == state) and matches(r.labels)]
    return ContainersPublic(data=rows[offset:offset + limit], count=len(rows), live=live)


def _checked_container_spec(session: Session, account_id: int, body: ContainerCreate) -> dict[str, Any]:
    """The create request as a container spec, checked against the account's container policy
    like a template (422 naming each refused field)."""
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


@router.post("/hosts/{host_id}/containers", response_model=ContainerActionPublic,
             status_code=status.HTTP_201_CREATED)
def create_host_container(host_id: int, body: ContainerCreate, session: SessionDep, caller: WriterCaller,
                          settings: SettingsDep) -> ContainerActionPublic:
    """Create a container from a local image (and start it with ``start``); env values are not recorded.
    It runs with the hardened defaults of container templates (uid 65534, every capability dropped,
    no-new-privileges, read-only root with a /tmp tmpfs, no network, memory/CPU/pids limits) unless the
    body asks otherwise, and privileged / host network / cap_add / bind_mounts need the account's
    container policy. It is labelled ``devops.account=<account id>``."""
    require_public_registry(body.image, settings.private_targets_allowed, ["image"])
    spec = _checked_container_spec(session, caller.account_id, body)
    labels = {**spec["labels"], ACCOUNT_LABEL: str(caller.account_id)}

    def call(client: Any) -> ContainerActionPublic:
        if target_scope(client).scope_account is not None:
            visible_image(client, body.image)  # never run another account's image
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
        return container_state(client, created["Id"])

    params = {"image": body.image, "command": body.command, "env_names": sorted(body.env), "name": body.name,
              "labels": dict(body.labels), "start": body.start,
              **{name: spec[name] for name in _HARDENING_FIELDS}}
    return engine_call(session, caller, settings, host_id, call,
                       Action("container.create", body.name or body.image, params))


@router.get("/hosts/{host_id}/containers/{container_id}")
def inspect_host_container(host_id: int, container_id: str, session: SessionDep, caller: CurrentCaller,
                           settings: SettingsDep) -> dict[str, Any]:
    """The engine's ``docker inspect`` of the container, environment values replaced by ``***``."""
    return redact_env(engine_call(session, caller, settings, host_id,
                                  lambda c: c.api.inspect_container(own_container(c, container_id))))


def _container_action(verb: str) -> Callable[..., Any]:
    def act(host_id: int, container_id: str, session: SessionDep, caller: WriterCaller, settings: SettingsDep,
            timeout: Annotated[int, Query(ge=0, le=600, description="stop/restart: seconds before SIGKILL")] = 10
            ) -> ContainerActionPublic:
        def call(client: Any) -> ContainerActionPublic:
            own = own_container(client, container_id)
            if verb == "start":
                client.api.start(own)
            elif verb == "stop":
                client.api.stop(own, timeout=timeout)
            else:
                client.api.restart(own, timeout=timeout)
            return container_state(client, own)

        params = {} if verb == "start" else {"timeout": timeout}
        return engine_call(session, caller, settings, host_id, call, Action(f"container.{verb}", container_id, params),
                           timeout=timeout + 30)

    act.__name__ = f"{verb}_host_container"
    act.__doc__ = f"``docker {verb}`` the container; answers its state afterwards."
    return act


for _verb in ("start", "stop", "restart"):
    router.add_api_route(f"/hosts/{{host_id}}/containers/{{container_id}}/{_verb}", _container_action(_verb),
                         methods=["POST"], response_model=ContainerActionPublic)


@router.delete("/hosts/{host_id}/containers/{container_id}", status_code=status.HTTP_204_NO_CONTENT)
def remove_host_container(host_id: int, container_id: str, session: SessionDep, caller: WriterCaller,
                          settings: SettingsDep, force: bool = False, volumes: bool = False) -> Response:
    """Remove the container (a running one only with ``force``: 409 otherwise)."""
    engine_call(session, caller, settings, host_id,
                lambda c: c.api.remove_container(own_container(c, container_id), force=force, v=volumes),
                Action("container.remove", container_id, {"force": force, "volumes": volumes}))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/hosts/{host_id}/containers/{container_id}/logs", response_model=ContainerLogsPublic)
def get_host_container_logs(host_id: int, container_id: str, session: SessionDep, caller: CurrentCaller,
                            settings: SettingsDep,
                            tail: Annotated[int | None, Query(ge=0, le=100_000)] = None) -> ContainerLogsPublic:
    """stdout and stderr of the container (the last ``tail`` lines), at most 1 MB (the end is kept),
    with every secret of the account masked (``***``)."""
    def call(client: Any) -> bytes:
        return client.api.logs(own_container(client, container_id), stdout=True, stderr=True,
                               tail="all" if tail is None else tail)

    raw: bytes = engine_call(session, caller, settings, host_id, call,
                             Action("container.logs", container_id, {"tail": tail}))
    masker = account_masker(session, settings, caller.account_id)
    text = raw[-MAX_LOG_BYTES:].decode("utf-8", errors="replace")
    return ContainerLogsPublic(container_id=container_id, tail=tail, logs=masker.mask(text) if masker else text)
