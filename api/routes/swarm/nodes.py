"""The swarm's nodes: from the last sync or live from the manager; availability, labels, removal.

Nodes carry every account's tasks: on a shared engine only the operator changes them."""

from __future__ import annotations

import copy
from typing import Any

from fastapi import APIRouter, Response, status
from sqlalchemy import select

from adapters.docker_engine import EngineRefused
from adapters.swarm_engine import node_values
from api.deps import CurrentCaller, SessionDep, SettingsDep, WriterCaller
from api.routes.swarm.shared import Change, cluster_of, engine_call, refuse_on_shared
from api.swarm_schemas import NodePublic, NodesPublic, NodeUpdate
from db.models import SwarmNode

router = APIRouter()


def _node_public(node: dict[str, Any]) -> NodePublic:
    return NodePublic(node_id=node["ID"], leader=bool((node.get("ManagerStatus") or {}).get("Leader")),
                      **node_values(node))


@router.get("/clusters/{cluster_id}/nodes", response_model=NodesPublic)
def list_swarm_nodes(cluster_id: int, session: SessionDep, caller: CurrentCaller, settings: SettingsDep,
                     live: bool = False) -> NodesPublic:
    """The swarm's nodes from the last sync (``?live=true``: asked from the manager now)."""
    if live:
        found = engine_call(session, caller, settings, cluster_id, lambda c: c.api.nodes())
        return NodesPublic(data=[_node_public(n) for n in found], count=len(found), live=True)
    row = cluster_of(session, caller, cluster_id)
    rows = [NodePublic(node_id=n.node_id, hostname=n.hostname, role=n.role, availability=n.availability,
                       state=n.state, address=n.address, engine_version=n.engine_version,
                       labels=dict(n.labels or {}), synced_at=n.synced_at)
            for n in session.scalars(select(SwarmNode).where(SwarmNode.cluster_id == row.id,
                                                             SwarmNode.account_id == caller.account_id)
                                     .order_by(SwarmNode.id))]
    return NodesPublic(data=rows, count=len(rows), live=False)


@router.get("/clusters/{cluster_id}/nodes/{node_id}")
def inspect_swarm_node(cluster_id: int, node_id: str, session: SessionDep, caller: CurrentCaller,
                       settings: SettingsDep) -> dict[str, Any]:
    """The engine's ``docker node inspect``."""
    return engine_call(session, caller, settings, cluster_id, lambda c: c.api.inspect_node(node_id))


@router.patch("/clusters/{cluster_id}/nodes/{node_id}", response_model=NodePublic)
def update_swarm_node(cluster_id: int, node_id: str, body: NodeUpdate, session: SessionDep, caller: WriterCaller,
                      settings: SettingsDep) -> NodePublic:
    """Availability (active / pause / drain) and labels, written with the node's current version."""
    fields = body.model_fields_set

    def call(client: Any) -> NodePublic:
        refuse_on_shared(client, settings, "nodes")
        node = client.api.inspect_node(node_id)
        spec = copy.deepcopy(node.get("Spec") or {})
        if "availability" in fields:
            spec["Availability"] = body.availability
        if "labels" in fields:
            spec["Labels"] = dict(body.labels or {})
        client.api.update_node(node["ID"], node["Version"]["Index"], spec)
        return _node_public(client.api.inspect_node(node["ID"]))

    return engine_call(session, caller, settings, cluster_id, call,
                       Change("node", "update", node_id, body.model_dump(exclude_unset=True)))


@router.delete("/clusters/{cluster_id}/nodes/{node_id}", status_code=status.HTTP_204_NO_CONTENT)
def remove_swarm_node(cluster_id: int, node_id: str, session: SessionDep, caller: WriterCaller,
                      settings: SettingsDep, force: bool = False) -> Response:
    """Remove a node from the swarm (a node still up only with ``force``). The swarm's only
    manager is never removed: that would destroy the swarm (409, the engine is not asked)."""
    def call(client: Any) -> None:
        refuse_on_shared(client, settings, "nodes")
        node = client.api.inspect_node(node_id)
        if (node.get("Spec") or {}).get("Role") == "manager":
            managers = [n for n in client.api.nodes() if (n.get("Spec") or {}).get("Role") == "manager"]
            if len(managers) <= 1:
                raise EngineRefused("conflict", f"node {node_id} is the swarm's only manager: removing it would "
                                                "leave the swarm without a manager; promote another node first")
        client.api.remove_node(node["ID"], force=force)

    engine_call(session, caller, settings, cluster_id, call, Change("node", "remove", node_id, {"force": force}))
    return Response(status_code=status.HTTP_204_NO_CONTENT)
