"""``/docker/hosts/{host_id}/events`` (engine events stored by the sync rounds) and
``/docker/activities`` (what was done through the API on the account's hosts and registries)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query
from sqlalchemy import func, select

from api.deps import CurrentCaller, SessionDep
from api.docker_schemas import ActivitiesPublic, ActivityPublic, EventPublic, EventsPublic
from db.models import DockerActivity, DockerEvent
from services import engines
from services.engine_kinds import DOCKER_HOST

router = APIRouter()


@router.get("/hosts/{host_id}/events", response_model=EventsPublic)
def list_host_events(host_id: int, session: SessionDep, caller: CurrentCaller,
                     event_type: Annotated[str | None, Query(alias="type", max_length=50)] = None,
                     action: Annotated[str | None, Query(max_length=100)] = None,
                     since_nano: Annotated[int | None, Query(ge=0)] = None,
                     limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                     offset: Annotated[int, Query(ge=0)] = 0) -> EventsPublic:
    """Engine events stored by the sync rounds, newest first."""
    host = engines.get_endpoint(session, DOCKER_HOST, caller.account_id, host_id)
    query = select(DockerEvent).where(DockerEvent.host_id == host.id, DockerEvent.account_id == caller.account_id)
    if event_type:
        query = query.where(DockerEvent.event_type == event_type)
    if action:
        query = query.where(DockerEvent.action == action)
    if since_nano is not None:
        query = query.where(DockerEvent.time_nano >= since_nano)
    count = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(query.order_by(DockerEvent.time_nano.desc(), DockerEvent.id.desc())
                           .limit(limit).offset(offset))
    return EventsPublic(data=[EventPublic(id=e.id, host_id=e.host_id,
                                          time=datetime.fromtimestamp(e.time_nano / 1e9, UTC), time_nano=e.time_nano,
                                          event_type=e.event_type, action=e.action, actor_id=e.actor_id,
                                          attributes=dict(e.attributes or {})) for e in rows], count=count)


@router.get("/activities", response_model=ActivitiesPublic)
def list_docker_activities(session: SessionDep, caller: CurrentCaller, host_id: int | None = None,
                           action: Annotated[str | None, Query(max_length=100)] = None,
                           limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                           offset: Annotated[int, Query(ge=0)] = 0) -> ActivitiesPublic:
    """What was done on the account's hosts and registries, newest first."""
    query = select(DockerActivity).where(DockerActivity.account_id == caller.account_id)
    if host_id is not None:
        query = query.where(DockerActivity.host_id == engines.get_endpoint(session, DOCKER_HOST, caller.account_id,
                                                                           host_id).id)
    if action:
        query = query.where(DockerActivity.action == action)
    count = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(query.order_by(DockerActivity.id.desc()).limit(limit).offset(offset))
    return ActivitiesPublic(data=[ActivityPublic(id=a.id, host_id=a.host_id, user_id=a.user_id, action=a.action,
                                                 target=a.target, params=dict(a.params or {}), result=a.result,
                                                 error=a.error, created_at=a.created_at) for a in rows], count=count)
