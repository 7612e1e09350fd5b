"""Stacks: compose files checked here, deployed and removed with the ``docker`` CLI
(:mod:`services.swarm_stacks`), kept on a row when we deployed them, found live by the stack label.

On a shared engine a stack name is the account's only when every service carrying it is: deploying
or removing over another account's stack of the same name is refused (409 / 404)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response, status

from adapters.docker_engine import EngineProblem, target_scope
from adapters.engine_access import scope_of
from adapters.swarm_engine import STACK_LABEL
from api import errors
from api.deps import CurrentCaller, SessionDep, SettingsDep, WriterCaller
from api.routes.swarm.shared import (
    Change,
    cluster_of,
    engine_call,
    http_error,
    record,
    service_public,
    task_public,
    tasks_of,
)
from api.swarm_schemas import StackDeploy, StackDetailPublic, StackPublic, StacksPublic
from db.models import SwarmStack
from services import engines, swarm_stacks
from services.container_specs import require_public_registry
from services.engine_kinds import SWARM_CLUSTER

router = APIRouter()


def _stack_public(row: SwarmStack, with_compose: bool = False) -> StackPublic:
    return StackPublic(id=row.id, name=row.name, status=row.status, services=list(row.services or []),
                       compose=row.compose if with_compose else None, created_at=row.created_at,
                       updated_at=row.updated_at)


@router.post("/clusters/{cluster_id}/stacks", response_model=StackPublic, status_code=status.HTTP_201_CREATED)
def deploy_swarm_stack(cluster_id: int, body: StackDeploy, session: SessionDep, caller: WriterCaller,
                       settings: SettingsDep) -> StackPublic:
    """Validate the compose file, check every image is on the manager, then ``docker stack deploy``
    (deploying an existing stack again updates it). The file is kept on the stack's row.
    ``resolve_image`` is the CLI's ``--resolve-image``: ``never`` by default, since images are
    checked on the manager and no registry is assumed reachable to pin digests."""
    images = swarm_stacks.validate_compose(body.compose)
    for service, image in images.items():
        require_public_registry(image, settings.private_targets_allowed, ["compose", "services", service, "image"])
    labelled, externals = swarm_stacks.checked_compose(session, caller.account_id, body.compose)
    change = Change("stack", "deploy", body.name, {"services": sorted(images), "images": images})
    target = engines.open_target(session, SWARM_CLUSTER, caller.account_id, settings, cluster_id)
    engine_call(session, caller, settings, cluster_id,
                lambda c: swarm_stacks.check_manager(c, body.name, images, externals))
    done = swarm_stacks.run_cli(target, ["stack", "deploy", "--resolve-image", body.resolve_image,
                                         "-c", "{compose}", body.name], labelled)
    if done.returncode != 0:
        # The manager answered just before: the CLI refusing is about the file or its services.
        message = swarm_stacks.cli_message(done, "docker stack deploy failed")
        record(session, caller, cluster_id, change, EngineProblem("bad_request", message))
        raise errors.field_error(["compose"], f"docker stack deploy refused the file: {message}", "stack_deploy")
    services = sorted(f"{body.name}_{name}" for name in images)
    row = swarm_stacks.save_stack(session, caller.account_id, cluster_id, body.name, body.compose, services)
    record(session, caller, cluster_id, change, None)
    return _stack_public(row, with_compose=True)


@router.get("/clusters/{cluster_id}/stacks", response_model=StacksPublic)
def list_swarm_stacks(cluster_id: int, session: SessionDep, caller: CurrentCaller, settings: SettingsDep,
                      live: bool = False) -> StacksPublic:
    """Stacks we deployed; with ``?live=true`` also those found on the swarm (by the stack label)."""
    row = cluster_of(session, caller, cluster_id)
    rows = [_stack_public(s) for s in swarm_stacks.stack_rows(session, caller.account_id, row.id)]
    if live:
        found = engine_call(session, caller, settings, cluster_id, lambda c: c.api.services(
            filters={"label": [STACK_LABEL, *scope_of(target_scope(c)).get("label", [])]}))
        by_stack: dict[str, list[str]] = {}
        for service in found:
            spec = service.get("Spec") or {}
            by_stack.setdefault((spec.get("Labels") or {})[STACK_LABEL], []).append(spec.get("Name") or "")
        known = {r.name for r in rows}
        rows += [StackPublic(id=None, name=name, status="deployed", services=sorted(names))
                 for name, names in sorted(by_stack.items()) if name not in known]
    return StacksPublic(data=rows, count=len(rows))


@router.get("/clusters/{cluster_id}/stacks/{name}", response_model=StackDetailPublic)
def show_swarm_stack(cluster_id: int, name: str, session: SessionDep, caller: CurrentCaller,
                     settings: SettingsDep) -> StackDetailPublic:
    """The stack (its compose file when we deployed it), its services and their tasks, live."""
    def call(client: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        services = client.api.services(filters={"label": [f"{STACK_LABEL}={name}",
                                                          *scope_of(target_scope(client)).get("label", [])]})
        return services, tasks_of(client, [s["ID"] for s in services])

    row = swarm_stacks.stack_row(session, caller.account_id, cluster_of(session, caller, cluster_id).id, name)
    services, tasks = engine_call(session, caller, settings, cluster_id, call)
    if row is None and not services:
        raise errors.not_found("stack")
    stack = (_stack_public(row, with_compose=True) if row is not None
             else StackPublic(id=None, name=name, status="deployed",
                              services=sorted((s.get("Spec") or {}).get("Name") or "" for s in services)))
    return StackDetailPublic(stack=stack, services=[service_public(s, tasks) for s in services],
                             tasks=[task_public(t) for t in tasks])


@router.delete("/clusters/{cluster_id}/stacks/{name}", status_code=status.HTTP_204_NO_CONTENT)
def remove_swarm_stack(cluster_id: int, name: str, session: SessionDep, caller: WriterCaller,
                       settings: SettingsDep) -> Response:
    """``docker stack rm``: its services, networks, secrets and configs go (the engine finishes
    removing networks shortly after), and so does our row."""
    row = swarm_stacks.stack_row(session, caller.account_id, cluster_of(session, caller, cluster_id).id, name)
    found = engine_call(session, caller, settings, cluster_id,
                        lambda c: swarm_stacks.owned_stack_services(c, name))
    if row is None and not found:
        raise errors.not_found("stack")
    change = Change("stack", "remove", name, {})
    target = engines.open_target(session, SWARM_CLUSTER, caller.account_id, settings, cluster_id)
    if found:
        done = swarm_stacks.remove_with_retries(target, name)
        if done.returncode != 0:
            message = swarm_stacks.cli_message(done, "docker stack rm failed")
            problem = EngineProblem("engine_error", f"docker stack rm failed: {message}")
            record(session, caller, cluster_id, change, problem)
            raise http_error(problem)
    swarm_stacks.forget_stack(session, caller.account_id, cluster_id, name)
    record(session, caller, cluster_id, change, None)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
