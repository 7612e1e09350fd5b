"""How a git provider and its credentials are found for the caller and answered, and the rules
for talking to one from the API process: shared by the provider and OAuth routes."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from adapters.git_providers import (
    CAPABILITIES,
    AuthError,
    NotFound,
    ProviderDown,
    ProviderError,
    ProviderUser,
    RateLimited,
    client_for,
)
from adapters.network_targets import check_host
from api import errors
from api.deps import Caller
from api.provider_schemas import (
    GitProviderCredentialPublic,
    GitProviderPublic,
)
from db.models import GitProvider, GitProviderCredential
from domain.network_rules import url_host_port, worded_refusal

UNREACHABLE = "the provider could not be reached"


def provider_public(row: GitProvider) -> GitProviderPublic:
    return GitProviderPublic(
        id=row.id, name=row.name, provider_type=row.provider_type, base_url=row.base_url, is_active=row.is_active,
        capabilities=sorted(CAPABILITIES.get(row.provider_type, ())), oauth_client_id=row.oauth_client_id,
        oauth_base_url=row.oauth_base_url, oauth_scopes=list(row.oauth_scopes or []),
        oauth_configured=bool(row.oauth_client_id and row.encrypted_oauth_client_secret),
        created_at=row.created_at, updated_at=row.updated_at,
    )


def credential_public(row: GitProviderCredential) -> GitProviderCredentialPublic:
    return GitProviderCredentialPublic(
        id=row.id, provider_id=row.provider_id, name=row.name, auth_type=row.auth_type, username=row.username,
        scopes=list(row.scopes or []), last_tested_at=row.last_tested_at, last_test_ok=row.last_test_ok,
        last_test_error=row.last_test_error, created_at=row.created_at, updated_at=row.updated_at,
    )


def owned_provider(session: Session, caller: Caller, provider_id: int) -> GitProvider:
    row = session.scalar(select(GitProvider).where(GitProvider.id == provider_id,
                                                   GitProvider.account_id == caller.account_id))
    if row is None:
        raise errors.not_found("provider")
    return row


def current_user(provider_type: str, base_url: str | None, token: str) -> ProviderUser:
    """Who ``token`` belongs to, asked of the provider (blocking)."""
    client = client_for(provider_type, base_url, token)
    try:
        return client.current_user()
    finally:
        client.close()


def explain(exc: Exception) -> str:
    """A user-facing reason built from the error's type and status, never from its text."""
    if isinstance(exc, AuthError):
        return f"the provider refused the credential ({exc.status or 401})"
    if isinstance(exc, RateLimited):
        wait = f"; retry after {exc.retry_after:.0f} s" if exc.retry_after is not None else ""
        return f"the provider rate-limited the request{wait}"
    if isinstance(exc, ProviderDown):
        return f"the provider is unavailable (HTTP {exc.status})" if exc.status else UNREACHABLE
    if isinstance(exc, NotFound):
        return "the provider answered 404: check the base URL"
    if isinstance(exc, ProviderError):
        return f"the provider answered an error ({exc.status})" if exc.status else "the provider answered an error"
    return f"unexpected error talking to the provider ({type(exc).__name__})"


def private_address_refusal(base_url: str) -> str | None:
    """Why the test must not connect to ``base_url`` (it resolves to an internal address), or None
    (blocking: resolves the host)."""
    host, port = url_host_port(base_url)
    check = check_host(host, port, what="the base URL's")
    if check.unresolvable:
        return f"{UNREACHABLE} (host {check.host!r} does not resolve)"
    return worded_refusal(check, lead="the base URL's host ", allow="providers") if check.problem else None
