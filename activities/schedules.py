"""Activities behind a schedule's fire: create the run, then wait for it to finish.

A Temporal Schedule ``schedule-<id>`` starts :class:`~workflows.scheduled_trigger.ScheduledTriggerWorkflow`,
which calls :meth:`ScheduleActivities.start_scheduled_run` to write a normal run row (trigger type
``schedule``) with :func:`services.runs.create_run` and start it the way every trigger does
(:func:`services.runs.start_run_workflow`: ``run-<id>`` directly, or through the pipeline's queue
when ``allow_concurrent`` is false), then :meth:`ScheduleActivities.await_run` until the run has
finished, so the Schedule's overlap policy applies to runs and not only to starts.

Both activities are idempotent: a retried start finds the run its first try created (by the
trigger workflow id kept in the run's trigger context), and waiting has no side effect.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker
from temporalio import activity
from temporalio.client import Client, WorkflowFailureError
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from adapters.temporal import TemporalGateway
from db.models import Pipeline, PipelineRun, Schedule
from domain.errors import Invalid
from domain.step_types import FINISHED_RUN_STATUSES
from services import runs as services
from settings import Settings
from workflows.pipeline_queue import run_workflow_id
from workflows.pipeline_run import PipelineRunInput

SCHEDULE_INPUTS_INVALID = "ScheduleInputsInvalid"
HEARTBEAT_EVERY_SECONDS = 5.0
# How many of the pipeline's latest scheduled runs a retried start looks through for its own.
IDEMPOTENCY_LOOKBACK = 50


@dataclass
class StartScheduledRunInput:
    schedule_id: int
    account_id: int
    trigger_workflow_id: str  # unique per fire: Temporal appends the scheduled time
    scheduled_at: str  # ISO 8601, the fire's nominal time


@dataclass
class StartScheduledRunResult:
    run_id: int | None = None
    run_number: int | None = None
    pipeline_id: int | None = None
    skipped: str | None = None  # why no run was created


@dataclass
class AwaitRunInput:
    run_id: int
    account_id: int
    max_wait_seconds: float = 300.0
    poll_seconds: float = 1.0


@dataclass
class AwaitRunResult:
    finished: bool
    status: str


@dataclass
class _PreparedRun:
    run: PipelineRun
    workflow_input: PipelineRunInput
    needs_start: bool


class ScheduleActivities:
    """The Temporal client and session factory are injected, so tests hand in their own."""

    def __init__(self, settings: Settings, session_factory: sessionmaker[Session], client: Client) -> None:
        self._settings = settings
        self._sessions = session_factory
        self._client = client
        self._temporal = TemporalGateway(settings, client)

    @activity.defn(name="start_scheduled_run")
    async def start_scheduled_run(self, inp: StartScheduledRunInput) -> StartScheduledRunResult:
        """Create the run of one fire and start its workflow; no run when the schedule or its
        pipeline is gone or the pipeline is inactive (``skipped`` says why)."""
        prepared = await asyncio.to_thread(self._prepare_run, inp)
        if isinstance(prepared, StartScheduledRunResult):
            return prepared
        run = prepared.run
        if prepared.needs_start:
            try:
                await services.start_run_workflow(self._temporal, self._settings, run, prepared.workflow_input)
            except WorkflowAlreadyStartedError:
                pass  # this is a retry and the first try's start went through
            # out of the start outbox (services.run_outbox): a row left unmarked is started again, idempotently
            await services.finish_start(self._temporal, self._sessions, [run])
        return StartScheduledRunResult(run_id=run.id, run_number=run.run_number, pipeline_id=run.pipeline_id)

    def _prepare_run(self, inp: StartScheduledRunInput) -> _PreparedRun | StartScheduledRunResult:
        with self._sessions() as session:
            schedule = session.scalar(select(Schedule).where(Schedule.id == inp.schedule_id,
                                                             Schedule.account_id == inp.account_id))
            if schedule is None:
                return StartScheduledRunResult(skipped=f"schedule {inp.schedule_id} no longer exists")
            pipeline = session.scalar(select(Pipeline).where(Pipeline.id == schedule.pipeline_id,
                                                             Pipeline.account_id == inp.account_id))
            if pipeline is None:
                return StartScheduledRunResult(skipped=f"pipeline {schedule.pipeline_id} no longer exists")
            existing = self._run_of_this_fire(session, pipeline.id, inp.trigger_workflow_id)
            if existing is not None:
                return _PreparedRun(existing, services.workflow_input(existing, self._settings),
                                    needs_start=existing.status in ("pending", "queued"))
            if not pipeline.is_active:
                return StartScheduledRunResult(
                    pipeline_id=pipeline.id,
                    skipped=f"pipeline '{pipeline.name}' (id {pipeline.id}) is inactive; set is_active to true to run it",
                )
            context: dict[str, Any] = {
                "schedule_id": schedule.id, "scheduled_at": inp.scheduled_at, "cron": schedule.cron,
                "timezone": schedule.timezone, "trigger_workflow_id": inp.trigger_workflow_id,
            }
            try:
                run = services.create_run(session, pipeline, trigger_type="schedule",
                                          inputs=dict(schedule.inputs or {}), trigger_context=context)
            except Invalid as exc:
                raise ApplicationError(
                    f"schedule {schedule.id} cannot start pipeline '{pipeline.name}': its inputs no longer match "
                    f"the pipeline's declared inputs ({_describe_problems(exc)}); update the schedule's inputs",
                    type=SCHEDULE_INPUTS_INVALID, non_retryable=True,
                ) from None
            # updated_at kept as is: it tells when the definition changed, not when it last ran
            session.execute(update(Schedule).where(Schedule.id == schedule.id).values(
                last_run_id=run.id, last_run_at=datetime.now(UTC), updated_at=Schedule.updated_at))
            run_input = services.workflow_input(run, self._settings)
            session.commit()
            return _PreparedRun(run, run_input, needs_start=True)

    @staticmethod
    def _run_of_this_fire(session: Session, pipeline_id: int, trigger_workflow_id: str) -> PipelineRun | None:
        rows = session.execute(
            select(PipelineRun.id, PipelineRun.trigger_context)
            .where(PipelineRun.pipeline_id == pipeline_id, PipelineRun.trigger_type == "schedule",
                   PipelineRun.retry_of_run_id.is_(None))
            .order_by(PipelineRun.id.desc()).limit(IDEMPOTENCY_LOOKBACK)
        ).all()
        for run_id, context in rows:
            if (context or {}).get("trigger_workflow_id") == trigger_workflow_id:
                return session.get(PipelineRun, run_id)
        return None

    @activity.defn(name="await_scheduled_run")
    async def await_run(self, inp: AwaitRunInput) -> AwaitRunResult:
        """Wait (heartbeating) until the run has finished or ``max_wait_seconds`` are over.

        A started run is awaited on its workflow's result, so the answer comes as soon as it
        closes; a run still queued behind another has no workflow yet, and its row is polled."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + inp.max_wait_seconds
        handle = self._client.get_workflow_handle(run_workflow_id(inp.run_id))
        result: asyncio.Future[Any] | None = None
        try:
            while True:
                status = await asyncio.to_thread(self._run_status, inp)
                if status is None:
                    return AwaitRunResult(finished=True, status="deleted")
                if status in FINISHED_RUN_STATUSES:
                    return AwaitRunResult(finished=True, status=status)
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return AwaitRunResult(finished=False, status=status)
                activity.heartbeat(status)
                if status == "queued":
                    await asyncio.sleep(min(inp.poll_seconds, remaining))
                    continue
                if result is None:
                    result = asyncio.ensure_future(handle.result())
                done, _ = await asyncio.wait({result}, timeout=min(HEARTBEAT_EVERY_SECONDS, remaining))
                if not done:
                    continue
                closed_as = await self._closed_status(result, handle)
                result = None
                if closed_as is None:  # its workflow is not started yet: the queue is about to start it
                    await asyncio.sleep(min(inp.poll_seconds, remaining))
                    continue
                status = await asyncio.to_thread(self._run_status, inp)
                # The run writes its final status before its workflow closes; a workflow closed
                # from outside (terminated in the Temporal UI) may not have, so Temporal answers.
                return AwaitRunResult(finished=True,
                                      status=status if status in FINISHED_RUN_STATUSES else closed_as)
        finally:
            if result is not None and not result.done():
                result.cancel()

    @staticmethod
    async def _closed_status(result: asyncio.Future[Any], handle: Any) -> str | None:
        """How the awaited workflow closed, or None when it does not exist (yet)."""
        try:
            result.result()
            return "success"
        except WorkflowFailureError:
            description = await handle.describe()
            return (description.status.name if description.status else "closed").lower()
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                return None
            raise

    def _run_status(self, inp: AwaitRunInput) -> str | None:
        with self._sessions() as session:
            return session.scalar(select(PipelineRun.status).where(PipelineRun.id == inp.run_id,
                                                                   PipelineRun.account_id == inp.account_id))


def _describe_problems(exc: Invalid) -> str:
    parts = []
    for problem in exc.errors():
        loc = [str(p) for p in problem.get("loc", []) if p != "body"]
        parts.append(f"{'.'.join(loc)}: {problem.get('msg')}")
    return "; ".join(parts)
