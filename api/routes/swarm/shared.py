"""What the ``/swarm`` resource routes share: the cluster row, one call to its manager with its
record, the account scoping of objects on a shared engine, and the public shapes of services and
tasks (used by the service and the stack routes).

Every node, service, stack, network, volume, secret and config action goes through
:func:`engine_call`: the cluster's manager (scoped to the account when the engine is shared, see
:mod:`adapters.engine_access`), a short timeout, a ``SwarmEvent`` (source ``api``) when the action
changes something — its parameters without values that could be secret — and engine failures as a
clear 4xx (404 missing, 409 conflict, 403 refused on a shared engine, 400 refused) or 502
(unreachable, engine error), never 500. Blocking: the routes are plain ``def`` (a worker thread).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import HTTPException, status
from sqlalchemy.orm import Session

from adapters.docker_engine import (
    EngineProblem,
    EngineRefused,
    NotASwarmManager,
    docker_client,
    problem_of,
    refused_not_found,
    target_scope,
)
from adapters.engine_access import owns
from adapters.swarm_engine import running_counts, service_values
from api.deps import Caller
from api.swarm_schemas import ServicePublic, TaskPublic
from db.models import SwarmCluster
from services import engines
from services.engine_kinds import SWARM_CLUSTER, record_swarm_change
from settings import Settings

_STATUS_OF = {"not_found": status.HTTP_404_NOT_FOUND, "conflict": status.HTTP_409_CONFLICT,
              "forbidden": status.HTTP_403_FORBIDDEN,
              "bad_request": status.HTTP_400_BAD_REQUEST, "unreachable": status.HTTP_502_BAD_GATEWAY,
              "engine_error": status.HTTP_502_BAD_GATEWAY}


def http_error(problem: EngineProblem) -> HTTPException:
    """An engine problem as its HTTP answer (a plain-string ``detail``, as the engine worded it)."""
    return HTTPException(_STATUS_OF.get(problem.kind, status.HTTP_502_BAD_GATEWAY), problem.message)


def classify(exc: BaseException, endpoint: str) -> EngineProblem | None:
    """:func:`adapters.docker_engine.problem_of`, plus: an engine that is not a swarm manager is a conflict."""
    if isinstance(exc, NotASwarmManager):
        return EngineProblem("conflict", str(exc))
    return problem_of(exc, endpoint)


def cluster_of(session: Session, caller: Caller, cluster_id: int) -> SwarmCluster:
    """The caller's cluster (404 otherwise)."""
    return engines.get_endpoint(session, SWARM_CLUSTER, caller.account_id, cluster_id)


@dataclass
class Change:
    """A change to record as a ``SwarmEvent`` around an engine call."""

    kind: str  # node | service | stack | network | volume | secret | config
    action: str
    target: str
    params: dict[str, Any]


def record(session: Session, caller: Caller, cluster_id: int, change: Change, problem: EngineProblem | None) -> None:
    """One ``SwarmEvent`` (source ``api``) for a change we made or tried."""
    record_swarm_change(session, caller.account_id, caller.user_id, cluster_id, change.kind, change.action,
                        change.target, change.params, problem)


def engine_call(session: Session, caller: Caller, settings: Settings, cluster_id: int, call: Callable[[Any], Any],
                change: Change | None = None, timeout: float | None = None) -> Any:
    """``call(client)`` against the cluster's manager; ``change`` recorded; failures mapped (blocking)."""
    target = engines.open_target(session, SWARM_CLUSTER, caller.account_id, settings, cluster_id)
    try:
        with (docker_client(target) if timeout is None else docker_client(target, timeout=timeout)) as client:
            client.devops_target = target
            result = call(client)
    except Exception as exc:  # noqa: BLE001 - classified; anything else re-raised
        problem = classify(exc, target.endpoint)
        if problem is None:
            raise
        if change is not None:
            record(session, caller, cluster_id, change, problem)
        raise http_error(problem) from None
    if change is not None:
        record(session, caller, cluster_id, change, None)
    return result


# ---- account scoping on a shared engine -------------------------------------------------------------------------


def own_service(client: Any, name: str) -> dict[str, Any]:
    """``inspect_service``; on a shared engine 404 unless the service carries the caller's label."""
    found = client.api.inspect_service(name)
    if not owns(target_scope(client), (found.get("Spec") or {}).get("Labels")):
        raise refused_not_found("service", name)
    return found


def own_swarm_object(client: Any, kind: str, ident: str) -> str:
    """A network, volume, secret or config id/name; on a shared engine 404 unless it is the caller's."""
    target = target_scope(client)
    if target.scope_account is None:
        return ident
    found = getattr(client.api, f"inspect_{kind}")(ident)
    labels = found.get("Labels") if kind in ("network", "volume") else (found.get("Spec") or {}).get("Labels")
    if not owns(target, labels):
        raise refused_not_found(kind, ident)
    return found.get("Id") or found.get("ID") or found.get("Name") or ident


def refuse_on_shared(client: Any, settings: Settings, what: str) -> None:
    """Nodes carry every account's tasks: on a shared engine only the operator changes them
    (in development the operator is the only user)."""
    if target_scope(client).scope_account is not None and settings.environment != "development":
        raise EngineRefused("forbidden", f"{what} of a shared engine belong to its operator: refused")


# ---- services and tasks as answered ---------------------------------------------------------------------------


def redact_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """Environment values may hold secrets: only their names leave the API."""
    spec = copy.deepcopy(spec)
    container = (spec.get("TaskTemplate") or {}).get("ContainerSpec") or {}
    if container.get("Env"):
        container["Env"] = [e.split("=", 1)[0] + "=***" if "=" in e else e for e in container["Env"]]
    return spec


def task_public(task: dict[str, Any]) -> TaskPublic:
    state = task.get("Status") or {}
    container = state.get("ContainerStatus") or {}
    spec = ((task.get("Spec") or {}).get("ContainerSpec") or {})
    return TaskPublic(task_id=task["ID"], service_id=task.get("ServiceID") or "", slot=task.get("Slot"),
                      node_id=task.get("NodeID"), desired_state=task.get("DesiredState") or "",
                      state=state.get("State") or "", message=state.get("Message"), error=state.get("Err"),
                      exit_code=container.get("ExitCode"), container_id=container.get("ContainerID"),
                      image=spec.get("Image") or "", created_at=task.get("CreatedAt"), updated_at=task.get("UpdatedAt"))


def tasks_of(client: Any, service_ids: list[str]) -> list[dict[str, Any]]:
    """The tasks of these services, by service, slot and creation."""
    tasks = []
    for service_id in service_ids:
        tasks.extend(client.api.tasks(filters={"service": service_id}))
    return sorted(tasks, key=lambda t: (t.get("ServiceID") or "", t.get("Slot") or 0, t.get("CreatedAt") or ""))


def service_public(service: dict[str, Any], tasks: list[dict[str, Any]]) -> ServicePublic:
    running = running_counts(tasks).get(service["ID"], 0)
    return ServicePublic(service_id=service["ID"], **service_values(service, running))
