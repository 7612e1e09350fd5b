"""What the routes do, shared by every way in (HTTP trigger, retry, and later schedules and
webhooks): storing pipeline documents, creating run rows and starting their workflows."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, object_session, sessionmaker
from sqlalchemy.orm.attributes import set_committed_value
from temporalio.client import WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from adapters.temporal import TemporalGateway
from db.models import Pipeline, PipelineRun, PipelineStep, RunEvent, StepExecution, User
from domain import errors
from domain.pipeline_document import PipelineDocument, normalized, resolve_run_inputs, step_snapshot
from domain.step_types import FINISHED_RUN_STATUSES
from settings import Settings
from workflows.pipeline_queue import (
    PipelineQueueInput,
    PipelineQueueWorkflow,
    queue_workflow_id,
    run_workflow_id,
)
from workflows.pipeline_run import PipelineRunInput, PipelineRunWorkflow, run_search_attributes
from workflows.task_queues import runner_task_queue

log = logging.getLogger(__name__)

# ---- pipelines ---------------------------------------------------------------------------


def get_pipeline(session: Session, account_id: int, pipeline_id: int) -> Pipeline:
    pipeline = session.scalar(select(Pipeline).where(Pipeline.id == pipeline_id, Pipeline.account_id == account_id))
    if pipeline is None:
        raise errors.not_found("pipeline")
    return pipeline


def _slug_taken(session: Session, account_id: int, slug: str, exclude_id: int | None = None) -> bool:
    query = select(Pipeline.id).where(Pipeline.account_id == account_id, Pipeline.slug == slug)
    if exclude_id is not None:
        query = query.where(Pipeline.id != exclude_id)
    return session.scalar(query) is not None


def apply_document(session: Session, account_id: int, document: PipelineDocument,
                   pipeline: Pipeline | None = None) -> Pipeline:
    """Create a pipeline from a validated document, or replace an existing one's definition."""
    slug = document.resolved_slug()
    if _slug_taken(session, account_id, slug, pipeline.id if pipeline else None):
        raise errors.conflict([{"loc": ["body", "slug"], "msg": f"slug '{slug}' is already used by another "
                                "pipeline of this account; set a different `slug`", "type": "slug_taken"}])
    if pipeline is None:
        pipeline = Pipeline(account_id=account_id)
        session.add(pipeline)
    pipeline.name = document.name
    pipeline.slug = slug
    pipeline.description = document.description
    pipeline.pipeline_type = document.pipeline_type
    pipeline.allow_concurrent = document.allow_concurrent
    pipeline.timeout_minutes = document.timeout_minutes
    pipeline.runner_labels = list(document.runner_labels)
    pipeline.features = document.features
    pipeline.is_active = document.is_active
    pipeline.inputs = {name: decl.model_dump(exclude_none=True) for name, decl in document.inputs.items()}
    pipeline.env = document.env
    pipeline.triggers = document.triggers.model_dump(exclude_none=True)
    pipeline.steps.clear()
    session.flush()
    for position, step in enumerate(document.steps):
        pipeline.steps.append(PipelineStep(
            position=position, step_id=step.id, name=step.name or step.id, step_type=step.type,
            inputs=step.with_, condition=step.if_, continue_on_error=step.continue_on_error,
            timeout_minutes=step.timeout_minutes, retry=step.retry.model_dump(),
            requires_approval=step.requires_approval, requires_trust=step.requires_trust,
            approval=step.approval.model_dump() if step.approval else {},
        ))
    pipeline.updated_at = datetime.now(UTC)
    session.flush()
    return pipeline


def step_document(step: PipelineStep) -> dict[str, Any]:
    data: dict[str, Any] = {"id": step.step_id, "name": step.name, "type": step.step_type}
    if step.condition is not None:
        data["if"] = step.condition
    data["continue_on_error"] = step.continue_on_error
    if step.timeout_minutes is not None:
        data["timeout_minutes"] = step.timeout_minutes
    data["retry"] = step.retry or {"max_attempts": 1, "delay_seconds": 0}
    if step.requires_approval or step.approval:
        data["requires_approval"] = step.requires_approval
        data["approval"] = step.approval
    if step.requires_trust:
        data["requires_trust"] = True
    data["with"] = step.inputs
    return data


def export_document(pipeline: Pipeline) -> dict[str, Any]:
    """The pipeline as a document; importing it gives the same pipeline."""
    return {
        "name": pipeline.name,
        "slug": pipeline.slug,
        "description": pipeline.description,
        "pipeline_type": pipeline.pipeline_type,
        "allow_concurrent": pipeline.allow_concurrent,
        "timeout_minutes": pipeline.timeout_minutes,
        "runner_labels": list(pipeline.runner_labels),
        "features": pipeline.features,
        "is_active": pipeline.is_active,
        "inputs": pipeline.inputs,
        "env": pipeline.env,
        "triggers": pipeline.triggers,
        "steps": [step_document(step) for step in pipeline.steps],
    }


# ---- runs --------------------------------------------------------------------------------


def get_run(session: Session, account_id: int, run_id: int) -> PipelineRun:
    run = session.scalar(select(PipelineRun).where(PipelineRun.id == run_id, PipelineRun.account_id == account_id))
    if run is None:
        raise errors.not_found("pipeline run")
    return run


def run_state(session: Session, account_id: int, run_id: int) -> tuple[str, str]:
    """A run's status and workflow id without loading the row and its steps (404 if not ours)."""
    row = session.execute(select(PipelineRun.status, PipelineRun.workflow_id)
                          .where(PipelineRun.id == run_id, PipelineRun.account_id == account_id)).first()
    if row is None:
        raise errors.not_found("pipeline run")
    return row.status, row.workflow_id


def create_run(
    session: Session,
    pipeline: Pipeline,
    *,
    trigger_type: str,
    inputs: dict[str, Any],
    trigger_context: dict[str, Any] | None = None,
    user_id: int | None = None,
    snapshot: dict[str, Any] | None = None,
    retry_of: PipelineRun | None = None,
    from_step: str | None = None,
) -> PipelineRun:
    """Validate inputs and write the run row (pending, or queued behind a running one).
    Nothing is written when the inputs are wrong."""
    snapshot = snapshot or export_document(pipeline)
    resolved, problems = resolve_run_inputs(snapshot.get("inputs") or {}, inputs)
    if problems:
        raise errors.unprocessable(problems)
    run_number = session.execute(
        update(Pipeline).where(Pipeline.id == pipeline.id)
        # updated_at kept as is: its onupdate would otherwise mark the definition as changed
        .values(last_run_number=Pipeline.last_run_number + 1, updated_at=Pipeline.updated_at)
        .returning(Pipeline.last_run_number)
    ).scalar_one()
    run = PipelineRun(
        account_id=pipeline.account_id, pipeline_id=pipeline.id, run_number=run_number,
        status="pending" if snapshot.get("allow_concurrent", True) else "queued",
        trigger_type=trigger_type, trigger_context=trigger_context or {}, inputs=resolved,
        pipeline_snapshot=snapshot, triggered_by_user_id=user_id,
        retry_of_run_id=retry_of.id if retry_of else None, from_step=from_step,
    )
    session.add(run)
    session.flush()
    set_committed_value(run, "steps", [])  # a new run has no step rows: spare the lazy load
    run.workflow_id = run_workflow_id(run.id)
    session.add(RunEvent(account_id=run.account_id, run_id=run.id, pipeline_id=pipeline.id,
                         event_type="run_created", dedupe_key="api-created",
                         payload={"run_id": run.id, "run_number": run_number, "status": run.status,
                                  "trigger_type": trigger_type}))
    return run


def workflow_input(run: PipelineRun, settings: Settings,
                   reused_steps: dict[str, dict[str, Any]] | None = None) -> PipelineRunInput:
    snapshot = run.pipeline_snapshot
    session = object_session(run)
    triggered_by = None
    if run.triggered_by_user_id is not None and session is not None:
        triggered_by = session.scalar(select(User.email).where(User.id == run.triggered_by_user_id))
    labels = snapshot.get("runner_labels") or []
    return PipelineRunInput(
        run_id=run.id, account_id=run.account_id, pipeline_id=run.pipeline_id,
        pipeline_name=snapshot.get("name", ""), run_number=run.run_number, trigger_type=run.trigger_type,
        steps=[_snapshot_step(s) for s in snapshot.get("steps", [])], inputs=run.inputs,
        # the caller's context cannot override the real trigger type
        trigger={**run.trigger_context, "type": run.trigger_type}, env=snapshot.get("env") or {},
        timeout_seconds=int(snapshot.get("timeout_minutes", 60)) * 60.0,
        activity_task_queue=runner_task_queue(settings.task_queue, labels) if labels else None,
        step_heartbeat_timeout_seconds=settings.step_heartbeat_timeout_seconds,
        default_step_timeout_minutes=settings.default_step_timeout_minutes,
        reused_steps=reused_steps or {},
        triggered_by=triggered_by,
        untrusted=bool(run.trigger_context.get("from_fork")),
        status_target_url=_status_target_url(run, settings),
        # every start (API, retry, schedule, webhook) comes through here: the executor rules with it
        default_executor="shell" if settings.shell_executor_enabled else "docker",
        default_step_image=settings.default_step_image,
        remove_workspace_at_end=settings.workspace_retention_hours == 0,
        a2a_callback_attempts=settings.a2a_callback_max_attempts if run.a2a_callback_url else 0,
    )


def _status_target_url(run: PipelineRun, settings: Settings) -> str | None:
    """A push or pull request run from a repository webhook reports commit statuses linking here."""
    context = run.trigger_context or {}
    if context.get("repository_id") is None or not context.get("sha") or context.get("kind") not in (
            "push", "pull_request") or context.get("deleted"):
        return None
    return f"{settings.resolved_public_api_url}/api/v1/devops/pipeline_runs/{run.id}"


def _snapshot_step(step: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in step.items() if value is not None}


async def start_run_workflow(temporal: TemporalGateway, settings: Settings, run: PipelineRun,
                             inp: PipelineRunInput) -> None:
    """Start ``run-<id>`` directly, or hand it to the pipeline's queue when runs must not overlap.

    Idempotent: the workflow id is the run's, so a second start (a retried request, the outbox
    reconciler racing a slow request) finds it already started and counts as accepted; the
    queue ignores a run it already holds. Afterwards the caller records it with
    :func:`mark_workflow_started`."""
    try:
        await _start_run_workflow(temporal, settings, run, inp)
    except WorkflowAlreadyStartedError:
        pass


async def _start_run_workflow(temporal: TemporalGateway, settings: Settings, run: PipelineRun,
                              inp: PipelineRunInput) -> None:
    client = await temporal.client()
    if run.status == "queued":
        await client.start_workflow(
            PipelineQueueWorkflow.run,
            PipelineQueueInput(pipeline_id=run.pipeline_id),
            id=queue_workflow_id(run.pipeline_id),
            task_queue=settings.task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            start_signal="enqueue",
            start_signal_args=[inp],
            static_summary=f"queue of pipeline {inp.pipeline_name}",
        )
        return
    await client.start_workflow(
        PipelineRunWorkflow.run,
        inp,
        id=run.workflow_id,
        task_queue=settings.task_queue,
        # a run's workflow runs once: a start racing a finished execution (the outbox reconciler
        # after a crash, a retried request) must not begin a second one
        id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        search_attributes=run_search_attributes(inp, "running"),
        static_summary=f"{inp.pipeline_name} #{inp.run_number}",
        memo={"pipeline": inp.pipeline_name, "run_number": inp.run_number},
    )


UNSTARTED_STATUSES = ("pending", "queued")


def mark_workflow_started(session: Session, run_ids: list[int]) -> list[int]:
    """Record that Temporal accepted these runs' workflows: the rows leave the start outbox.
    Conditional, so replicas and retries racing on the same run write it once. Not committed.
    Returns the runs that were cancelled while being started (:func:`cancel_unstarted_run`):
    the caller cancels the workflow it just started (:func:`cancel_started_meanwhile`)."""
    if not run_ids:
        return []
    session.execute(update(PipelineRun)
                    .where(PipelineRun.id.in_(run_ids), PipelineRun.workflow_started_at.is_(None))
                    .values(workflow_started_at=datetime.now(UTC))
                    .execution_options(synchronize_session=False))
    return list(session.scalars(select(PipelineRun.id).where(PipelineRun.id.in_(run_ids),
                                                             PipelineRun.status == "cancelled")))


def record_workflow_started(sessions: sessionmaker[Session], run_ids: list[int]) -> list[int]:
    """:func:`mark_workflow_started` in its own transaction (activities, the outbox reconciler)."""
    with sessions.begin() as session:
        return mark_workflow_started(session, run_ids)


async def cancel_started_meanwhile(temporal: TemporalGateway, runs: list[PipelineRun], cancelled: list[int]) -> None:
    """Cancel the workflows just started for runs a user cancelled while they were being started.
    ``runs`` are as they were before the start (a queued one is withdrawn from its queue)."""
    for run in runs:
        if run.id in cancelled:
            try:
                await cancel_run_workflow(temporal, run)
            except Exception:  # noqa: BLE001 - the row already says cancelled; logged for the operator
                log.warning("run %s was cancelled while being started; cancelling its workflow failed",
                            run.id, exc_info=True)


async def finish_start(temporal: TemporalGateway, sessions: sessionmaker[Session], runs: list[PipelineRun]) -> None:
    """After the start of these runs' workflows (activities): leave the outbox, honour a cancel."""
    cancelled = await asyncio.to_thread(record_workflow_started, sessions, [run.id for run in runs])
    await cancel_started_meanwhile(temporal, runs, cancelled)


def mark_start_failed(session: Session, run: PipelineRun, exc: Exception | str) -> bool:
    """Fail a run whose workflow Temporal did not accept. Only while nothing started it (the
    outbox reconciler may have meanwhile): False when the row was no longer unstarted."""
    error = exc if isinstance(exc, str) else (
        f"the run could not be started: Temporal did not accept it ({type(exc).__name__})")
    return _finish_unstarted(session, run, "failure", error, "api-start-failed")


def cancel_unstarted_run(session: Session, run: PipelineRun) -> bool:
    """Cancel a run whose workflow was never started (the API died before starting it): there is
    nothing in Temporal to cancel, so the row itself becomes ``cancelled``. False when its
    workflow was started meanwhile (the outbox reconciler), so the caller cancels that instead."""
    return _finish_unstarted(session, run, "cancelled", "run cancelled before its workflow started",
                             "api-cancelled-unstarted")


def _finish_unstarted(session: Session, run: PipelineRun, status_: str, error: str, dedupe_key: str) -> bool:
    now = datetime.now(UTC)
    done = session.execute(
        update(PipelineRun)
        .where(PipelineRun.id == run.id, PipelineRun.workflow_started_at.is_(None),
               PipelineRun.status.in_(UNSTARTED_STATUSES))
        .values(status=status_, error=error, finished_at=now)
        .execution_options(synchronize_session=False)
    ).rowcount == 1
    if done:
        session.add(RunEvent(account_id=run.account_id, run_id=run.id, pipeline_id=run.pipeline_id,
                             event_type="run_completed", dedupe_key=dedupe_key,
                             payload={"run_id": run.id, "status": status_, "error": error}))
        session.flush()
    session.refresh(run, ["status", "error", "finished_at", "workflow_started_at"])
    return done


async def cancel_run_workflow(temporal: TemporalGateway, run: PipelineRun) -> bool:
    """Ask Temporal to cancel the run; a run still waiting in its pipeline's queue is withdrawn
    from the queue instead. False when there is nothing to cancel any more."""
    client = await temporal.client()
    for _ in range(5):
        try:
            await client.get_workflow_handle(run.workflow_id).cancel()
            return True
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise
        if run.status != "queued":
            return False
        try:
            withdrawn = await client.get_workflow_handle(queue_workflow_id(run.pipeline_id)).execute_update(
                PipelineQueueWorkflow.cancel_queued, run.id
            )
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise
            return False
        if withdrawn:
            return True
    return False


def reused_steps_for(session: Session, original: PipelineRun, from_step: str) -> dict[str, dict[str, Any]]:
    """The outcome of every step before ``from_step`` in the original run, to reuse as is."""
    steps = original.pipeline_snapshot.get("steps", [])
    ids = [s["id"] for s in steps]
    if from_step not in ids:
        raise errors.unprocessable([{"loc": ["query", "from_step"], "type": "unknown_step",
                                     "msg": f"run {original.id} has no step '{from_step}'; steps: {', '.join(ids)}"}])
    latest: dict[str, StepExecution] = {}
    for row in session.scalars(select(StepExecution).where(StepExecution.run_id == original.id)
                               .order_by(StepExecution.attempt)):
        latest[row.step_id] = row
    reused: dict[str, dict[str, Any]] = {}
    for step_id in ids[: ids.index(from_step)]:
        row = latest.get(step_id)
        if row is None or row.status not in ("success", "skipped", "failure"):
            raise errors.unprocessable([{
                "loc": ["query", "from_step"], "type": "step_not_finished",
                "msg": f"step '{step_id}' did not finish in run {original.id}; retry from '{step_id}' or earlier",
            }])
        reused[step_id] = {"status": row.status, "outputs": row.outputs or {},
                           "run_id": row.reused_from_run_id or original.id}
    return reused


async def reconcile_with_temporal(temporal: TemporalGateway, run: PipelineRun) -> dict[str, Any] | None:
    """Temporal's word on a run the database still shows as unfinished: the changes to make
    to the row when its workflow has in fact closed (terminated from the Temporal UI, say)."""
    if run.status in FINISHED_RUN_STATUSES or run.status == "queued":
        return None
    client = await temporal.client()
    handle: WorkflowHandle = client.get_workflow_handle(run.workflow_id)
    try:
        description = await handle.describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return None
        raise
    closed = {"TERMINATED": ("cancelled", "run terminated in Temporal"),
              "TIMED_OUT": ("failure", "run timed out in Temporal")}
    status_name = description.status.name if description.status else "RUNNING"
    if status_name in closed:
        new_status, error = closed[status_name]
        return {"status": new_status, "error": error, "finished_at": description.close_time}
    return None


__all__ = [
    "apply_document", "export_document", "normalized", "step_snapshot", "get_pipeline", "get_run", "create_run",
    "workflow_input", "start_run_workflow", "cancel_run_workflow", "reused_steps_for", "reconcile_with_temporal",
    "mark_workflow_started", "record_workflow_started", "mark_start_failed", "cancel_unstarted_run",
    "cancel_started_meanwhile", "finish_start",
]
