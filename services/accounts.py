"""Accounts of the install, created by the service operator with their first admin."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.models import Account, User
from domain.errors import Conflict
from services import audit


def create_account(session: Session, actor: audit.Actor, *, name: str, admin_email: str,
                   is_operator: bool = False) -> tuple[Account, User]:
    """A new account and its first admin (the caller issues the admin's API token). Account
    names are unique, case-insensitively: 409 otherwise."""
    name, admin_email = name.strip(), admin_email.strip()
    taken = session.scalar(select(Account.id).where(func.lower(Account.name) == name.lower()).limit(1))
    if taken is not None:
        raise Conflict(f"an account named {name!r} already exists")
    account = Account(name=name)
    session.add(account)
    session.flush()
    user = User(account_id=account.id, email=admin_email, role="admin", is_operator=is_operator)
    session.add(user)
    session.flush()
    audit.record(session, account.id, actor, "account.created", target_type="account", target_id=account.id,
                 details={"name": name, "admin_email": admin_email, "admin_user_id": user.id,
                          "is_operator": is_operator})
    return account, user


def any_account(session: Session) -> bool:
    return session.scalar(select(Account.id).limit(1)) is not None


def list_accounts(session: Session, *, limit: int, offset: int) -> tuple[list[Account], int]:
    total = session.scalar(select(func.count()).select_from(Account)) or 0
    rows = session.scalars(select(Account).order_by(Account.id).limit(limit).offset(offset)).all()
    return list(rows), total
