"""``/docker/registries``: image registries of the account (the seed's ``RegistryService``).

A registry's password is write-only (stored encrypted, ``password_set`` says whether there is one).
The Registry HTTP API v2 is called from here with the registry's basic auth; a registry URL on an
internal address follows the private-targets rule (409 when it is called, 422 when it is saved).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import quote, urlsplit

import httpx
from fastapi import APIRouter, Query, Response, status
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from adapters.docker_engine import EngineProblem, secret_box
from adapters.engine_access import private_address_refusal
from api import errors
from api.deps import ActorDep, Caller, CurrentCaller, SessionDep, SettingsDep, WriterCaller
from api.docker_schemas import (
    RegistriesPublic,
    RegistryCreate,
    RegistryPublic,
    RegistryRepositoriesPublic,
    RegistryTagsPublic,
    RegistryTestPublic,
    RegistryUpdate,
)
from api.routes.docker.shared import Action, record
from db.models import ContainerRegistry
from domain.errors import DomainError, UpstreamFailed
from services import audit
from services.container_specs import require_public_registry_url
from settings import Settings

router = APIRouter()

REGISTRY_TIMEOUT = httpx.Timeout(15.0)
MANIFEST_TYPES = ", ".join([
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
])


def _registry(session: Session, caller: Caller, registry_id: int) -> ContainerRegistry:
    row = session.scalar(select(ContainerRegistry).where(ContainerRegistry.id == registry_id,
                                                         ContainerRegistry.account_id == caller.account_id))
    if row is None:
        raise errors.not_found("registry")
    return row


def _registry_public(row: ContainerRegistry) -> RegistryPublic:
    return RegistryPublic(id=row.id, name=row.name, url=row.url, username=row.username,
                          password_set=row.encrypted_password is not None, created_at=row.created_at,
                          updated_at=row.updated_at)


@dataclass(frozen=True)
class RegistryAccess:
    id: int
    url: str
    username: str | None
    password: str | None

    @property
    def host(self) -> str:
        """How image references name the registry (``host:port``)."""
        return urlsplit(self.url).netloc

    @property
    def auth_config(self) -> dict[str, str] | None:
        if not self.username:
            return None
        return {"username": self.username, "password": self.password or "", "serveraddress": self.host}

    @property
    def auth(self) -> tuple[str, str] | None:
        return (self.username, self.password or "") if self.username else None


def registry_access(session: Session, caller: Caller, settings: Settings, registry_id: int,
                    in_body: bool = False) -> RegistryAccess:
    """The registry with its password decrypted: 404, or 422 on ``registry_id`` when the body named it."""
    row = session.scalar(select(ContainerRegistry).where(ContainerRegistry.id == registry_id,
                                                         ContainerRegistry.account_id == caller.account_id))
    if row is None:
        if in_body:
            raise errors.field_error(["registry_id"], f"registry {registry_id} not found in this account", "not_found")
        raise errors.not_found("registry")
    password = secret_box(settings).decrypt(row.encrypted_password) if row.encrypted_password else None
    access = RegistryAccess(row.id, row.url, row.username, password)
    session.rollback()
    return access


def _registry_call(settings: Settings, access: RegistryAccess, method: str, path: str,
                   headers: dict[str, str] | None = None) -> httpx.Response:
    """One Registry HTTP API v2 request with the registry's basic auth; 502 when it cannot be reached."""
    parts = urlsplit(access.url)
    if not settings.private_targets_allowed:
        refusal = private_address_refusal(parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80),
                                          "registry URL")
        if refusal:
            raise errors.conflict(refusal)
    try:
        with httpx.Client(timeout=REGISTRY_TIMEOUT, follow_redirects=False) as client:
            return client.request(method, access.url + path, auth=access.auth, headers=headers)
    except httpx.HTTPError as exc:
        raise UpstreamFailed(f"the registry at {access.url} cannot be reached ({type(exc).__name__})") from None


def _registry_failure(response: httpx.Response, doing: str) -> DomainError:
    if response.status_code == 401:
        return UpstreamFailed(f"the registry refused the credentials (HTTP 401) while {doing}")
    if response.status_code == 404:
        return errors.not_found(doing.removeprefix("reading ").removeprefix("deleting "))
    if response.status_code == 405:
        return errors.conflict(f"the registry does not allow {doing} (HTTP 405; deletion is disabled there)")
    return UpstreamFailed(f"the registry answered HTTP {response.status_code} while {doing}")


def _audit(session: Session, caller: Caller, actor: audit.Actor, action: str, row: ContainerRegistry,
           changed: list[str] | None = None) -> None:
    """The registry's name, URL and username (and which fields changed): never its password."""
    details: dict[str, object] = {"name": row.name, "url": row.url, "username": row.username}
    if changed is not None:
        details["changed"] = changed
    audit.record(session, caller.account_id, actor, action, target_type="registry", target_id=row.id,
                 details=details)


def _save(session: Session, name: str | None, audited: Callable[[], None] | None = None) -> None:
    """Commit (a taken name → 409); ``audited`` records the audit event once the row has its id."""
    try:
        session.flush()
        if audited is not None:
            audited()
        session.commit()
    except IntegrityError:
        session.rollback()
        raise errors.conflict(f"a registry named {name!r} already exists") from None


@router.get("/registries", response_model=RegistriesPublic)
def list_registries(session: SessionDep, caller: CurrentCaller) -> RegistriesPublic:
    rows = list(session.scalars(select(ContainerRegistry).where(ContainerRegistry.account_id == caller.account_id)
                                .order_by(ContainerRegistry.id)))
    return RegistriesPublic(data=[_registry_public(r) for r in rows], count=len(rows))


@router.post("/registries", response_model=RegistryPublic, status_code=status.HTTP_201_CREATED)
def create_registry(body: RegistryCreate, session: SessionDep, caller: WriterCaller,
                    settings: SettingsDep, actor: ActorDep) -> RegistryPublic:
    require_public_registry_url(body.url, settings.private_targets_allowed, ["url"])
    row = ContainerRegistry(account_id=caller.account_id, name=body.name, url=body.url, username=body.username,
                            encrypted_password=secret_box(settings).encrypt(body.password) if body.password else None)
    session.add(row)
    _save(session, body.name, lambda: _audit(session, caller, actor, "registry.created", row))
    return _registry_public(row)


@router.get("/registries/{registry_id}", response_model=RegistryPublic)
def show_registry(registry_id: int, session: SessionDep, caller: CurrentCaller) -> RegistryPublic:
    return _registry_public(_registry(session, caller, registry_id))


@router.patch("/registries/{registry_id}", response_model=RegistryPublic)
def update_registry(registry_id: int, body: RegistryUpdate, session: SessionDep, caller: WriterCaller,
                    settings: SettingsDep, actor: ActorDep) -> RegistryPublic:
    row = _registry(session, caller, registry_id)
    fields = body.model_fields_set
    if "url" in fields:
        require_public_registry_url(body.url, settings.private_targets_allowed, ["url"])
    for name in ("name", "url", "username"):
        if name in fields:
            setattr(row, name, getattr(body, name))
    if "password" in fields:
        row.encrypted_password = secret_box(settings).encrypt(body.password) if body.password else None
    _save(session, body.name, lambda: _audit(session, caller, actor, "registry.updated", row, sorted(fields)))
    return _registry_public(row)


@router.delete("/registries/{registry_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_registry(registry_id: int, session: SessionDep, caller: WriterCaller, actor: ActorDep) -> Response:
    row = _registry(session, caller, registry_id)
    _audit(session, caller, actor, "registry.deleted", row)
    session.delete(row)
    session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/registries/{registry_id}/test", response_model=RegistryTestPublic)
def test_registry(registry_id: int, session: SessionDep, caller: WriterCaller,
                  settings: SettingsDep) -> RegistryTestPublic:
    """Log in: ``GET /v2/`` with the stored credentials (200 means they are accepted)."""
    access = registry_access(session, caller, settings, registry_id)
    try:
        response = _registry_call(settings, access, "GET", "/v2/")
    except DomainError as exc:
        result = RegistryTestPublic(ok=False, error=str(exc.detail))
    else:
        ok = response.status_code == 200
        error = None if ok else (
            "the registry refused the credentials (HTTP 401)" if response.status_code == 401
            else f"the registry answered HTTP {response.status_code} to GET /v2/")
        result = RegistryTestPublic(ok=ok, status_code=response.status_code, error=error,
                                    api_version=response.headers.get("Docker-Distribution-API-Version"))
    problem = None if result.ok else EngineProblem("registry_error", result.error or "")
    record(session, caller, None, Action("registry.test", access.url, {"registry_id": access.id}), problem)
    return result


@router.get("/registries/{registry_id}/repositories", response_model=RegistryRepositoriesPublic)
def list_registry_repositories(registry_id: int, session: SessionDep, caller: CurrentCaller, settings: SettingsDep,
                               n: Annotated[int, Query(ge=1, le=10_000)] = 1000) -> RegistryRepositoriesPublic:
    access = registry_access(session, caller, settings, registry_id)
    response = _registry_call(settings, access, "GET", f"/v2/_catalog?n={n}")
    if response.status_code != 200:
        raise _registry_failure(response, "reading the catalog")
    return RegistryRepositoriesPublic(registry_id=access.id,
                                      repositories=list(response.json().get("repositories") or []))


_REPOSITORY_PATH = "{name:path}"


@router.get(f"/registries/{{registry_id}}/repositories/{_REPOSITORY_PATH}/tags", response_model=RegistryTagsPublic)
def list_registry_tags(registry_id: int, name: str, session: SessionDep, caller: CurrentCaller,
                       settings: SettingsDep) -> RegistryTagsPublic:
    access = registry_access(session, caller, settings, registry_id)
    response = _registry_call(settings, access, "GET", f"/v2/{quote(name)}/tags/list")
    if response.status_code != 200:
        raise _registry_failure(response, f"reading repository {name}")
    return RegistryTagsPublic(registry_id=access.id, repository=name, tags=sorted(response.json().get("tags") or []))


@router.delete(f"/registries/{{registry_id}}/repositories/{_REPOSITORY_PATH}/tags/{{tag}}",
               status_code=status.HTTP_204_NO_CONTENT)
def delete_registry_tag(registry_id: int, name: str, tag: str, session: SessionDep, caller: WriterCaller,
                        settings: SettingsDep) -> Response:
    """Delete the manifest the tag points at (found by its digest): the registry must allow deletion.
    Other tags of the same manifest go with it, as the Registry API defines."""
    access = registry_access(session, caller, settings, registry_id)
    target = f"{name}:{tag}"
    problem: EngineProblem | None = None
    try:
        head = _registry_call(settings, access, "HEAD", f"/v2/{quote(name)}/manifests/{quote(tag)}",
                              headers={"Accept": MANIFEST_TYPES})
        if head.status_code != 200 or not head.headers.get("Docker-Content-Digest"):
            raise _registry_failure(head, f"reading tag {target}")
        digest = head.headers["Docker-Content-Digest"]
        deleted = _registry_call(settings, access, "DELETE", f"/v2/{quote(name)}/manifests/{digest}")
        if deleted.status_code not in (200, 202):
            raise _registry_failure(deleted, f"deleting tag {target}")
    except DomainError as exc:
        problem = EngineProblem("registry_error", str(exc.detail))
        raise
    finally:
        record(session, caller, None, Action("registry.tag.delete", f"{access.host}/{target}",
                                             {"registry_id": access.id}), problem)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
