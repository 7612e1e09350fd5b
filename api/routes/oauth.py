"""Connecting a git provider account with OAuth (the seed's ``OAuthService``): authorize → the
provider asks the user → callback → an ``auth_type='oauth'`` credential.

``GET /providers/{id}/oauth/authorize`` mints a single-use ``state`` (only its SHA-256 is stored,
valid 10 minutes, bound to the account, provider, user and credential name) and sends the browser
to the provider. The browser comes back to ``GET /providers/oauth/callback`` without our bearer
token, so the state alone says whose credential it is: it is consumed with one conditional UPDATE
(two callbacks with the same state exchange the code at most once), the code is exchanged, and the
credential named at authorize time is stored or replaced, tokens encrypted, never returned.

The exchange connects out from the API process, so a token endpoint resolving to an internal
address is refused unless ``DEVOPS_NOTIFY_ALLOW_PRIVATE_TARGETS=true``, as for the connection test.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request, status
from fastapi.responses import JSONResponse, RedirectResponse
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from adapters.git_providers import ProviderError, ProviderUser, RateLimited, oauth
from api import errors
from api.deps import SessionDep, SettingsDep, WriterCaller
from api.provider_schemas import (
    GitProviderCredentialPublic,
    ProviderName,
)
from api.provider_views import (
    credential_public,
    current_user,
    explain,
    owned_provider,
    private_address_refusal,
)
from db.crypto import SecretBox
from db.models import GitProvider, GitProviderCredential, OAuthState
from domain.errors import Conflict, UpstreamFailed
from settings import Settings

router = APIRouter(prefix="/providers", tags=["providers"])

CALLBACK_PATH = "/api/v1/devops/providers/oauth/callback"
STATE_TTL = timedelta(minutes=10)
_ERROR_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


def callback_url(settings: Settings) -> str:
    """The redirect_uri registered with the provider's OAuth application."""
    base = settings.public_api_url or f"http://{settings.api_host}:{settings.api_port}"
    return base.rstrip("/") + CALLBACK_PATH


def _hash(state: str) -> str:
    return hashlib.sha256(state.encode()).hexdigest()


def _box(settings: Settings) -> SecretBox:
    return SecretBox(settings.secret_key, settings.old_secret_keys)


def _bad_request(message: str) -> HTTPException:
    return HTTPException(status.HTTP_400_BAD_REQUEST, message)


# ---- authorize ----------------------------------------------------------------------------


@router.get(
    "/{provider_id}/oauth/authorize",
    summary="Start connecting a provider with OAuth",
    status_code=status.HTTP_302_FOUND,
    response_class=RedirectResponse,
    responses={
        302: {"description": "to the provider's authorize page"},
        200: {"description": "with `Accept: application/json`: `{\"authorize_url\": ..., \"expires_at\": ...}`"},
        409: {"description": "the provider has no OAuth application (oauth_client_id / oauth_client_secret)"},
    },
)
def authorize_provider_oauth(provider_id: int, request: Request, session: SessionDep, caller: WriterCaller,
                             settings: SettingsDep,
                             credential_name: Annotated[ProviderName, Query(
                                 description="the credential to create or replace")] = "oauth") -> Any:
    """Start connecting the provider with OAuth: answers 302 to the provider's authorize URL (or
    200 with ``authorize_url`` for ``Accept: application/json``). The link works once, for 10 minutes."""
    provider = owned_provider(session, caller, provider_id)
    try:
        app = oauth.oauth_app(provider, _box(settings))
    except oauth.OAuthNotConfigured as exc:
        raise Conflict(str(exc)) from None
    state = secrets.token_urlsafe(32)
    now = datetime.now(UTC)
    redirect_uri = callback_url(settings)
    # Housekeeping: this account's states that can no longer be used.
    session.execute(delete(OAuthState).where(OAuthState.account_id == caller.account_id,
                                             OAuthState.expires_at < now - timedelta(days=1)))
    session.add(OAuthState(account_id=caller.account_id, provider_id=provider.id, user_id=caller.user_id,
                           state_hash=_hash(state), credential_name=credential_name, redirect_uri=redirect_uri,
                           expires_at=now + STATE_TTL))
    session.commit()
    url = oauth.authorize_url(app, redirect_uri, state)
    if "application/json" in request.headers.get("accept", ""):
        return JSONResponse({"authorize_url": url, "expires_at": (now + STATE_TTL).isoformat()})
    return RedirectResponse(url, status_code=status.HTTP_302_FOUND)


# ---- callback -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Grant:
    """A consumed state with what the exchange needs (the client secret stays in this request)."""

    account_id: int
    provider_id: int
    provider_type: str
    base_url: str | None
    credential_name: str
    redirect_uri: str
    app: oauth.OAuthApp | None


def _consume(session: Session, settings: Settings, state: str) -> _Grant:
    """Use the state up, or 400 saying why it cannot be used; at most one caller wins."""
    digest = _hash(state)
    now = datetime.now(UTC)
    consumed = session.execute(
        update(OAuthState)
        .where(OAuthState.state_hash == digest, OAuthState.used_at.is_(None), OAuthState.expires_at > now)
        .values(used_at=now)
        .execution_options(synchronize_session=False)
    ).rowcount
    session.commit()
    row = session.scalar(select(OAuthState).where(OAuthState.state_hash == digest))
    if row is None:
        raise _bad_request("unknown OAuth state: start again from /providers/{id}/oauth/authorize")
    if consumed != 1:
        if row.used_at is not None:
            raise _bad_request("this OAuth state was already used: start again from /providers/{id}/oauth/authorize")
        raise _bad_request("this OAuth state has expired (10 minutes): start again from "
                           "/providers/{id}/oauth/authorize")
    provider = session.scalar(select(GitProvider).where(GitProvider.id == row.provider_id,
                                                        GitProvider.account_id == row.account_id))
    if provider is None:
        raise errors.not_found("provider")
    try:
        app: oauth.OAuthApp | None = oauth.oauth_app(provider, _box(settings))
    except oauth.OAuthNotConfigured:
        app = None
    grant = _Grant(row.account_id, provider.id, provider.provider_type, provider.base_url, row.credential_name,
                   row.redirect_uri, app)
    session.rollback()  # no transaction stays open while the provider answers
    return grant


def _store(session: Session, settings: Settings, grant: _Grant, tokens: oauth.TokenSet) -> int:
    """Create or replace the credential named at authorize time; its id."""
    box = _box(settings)
    for _ in range(2):
        row = session.scalar(select(GitProviderCredential).where(
            GitProviderCredential.provider_id == grant.provider_id,
            GitProviderCredential.account_id == grant.account_id,
            GitProviderCredential.name == grant.credential_name))
        if row is None:
            row = GitProviderCredential(account_id=grant.account_id, provider_id=grant.provider_id,
                                        name=grant.credential_name, scopes=[])
            session.add(row)
        oauth.store_tokens(row, tokens, box)
        if not tokens.refresh_token:
            row.encrypted_refresh_token = None  # a replaced credential keeps no stale refresh token
        row.scopes = list(tokens.scopes)
        row.username = None
        row.last_tested_at = row.last_test_ok = row.last_test_error = None
        try:
            session.commit()
        except IntegrityError:  # a concurrent callback created the same name first: replace it
            session.rollback()
            continue
        return row.id
    raise Conflict(f"a credential named {grant.credential_name!r} is being created concurrently; try again")


def _record_user(session: Session, credential_id: int, user: ProviderUser | None, error: str | None) -> None:
    row = session.get(GitProviderCredential, credential_id)
    if row is None:
        return
    row.last_tested_at = datetime.now(UTC)
    row.last_test_ok = user is not None
    row.last_test_error = error
    if user is not None:
        row.username = user.login
        if user.scopes:
            row.scopes = list(user.scopes)
    session.commit()


def _credential(session: Session, credential_id: int) -> GitProviderCredentialPublic:
    row = session.get(GitProviderCredential, credential_id)
    assert row is not None
    return credential_public(row)


@router.get(
    "/oauth/callback",
    summary="Finish connecting a provider with OAuth (the provider's redirect)",
    response_model=GitProviderCredentialPublic,
    responses={400: {"description": "unknown, used or expired state; the provider's error; the code refused"},
               502: {"description": "the provider's token endpoint failed or rate-limited the request"}},
)
def complete_provider_oauth(session: SessionDep, settings: SettingsDep, state: str | None = None,
                            code: str | None = None, error: str | None = None) -> GitProviderCredentialPublic:
    """Where the provider sends the browser back. No bearer token: the single-use ``state`` says
    which account, provider and credential this is. Answers the stored credential (never its token)."""
    if not state or len(state) > 512:
        raise _bad_request("missing or malformed OAuth state")
    grant = _consume(session, settings, state)
    if error is not None:
        name = error if _ERROR_NAME.match(error) else "invalid_error"
        raise _bad_request(f"the provider answered error={name}: nothing was stored")
    if not code or len(code) > 2048:
        raise _bad_request("the provider sent no authorization code: nothing was stored")
    if grant.app is None:
        raise Conflict(f"provider {grant.provider_id} no longer has an OAuth "
                       "application (oauth_client_id and oauth_client_secret)")
    if not settings.private_targets_allowed:
        refusal = private_address_refusal(grant.app.token_endpoint)
        if refusal is not None:
            raise _bad_request(refusal.replace("the base URL's host", "the OAuth token endpoint's host"))
    try:
        tokens = oauth.exchange_code(grant.app, code, grant.redirect_uri)
    except oauth.OAuthGrantError as exc:
        raise _bad_request(f"the provider refused the authorization code ({exc.error_code}): nothing was "
                           "stored; start again") from None
    except RateLimited:
        raise UpstreamFailed("the provider rate-limited the token request; start again later") from None
    except ProviderError as exc:
        raise UpstreamFailed(f"the provider's token endpoint failed: {explain(exc)}; "
                             "nothing was stored") from None
    credential_id = _store(session, settings, grant, tokens)

    # Who the token belongs to: useful, not essential; a failure leaves the credential in place.
    user, problem = None, None
    refusal = None
    if grant.base_url and not settings.private_targets_allowed:
        refusal = private_address_refusal(grant.base_url)
    if refusal is not None:
        problem = refusal
    else:
        try:
            user = current_user(grant.provider_type, grant.base_url, tokens.access_token)
        except Exception as exc:  # noqa: BLE001 - explained without its text; the credential stays
            problem = explain(exc)
    _record_user(session, credential_id, user, problem)
    return _credential(session, credential_id)
