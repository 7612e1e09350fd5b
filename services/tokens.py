"""API tokens of an account: list, create, revoke, rotate — and who may do which.

The rules (README "API tokens"):

* A user manages their own tokens; an admin (role *and* a token holding ``admin``) lists and
  revokes every token of the account. Another user's token is 404 to a non-admin, as is a
  token of another account to anyone.
* A token never makes a token stronger than itself: each requested scope must be held by the
  calling token (``*`` only from ``*``) — 403 naming it. A scope the caller's role can never use
  is 422 naming it, as is a scope that does not exist.
* Rotation issues a new value with the same name, scopes and expiry; the old one keeps working
  for a grace period (its expiry becomes ``min(expiry, now + grace)``), so clients switch
  without downtime. Only the token's own user rotates it (the new value goes to whoever asks).
* Revoking is idempotent: a revoked token answers 204 again, and is logged once.

The clear value is made by the caller-supplied ``issue`` function (``api.auth.issue_token``), so
hashing lives in one place; the audit log gets name, scopes and prefix, never value or hash.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.models import ApiToken, User
from domain import access
from domain.errors import Forbidden, NotFound, conflict, field_error, unprocessable
from services import audit

MAX_EXPIRES_IN_DAYS = 3650


class Issued(Protocol):
    token: str
    row: ApiToken


Issue = Callable[..., Issued]  # (session, user, name, *, scopes, expires_at) -> Issued


@dataclass(frozen=True)
class Requester:
    """Who asks: their account, user, role, and the scopes of the token they call with."""

    account_id: int
    user_id: int
    role: str
    scopes: tuple[str, ...]

    @property
    def administers(self) -> bool:
        return access.refusal(self.role, self.scopes, "admin") is None


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _details(row: ApiToken, **more: Any) -> dict[str, Any]:
    return {"name": row.name, "scopes": list(row.scopes or []), "prefix": row.prefix, "user_id": row.user_id, **more}


def list_tokens(session: Session, who: Requester, *, everyone: bool = False, limit: int = 50,
                offset: int = 0) -> tuple[list[ApiToken], int]:
    """The requester's tokens, newest first; ``everyone``: all of the account's (admin only)."""
    if everyone and who.role != "admin":
        raise Forbidden(f"your role is {who.role}: only an account admin can list every token of the account")
    if everyone and not who.administers:
        raise Forbidden(access.refusal(who.role, who.scopes, "admin"))
    query = select(ApiToken).where(ApiToken.account_id == who.account_id)
    if not everyone:
        query = query.where(ApiToken.user_id == who.user_id)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(query.order_by(ApiToken.created_at.desc(), ApiToken.id.desc()).limit(limit).offset(offset))
    return list(rows.unique()), total


def check_scopes(who: Requester, scopes: list[str]) -> list[str]:
    """The requested scopes, deduplicated in order, or the refusal: unknown or beyond the role
    → 422 at ``scopes.<i>``; not held by the calling token → 403 naming it."""
    problems = [{"loc": ["body", "scopes", index], "type": "value_error",
                 "msg": f"unknown scope '{scope}'; use '*' or one of: {', '.join(access.SCOPES)}"}
                for index, scope in enumerate(scopes) if access.unknown_scopes([scope])]
    if not problems:
        problems = [{"loc": ["body", "scopes", index], "type": "value_error",
                     "msg": f"your role is {who.role}: it can never use the scope '{scope}'"}
                    for index, scope in enumerate(scopes) if access.beyond_role(who.role, [scope])]
    if problems:
        raise unprocessable(problems)
    beyond = access.not_held(who.scopes, scopes)
    if beyond:
        named = ", ".join(f"'{scope}'" for scope in beyond)
        raise Forbidden(f"this API token lacks the scope {named}: a token cannot create a token with scopes "
                        "it does not hold itself")
    return list(dict.fromkeys(scopes))


def resolve_expiry(expires_at: datetime | None, expires_in_days: int | None,
                   now: datetime | None = None) -> datetime | None:
    now = now or _now()
    if expires_at is not None and expires_in_days is not None:
        raise field_error(["expires_in_days"], "give expires_at or expires_in_days, not both")
    if expires_in_days is not None:
        return now + timedelta(days=expires_in_days)
    if expires_at is None:
        return None
    expires_at = _aware(expires_at)
    if expires_at <= now:
        raise field_error(["expires_at"], "must be in the future")
    if expires_at > now + timedelta(days=MAX_EXPIRES_IN_DAYS):
        raise field_error(["expires_at"], f"must be within {MAX_EXPIRES_IN_DAYS} days")
    return expires_at


def create_token(session: Session, who: Requester, actor: audit.Actor, issue: Issue, *, name: str,
                 scopes: list[str], expires_at: datetime | None = None,
                 expires_in_days: int | None = None) -> Issued:
    """A new token of the requester (committed), with its audit event."""
    scopes = check_scopes(who, scopes)
    expiry = resolve_expiry(expires_at, expires_in_days)
    user = session.get_one(User, who.user_id)
    issued = issue(session, user, name, scopes=scopes, expires_at=expiry)
    audit.record(session, who.account_id, actor, "token.created", target_type="token", target_id=issued.row.id,
                 details=_details(issued.row, expires_at=expiry.isoformat() if expiry else None))
    session.commit()
    return issued


def _visible(session: Session, who: Requester, token_id: int) -> ApiToken:
    """The token, if the requester may see it: their own, or (admin) any of the account."""
    row = session.get(ApiToken, token_id)
    if row is None or row.account_id != who.account_id:
        raise NotFound(f"token {token_id} not found")
    if row.user_id != who.user_id:
        if who.role != "admin":
            raise NotFound(f"token {token_id} not found")
        if not who.administers:
            raise Forbidden(access.refusal(who.role, who.scopes, "admin"))
    return row


def revoke_token(session: Session, who: Requester, actor: audit.Actor, token_id: int) -> ApiToken:
    """Revoke at once (idempotent: an already revoked token is left as it is, logged once)."""
    row = _visible(session, who, token_id)
    if row.revoked_at is None:
        row.revoked_at = _now()
        audit.record(session, who.account_id, actor, "token.revoked", target_type="token", target_id=row.id,
                     details=_details(row))
        session.commit()
    return row


def rotate_token(session: Session, who: Requester, actor: audit.Actor, issue: Issue, token_id: int,
                 grace_minutes: float) -> tuple[Issued, ApiToken]:
    """A new value with the old one's name, scopes and expiry; the old value works ``grace_minutes``
    more (0: stops now). Returns the new token and the old row."""
    old = _visible(session, who, token_id)
    if old.user_id != who.user_id:
        raise Forbidden("only a token's own user can rotate it (the new value goes to whoever rotates); "
                        "revoke it instead")
    now = _now()
    if old.revoked_at is not None:
        raise conflict(f"token {token_id} is revoked; create a new token instead")
    if old.expires_at is not None and _aware(old.expires_at) <= now:
        raise conflict(f"token {token_id} has expired; create a new token instead")
    scopes = list(old.scopes or [access.ALL])
    beyond = access.not_held(who.scopes, scopes)
    if beyond:
        named = ", ".join(f"'{scope}'" for scope in beyond)
        raise Forbidden(f"this API token lacks the scope {named}: a token cannot rotate a token with scopes "
                        "it does not hold itself")
    user = session.get_one(User, old.user_id)
    original_expiry = _aware(old.expires_at) if old.expires_at else None
    issued = issue(session, user, old.name, scopes=scopes, expires_at=original_expiry)
    grace_end = now + timedelta(minutes=grace_minutes)
    old.expires_at = min(original_expiry, grace_end) if original_expiry else grace_end
    audit.record(session, who.account_id, actor, "token.rotated", target_type="token", target_id=old.id,
                 details=_details(issued.row, new_token_id=issued.row.id, old_prefix=old.prefix,
                                  grace_minutes=grace_minutes, old_expires_at=old.expires_at.isoformat()))
    session.commit()
    return issued, old
