"""What the ``/docker`` routes share: one engine call with its record, and the account scoping
of objects on a shared engine.

Every container, image, network and volume action goes through :func:`engine_call`
(:mod:`api.engine_calls`): the host's engine (scoped to the account when it is shared, see
:mod:`adapters.engine_access`), a short timeout, a ``DockerActivity`` when the action changes
something, and engine failures as a clear 4xx (404 missing, 409 conflict, 400 refused, 422 failed
build) or 502 (unreachable, engine error) — never 500. On a shared engine every object another
account made answers 404.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import docker.errors
from sqlalchemy.orm import Session

from adapters.docker_engine import EngineProblem, EngineRefused, HostTarget, refused_not_found, target_scope
from adapters.engine_access import ACCOUNT_LABEL, owns
from api import engine_calls
from api.deps import Caller
from api.docker_schemas import ContainerActionPublic, NetworkPublic, VolumeCreate, VolumePublic
from services.engine_kinds import DOCKER_HOST, record_docker_activity
from settings import Settings


@dataclass
class Action:
    """A DockerActivity to record around an engine call."""

    name: str
    target: str
    params: dict[str, Any]


def record(session: Session, caller: Caller, host_id: int | None, action: Action,
           problem: EngineProblem | None) -> None:
    record_docker_activity(session, caller.account_id, caller.user_id, host_id, action.name, action.target,
                           action.params, problem)


def engine_call(session: Session, caller: Caller, settings: Settings, host_id: int, call: Callable[[Any], Any],
                action: Action | None = None, timeout: float | None = None) -> Any:
    """``call(client)`` against the host's engine (:func:`api.engine_calls.engine_call`), ``action``
    recorded as a ``DockerActivity``."""
    def recorded(problem: EngineProblem | None) -> None:
        record(session, caller, host_id, action, problem)

    return engine_calls.engine_call(session, DOCKER_HOST, caller.account_id, settings, host_id, call,
                                    recorded if action is not None else None, timeout)


def consume(stream: Any, failure_kind: str) -> list[dict[str, Any]]:
    """Read a streamed engine answer (build, pull, push); an ``error`` entry raises."""
    chunks = []
    for chunk in stream:
        if isinstance(chunk, dict):
            if chunk.get("error") or chunk.get("errorDetail"):
                detail = chunk.get("errorDetail") or {}
                raise EngineRefused(failure_kind, str(detail.get("message") or chunk.get("error")).strip())
            chunks.append(chunk)
    return chunks


def redact_env(inspected: dict[str, Any]) -> dict[str, Any]:
    """Environment values may hold injected secrets: only their names leave the API."""
    config = inspected.get("Config") or {}
    if config.get("Env"):
        config["Env"] = [entry.split("=", 1)[0] + "=***" if "=" in entry else entry for entry in config["Env"]]
    return inspected


# ---- objects of the caller's account on a shared engine ---------------------------------------------------


def own_container(client: Any, container_id: str) -> str:
    """The container's full id; on a shared engine 404 unless it carries the caller's label."""
    target: HostTarget = target_scope(client)
    if target.scope_account is None:
        return container_id
    found = client.api.inspect_container(container_id)
    if not owns(target, (found.get("Config") or {}).get("Labels")):
        raise refused_not_found("container", container_id)
    return found["Id"]


def _image_owned(client: Any, reference: str) -> bool | None:
    """Whether the image carries the caller's label (None: no such image)."""
    try:
        found = client.api.inspect_image(reference)
    except docker.errors.ImageNotFound:
        return None
    return owns(target_scope(client), (found.get("Config") or {}).get("Labels"))


def visible_image(client: Any, reference: str) -> dict[str, Any]:
    """``inspect_image``; on a shared engine an image labelled with another account (built by it)
    answers 404. Unlabelled images are the engine's shared cache: they may be inspected and run."""
    found = client.api.inspect_image(reference)
    target = target_scope(client)
    owner = ((found.get("Config") or {}).get("Labels") or {}).get(ACCOUNT_LABEL)
    if target.scope_account is not None and owner is not None and owner != str(target.scope_account):
        raise refused_not_found("image", reference)
    return found


def own_image(client: Any, reference: str) -> None:
    """On a shared engine, only the account's own images may be tagged, pushed or removed."""
    if target_scope(client).scope_account is not None and _image_owned(client, reference) is False:
        raise refused_not_found("image", reference)


def free_tag(client: Any, reference: str) -> None:
    """On a shared engine a build or tag may not move a tag the account does not own."""
    if target_scope(client).scope_account is not None and _image_owned(client, reference) is False:
        raise EngineRefused("conflict", f"the tag {reference} exists on this shared engine and is not this "
                                        "account's image: choose another name")


def own_object(client: Any, kind: str, ident: str) -> str:
    """A network's id or a volume's name; on a shared engine 404 unless it carries the caller's label."""
    target = target_scope(client)
    if target.scope_account is None:
        return ident
    found = client.api.inspect_network(ident) if kind == "network" else client.api.inspect_volume(ident)
    if not owns(target, found.get("Labels")):
        raise refused_not_found(kind, ident)
    return found["Id"] if kind == "network" else found["Name"]


# ---- answers ------------------------------------------------------------------------------------------------


def container_state(client: Any, container_id: str) -> ContainerActionPublic:
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


def network_public(found: dict[str, Any]) -> NetworkPublic:
    return NetworkPublic(id=found["Id"], name=found.get("Name") or "", driver=found.get("Driver"),
                         scope=found.get("Scope"), internal=bool(found.get("Internal")),
                         labels=dict(found.get("Labels") or {}), containers=sorted(found.get("Containers") or {}),
                         created=found.get("Created"))


def volume_public(found: dict[str, Any]) -> VolumePublic:
    return VolumePublic(name=found["Name"], driver=found.get("Driver"), mountpoint=found.get("Mountpoint"),
                        scope=found.get("Scope"), labels=dict(found.get("Labels") or {}),
                        created=found.get("CreatedAt"))


def create_owned_volume(client: Any, body: VolumeCreate, account_id: int, where: str) -> VolumePublic:
    """Create a volume labelled with its account (on a host or a cluster). On a shared engine
    Docker's "create" of an existing name answers that volume: refuse instead, never hand another
    account's volume over."""
    if target_scope(client).scope_account is not None:
        try:
            client.api.inspect_volume(body.name)
        except docker.errors.NotFound:
            pass
        else:
            raise EngineRefused("conflict", f"a volume named {body.name!r} already exists on the {where}")
    return volume_public(client.api.create_volume(body.name, driver=body.driver,
                                                  labels={**body.labels, ACCOUNT_LABEL: str(account_id)}))
