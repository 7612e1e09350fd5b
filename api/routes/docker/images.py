"""``/docker/hosts/{host_id}/images``: images of a host, pulled, built, tagged, pushed.

Images built through the API carry the account's label. On a shared engine the image list shows
the account's own; an image labelled with another account answers 404 (inspect, run); unlabelled
images (the engine's shared cache) may be inspected, pulled and run; only the account's own images
may be tagged, pushed or removed; and a build or tag never takes over a tag the account does not
own (409). The static paths (``pull``, ``build``, ``push``) are registered before ``{image:path}``.
"""

from __future__ import annotations

import io
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import select

from adapters.docker_engine import image_values, target_scope
from adapters.engine_access import ACCOUNT_LABEL, scope_of
from api import errors
from api.deps import CurrentCaller, SessionDep, SettingsDep, WriterCaller
from api.docker_schemas import (
    ImageActionPublic,
    ImagePublic,
    ImagePull,
    ImagePush,
    ImagesPublic,
    ImageTagRequest,
)
from api.routes.docker.registries import registry_access
from api.routes.docker.shared import (
    Action,
    consume,
    engine_call,
    free_tag,
    own_image,
    redact_env,
    visible_image,
)
from db.models import DockerImage
from services import engines
from services.container_specs import require_public_registry
from services.engine_kinds import DOCKER_HOST

router = APIRouter()

#: Uploaded build contexts larger than this are refused (413).
MAX_BUILD_CONTEXT_BYTES = 200 * 1024 * 1024


def _image_public(client: Any, reference: str, detail: str | None = None) -> ImageActionPublic:
    found = client.api.inspect_image(reference)
    return ImageActionPublic(image_id=found.get("Id"), repo_tags=list(found.get("RepoTags") or []), detail=detail)


@router.get("/hosts/{host_id}/images", response_model=ImagesPublic)
def list_host_images(host_id: int, session: SessionDep, caller: CurrentCaller, settings: SettingsDep,
                     live: bool = False, limit: Annotated[int, Query(ge=1, le=5000)] = 500,
                     offset: Annotated[int, Query(ge=0)] = 0) -> ImagesPublic:
    if live:
        listed = engine_call(session, caller, settings, host_id,
                             lambda c: c.api.images(filters=scope_of(target_scope(c)) or None))
        rows = [ImagePublic(image_id=i["Id"], **image_values(i)) for i in listed]
    else:
        host = engines.get_endpoint(session, DOCKER_HOST, caller.account_id, host_id)
        found = session.scalars(select(DockerImage).where(DockerImage.host_id == host.id,
                                                          DockerImage.account_id == caller.account_id)
                                .order_by(DockerImage.id))
        rows = [ImagePublic(image_id=r.image_id, repo_tags=list(r.repo_tags or []),
                            repo_digests=list(r.repo_digests or []), size_bytes=r.size_bytes, created=r.created,
                            synced_at=r.synced_at) for r in found]
    return ImagesPublic(data=rows[offset:offset + limit], count=len(rows), live=live)


@router.post("/hosts/{host_id}/images/pull", response_model=ImageActionPublic)
def pull_host_image(host_id: int, body: ImagePull, session: SessionDep, caller: WriterCaller,
                    settings: SettingsDep) -> ImageActionPublic:
    """Pull ``image:tag`` (from a registry of the account with ``registry_id``, with its credentials)."""
    registry = registry_access(session, caller, settings, body.registry_id, in_body=True) if body.registry_id else None
    repository = f"{registry.host}/{body.image}" if registry else body.image
    require_public_registry(repository, settings.private_targets_allowed, ["registry_id"] if registry else ["image"])

    def call(client: Any) -> ImageActionPublic:
        stream = client.api.pull(repository, tag=body.tag, stream=True, decode=True,
                                 auth_config=registry.auth_config if registry else None)
        consume(stream, "registry_error")
        return _image_public(client, f"{repository}:{body.tag}")

    return engine_call(session, caller, settings, host_id, call,
                       Action("image.pull", f"{repository}:{body.tag}", {"registry_id": body.registry_id}),
                       timeout=600)


@router.post("/hosts/{host_id}/images/build", response_model=ImageActionPublic,
             openapi_extra={"requestBody": {"required": True, "content": {
                 "application/x-tar": {"schema": {"type": "string", "format": "binary"}}}}})
async def build_host_image(host_id: int, request: Request, session: SessionDep, caller: WriterCaller,
                           settings: SettingsDep,
                           tag: Annotated[str, Query(min_length=1, max_length=300, pattern=r"^[a-z0-9][a-z0-9._/:-]*$")],
                           dockerfile: Annotated[str, Query(min_length=1, max_length=300)] = "Dockerfile",
                           ) -> ImageActionPublic:
    """Build from a context tar sent as the body (``Content-Type: application/x-tar``), tagged ``tag``.
    A failing build step answers 422 with the engine's message. (``async``: the body is a stream.)"""
    content_type = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    if content_type not in ("application/x-tar", "application/tar", "application/octet-stream"):
        raise HTTPException(status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
                            "send the build context as a tar body with Content-Type: application/x-tar")
    context = bytearray()
    async for chunk in request.stream():
        context.extend(chunk)
        if len(context) > MAX_BUILD_CONTEXT_BYTES:
            raise HTTPException(status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
                                f"the build context is larger than {MAX_BUILD_CONTEXT_BYTES} bytes")
    if not context:
        raise errors.field_error([], "the build context tar is empty")
    body = bytes(context)

    def call(client: Any) -> ImageActionPublic:
        free_tag(client, tag)
        stream = client.api.build(fileobj=io.BytesIO(body), custom_context=True, tag=tag, dockerfile=dockerfile,
                                  rm=True, forcerm=True, decode=True, labels={ACCOUNT_LABEL: str(caller.account_id)})
        consume(stream, "build_failed")
        return _image_public(client, tag)

    return await run_in_threadpool(engine_call, session, caller, settings, host_id, call,
                                   Action("image.build", tag, {"dockerfile": dockerfile, "context_bytes": len(body)}),
                                   timeout=1800)


@router.post("/hosts/{host_id}/images/push", response_model=ImageActionPublic)
def push_host_image(host_id: int, body: ImagePush, session: SessionDep, caller: WriterCaller,
                    settings: SettingsDep) -> ImageActionPublic:
    """Tag a local image as ``<registry host>/<repository>:<tag>`` and push it with the registry's
    credentials; ``detail`` is the pushed manifest's digest."""
    registry = registry_access(session, caller, settings, body.registry_id, in_body=True)
    target = f"{registry.host}/{body.repository}"
    require_public_registry(target, settings.private_targets_allowed, ["registry_id"])

    def call(client: Any) -> ImageActionPublic:
        own_image(client, body.image)
        free_tag(client, f"{target}:{body.tag}")
        client.api.tag(body.image, target, body.tag)
        chunks = consume(client.api.push(target, tag=body.tag, stream=True, decode=True,
                                         auth_config=registry.auth_config), "registry_error")
        digest = next((c["aux"].get("Digest") for c in chunks if isinstance(c.get("aux"), dict)), None)
        return _image_public(client, f"{target}:{body.tag}", detail=digest)

    return engine_call(session, caller, settings, host_id, call,
                       Action("image.push", f"{target}:{body.tag}", {"image": body.image,
                                                                     "registry_id": body.registry_id}), timeout=600)


@router.post("/hosts/{host_id}/images/{image:path}/tag", response_model=ImageActionPublic)
def tag_host_image(host_id: int, image: str, body: ImageTagRequest, session: SessionDep, caller: WriterCaller,
                   settings: SettingsDep) -> ImageActionPublic:
    def call(client: Any) -> ImageActionPublic:
        own_image(client, image)
        free_tag(client, f"{body.repository}:{body.tag}")
        client.api.tag(image, body.repository, body.tag)
        return _image_public(client, f"{body.repository}:{body.tag}")

    return engine_call(session, caller, settings, host_id, call,
                       Action("image.tag", image, {"repository": body.repository, "tag": body.tag}))


@router.get("/hosts/{host_id}/images/{image:path}")
def inspect_host_image(host_id: int, image: str, session: SessionDep, caller: CurrentCaller,
                       settings: SettingsDep) -> dict[str, Any]:
    return redact_env(engine_call(session, caller, settings, host_id, lambda c: visible_image(c, image)))


@router.delete("/hosts/{host_id}/images/{image:path}", status_code=status.HTTP_204_NO_CONTENT)
def remove_host_image(host_id: int, image: str, session: SessionDep, caller: WriterCaller, settings: SettingsDep,
                      force: bool = False) -> Response:
    """Remove an image or one of its tags (409 while a container uses it, unless ``force``)."""
    def call(client: Any) -> None:
        own_image(client, image)
        client.api.remove_image(image, force=force)

    engine_call(session, caller, settings, host_id, call, Action("image.remove", image, {"force": force}))
    return Response(status_code=status.HTTP_204_NO_CONTENT)
