"""``/audit_events``: the account's audit log, for its admins (the path's scope is ``admin``).

Every change of users, tokens, roles, secrets, credentials, policies and every approval decision
is recorded by :mod:`services.audit` in the transaction of the change; this only reads them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query

from api.audit_schemas import AuditEventPublic, AuditEventsPublic
from api.deps import CurrentCaller, SessionDep
from services import audit

router = APIRouter(prefix="/audit_events", tags=["audit"])


@router.get("", response_model=AuditEventsPublic, summary="List audit events")
def list_audit_events(
    session: SessionDep,
    caller: CurrentCaller,
    action: Annotated[str | None, Query(max_length=100, description=(
        "exact action (`secret.deleted`), or every action of an area when it ends with `.` (`token.`)"))] = None,
    actor_user_id: Annotated[int | None, Query(description="only what this user did")] = None,
    target_type: Annotated[str | None, Query(max_length=50, description="`user`, `token`, `secret`, ...")] = None,
    since: Annotated[datetime | None, Query(description="ISO 8601; no zone means UTC")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> AuditEventsPublic:
    """Who changed what, when and from where, newest first; `count` is the total matching."""
    rows, total = audit.list_events(session, caller.account_id, action=action, actor_user_id=actor_user_id,
                                    target_type=target_type, since=since, limit=limit, offset=offset)
    return AuditEventsPublic(data=[AuditEventPublic.of(row) for row in rows], count=total)


@router.get("/{event_id}", response_model=AuditEventPublic, summary="Show an audit event")
def show_audit_event(event_id: int, session: SessionDep, caller: CurrentCaller) -> AuditEventPublic:
    """One event of the account (another account's answers 404)."""
    return AuditEventPublic.of(audit.get_event(session, caller.account_id, event_id))
