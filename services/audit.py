"""The audit log: every change of users, tokens, roles, secrets, policies and every approval
decision becomes an ``AuditEvent`` (who, what, when, from where).

Callers pass *what changed* as plain ``details``; values that are secret never belong there.
As a second line of defence :func:`scrub` replaces any value under a key that names a secret-like
value, and any string that looks like one of our credentials (an API token ``dvo_…``, an
invitation ``inv_…``), so a careless caller logs ``"value": "[redacted]"`` rather than the secret.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.access_models import AuditEvent
from domain import errors

REDACTED = "[redacted]"
_SECRET_WORDS = ("token", "secret", "password", "value", "key", "credential", "hash")
_HARMLESS_ENDINGS = ("_id", "_ids", "_name", "_prefix", "name", "names", "scopes", "_type", "_kind")
# our own credentials, wherever they turn up: API tokens and invitation tokens
_CREDENTIAL = re.compile(r"\b(dvo|inv)_[A-Za-z0-9_-]{16,}")


@dataclass(frozen=True)
class Actor:
    """Who did it, and from where: a user (with the token used), ``operator`` or ``system``."""

    name: str
    user_id: int | None = None
    token_id: int | None = None
    ip: str = ""
    user_agent: str = ""


SYSTEM = Actor(name="system")


def _secret_key(key: object) -> bool:
    lowered = str(key).lower()
    return any(word in lowered for word in _SECRET_WORDS) and not lowered.endswith(_HARMLESS_ENDINGS)


def scrub(details: Any) -> Any:
    """``details`` with secret-looking keys' values and credential-looking strings redacted."""
    if isinstance(details, dict):
        return {str(key): REDACTED if _secret_key(key) else scrub(value) for key, value in details.items()}
    if isinstance(details, list | tuple):
        return [scrub(item) for item in details]
    if isinstance(details, str):
        return _CREDENTIAL.sub(REDACTED, details)
    return details


def record(session: Session, account_id: int, actor: Actor, action: str, *, target_type: str = "",
           target_id: object = "", details: dict[str, Any] | None = None, at: datetime | None = None) -> AuditEvent:
    """Add one audit event to ``session`` (committed with the change it describes)."""
    event = AuditEvent(account_id=account_id, action=action[:100], actor=actor.name[:320],
                       actor_user_id=actor.user_id, token_id=actor.token_id, target_type=target_type[:50],
                       target_id=str(target_id)[:100], details=scrub(details or {}), ip=(actor.ip or "")[:64],
                       user_agent=(actor.user_agent or "")[:300])
    if at is not None:
        event.created_at = at
    session.add(event)
    return event


def _utc(moment: datetime, loc: list[Any]) -> datetime:
    """``moment`` in UTC (a naive one is taken as UTC); 422 on ``loc`` when it cannot be."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise errors.unprocessable([{"loc": loc, "type": "value_error",
                                     "msg": "out of range once converted to UTC"}]) from None


def list_events(session: Session, account_id: int, *, action: str | None = None, actor_user_id: int | None = None,
                target_type: str | None = None, since: datetime | None = None, limit: int = 50,
                offset: int = 0) -> tuple[list[AuditEvent], int]:
    """The account's events, newest first, with the total matching count. ``action`` is exact,
    or a prefix when it ends with ``.`` (``token.`` = every token event)."""
    query = select(AuditEvent).where(AuditEvent.account_id == account_id)
    if action:
        query = query.where(AuditEvent.action.startswith(action, autoescape=True) if action.endswith(".")
                            else AuditEvent.action == action)
    if actor_user_id is not None:
        query = query.where(AuditEvent.actor_user_id == actor_user_id)
    if target_type:
        query = query.where(AuditEvent.target_type == target_type)
    if since is not None:
        query = query.where(AuditEvent.created_at >= _utc(since, ["query", "since"]))
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(query.order_by(AuditEvent.created_at.desc(), AuditEvent.id.desc())
                           .limit(limit).offset(offset)).all()
    return list(rows), total


def get_event(session: Session, account_id: int, event_id: int) -> AuditEvent:
    """One event of the account; another account's answers 404 like a missing one."""
    event = session.scalar(select(AuditEvent).where(AuditEvent.id == event_id, AuditEvent.account_id == account_id))
    if event is None:
        raise errors.not_found("audit event")
    return event
