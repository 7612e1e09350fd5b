"""FastAPI dependencies: settings, database session, Temporal gateway, the calling account."""

from __future__ import annotations

import hmac
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
from domain import access
from domain.errors import Forbidden
from services import audit
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
    scopes: tuple[str, ...] = (access.ALL,)
    email: str = ""

    def may(self, scope: str) -> bool:
        """Whether this caller's role and token both grant ``scope``."""
        return access.refusal(self.role, self.scopes, scope) is None

    def require(self, scope: str) -> None:
        problem = access.refusal(self.role, self.scopes, scope)
        if problem:
            raise Forbidden(problem)


def required_scope_of(request: Request) -> str | None:
    """The scope of the route this request matched (domain.access), None for public routes.
    FastAPI hands over the declared route object, whose path lacks its routers' prefixes: the
    full template comes from the app's table of operation id -> path (api.main)."""
    route = request.scope.get("route")
    templates: dict[str, str] = getattr(request.app.state, "route_templates", {})
    path = templates.get(getattr(route, "name", ""), "")
    if not path:
        raise Forbidden("this route has no access rule; refusing it")
    path = path.removeprefix(security.API_PREFIX)
    if access.is_public(path):
        return None
    try:
        return access.required_scope(request.method, path)
    except KeyError:  # an area domain.access does not know (tests/api/test_scopes.py catches it first)
        raise Forbidden("this route has no access rule; refusing it") from None


SESSION_COOKIE = "devops_session"
CSRF_COOKIE = "devops_csrf"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def session_credentials(request: Request) -> HTTPAuthorizationCredentials | None:
    """The dashboard's ``devops_session`` cookie as a bearer token (only when there is no
    Authorization header). A cookie comes with every request the browser makes, so a change
    (unsafe method) must also carry ``X-CSRF-Token`` equal to the ``devops_csrf`` cookie, which
    only a page of this origin can read: 403 otherwise."""
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return None
    if request.method.upper() not in SAFE_METHODS:
        expected = request.cookies.get(CSRF_COOKIE, "")
        sent = request.headers.get(CSRF_HEADER, "")
        if not expected or not sent or not hmac.compare_digest(expected.encode(), sent.encode()):
            raise HTTPException(status.HTTP_403_FORBIDDEN, "CSRF token missing or wrong")
    return HTTPAuthorizationCredentials(scheme="Bearer", credentials=token)


def caller_of_token(request: Request, session: Session, credentials: HTTPAuthorizationCredentials | None) -> Caller:
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
    if token.user.deactivated_at is not None:
        # not counted as a failed guess: the token is real, its user was deactivated
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "this API token's user has been deactivated",
                            headers={"WWW-Authenticate": "Bearer"})
    caller = Caller(account_id=token.account_id, user_id=token.user_id, role=token.user.role, token_id=token.id,
                    scopes=tuple(token.scopes or ()), email=token.user.email)
    if token.last_used_at is None or now - token.last_used_at > LAST_USED_RESOLUTION:
        token.last_used_at = now
        session.commit()
    return caller


def authenticate(request: Request, session: Session, credentials: HTTPAuthorizationCredentials | None) -> Caller:
    """The caller of the Authorization header's bearer token or else of the dashboard's session
    cookie (:func:`session_credentials`), checked against the scope of the route."""
    if credentials is None:
        credentials = session_credentials(request)
    caller = caller_of_token(request, session, credentials)
    needed = required_scope_of(request)
    if needed:
        caller.require(needed)
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


# Routes that change things. Their scopes (``area:write``, ``runs:trigger``, ``admin``) are not
# granted to viewers or approvers (domain.access.ROLE_SCOPES), and ``authenticate`` checks the
# scope of every route, so no role test is needed here on top of it.
WriterCaller = CurrentCaller


def request_actor(request: Request, name: str, *, user_id: int | None = None,
                  token_id: int | None = None) -> audit.Actor:
    """The audit log's "who" (``name``, ids) and "from where" (client address, user agent)."""
    return audit.Actor(name=name, user_id=user_id, token_id=token_id, ip=request.client.host if request.client else "",
                       user_agent=request.headers.get("user-agent", "")[:300])


def actor_of(request: Request, caller: Caller) -> audit.Actor:
    """The audit actor of an API token's caller."""
    return request_actor(request, caller.email or f"user {caller.user_id}", user_id=caller.user_id,
                         token_id=caller.token_id)


def get_actor(request: Request, caller: CurrentCaller) -> audit.Actor:
    return actor_of(request, caller)


ActorDep = Annotated[audit.Actor, Depends(get_actor)]
