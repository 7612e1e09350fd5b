"""The audit log: every change of users, tokens, roles, secrets, policies and every approval
decision becomes an ``AuditEvent`` (who, what, when, from where).

Callers pass *what changed* as plain ``details``; values that are secret never belong there.
As a second line of defence :func:`scrub` drops any key that names a secret-like value, so a
careless caller logs ``"value": "[redacted]"`` rather than the secret.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.access_models import AuditEvent

REDACTED = "[redacted]"
_SECRET_WORDS = ("token", "secret", "password", "value", "key", "credential", "hash")


@dataclass(frozen=True)
class Actor:
    """Who did it, and from where: a user (with the token used), ``operator`` or ``system``."""

    name: str
    user_id: int | None = None
    token_id: int | None = None
    ip: str = ""
    user_agent: str = ""


SYSTEM = Actor(name="system")


def scrub(details: Any) -> Any:
    if isinstance(details, dict):
        return {key: (REDACTED if any(word in str(key).lower() for word in _SECRET_WORDS)
                      and not str(key).lower().endswith(("_id", "_name", "_prefix", "name", "names", "scopes"))
                      else scrub(value))
                for key, value in details.items()}
    if isinstance(details, list):
        return [scrub(item) for item in details]
    return details


def record(session: Session, account_id: int, actor: Actor, action: str, *, target_type: str = "",
           target_id: object = "", details: dict[str, Any] | None = None, at: datetime | None = None) -> AuditEvent:
    """Add one audit event to ``session`` (committed with the change it describes)."""
    event = AuditEvent(account_id=account_id, action=action, actor=actor.name[:320], actor_user_id=actor.user_id,
                       token_id=actor.token_id, target_type=target_type, target_id=str(target_id)[:100],
                       details=scrub(details or {}), ip=actor.ip[:64], user_agent=actor.user_agent[:300])
    if at is not None:
        event.created_at = at
    session.add(event)
    return event


def list_events(session: Session, account_id: int, *, action: str | None = None, actor_user_id: int | None = None,
                target_type: str | None = None, since: datetime | None = None, limit: int = 50,
                offset: int = 0) -> tuple[list[AuditEvent], int]:
    """Newest first, with the total matching count."""
    from sqlalchemy import func

    query = select(AuditEvent).where(AuditEvent.account_id == account_id)
    if action:
        query = query.where(AuditEvent.action.startswith(action) if action.endswith(".") else AuditEvent.action == action)
    if actor_user_id is not None:
        query = query.where(AuditEvent.actor_user_id == actor_user_id)
    if target_type:
        query = query.where(AuditEvent.target_type == target_type)
    if since is not None:
        query = query.where(AuditEvent.created_at >= since)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(query.order_by(AuditEvent.created_at.desc(), AuditEvent.id.desc())
                           .limit(limit).offset(offset)).all()
    return list(rows), total
