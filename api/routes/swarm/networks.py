"""The swarm's networks (overlay by default), labelled with their account."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response, status

from adapters.docker_engine import EngineRefused, target_scope
from adapters.engine_access import ACCOUNT_LABEL, scope_of
from api.deps import CurrentCaller, SessionDep, SettingsDep, WriterCaller
from api.routes.docker.shared import network_public
from api.routes.swarm.shared import Change, engine_call, own_swarm_object
from api.swarm_schemas import NetworkPublic, NetworksPublic, SwarmNetworkCreate
from services.engine_kinds import refuse_reserved_labels

router = APIRouter()


@router.get("/clusters/{cluster_id}/networks", response_model=NetworksPublic)
def list_swarm_networks(cluster_id: int, session: SessionDep, caller: CurrentCaller, settings: SettingsDep,
                        scope: Annotated[str | None, Query(pattern="^(swarm|local)$")] = None) -> NetworksPublic:
    found = engine_call(session, caller, settings, cluster_id,
                        lambda c: c.api.networks(filters=scope_of(target_scope(c)) or None))
    rows = [network_public(n) for n in found if scope is None or n.get("Scope") == scope]
    return NetworksPublic(data=rows, count=len(rows))


@router.post("/clusters/{cluster_id}/networks", response_model=NetworkPublic, status_code=status.HTTP_201_CREATED)
def create_swarm_network(cluster_id: int, body: SwarmNetworkCreate, session: SessionDep, caller: WriterCaller,
                         settings: SettingsDep) -> NetworkPublic:
    """An overlay network (attachable by default, so plain containers can join it too)."""
    refuse_reserved_labels(body.labels)

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
        return network_public(found)

    return engine_call(session, caller, settings, cluster_id, call,
                       Change("network", "create", body.name, body.model_dump()))


@router.delete("/clusters/{cluster_id}/networks/{network_id}", status_code=status.HTTP_204_NO_CONTENT)
def remove_swarm_network(cluster_id: int, network_id: str, session: SessionDep, caller: WriterCaller,
                         settings: SettingsDep) -> Response:
    engine_call(session, caller, settings, cluster_id,
                lambda c: c.api.remove_network(own_swarm_object(c, "network", network_id)),
                Change("network", "remove", network_id, {}))
    return Response(status_code=status.HTTP_204_NO_CONTENT)
