"""IntegrationExecutionWorkflow ``integration-execution-<id>``: one execution of an integration
instance (the seed's IntegrationExecution), started by the API or as a child of a pipeline run's
``integration`` step.

``integration_start`` runs the type's executor once (retried with backoff on transient failures,
at most ``MAX_ATTEMPTS`` tries, honouring the far side's ``retry-after``). An executor that must
wait for something outside returns poll state: the workflow sleeps on a durable timer and asks
again (``integration_poll``) until it has outputs or the execution's time is up.
``integration_finish`` records the outcome (checking outputs against the template's
``output_schema``) and the counters. Only ids travel through the history: the activities load
and decrypt the credential themselves.
"""

import asyncio
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.exceptions import CancelledError as TemporalCancelledError

with workflow.unsafe.imports_passed_through():
    from activities.integrations import (
        INTEGRATION_FAILED,
        IntegrationActivities,
        IntegrationFinishInput,
        IntegrationFinishResult,
        IntegrationPollInput,
        IntegrationProgress,
        IntegrationRef,
    )
    from domain.integrations import MAX_ATTEMPTS

EXECUTOR_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), backoff_coefficient=2.0,
                             maximum_interval=timedelta(seconds=30), maximum_attempts=MAX_ATTEMPTS,
                             non_retryable_error_types=[INTEGRATION_FAILED])
BOOKKEEPING_RETRY = RetryPolicy(initial_interval=timedelta(milliseconds=200), maximum_interval=timedelta(seconds=5),
                                maximum_attempts=10, non_retryable_error_types=[INTEGRATION_FAILED])
SHORT = timedelta(seconds=30)
HEARTBEAT = timedelta(seconds=30)
DEFAULT_POLL_SECONDS = 15.0


@dataclass
class IntegrationExecutionInput:
    execution_id: int
    account_id: int
    timeout_minutes: int = 60


@dataclass
class IntegrationExecutionOutcome:
    execution_id: int
    status: str
    outputs: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


class _Failed(Exception):
    pass


@workflow.defn
class IntegrationExecutionWorkflow:
    def __init__(self) -> None:
        self._status = "pending"

    @workflow.query
    def status(self) -> str:
        return self._status

    @workflow.run
    async def run(self, inp: IntegrationExecutionInput) -> IntegrationExecutionOutcome:
        ref = IntegrationRef(execution_id=inp.execution_id, account_id=inp.account_id)
        try:
            status, outputs, error = await self._execute(inp, ref)
        except asyncio.CancelledError:
            self._status = "cancelled"
            await asyncio.shield(asyncio.ensure_future(self._finish(ref, "cancelled", {}, "cancelled")))
            raise
        if status == "ended":  # ended before it started (cancelled while pending): nothing to record
            return IntegrationExecutionOutcome(inp.execution_id, error or "cancelled")
        result = await self._finish(ref, status, outputs, error)
        self._status = result.status
        if result.status != "success":
            raise ApplicationError(result.error or "the integration failed", type=INTEGRATION_FAILED,
                                   non_retryable=True)
        return IntegrationExecutionOutcome(inp.execution_id, result.status, result.outputs)

    async def _execute(self, inp: IntegrationExecutionInput,
                       ref: IntegrationRef) -> tuple[str, dict[str, Any], str | None]:
        limit = timedelta(minutes=inp.timeout_minutes)
        deadline = workflow.now() + limit
        timed_out = f"timed out after {inp.timeout_minutes} minutes"
        self._status = "running"
        try:
            progress: IntegrationProgress = await workflow.execute_activity_method(
                IntegrationActivities.start, ref, start_to_close_timeout=limit, schedule_to_close_timeout=limit,
                heartbeat_timeout=HEARTBEAT, retry_policy=EXECUTOR_RETRY,
                summary=f"integration execution {inp.execution_id}")
            if progress.ended:
                return "ended", {}, progress.ended
            while progress.outputs is None:
                if progress.poll_state is None:
                    raise _Failed("the executor returned neither outputs nor a state to poll")
                remaining = (deadline - workflow.now()).total_seconds()
                wait = max(0.0, progress.poll_after_seconds or DEFAULT_POLL_SECONDS)
                if wait >= remaining:
                    await workflow.sleep(max(remaining, 0.001))
                    raise _Failed(timed_out)
                await workflow.sleep(wait)
                left = deadline - workflow.now()
                progress = await workflow.execute_activity_method(
                    IntegrationActivities.poll, IntegrationPollInput(execution_id=inp.execution_id,
                                                                     account_id=inp.account_id,
                                                                     poll_state=progress.poll_state),
                    start_to_close_timeout=left, schedule_to_close_timeout=left, heartbeat_timeout=HEARTBEAT,
                    retry_policy=EXECUTOR_RETRY, summary=f"poll integration execution {inp.execution_id}")
        except _Failed as failed:
            return "failure", {}, str(failed)
        except ActivityError as err:
            if isinstance(err.cause, TemporalCancelledError):
                raise asyncio.CancelledError() from None
            return "failure", {}, _cause_message(err, timed_out)
        return "success", progress.outputs, None

    async def _finish(self, ref: IntegrationRef, status: str, outputs: dict[str, Any],
                      error: str | None) -> IntegrationFinishResult:
        return await workflow.execute_activity_method(
            IntegrationActivities.finish,
            IntegrationFinishInput(execution_id=ref.execution_id, account_id=ref.account_id, status=status,
                                   outputs=outputs, error=error),
            start_to_close_timeout=SHORT, retry_policy=BOOKKEEPING_RETRY)


def _cause_message(err: ActivityError, timed_out: str) -> str:
    cause = err.cause
    if isinstance(cause, ApplicationError):
        return cause.message
    if cause is not None and type(cause).__name__ == "TimeoutError":
        return timed_out
    return str(getattr(cause, "message", None) or err)


__all__ = ["IntegrationExecutionInput", "IntegrationExecutionOutcome", "IntegrationExecutionWorkflow"]
