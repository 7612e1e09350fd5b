"""Swarm secrets and configs: list, create, remove — the same three routes for both kinds, made
by :func:`_object_routes`. The engine never returns a secret's data, and neither do we: the body
is parsed by :func:`_object_body` (FastAPI's own 422s would echo the input), and the record keeps
only the data's size."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response, status
from pydantic import ValidationError

from adapters.docker_engine import target_scope
from adapters.engine_access import ACCOUNT_LABEL, scope_of
from api import errors
from api.deps import CurrentCaller, SessionDep, SettingsDep, WriterCaller
from api.routes.swarm.shared import Change, engine_call, own_swarm_object
from api.swarm_schemas import SwarmObjectCreate, SwarmObjectPublic, SwarmObjectsPublic
from services.engine_kinds import refuse_reserved_labels

router = APIRouter()


def _object_public(found: dict[str, Any]) -> SwarmObjectPublic:
    spec = found.get("Spec") or {}
    return SwarmObjectPublic(id=found["ID"], name=spec.get("Name") or "", labels=dict(spec.get("Labels") or {}),
                             created_at=found.get("CreatedAt"), updated_at=found.get("UpdatedAt"))


async def _object_body(request: Request) -> SwarmObjectCreate:
    """The body parsed here, not by FastAPI: its 422s would echo the input, and a secret's data
    must never come back in an answer. (A dependency: reading the body is the one await.)"""
    try:
        raw = await request.json()
    except ValueError:
        raise errors.field_error([], "the body must be JSON", "json_invalid") from None
    try:
        return SwarmObjectCreate.model_validate(raw)
    except ValidationError as exc:
        raise errors.from_validation_error(exc) from None


ObjectBody = Annotated[SwarmObjectCreate, Depends(_object_body)]


def _object_routes(kind: str) -> None:
    """list / create / delete for ``secrets`` or ``configs`` (the engine never returns a secret's data)."""
    plural = f"{kind}s"

    def list_objects(cluster_id: int, session: SessionDep, caller: CurrentCaller,
                     settings: SettingsDep) -> SwarmObjectsPublic:
        found = engine_call(session, caller, settings, cluster_id,
                            lambda c: getattr(c.api, plural)(filters=scope_of(target_scope(c)) or None))
        rows = sorted((_object_public(o) for o in found), key=lambda o: o.name)
        return SwarmObjectsPublic(data=rows, count=len(rows))

    # the body after the caller: an unauthenticated request is answered 401 before its body is read
    def create_object(cluster_id: int, session: SessionDep, caller: WriterCaller, settings: SettingsDep,
                      body: ObjectBody) -> SwarmObjectPublic:
        refuse_reserved_labels(body.labels)

        def call(client: Any) -> SwarmObjectPublic:
            creator = getattr(client.api, f"create_{kind}")
            created = creator(body.name, body.data.encode(),
                              labels={**body.labels, ACCOUNT_LABEL: str(caller.account_id)})
            return _object_public(getattr(client.api, f"inspect_{kind}")(created["ID"]))

        # the data is never part of the record: only its size
        params = {"labels": dict(body.labels), "data_bytes": len(body.data.encode())}
        return engine_call(session, caller, settings, cluster_id, call, Change(kind, "create", body.name, params))

    def remove_object(cluster_id: int, object_id: str, session: SessionDep, caller: WriterCaller,
                      settings: SettingsDep) -> Response:
        engine_call(session, caller, settings, cluster_id,
                    lambda c: getattr(c.api, f"remove_{kind}")(own_swarm_object(c, kind, object_id)),
                    Change(kind, "remove", object_id, {}))
        return Response(status_code=status.HTTP_204_NO_CONTENT)

    for handler, verb in ((list_objects, "list"), (create_object, "create"), (remove_object, "remove")):
        handler.__name__ = f"{verb}_swarm_{plural if verb == 'list' else kind}"
    body_doc = {"content": {"application/json": {"schema": SwarmObjectCreate.model_json_schema()}}, "required": True}
    router.add_api_route(f"/clusters/{{cluster_id}}/{plural}", list_objects, methods=["GET"],
                         response_model=SwarmObjectsPublic, summary=f"List {plural}")
    router.add_api_route(f"/clusters/{{cluster_id}}/{plural}", create_object, methods=["POST"],
                         response_model=SwarmObjectPublic, status_code=status.HTTP_201_CREATED,
                         summary=f"Create a {kind}", openapi_extra={"requestBody": body_doc})
    router.add_api_route(f"/clusters/{{cluster_id}}/{plural}/{{object_id}}", remove_object, methods=["DELETE"],
                         status_code=status.HTTP_204_NO_CONTENT, summary=f"Remove a {kind}")


_object_routes("secret")
_object_routes("config")
