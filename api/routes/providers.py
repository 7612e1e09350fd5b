"""Git providers and their credentials (the seed's ProvidersController).

A credential's token is write-only: encrypted at rest with ``SecretBox``, never in an answer,
never logged. ``POST /providers/{id}/test`` decrypts it, asks the provider who it belongs to, and
records the outcome on the credential. Error texts are built from the error's type and HTTP
status only (a library may echo the request), and the token is masked in them all the same.

The test connects from the API process, so a ``base_url`` resolving to a loopback, private or
link-local address is refused unless ``DEVOPS_NOTIFY_ALLOW_PRIVATE_TARGETS=true`` (the same switch
and rule as the ``notify`` step): otherwise any member could probe the internal network.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from fastapi import APIRouter, Response, status
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api import errors
from api.commits import commit_or_conflict
from api.deps import ActorDep, Caller, CurrentCaller, SessionDep, SettingsDep, WriterCaller
from api.provider_schemas import (
    GitProviderCreate,
    GitProviderCredentialCreate,
    GitProviderCredentialPublic,
    GitProviderCredentialsPublic,
    GitProviderPublic,
    GitProvidersPublic,
    GitProviderTestPublic,
    GitProviderTestRequest,
    GitProviderUpdate,
)
from api.provider_views import (
    credential_public,
    current_user,
    explain,
    owned_provider,
    private_address_refusal,
    provider_public,
)
from db.crypto import SecretBox
from db.models import GitProvider, GitProviderCredential
from services import audit

router = APIRouter(prefix="/providers", tags=["providers"])

def _name_taken(session: Session, caller: Caller, name: str, exclude_id: int | None = None) -> bool:
    query = select(GitProvider.id).where(GitProvider.account_id == caller.account_id, GitProvider.name == name)
    if exclude_id is not None:
        query = query.where(GitProvider.id != exclude_id)
    return session.scalar(query) is not None


# ---- providers ----------------------------------------------------------------------------


@router.get("", response_model=GitProvidersPublic)
def list_providers(session: SessionDep, caller: CurrentCaller) -> GitProvidersPublic:
    rows = session.scalars(select(GitProvider).where(GitProvider.account_id == caller.account_id)
                           .order_by(GitProvider.name)).all()
    return GitProvidersPublic(data=[provider_public(r) for r in rows], count=len(rows))


@router.post("", response_model=GitProviderPublic, status_code=status.HTTP_201_CREATED)
def create_provider(body: GitProviderCreate, session: SessionDep, caller: WriterCaller,
                    settings: SettingsDep) -> GitProviderPublic:
    """Add a provider; a Gitea provider needs its ``base_url`` (there is no public Gitea).
    ``oauth_client_secret`` is write-only, like a credential's token."""
    if body.provider_type == "gitea" and body.base_url is None:
        raise errors.field_error(["base_url"], "a gitea provider needs its base URL", "missing")
    if _name_taken(session, caller, body.name):
        raise errors.conflict(f"a provider named {body.name!r} already exists")
    row = GitProvider(account_id=caller.account_id, name=body.name, provider_type=body.provider_type,
                      base_url=body.base_url, is_active=body.is_active, oauth_client_id=body.oauth_client_id,
                      oauth_base_url=body.oauth_base_url, oauth_scopes=list(body.oauth_scopes))
    if body.oauth_client_secret is not None:
        row.encrypted_oauth_client_secret = SecretBox(settings.secret_key, settings.old_secret_keys).encrypt(
            body.oauth_client_secret)
    session.add(row)
    commit_or_conflict(session, f"a provider named {body.name!r} already exists")
    return provider_public(row)


@router.get("/{provider_id}", response_model=GitProviderPublic)
def show_provider(provider_id: int, session: SessionDep, caller: CurrentCaller) -> GitProviderPublic:
    return provider_public(owned_provider(session, caller, provider_id))


@router.patch("/{provider_id}", response_model=GitProviderPublic)
def update_provider(provider_id: int, body: GitProviderUpdate, session: SessionDep,
                    caller: WriterCaller, settings: SettingsDep) -> GitProviderPublic:
    row = owned_provider(session, caller, provider_id)
    changes = body.model_dump(exclude_unset=True)
    if "base_url" in changes and changes["base_url"] is None and row.provider_type == "gitea":
        raise errors.field_error(["base_url"], "a gitea provider needs its base URL", "missing")
    if "name" in changes and _name_taken(session, caller, changes["name"], exclude_id=row.id):
        raise errors.conflict(f"a provider named {changes['name']!r} already exists")
    if "oauth_client_secret" in changes:
        secret = changes.pop("oauth_client_secret")
        row.encrypted_oauth_client_secret = (
            None if secret is None else SecretBox(settings.secret_key, settings.old_secret_keys).encrypt(secret))
    for field, value in changes.items():
        setattr(row, field, value)
    commit_or_conflict(session, f"a provider named {row.name!r} already exists")
    return provider_public(row)


@router.delete("/{provider_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_provider(provider_id: int, session: SessionDep, caller: WriterCaller) -> Response:
    """Delete a provider with its credentials."""
    row = owned_provider(session, caller, provider_id)
    session.execute(delete(GitProviderCredential).where(GitProviderCredential.provider_id == row.id))
    session.delete(row)
    session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# ---- credentials --------------------------------------------------------------------------


def _audit_credential(session: Session, caller: Caller, actor: audit.Actor, action: str,
                      row: GitProviderCredential) -> None:
    """The credential's provider, name and kind: never its token."""
    audit.record(session, caller.account_id, actor, action, target_type="credential", target_id=row.id,
                 details={"provider_id": row.provider_id, "name": row.name, "kind": row.auth_type})


@router.get("/{provider_id}/credentials", response_model=GitProviderCredentialsPublic)
def list_provider_credentials(provider_id: int, session: SessionDep, caller: CurrentCaller) -> GitProviderCredentialsPublic:
    provider = owned_provider(session, caller, provider_id)
    rows = session.scalars(select(GitProviderCredential).where(GitProviderCredential.provider_id == provider.id)
                           .order_by(GitProviderCredential.id)).all()
    return GitProviderCredentialsPublic(data=[credential_public(r) for r in rows], count=len(rows))


@router.post("/{provider_id}/credentials", response_model=GitProviderCredentialPublic,
             status_code=status.HTTP_201_CREATED)
def create_provider_credential(provider_id: int, body: GitProviderCredentialCreate, session: SessionDep,
                               caller: WriterCaller, settings: SettingsDep,
                               actor: ActorDep) -> GitProviderCredentialPublic:
    """Store a token, encrypted at rest; it is never returned (nor audited). Test it with ``POST .../test``."""
    provider = owned_provider(session, caller, provider_id)
    clash_message = f"provider {provider.id} already has a credential named {body.name!r}"
    clash = select(GitProviderCredential.id).where(GitProviderCredential.provider_id == provider.id,
                                                   GitProviderCredential.name == body.name)
    if session.scalar(clash) is not None:
        raise errors.conflict(clash_message)
    box = SecretBox(settings.secret_key, settings.old_secret_keys)
    row = GitProviderCredential(account_id=caller.account_id, provider_id=provider.id, name=body.name,
                                auth_type="token", encrypted_token=box.encrypt(body.token), scopes=[])
    session.add(row)
    try:
        session.flush()  # the id, for the audit event
    except IntegrityError:  # a concurrent request took the name
        session.rollback()
        raise errors.conflict(clash_message) from None
    _audit_credential(session, caller, actor, "credential.created", row)
    commit_or_conflict(session, clash_message)
    return credential_public(row)


@router.delete("/{provider_id}/credentials/{credential_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_provider_credential(provider_id: int, credential_id: int, session: SessionDep, caller: WriterCaller,
                               actor: ActorDep) -> Response:
    provider = owned_provider(session, caller, provider_id)
    row = session.scalar(select(GitProviderCredential).where(GitProviderCredential.id == credential_id,
                                                             GitProviderCredential.provider_id == provider.id))
    if row is None:
        raise errors.not_found("credential")
    _audit_credential(session, caller, actor, "credential.deleted", row)
    session.delete(row)
    session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# ---- test connection ----------------------------------------------------------------------


@dataclass(frozen=True)
class _Target:
    provider_type: str
    base_url: str | None
    credential_id: int
    token: str


def _load_target(session: Session, caller: Caller, provider_id: int, credential_id: int | None,
                 box: SecretBox) -> _Target:
    provider = owned_provider(session, caller, provider_id)
    query = select(GitProviderCredential).where(GitProviderCredential.provider_id == provider.id)
    if credential_id is not None:
        query = query.where(GitProviderCredential.id == credential_id)
    credential = session.scalars(query.order_by(GitProviderCredential.id).limit(1)).first()
    if credential is None:
        if credential_id is not None:
            raise errors.not_found("credential")
        raise errors.conflict(f"provider {provider.id} has no credential; add one with POST "
                              f"/providers/{provider.id}/credentials")
    target = _Target(provider.provider_type, provider.base_url, credential.id,
                     box.decrypt(credential.encrypted_token))
    session.rollback()  # no transaction stays open while the provider answers
    return target


async def _private_address(base_url: str) -> str | None:
    """:func:`private_address_refusal` off the event loop, for async callers."""
    return await run_in_threadpool(private_address_refusal, base_url)


def _mask(text: str | None, token: str) -> str | None:
    return text.replace(token, "***") if text and token else text


def _record(session: Session, credential_id: int, result: GitProviderTestPublic) -> None:
    row = session.get(GitProviderCredential, credential_id)
    if row is None:  # deleted while the provider answered: the answer still stands
        return
    row.last_tested_at = datetime.now(UTC)
    row.last_test_ok = result.ok
    row.last_test_error = result.error
    if result.ok:
        row.username = result.login
        row.scopes = list(result.scopes)
    session.commit()


@router.post("/{provider_id}/test", response_model=GitProviderTestPublic)
def test_provider_connection(provider_id: int, session: SessionDep, caller: WriterCaller, settings: SettingsDep,
                             body: GitProviderTestRequest | None = None) -> GitProviderTestPublic:
    """Ask the provider who the credential belongs to: 200 with ``ok`` true (login, name, scopes) or
    false (``error``). The outcome is recorded on the credential."""
    box = SecretBox(settings.secret_key, settings.old_secret_keys)
    credential_id = body.credential_id if body else None
    target = _load_target(session, caller, provider_id, credential_id, box)
    refusal = None
    if target.base_url and not settings.private_targets_allowed:
        refusal = private_address_refusal(target.base_url)
    if refusal is not None:
        result = GitProviderTestPublic(ok=False, credential_id=target.credential_id, error=refusal)
    else:
        try:
            user = current_user(target.provider_type, target.base_url, target.token)
        except Exception as exc:  # noqa: BLE001 - every failure is an answer here, explained without its text
            result = GitProviderTestPublic(ok=False, credential_id=target.credential_id,
                                           error=_mask(explain(exc), target.token))
        else:
            result = GitProviderTestPublic(ok=True, credential_id=target.credential_id,
                                           login=_mask(user.login, target.token), name=_mask(user.name, target.token),
                                           scopes=[_mask(s, target.token) or "" for s in user.scopes])
    _record(session, target.credential_id, result)
    return result
