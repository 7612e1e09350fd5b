"""What hangs off a repository: the deliveries its webhook stored, the pipelines its events may
trigger, and run statistics over them (the webhook itself and syncs are in ``repositories``)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response, status
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api import errors
from api.deps import Caller, CurrentCaller, SessionDep, WriterCaller
from api.repository_schemas import (
    PipelineLinkPublic,
    PipelineLinksPublic,
    RepositoryStatsPublic,
    WebhookEventDetailPublic,
    WebhookEventPublic,
    WebhookEventsPublic,
)
from api.repository_views import owned_repository
from db.models import GitWebhookEvent, Pipeline, PipelineRepository, PipelineRun
from domain.statuses import WebhookEventStatus

router = APIRouter(prefix="/repositories", tags=["repositories"])


# ---- stored webhook deliveries -----------------------------------------------------------------------


@router.get("/{repository_id}/webhook_events", response_model=WebhookEventsPublic)
def list_repository_webhook_events(repository_id: int, session: SessionDep, caller: CurrentCaller,
                                   status_filter: Annotated[str | None, Query(alias="status", max_length=20,
                                   description=", ".join(WebhookEventStatus))] = None,
                                   limit: Annotated[int, Query(ge=1, le=500)] = 50,
                                   offset: Annotated[int, Query(ge=0)] = 0) -> WebhookEventsPublic:
    """Accepted deliveries of this repository's webhook, newest first (headers and payload: by id)."""
    row, _ = owned_repository(session, caller, repository_id)
    query = select(GitWebhookEvent).where(GitWebhookEvent.repository_id == row.id,
                                          GitWebhookEvent.account_id == caller.account_id)
    if status_filter:
        query = query.where(GitWebhookEvent.status == status_filter)
    count = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(query.order_by(GitWebhookEvent.id.desc()).limit(limit).offset(offset)).all()
    return WebhookEventsPublic(data=[WebhookEventPublic(**_event_fields(e)) for e in rows], count=count)


@router.get("/{repository_id}/webhook_events/{event_id}", response_model=WebhookEventDetailPublic)
def show_repository_webhook_event(repository_id: int, event_id: int, session: SessionDep,
                                  caller: CurrentCaller) -> WebhookEventDetailPublic:
    row, _ = owned_repository(session, caller, repository_id)
    event = session.scalar(select(GitWebhookEvent).where(GitWebhookEvent.id == event_id,
                                                         GitWebhookEvent.repository_id == row.id,
                                                         GitWebhookEvent.account_id == caller.account_id))
    if event is None:
        raise errors.not_found("webhook event")
    return WebhookEventDetailPublic(**_event_fields(event), headers=dict(event.headers or {}), payload=event.payload,
                                    events=list(event.events or []), processed_at=event.processed_at)


def _event_fields(event: GitWebhookEvent) -> dict[str, Any]:
    return {"id": event.id, "delivery_id": event.delivery_id, "event_name": event.event_name,
            "status": event.status, "matched_pipeline_ids": list(event.matched_pipeline_ids or []),
            "run_ids": list(event.run_ids or []), "error": event.error, "created_at": event.created_at}


# ---- pipelines and statistics ----------------------------------------------------------------------


def _linked_pipeline_ids(caller: Caller, repository_id: int) -> Any:
    return select(PipelineRepository.pipeline_id).where(PipelineRepository.repository_id == repository_id,
                                                        PipelineRepository.account_id == caller.account_id)


@router.get("/{repository_id}/stats", response_model=RepositoryStatsPublic)
def show_repository_stats(repository_id: int, session: SessionDep, caller: CurrentCaller) -> RepositoryStatsPublic:
    """Run statistics over every pipeline linked to the repository."""
    row, _ = owned_repository(session, caller, repository_id)
    linked = _linked_pipeline_ids(caller, row.id)
    pipelines = session.scalar(select(func.count()).select_from(linked.subquery())) or 0
    grouped = session.execute(
        select(PipelineRun.status, func.count(), func.max(PipelineRun.created_at))
        .where(PipelineRun.account_id == caller.account_id, PipelineRun.pipeline_id.in_(linked))
        .group_by(PipelineRun.status)
    ).all()
    by_status = {run_status: count for run_status, count, _ in grouped}
    last: list[datetime] = [at for _, _, at in grouped if at is not None]
    decided = by_status.get("success", 0) + by_status.get("failure", 0)
    return RepositoryStatsPublic(
        repository_id=row.id, pipelines=pipelines, total_runs=sum(by_status.values()),
        by_status=dict(sorted(by_status.items())),
        success_rate=round(by_status.get("success", 0) / decided, 4) if decided else None,
        last_run_at=max(last) if last else None,
    )


def _link_public(link: PipelineRepository, pipeline: Pipeline) -> PipelineLinkPublic:
    return PipelineLinkPublic(repository_id=link.repository_id, pipeline_id=pipeline.id, pipeline_name=pipeline.name,
                              pipeline_slug=pipeline.slug, is_active=pipeline.is_active, created_at=link.created_at)


@router.get("/{repository_id}/pipelines", response_model=PipelineLinksPublic)
def list_repository_pipelines(repository_id: int, session: SessionDep, caller: CurrentCaller) -> PipelineLinksPublic:
    """The pipelines this repository's webhook events may trigger."""
    row, _ = owned_repository(session, caller, repository_id)
    rows = session.execute(
        select(PipelineRepository, Pipeline).join(Pipeline, Pipeline.id == PipelineRepository.pipeline_id)
        .where(PipelineRepository.repository_id == row.id, PipelineRepository.account_id == caller.account_id,
               Pipeline.account_id == caller.account_id)
        .order_by(PipelineRepository.id)
    ).all()
    return PipelineLinksPublic(data=[_link_public(link, pipeline) for link, pipeline in rows], count=len(rows))


def _owned_pipeline(session: Session, caller: Caller, pipeline_id: int) -> Pipeline:
    pipeline = session.scalar(select(Pipeline).where(Pipeline.id == pipeline_id,
                                                     Pipeline.account_id == caller.account_id))
    if pipeline is None:
        raise errors.not_found("pipeline")
    return pipeline


@router.put("/{repository_id}/pipelines/{pipeline_id}", response_model=PipelineLinkPublic,
            responses={201: {"description": "linked"}, 200: {"description": "already linked"}})
def link_repository_pipeline(repository_id: int, pipeline_id: int, session: SessionDep, caller: WriterCaller,
                             response: Response) -> PipelineLinkPublic:
    """Let this repository's webhook events trigger the pipeline (201; 200 when already linked)."""
    row, _ = owned_repository(session, caller, repository_id)
    pipeline = _owned_pipeline(session, caller, pipeline_id)
    link = session.scalar(select(PipelineRepository).where(PipelineRepository.repository_id == row.id,
                                                           PipelineRepository.pipeline_id == pipeline.id))
    if link is not None:
        response.status_code = status.HTTP_200_OK
        return _link_public(link, pipeline)
    link = PipelineRepository(account_id=caller.account_id, pipeline_id=pipeline.id, repository_id=row.id)
    session.add(link)
    try:
        session.commit()
    except IntegrityError:  # a concurrent PUT linked it first: the same outcome
        session.rollback()
        link = session.scalar(select(PipelineRepository).where(PipelineRepository.repository_id == repository_id,
                                                               PipelineRepository.pipeline_id == pipeline_id))
        if link is None:
            raise
        response.status_code = status.HTTP_200_OK
        return _link_public(link, _owned_pipeline(session, caller, pipeline_id))
    response.status_code = status.HTTP_201_CREATED
    return _link_public(link, pipeline)


@router.delete("/{repository_id}/pipelines/{pipeline_id}", status_code=status.HTTP_204_NO_CONTENT)
def unlink_repository_pipeline(repository_id: int, pipeline_id: int, session: SessionDep, caller: WriterCaller) -> Response:
    row, _ = owned_repository(session, caller, repository_id)
    pipeline = _owned_pipeline(session, caller, pipeline_id)
    link = session.scalar(select(PipelineRepository).where(PipelineRepository.repository_id == row.id,
                                                           PipelineRepository.pipeline_id == pipeline.id))
    if link is None:
        raise errors.not_found("pipeline link")
    session.delete(link)
    session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)
