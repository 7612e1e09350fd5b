"""``/docker/hosts/{host_id}/networks`` and ``.../volumes``: read from the engine, never synced.

Both are created with the account's label (our ``devops.`` label prefix is refused in a body);
on a shared engine only the account's own can be seen or removed.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response, status

from adapters.docker_engine import EngineRefused, target_scope
from adapters.engine_access import ACCOUNT_LABEL, scope_of
from api.deps import CurrentCaller, SessionDep, SettingsDep, WriterCaller
from api.docker_schemas import (
    NetworkCreate,
    NetworkPublic,
    NetworksPublic,
    VolumeCreate,
    VolumePublic,
    VolumesPublic,
)
from api.routes.docker.shared import (
    Action,
    create_owned_volume,
    engine_call,
    network_public,
    own_object,
    volume_public,
)
from services.engine_kinds import refuse_reserved_labels

router = APIRouter()


@router.get("/hosts/{host_id}/networks", response_model=NetworksPublic)
def list_host_networks(host_id: int, session: SessionDep, caller: CurrentCaller,
                       settings: SettingsDep) -> NetworksPublic:
    found = engine_call(session, caller, settings, host_id,
                        lambda c: c.api.networks(filters=scope_of(target_scope(c)) or None))
    return NetworksPublic(data=[network_public(n) for n in found], count=len(found))


@router.post("/hosts/{host_id}/networks", response_model=NetworkPublic, status_code=status.HTTP_201_CREATED)
def create_host_network(host_id: int, body: NetworkCreate, session: SessionDep, caller: WriterCaller,
                        settings: SettingsDep) -> NetworkPublic:
    refuse_reserved_labels(body.labels)

    def call(client: Any) -> NetworkPublic:
        # the engine itself accepts duplicate network names; two networks of one name confuse everyone
        if any(n.get("Name") == body.name for n in client.api.networks(names=[body.name])):
            raise EngineRefused("conflict", f"a network named {body.name!r} already exists on the host")
        created = client.api.create_network(body.name, driver=body.driver, internal=body.internal,
                                            labels={**body.labels, ACCOUNT_LABEL: str(caller.account_id)})
        return network_public(client.api.inspect_network(created["Id"]))

    return engine_call(session, caller, settings, host_id, call, Action("network.create", body.name, body.model_dump()))


@router.get("/hosts/{host_id}/networks/{network_id}", response_model=NetworkPublic)
def inspect_host_network(host_id: int, network_id: str, session: SessionDep, caller: CurrentCaller,
                         settings: SettingsDep) -> NetworkPublic:
    return network_public(engine_call(session, caller, settings, host_id,
                                      lambda c: c.api.inspect_network(own_object(c, "network", network_id))))


@router.delete("/hosts/{host_id}/networks/{network_id}", status_code=status.HTTP_204_NO_CONTENT)
def remove_host_network(host_id: int, network_id: str, session: SessionDep, caller: WriterCaller,
                        settings: SettingsDep) -> Response:
    engine_call(session, caller, settings, host_id, lambda c: c.api.remove_network(own_object(c, "network", network_id)),
                Action("network.remove", network_id, {}))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/hosts/{host_id}/volumes", response_model=VolumesPublic)
def list_host_volumes(host_id: int, session: SessionDep, caller: CurrentCaller,
                      settings: SettingsDep) -> VolumesPublic:
    found = engine_call(session, caller, settings, host_id,
                        lambda c: c.api.volumes(filters=scope_of(target_scope(c)) or None).get("Volumes") or [])
    return VolumesPublic(data=[volume_public(v) for v in found], count=len(found))


@router.post("/hosts/{host_id}/volumes", response_model=VolumePublic, status_code=status.HTTP_201_CREATED)
def create_host_volume(host_id: int, body: VolumeCreate, session: SessionDep, caller: WriterCaller,
                       settings: SettingsDep) -> VolumePublic:
    refuse_reserved_labels(body.labels)
    return engine_call(session, caller, settings, host_id,
                       lambda c: create_owned_volume(c, body, caller.account_id, "host"),
                       Action("volume.create", body.name, body.model_dump()))


@router.get("/hosts/{host_id}/volumes/{name}", response_model=VolumePublic)
def inspect_host_volume(host_id: int, name: str, session: SessionDep, caller: CurrentCaller,
                        settings: SettingsDep) -> VolumePublic:
    return volume_public(engine_call(session, caller, settings, host_id,
                                     lambda c: c.api.inspect_volume(own_object(c, "volume", name))))


@router.delete("/hosts/{host_id}/volumes/{name}", status_code=status.HTTP_204_NO_CONTENT)
def remove_host_volume(host_id: int, name: str, session: SessionDep, caller: WriterCaller, settings: SettingsDep,
                       force: bool = False) -> Response:
    engine_call(session, caller, settings, host_id,
                lambda c: c.api.remove_volume(own_object(c, "volume", name), force=force),
                Action("volume.remove", name, {"force": force}))
    return Response(status_code=status.HTTP_204_NO_CONTENT)
