"""The manager node's volumes (Swarm volumes are per node), labelled with their account."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response, status

from adapters.docker_engine import target_scope
from adapters.engine_access import scope_of
from api.deps import CurrentCaller, SessionDep, SettingsDep, WriterCaller
from api.routes.docker.shared import create_owned_volume, volume_public
from api.routes.swarm.shared import Change, engine_call, own_swarm_object
from api.swarm_schemas import VolumeCreate, VolumePublic, VolumesPublic
from services.engine_kinds import refuse_reserved_labels

router = APIRouter()


@router.get("/clusters/{cluster_id}/volumes", response_model=VolumesPublic)
def list_swarm_volumes(cluster_id: int, session: SessionDep, caller: CurrentCaller,
                       settings: SettingsDep) -> VolumesPublic:
    """The manager node's volumes (Swarm volumes are per node)."""
    found = engine_call(session, caller, settings, cluster_id,
                        lambda c: c.api.volumes(filters=scope_of(target_scope(c)) or None).get("Volumes") or [])
    return VolumesPublic(data=[volume_public(v) for v in found], count=len(found))


@router.post("/clusters/{cluster_id}/volumes", response_model=VolumePublic, status_code=status.HTTP_201_CREATED)
def create_swarm_volume(cluster_id: int, body: VolumeCreate, session: SessionDep, caller: WriterCaller,
                        settings: SettingsDep) -> VolumePublic:
    refuse_reserved_labels(body.labels)

    def call(client: Any) -> VolumePublic:
        return create_owned_volume(client, body, caller.account_id, "swarm")

    return engine_call(session, caller, settings, cluster_id, call,
                       Change("volume", "create", body.name, body.model_dump()))


@router.delete("/clusters/{cluster_id}/volumes/{name}", status_code=status.HTTP_204_NO_CONTENT)
def remove_swarm_volume(cluster_id: int, name: str, session: SessionDep, caller: WriterCaller,
                        settings: SettingsDep, force: bool = False) -> Response:
    engine_call(session, caller, settings, cluster_id,
                lambda c: c.api.remove_volume(own_swarm_object(c, "volume", name), force=force),
                Change("volume", "remove", name, {"force": force}))
    return Response(status_code=status.HTTP_204_NO_CONTENT)
