"""API tokens: random bearer tokens stored as SHA-256 hashes, shown once."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from db.models import Account, ApiToken, User

TOKEN_PREFIX = "dvo_"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass
class IssuedToken:
    token: str  # the clear value: give it to the user once, never store it
    row: ApiToken


def issue_token(session: Session, user: User, name: str, *, scopes: list[str] | None = None,
                expires_at: datetime | None = None) -> IssuedToken:
    secret = secrets.token_urlsafe(32)
    token = f"{TOKEN_PREFIX}{secret}"
    row = ApiToken(account_id=user.account_id, user_id=user.id, name=name, prefix=token[:12],
                   token_hash=hash_token(token), scopes=scopes or ["*"], expires_at=expires_at)
    session.add(row)
    session.flush()
    return IssuedToken(token=token, row=row)


def create_account_with_admin(session: Session, account_name: str, email: str, role: str = "admin", *,
                              is_operator: bool = False) -> tuple[Account, User, IssuedToken]:
    """A new account with one user and an API token for it (used by tests; the API and
    bootstrap go through ``services.accounts``, which also checks the name and audits)."""
    account = Account(name=account_name)
    session.add(account)
    session.flush()
    user = User(account_id=account.id, email=email, role=role, is_operator=is_operator)
    session.add(user)
    session.flush()
    return account, user, issue_token(session, user, "default")
