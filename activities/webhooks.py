"""The activity behind :class:`~workflows.webhook_dispatch.WebhookDispatchWorkflow`.

``dispatch_webhook_event`` turns one stored delivery into runs: the repository's branch filter
first (push: the branch; pull request: its target branch), then ``triggers`` of every active
pipeline linked to the repository (``PipelineRepository``), one run per matching pipeline and
event, trigger type = the event kind and ``${{ trigger.* }}`` = the normalised event plus
``repository_id``, ``event_id`` and ``delivery_id``. The runs and the event's new status are
written in one transaction, so a retried activity finds them and only starts what is not started.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from fastapi import HTTPException
from fastapi.exceptions import RequestValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import WorkflowAlreadyStartedError

from api import services
from api.temporal import TemporalGateway
from api.webhooks.events import TriggerEvent
from api.webhooks.matching import branch_filter_allows, matches
from db.models import GitRepository, GitWebhookEvent, Pipeline, PipelineRepository, PipelineRun
from settings import Settings
from workflows.pipeline_run import PipelineRunInput


@dataclass
class DispatchInput:
    event_id: int
    account_id: int


@dataclass
class DispatchResult:
    pipeline_ids: list[int] = field(default_factory=list)
    run_ids: list[int] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # why an event or pipeline started nothing


def filtered_branch(event: TriggerEvent) -> str | None:
    """The branch a repository's branch filter applies to, or None when it does not apply."""
    if event.kind == "push":
        return None if event.tag is not None else event.branch
    if event.kind == "pull_request":
        return event.target_branch
    return None


class WebhookActivities:
    def __init__(self, settings: Settings, session_factory: sessionmaker[Session], client: Client) -> None:
        self._settings = settings
        self._sessions = session_factory
        self._temporal = TemporalGateway(settings, client)

    @activity.defn(name="dispatch_webhook_event")
    async def dispatch_webhook_event(self, inp: DispatchInput) -> DispatchResult:
        result, to_start = await asyncio.to_thread(self._prepare, inp)
        for run, run_input in to_start:
            try:
                await services.start_run_workflow(self._temporal, self._settings, run, run_input)
            except WorkflowAlreadyStartedError:
                pass  # a retry: the first try's start went through
        return result

    def _prepare(self, inp: DispatchInput) -> tuple[DispatchResult, list[tuple[PipelineRun, PipelineRunInput]]]:
        with self._sessions() as session:
            event = session.scalar(select(GitWebhookEvent).where(GitWebhookEvent.id == inp.event_id,
                                                                 GitWebhookEvent.account_id == inp.account_id))
            if event is None:
                return DispatchResult(skipped=[f"webhook event {inp.event_id} no longer exists"]), []
            if event.status == "dispatched":
                return self._already_dispatched(session, event)
            repository = session.scalar(select(GitRepository).where(GitRepository.id == event.repository_id,
                                                                    GitRepository.account_id == inp.account_id))
            if repository is None:
                return DispatchResult(skipped=[f"repository {event.repository_id} no longer exists"]), []
            pipelines = session.scalars(
                select(Pipeline)
                .join(PipelineRepository, PipelineRepository.pipeline_id == Pipeline.id)
                .where(PipelineRepository.repository_id == repository.id, Pipeline.account_id == inp.account_id)
                .order_by(Pipeline.id)
            ).all()
            result = DispatchResult()
            created: list[PipelineRun] = []
            for raw in event.events or []:
                trigger = TriggerEvent(**raw)
                branch = filtered_branch(trigger)
                if branch is not None and not branch_filter_allows(repository.branch_filter_type,
                                                                   repository.branch_filter, branch):
                    result.skipped.append(f"{trigger.kind} on '{branch}' is outside the repository's branch filter "
                                          f"({repository.branch_filter_type} {repository.branch_filter!r})")
                    continue
                for pipeline in pipelines:
                    if not matches(pipeline.triggers or {}, trigger):
                        continue
                    if not pipeline.is_active:
                        result.skipped.append(f"pipeline '{pipeline.name}' matches but is inactive")
                        continue
                    context: dict[str, Any] = {**trigger.as_context(), "repository_id": repository.id,
                                               "event_id": event.id, "delivery_id": event.delivery_id,
                                               "event_name": event.event_name}
                    try:
                        run = services.create_run(session, pipeline, trigger_type=trigger.kind, inputs={},
                                                  trigger_context=context)
                    except (RequestValidationError, HTTPException) as exc:
                        result.skipped.append(f"pipeline '{pipeline.name}' matches but cannot start: "
                                              f"{_problem_text(exc)}")
                        continue
                    created.append(run)
                    if pipeline.id not in result.pipeline_ids:
                        result.pipeline_ids.append(pipeline.id)
            now = datetime.now(UTC)
            result.run_ids = [run.id for run in created]
            event.status = "dispatched"
            event.matched_pipeline_ids = result.pipeline_ids
            event.run_ids = result.run_ids
            event.error = "; ".join(result.skipped) or None
            event.processed_at = now
            repository.last_delivery_at = now
            to_start = [(run, services.workflow_input(run, self._settings)) for run in created]
            session.commit()
            return result, to_start

    def _already_dispatched(self, session: Session, event: GitWebhookEvent
                            ) -> tuple[DispatchResult, list[tuple[PipelineRun, PipelineRunInput]]]:
        result = DispatchResult(pipeline_ids=list(event.matched_pipeline_ids or []),
                                run_ids=list(event.run_ids or []))
        runs = session.scalars(select(PipelineRun).where(PipelineRun.id.in_(result.run_ids),
                                                         PipelineRun.status.in_(("pending", "queued")))).all()
        return result, [(run, services.workflow_input(run, self._settings)) for run in runs]


def _problem_text(exc: Exception) -> str:
    if isinstance(exc, RequestValidationError):
        problems = exc.errors()
    else:
        detail = getattr(exc, "detail", None)
        problems = detail if isinstance(detail, list) else [{"msg": str(detail)}]
    parts = []
    for problem in problems:
        loc = [str(p) for p in problem.get("loc", []) if p != "body"]
        parts.append(f"{'.'.join(loc)}: {problem.get('msg')}" if loc else str(problem.get("msg")))
    return "; ".join(parts)
