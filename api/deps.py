"""FastAPI dependencies: settings, database session, Temporal gateway, the calling account."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import select
from sqlalchemy.orm import Session

from adapters.temporal import TemporalGateway
from api import security
from api.auth import hash_token
from db.models import ApiToken
from domain.errors import Forbidden
from settings import Settings

bearer = HTTPBearer(auto_error=False, description="API token: `Authorization: Bearer dvo_...`")
LAST_USED_RESOLUTION = timedelta(minutes=1)


def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_session(request: Request) -> Iterator[Session]:
    with request.app.state.sessions() as session:
        yield session


def get_temporal(request: Request) -> TemporalGateway:
    return request.app.state.temporal


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
SessionDep = Annotated[Session, Depends(get_session)]
TemporalDep = Annotated[TemporalGateway, Depends(get_temporal)]


@dataclass(frozen=True)
class Caller:
    """Who is calling: every query filters by ``account_id``."""

    account_id: int
    user_id: int
    role: str
    token_id: int

    @property
    def can_write(self) -> bool:
        return self.role in ("admin", "member")


def authenticate(request: Request, session: Session, credentials: HTTPAuthorizationCredentials | None) -> Caller:
    """The caller of a bearer token, or 401 (counted against the client address), or 429 when
    that address failed too often lately (decided before the token is looked at)."""
    security.refuse_if_locked_out(request)
    unauthorized = HTTPException(
        status.HTTP_401_UNAUTHORIZED, "missing or invalid API token", headers={"WWW-Authenticate": "Bearer"}
    )
    if credentials is None or not credentials.credentials:
        security.record_auth_failure(request)
        raise unauthorized
    token = session.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(credentials.credentials)))
    now = datetime.now(UTC)
    if token is None or token.revoked_at is not None or (token.expires_at and token.expires_at <= now):
        security.record_auth_failure(request)
        raise unauthorized
    caller = Caller(account_id=token.account_id, user_id=token.user_id, role=token.user.role, token_id=token.id)
    if token.last_used_at is None or now - token.last_used_at > LAST_USED_RESOLUTION:
        token.last_used_at = now
        session.commit()
    return caller


def get_caller(request: Request, session: SessionDep,
               credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> Caller:
    # The request's own session: one connection per request, not two.
    return authenticate(request, session, credentials)


def get_caller_with_own_session(request: Request, credentials: HTTPAuthorizationCredentials | None) -> Caller:
    """For long-lived responses (streams) that must not hold a session while they run."""
    with request.app.state.sessions() as session:
        return authenticate(request, session, credentials)


CurrentCaller = Annotated[Caller, Depends(get_caller)]


def require_writer(caller: CurrentCaller) -> Caller:
    if not caller.can_write:
        raise Forbidden("your role is viewer: it can read but not change anything")
    return caller


WriterCaller = Annotated[Caller, Depends(require_writer)]
