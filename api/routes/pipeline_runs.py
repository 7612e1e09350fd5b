"""Pipeline runs: list, show, cancel, retry, logs (the seed's PipelineRunsController)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import func, select
from temporalio.service import RPCError, RPCStatusCode

from adapters.temporal import TemporalGateway
from api import errors, idempotency
from api.deps import CurrentCaller, SessionDep, SettingsDep, TemporalDep, WriterCaller
from api.run_views import reconcile_rows, run_public, start_and_describe
from api.schemas import (
    PipelineRunPublic,
    PipelineRunsPublic,
    RunLogsPublic,
    StepLogPublic,
)
from db.models import PipelineRun, StepLogChunk
from domain.step_types import FINISHED_RUN_STATUSES, RUN_STATUSES, TRIGGER_TYPES
from services import a2a
from services import runs as services

router = APIRouter(prefix="/pipeline_runs", tags=["pipeline runs"])

MAX_WAIT_SECONDS = 60
QUEUED_POLL_SECONDS = 0.25


@router.get("", response_model=PipelineRunsPublic)
def list_runs(
    session: SessionDep, caller: CurrentCaller, temporal: TemporalDep,
    pipeline_id: int | None = None,
    status_: Annotated[str | None, Query(alias="status", description=", ".join(RUN_STATUSES))] = None,
    trigger_type: Annotated[str | None, Query(description=", ".join(TRIGGER_TYPES))] = None,
    cursor: Annotated[int | None, Query(ge=1, description="the `next_cursor` of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> PipelineRunsPublic:
    """Newest first, keyset-paginated by run id."""
    if status_ is not None and status_ not in RUN_STATUSES:
        raise errors.unprocessable([{"loc": ["query", "status"], "type": "enum",
                                     "msg": f"unknown status '{status_}'; expected one of: {', '.join(RUN_STATUSES)}"}])
    if trigger_type is not None and trigger_type not in TRIGGER_TYPES:
        raise errors.unprocessable([{"loc": ["query", "trigger_type"], "type": "enum",
                                     "msg": f"unknown trigger type '{trigger_type}'; expected one of: "
                                            f"{', '.join(TRIGGER_TYPES)}"}])
    query = select(PipelineRun).where(PipelineRun.account_id == caller.account_id)
    if pipeline_id is not None:
        query = query.where(PipelineRun.pipeline_id == pipeline_id)
    if status_ is not None:
        query = query.where(PipelineRun.status == status_)
    if trigger_type is not None:
        query = query.where(PipelineRun.trigger_type == trigger_type)
    count = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    if cursor is not None:
        query = query.where(PipelineRun.id < cursor)
    rows = session.scalars(query.order_by(PipelineRun.id.desc()).limit(limit + 1)).all()
    next_cursor = rows[limit - 1].id if len(rows) > limit else None
    page = list(rows[:limit])
    reconcile_rows(session, temporal, page)
    return PipelineRunsPublic(data=[run_public(r, temporal, with_steps=False) for r in page],
                              count=count, next_cursor=next_cursor)


@router.get("/{run_id}", response_model=PipelineRunPublic)
async def show_run(
    run_id: int, session: SessionDep, caller: CurrentCaller, temporal: TemporalDep,
    wait: Annotated[float, Query(ge=0, le=MAX_WAIT_SECONDS,
                                 description="seconds to wait for the run to finish before answering")] = 0,
) -> PipelineRunPublic:
    """The run with each step's status, attempts, outputs and error. With ``wait`` the answer
    comes when the run finishes (or when the wait is over), so callers need not poll."""
    if wait:
        status_now, workflow_id = await run_in_threadpool(services.run_state, session, caller.account_id, run_id)
        if status_now not in FINISHED_RUN_STATUSES:
            await _wait_for_run(session, temporal, caller.account_id, run_id, workflow_id, wait)
    return await run_in_threadpool(_fresh_run_public, session, temporal, caller.account_id, run_id)


async def _wait_for_run(session, temporal: TemporalGateway, account_id: int, run_id: int, workflow_id: str,
                        wait: float) -> None:
    """Until the run's workflow closes or ``wait`` is over. A queued run has no workflow yet
    (it starts when its turn comes), so its row is watched until then."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    handle = await temporal.handle(workflow_id)
    while (remaining := deadline - loop.time()) > 0:
        try:
            await asyncio.wait_for(handle.result(follow_runs=True), remaining)
            return
        except TimeoutError:
            return
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                return
        except Exception:  # noqa: BLE001 - a failed or cancelled run is an answer too; the row says which
            return
        status_now, _ = await run_in_threadpool(services.run_state, session, account_id, run_id)
        if status_now in FINISHED_RUN_STATUSES:
            return
        await asyncio.sleep(min(QUEUED_POLL_SECONDS, max(0.0, deadline - loop.time())))


def _fresh_run_public(session, temporal: TemporalGateway, account_id: int, run_id: int) -> PipelineRunPublic:
    session.expire_all()
    run = services.get_run(session, account_id, run_id)
    reconcile_rows(session, temporal, [run])
    return run_public(run, temporal)


@router.post("/{run_id}/cancel", response_model=PipelineRunPublic, status_code=status.HTTP_202_ACCEPTED)
def cancel_run(run_id: int, session: SessionDep, caller: WriterCaller, temporal: TemporalDep) -> PipelineRunPublic:
    """Ask the run to stop: the running step's processes are killed, the remaining steps are
    marked cancelled. Answers 202; the run's status becomes ``cancelled`` shortly after."""
    run = services.get_run(session, caller.account_id, run_id)
    if run.status in FINISHED_RUN_STATUSES:
        raise errors.conflict(f"run {run.id} already finished with status {run.status}")
    accepted = temporal.call(services.cancel_run_workflow, temporal, run)
    if not accepted and run.workflow_started_at is None:
        # Never started (the API died before starting it): nothing in Temporal to cancel, the row
        # itself is the run. False: the outbox reconciler started it meanwhile, so cancel that.
        if services.cancel_unstarted_run(session, run):
            session.commit()
            accepted = True
        else:
            session.rollback()
            session.expire_all()
            run = services.get_run(session, caller.account_id, run_id)
            accepted = temporal.call(services.cancel_run_workflow, temporal, run)
            if not accepted and run.status in FINISHED_RUN_STATUSES:
                raise errors.conflict(f"run {run.id} already finished with status {run.status}")
    if not accepted:
        raise errors.conflict(f"run {run.id} is no longer running")
    session.expire_all()
    return run_public(services.get_run(session, caller.account_id, run_id), temporal)


@router.post("/{run_id}/retry", response_model=PipelineRunPublic, status_code=status.HTTP_201_CREATED)
def retry_run(
    run_id: int, session: SessionDep, caller: WriterCaller, temporal: TemporalDep, settings: SettingsDep,
    from_step: Annotated[str | None, Query(description="re-run from this step, reusing earlier steps' outputs")] = None,
    *, request: Request, response: Response, idempotency_key: idempotency.KeyHeader = None,
) -> PipelineRunPublic:
    """A new run of the same pipeline definition with the same inputs and trigger context;
    with ``from_step`` the steps before it are not run again: their outcome and outputs are
    taken from this run. With an ``Idempotency-Key`` the same retry again within 24 h answers
    the first new run, never a second one."""
    original = services.get_run(session, caller.account_id, run_id)
    if original.status not in FINISHED_RUN_STATUSES:
        detail = f"run {original.id} is still {original.status}; retry it when it has finished"
        if original.workflow_started_at is None and original.status in services.UNSTARTED_STATUSES:
            wait = int(settings.run_outbox_grace_seconds + settings.run_outbox_interval_seconds)
            detail += (f" (its workflow has not started yet: within about {wait} seconds the API starts it, or "
                       "marks it failed with the reason; you can also cancel it)")
        raise errors.conflict(detail)
    reused = services.reused_steps_for(session, original, from_step) if from_step else None
    pipeline = services.get_pipeline(session, caller.account_id, original.pipeline_id)
    idem = idempotency.for_request(session, request, idempotency_key, account_id=caller.account_id,
                                   scope=f"pipeline_runs.retry:{original.id}", resource_type="pipeline_run",
                                   body={"from_step": from_step})
    if idem is not None:
        def render(new_run_id: int) -> PipelineRunPublic:
            return run_public(services.get_run(session, caller.account_id, new_run_id), temporal)

        if (found := idem.existing()) is not None:
            return idempotency.replay(response, found, render)
        if not idem.claim():  # a concurrent request with this key won
            return idempotency.replay(response, idem.wait_existing(), render)
    run = services.create_run(
        session, pipeline, trigger_type=original.trigger_type, inputs=original.inputs,
        trigger_context=original.trigger_context, user_id=caller.user_id, snapshot=original.pipeline_snapshot,
        retry_of=original, from_step=from_step,
    )
    a2a.link_run(run, a2a_task_id=original.a2a_task_id, callback_url=original.a2a_callback_url,
                 callback_secret=original.a2a_callback_secret)
    if idem is not None:
        idem.attach(run.id)
    session.commit()
    return start_and_describe(session, temporal, settings, run, reused)


@router.get("/{run_id}/logs", response_model=RunLogsPublic,
            responses={200: {"content": {"text/plain": {}}}})
def show_run_logs(
                  run_id: int, session: SessionDep, caller: CurrentCaller,
                  step_id: str | None = None,
                  format: Annotated[str, Query(pattern="^(json|text)$")] = "json",
                  ) -> Any:
    """Every step's log, in the order it was written; secrets are masked when written."""
    run = services.get_run(session, caller.account_id, run_id)
    query = select(StepLogChunk).where(StepLogChunk.run_id == run.id)
    if step_id is not None:
        query = query.where(StepLogChunk.step_id == step_id)
    chunks = session.scalars(query.order_by(StepLogChunk.id)).all()
    if format == "text":
        lines = [f"[{c.step_id}#{c.attempt}] {line}" for c in chunks for line in c.content.split("\n")]
        return Response("\n".join(lines) + ("\n" if lines else ""), media_type="text/plain")
    return RunLogsPublic(
        data=[StepLogPublic(step_id=c.step_id, attempt=c.attempt, seq=c.seq, content=c.content,
                            created_at=c.created_at) for c in chunks],
        count=len(chunks),
    )


