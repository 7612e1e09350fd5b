"""The cluster's events: engine events stored by the sync rounds and our own changes."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from sqlalchemy import func, select

from api.deps import CurrentCaller, SessionDep
from api.routes.swarm.shared import cluster_of
from api.swarm_schemas import SwarmEventPublic, SwarmEventsPublic
from db.models import SwarmEvent

router = APIRouter()


@router.get("/clusters/{cluster_id}/events", response_model=SwarmEventsPublic)
def list_swarm_events(cluster_id: int, session: SessionDep, caller: CurrentCaller,
                      source: Annotated[str | None, Query(max_length=20, description="engine | api | rollout")] = None,
                      event_type: Annotated[str | None, Query(alias="type", max_length=50)] = None,
                      action: Annotated[str | None, Query(max_length=100)] = None,
                      deployment_id: int | None = None,
                      limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                      offset: Annotated[int, Query(ge=0)] = 0) -> SwarmEventsPublic:
    """Engine events stored by the sync rounds and our own changes, newest first."""
    row = cluster_of(session, caller, cluster_id)
    query = select(SwarmEvent).where(SwarmEvent.cluster_id == row.id, SwarmEvent.account_id == caller.account_id)
    if source:
        query = query.where(SwarmEvent.source == source)
    if event_type:
        query = query.where(SwarmEvent.event_type == event_type)
    if action:
        query = query.where(SwarmEvent.action == action)
    if deployment_id is not None:
        query = query.where(SwarmEvent.deployment_id == deployment_id)
    count = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(query.order_by(SwarmEvent.id.desc()).limit(limit).offset(offset))
    return SwarmEventsPublic(data=[SwarmEventPublic(
        id=e.id, cluster_id=e.cluster_id, deployment_id=e.deployment_id, source=e.source, event_type=e.event_type,
        action=e.action, actor_id=e.actor_id, time_nano=e.time_nano, user_id=e.user_id, result=e.result,
        payload=dict(e.payload or {}), created_at=e.created_at) for e in rows], count=count)
