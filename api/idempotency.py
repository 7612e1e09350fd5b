"""``Idempotency-Key`` for create requests (Stripe's convention, IETF draft "The Idempotency-Key
HTTP Header Field").

A client that saw a connection error cannot know whether its trigger was recorded; sending the
same request again with the same key must not start a second run. So the key row is inserted in
the same database transaction as the resource it creates: both commit or neither (a request that
fails with a 4xx stores nothing, and the client may fix it and retry with the same key). A
concurrent request with the same key hits the unique constraint (account, scope, key), rolls
back and answers with the first request's resource once that has committed.

A replay answers the first request's status code and the resource as it is now (what a polling
client wants), with ``Idempotent-Replayed: true``; it never creates or starts anything. The same
key with a different request (method, path, canonical JSON body) is a 422 naming the header.
Keys live 24 hours; an expired row is ignored and replaced when its key is used again.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import Header, HTTPException, Request, Response, status
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api import errors
from db.models import IdempotencyKey
from services.idempotency_keys import purge_expired  # noqa: F401  (the sweep, shared with the outbox)

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
LIFETIME = timedelta(hours=24)
# How long a request whose key is taken by one still in flight waits for it before answering 409.
WAIT_SECONDS = 5.0
POLL_SECONDS = 0.1
LOC = ["header", HEADER]

KeyHeader = Annotated[str | None, Header(
    alias=HEADER, min_length=1, max_length=255, pattern=r"^[\x20-\x7e]+$",
    description="Makes this create idempotent for 24 hours: the same key again answers the first "
                "request's resource (header `Idempotent-Replayed: true`), never a second one. "
                "1-255 printable ASCII characters.",
)]


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)  # SQLite gives naive datetimes


def request_hash(method: str, path: str, body: Any) -> str:
    """sha256 of the request's canonical form: the same request spelled differently (key order,
    whitespace) hashes the same."""
    canonical = json.dumps({"method": method.upper(), "path": path, "body": body},
                           sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass
class Idempotency:
    """One create request's key: look it up, claim it with the resource, or wait for its owner."""

    session: Session
    account_id: int
    scope: str
    key: str
    request_hash: str
    resource_type: str
    status_code: int
    _row_id: int | None = field(default=None, init=False)

    def existing(self) -> IdempotencyKey | None:
        """The live row of this key, or None; a 422 naming the header when the key was used
        with a different request."""
        row = self.session.scalar(select(IdempotencyKey).where(
            IdempotencyKey.account_id == self.account_id, IdempotencyKey.scope == self.scope,
            IdempotencyKey.key == self.key))
        if row is None or _aware(row.expires_at) <= _now() or row.resource_id is None:
            return None
        if row.request_hash != self.request_hash:
            raise errors.unprocessable([{
                "loc": LOC, "type": "idempotency_key_reused",
                "msg": "this Idempotency-Key was used with a different request; use a new key for a new request"}])
        return row

    def claim(self) -> bool:
        """Insert the key row into the current transaction, before the resource: True, or False
        (transaction rolled back) when another request holds the key. Call it before the
        transaction writes anything else, and with no ``await`` between it and the commit."""
        now = _now()
        self.session.execute(delete(IdempotencyKey).where(  # an expired use of the key gives way
            IdempotencyKey.account_id == self.account_id, IdempotencyKey.scope == self.scope,
            IdempotencyKey.key == self.key, IdempotencyKey.expires_at <= now))
        row = IdempotencyKey(account_id=self.account_id, scope=self.scope, key=self.key,
                             request_hash=self.request_hash, resource_type=self.resource_type,
                             status_code=self.status_code, created_at=now, expires_at=now + LIFETIME)
        self.session.add(row)
        try:
            self.session.flush()  # PostgreSQL and SQLite both wait here until a holder commits or rolls back
        except IntegrityError:
            self.session.rollback()
            return False
        self._row_id = row.id
        return True

    def attach(self, resource_id: int) -> None:
        """Record the created resource's id on the claimed row (same transaction, before commit)."""
        self.session.execute(update(IdempotencyKey).where(IdempotencyKey.id == self._row_id)
                             .values(resource_id=resource_id))

    def _poll(self, deadline: float) -> IdempotencyKey | None:
        """The holder's committed row (a fresh snapshot), or 409 once ``deadline`` has passed."""
        self.session.rollback()
        row = self.existing()
        if row is None and time.monotonic() >= deadline:
            raise in_progress()
        return row

    def wait_existing(self) -> IdempotencyKey:
        """After a lost claim: the holder's committed row, or 409 with Retry-After when it has not
        committed within a few seconds."""
        deadline = time.monotonic() + WAIT_SECONDS
        while (row := self._poll(deadline)) is None:
            time.sleep(POLL_SECONDS)
        return row

    async def await_existing(self) -> IdempotencyKey:
        """``wait_existing`` for async routes (sleeps without holding the event loop)."""
        deadline = time.monotonic() + WAIT_SECONDS
        while (row := self._poll(deadline)) is None:
            await asyncio.sleep(POLL_SECONDS)
        return row


def in_progress() -> HTTPException:
    return HTTPException(status.HTTP_409_CONFLICT, "a request with this Idempotency-Key is still in progress",
                         headers={"Retry-After": "1"})


def for_request(session: Session, request: Request, key: str | None, *, account_id: int, scope: str,
                resource_type: str, body: Any, status_code: int = status.HTTP_201_CREATED) -> Idempotency | None:
    """The key handling of this request, or None when it carries no ``Idempotency-Key``."""
    if key is None:
        return None
    return Idempotency(session=session, account_id=account_id, scope=scope, key=key,
                       request_hash=request_hash(request.method, request.url.path, body),
                       resource_type=resource_type, status_code=status_code)


def replay(response: Response, row: IdempotencyKey, render: Callable[[int], Any]) -> Any:
    """The answer to a repeated request: the first status code, the resource as it is now."""
    response.status_code = row.status_code or status.HTTP_201_CREATED
    response.headers[REPLAYED_HEADER] = "true"
    return render(row.resource_id)
