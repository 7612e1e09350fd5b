"""Committing a change that a concurrent request may race (a unique name taken between the
route's check and the insert): the loser answers 409 like the check would have."""

from __future__ import annotations

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from domain.errors import Conflict


def commit_or_conflict(session: Session, message: str) -> None:
    try:
        session.commit()
    except IntegrityError:  # a concurrent request took the name between our check and the insert
        session.rollback()
        raise Conflict(message) from None
