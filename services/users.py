"""Users of an account and the invitations that bring them in.

An invitation carries a random token (``inv_`` + 32 random bytes, URL-safe) of which only the
SHA-256 is stored; it is single use and expires after ``settings.invitation_ttl_hours``.
Accepting it creates the user with the invited email and role (the API then issues their first
token). An account always keeps one active admin: the last one cannot be demoted, deactivated
or deleted. Every change is an audit event in the same transaction.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from db.access_models import Invitation
from db.models import PipelineRun, User
from domain import access
from domain.errors import Conflict, Gone, NotFound, field_error
from services import audit

INVITATION_PREFIX = "inv_"


def hash_invitation(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _now() -> datetime:
    return datetime.now(UTC)


def invitation_status(row: Invitation, now: datetime | None = None) -> str:
    """pending, accepted, revoked or expired."""
    if row.accepted_at is not None:
        return "accepted"
    if row.revoked_at is not None:
        return "revoked"
    if row.expires_at <= (now or _now()):
        return "expired"
    return "pending"


def _same_email(column: Any, email: str) -> Any:
    return func.lower(column) == email.strip().lower()


def _user_with_email(session: Session, account_id: int, email: str) -> User | None:
    return session.scalar(select(User).where(User.account_id == account_id, _same_email(User.email, email)).limit(1))


def _check_role(role: str) -> None:
    if role not in access.ROLES:
        raise field_error(["role"], f"unknown role {role!r}; one of: {', '.join(access.ROLES)}")


# ---- invitations ---------------------------------------------------------------------------


@dataclass
class NewInvitation:
    row: Invitation
    token: str  # the clear value: shown once, never stored


def invite(session: Session, account_id: int, actor: audit.Actor, *, email: str, role: str,
           ttl_hours: float, name: str | None = None) -> NewInvitation:
    """A pending invitation of ``email`` with ``role``. 409 when the email already is a user of
    the account or has a pending invitation (case-insensitive)."""
    _check_role(role)
    email = email.strip()
    if _user_with_email(session, account_id, email) is not None:
        raise Conflict(f"{email} is already a user of this account")
    now = _now()
    pending = session.scalar(select(Invitation.id).where(
        Invitation.account_id == account_id, _same_email(Invitation.email, email), Invitation.accepted_at.is_(None),
        Invitation.revoked_at.is_(None), Invitation.expires_at > now).limit(1))
    if pending is not None:
        raise Conflict(f"{email} already has a pending invitation (revoke it to invite again)")
    token = INVITATION_PREFIX + secrets.token_urlsafe(32)
    row = Invitation(account_id=account_id, email=email, role=role, token_hash=hash_invitation(token),
                     invited_by=actor.user_id, expires_at=now + timedelta(hours=ttl_hours), created_at=now)
    session.add(row)
    session.flush()
    audit.record(session, account_id, actor, "user.invited", target_type="invitation", target_id=row.id,
                 details={"email": email, "role": role, "name": (name or "").strip(),
                          "expires_at": row.expires_at.isoformat()})
    return NewInvitation(row=row, token=token)


def invitation_of_token(session: Session, token: str) -> Invitation:
    """The pending invitation of ``token``: 404 unknown, 410 used, revoked or expired."""
    row = session.scalar(select(Invitation).where(Invitation.token_hash == hash_invitation(token)))
    if row is None:
        raise NotFound("invitation not found")
    status = invitation_status(row)
    if status != "pending":
        raise Gone(f"this invitation is {status}; ask an admin of the account for a new one")
    return row


def accept(session: Session, token: str, *, name: str | None, ip: str = "", user_agent: str = "") -> User:
    """Create the invited user (email and role of the invitation). Single use even when two
    accepts race: the invitation is claimed by a conditional update. The caller issues the
    user's first API token and commits."""
    row = invitation_of_token(session, token)
    if _user_with_email(session, row.account_id, row.email) is not None:
        raise Conflict(f"{row.email} is already a user of this account")
    now = _now()
    claimed = session.execute(update(Invitation).where(
        Invitation.id == row.id, Invitation.accepted_at.is_(None), Invitation.revoked_at.is_(None))
        .values(accepted_at=now).execution_options(synchronize_session=False))
    if claimed.rowcount != 1:
        raise Gone("this invitation has just been used or revoked")
    user = User(account_id=row.account_id, email=row.email, role=row.role, name=(name or "").strip())
    session.add(user)
    session.flush()
    session.execute(update(Invitation).where(Invitation.id == row.id).values(user_id=user.id)
                    .execution_options(synchronize_session=False))
    session.refresh(row)
    actor = audit.Actor(name=user.email, user_id=user.id, ip=ip, user_agent=user_agent)
    audit.record(session, row.account_id, actor, "invitation.accepted", target_type="user", target_id=user.id,
                 details={"invitation_id": row.id, "email": user.email, "role": user.role})
    return user


def list_invitations(session: Session, account_id: int, *, limit: int, offset: int) -> tuple[list[Invitation], int]:
    query = select(Invitation).where(Invitation.account_id == account_id)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(query.order_by(Invitation.id.desc()).limit(limit).offset(offset)).all()
    return list(rows), total


def revoke_invitation(session: Session, account_id: int, actor: audit.Actor, invitation_id: int) -> None:
    """Revoke a pending invitation (revoking twice is fine; an accepted one is 409)."""
    row = session.scalar(select(Invitation).where(Invitation.id == invitation_id, Invitation.account_id == account_id))
    if row is None:
        raise NotFound("invitation not found")
    if row.accepted_at is not None:
        raise Conflict("this invitation was already accepted; deactivate or delete the user instead")
    if row.revoked_at is not None:
        return
    row.revoked_at = _now()
    audit.record(session, account_id, actor, "invitation.revoked", target_type="invitation", target_id=row.id,
                 details={"email": row.email, "role": row.role})


# ---- users ---------------------------------------------------------------------------------


def list_users(session: Session, account_id: int, *, role: str | None = None, active: bool | None = None,
               limit: int = 50, offset: int = 0) -> tuple[list[User], int]:
    query = select(User).where(User.account_id == account_id)
    if role is not None:
        query = query.where(User.role == role)
    if active is not None:
        query = query.where(User.deactivated_at.is_(None) if active else User.deactivated_at.is_not(None))
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(query.order_by(User.id).limit(limit).offset(offset)).all()
    return list(rows), total


def get_user(session: Session, account_id: int, user_id: int) -> User:
    user = session.scalar(select(User).where(User.id == user_id, User.account_id == account_id))
    if user is None:
        raise NotFound("user not found")
    return user


def _refuse_if_last_admin(session: Session, user: User, what: str) -> None:
    if user.role != "admin" or user.deactivated_at is not None:
        return
    others = session.scalar(select(func.count()).select_from(User).where(
        User.account_id == user.account_id, User.role == "admin", User.deactivated_at.is_(None),
        User.id != user.id)) or 0
    if others == 0:
        raise Conflict(f"{user.email} is the account's last active admin and cannot be {what}; "
                       "make another user admin first")


def update_user(session: Session, account_id: int, actor: audit.Actor, user_id: int, *,
                role: str | None = None, name: str | None = None) -> User:
    """An admin changes a user's role and/or name."""
    user = get_user(session, account_id, user_id)
    if role is not None and role != user.role:
        _check_role(role)
        if role != "admin":
            _refuse_if_last_admin(session, user, "demoted")
        previous, user.role = user.role, role
        audit.record(session, account_id, actor, "user.role_changed", target_type="user", target_id=user.id,
                     details={"email": user.email, "from": previous, "to": role})
    if name is not None and name.strip() != user.name:
        user.name = name.strip()
        audit.record(session, account_id, actor, "user.updated", target_type="user", target_id=user.id,
                     details={"email": user.email, "fields": ["name"]})
    return user


def set_active(session: Session, account_id: int, actor: audit.Actor, user_id: int, active: bool) -> User:
    """Deactivate (their tokens answer 401 at once) or activate again; a no-op when already so."""
    user = get_user(session, account_id, user_id)
    if active == (user.deactivated_at is None):
        return user
    if not active:
        _refuse_if_last_admin(session, user, "deactivated")
    user.deactivated_at = None if active else _now()
    audit.record(session, account_id, actor, "user.activated" if active else "user.deactivated",
                 target_type="user", target_id=user.id, details={"email": user.email, "role": user.role})
    return user


def delete_user(session: Session, account_id: int, actor: audit.Actor, user_id: int) -> None:
    """Delete a user; their API tokens go with them (FK cascade). Runs they triggered stay (the
    trigger's user is cleared), as do audit events (they name the actor in words)."""
    user = get_user(session, account_id, user_id)
    _refuse_if_last_admin(session, user, "deleted")
    email, role = user.email, user.role
    audit.record(session, account_id, actor, "user.deleted", target_type="user", target_id=user.id,
                 details={"email": email, "role": role})
    session.flush()
    session.execute(update(PipelineRun).where(PipelineRun.triggered_by_user_id == user.id)
                    .values(triggered_by_user_id=None).execution_options(synchronize_session=False))
    session.expunge(user)
    session.execute(delete(User).where(User.id == user_id, User.account_id == account_id)
                    .execution_options(synchronize_session=False))


def update_profile(session: Session, user_id: int, actor: audit.Actor, changes: dict[str, Any]) -> User:
    """The caller's own profile (name and notification targets). Records which fields changed,
    not their values (URLs of webhooks may embed a secret)."""
    user = session.get_one(User, user_id)
    changed = sorted(key for key, value in changes.items() if getattr(user, key) != value)
    for key in changed:
        setattr(user, key, changes[key])
    if changed:
        audit.record(session, user.account_id, actor, "user.updated", target_type="user", target_id=user.id,
                     details={"fields": changed})
    return user


_EMAIL = re.compile(r"^[^@\s<>\"',;:()\[\]]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*$")


def email_problem(email: str) -> str | None:
    """Why ``email`` is not an address's shape (name@host), or None."""
    if len(email) > 320 or not _EMAIL.match(email):
        return "must be an email address (name@host)"
    return None
