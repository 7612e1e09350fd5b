"""ContainerExecutionWorkflow: one container execution (``container-<instance id>``).

Contract shared by the API (which creates the ``ContainerInstance`` row and starts this workflow)
and the pipeline steps that run in containers (which start it as a child). The workflow loads
everything else from the row inside its activities; no secret or token ever travels in its input.

Shape: (queued: reserve quota, a durable sleep of 2 s growing to 15 s between tries) → provision
→ wait for the exit under a durable timer of ``timeout_seconds`` → artifacts (completed and failed)
→ remove the container (always, also after cancel and timeout) → finish (status, event, callback).
The outcome is returned for completed, failed and timeout; a cancelled execution records
``cancelled`` and then ends as cancelled in Temporal too, so Temporal and the row agree.
"""

import asyncio
import contextlib
from dataclasses import dataclass
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.workflow import ActivityCancellationType

with workflow.unsafe.imports_passed_through():
    from activities.containers import (
        FINAL_STATUSES,
        NON_RETRYABLE_TYPES,
        QUOTA_NEVER_FITS,
        ContainerActivities,
        ContainerExit,
        ContainerInstanceInput,
        ContainerPlan,
        FinishContainerInput,
        ProvisionResult,
        ReserveResult,
    )
    from workflows.a2a_callback import PATCH_A2A_CALLBACK, start_container_callback


def container_workflow_id(instance_id: int) -> str:
    return f"container-{instance_id}"


@dataclass
class ContainerExecutionInput:
    instance_id: int
    account_id: int
    # issue 14: > 0 when the execution has a callback URL: A2ACallbackWorkflow delivers it with
    # this many attempts (0: the finish activity sends it, as before)
    a2a_callback_attempts: int = 0


@dataclass
class ContainerExecutionOutcome:
    status: str  # completed | failed | cancelled | timeout
    exit_code: int | None = None
    error: str | None = None


# Docker API hiccups are retried a few times; a user-caused failure (bad image, bad spec) is not.
DOCKER_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), backoff_coefficient=2.0,
                           maximum_interval=timedelta(seconds=10), maximum_attempts=4,
                           non_retryable_error_types=NON_RETRYABLE_TYPES)
# Following a container survives worker crashes: retried (re-attaching) for as long as it runs.
WAIT_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=10),
                         maximum_attempts=0, non_retryable_error_types=NON_RETRYABLE_TYPES)
# Cleanup must happen: retried until it works.
CLEANUP_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30),
                            maximum_attempts=0, non_retryable_error_types=NON_RETRYABLE_TYPES)
BOOKKEEPING_RETRY = RetryPolicy(initial_interval=timedelta(milliseconds=200), maximum_interval=timedelta(seconds=5),
                                non_retryable_error_types=NON_RETRYABLE_TYPES)
SHORT = timedelta(seconds=60)
# After a kill, how long the follower may take to see the exit and record it.
KILL_SETTLE = timedelta(seconds=30)
QUEUE_SLEEP_FIRST, QUEUE_SLEEP_MAX = 2.0, 15.0


def _cause_message(err: ActivityError) -> str:
    cause = err.cause
    while isinstance(cause, ActivityError) and cause.cause is not None:
        cause = cause.cause
    if isinstance(cause, ApplicationError):
        return cause.message
    return str(cause or err)


@workflow.defn
class ContainerExecutionWorkflow:
    @workflow.init
    def __init__(self, inp: ContainerExecutionInput) -> None:
        self._status = "pending"
        self._inp = ContainerInstanceInput(instance_id=inp.instance_id, account_id=inp.account_id)
        self._a2a_callback_attempts = inp.a2a_callback_attempts

    @workflow.query
    def status(self) -> str:
        """The live status: queued, pending, provisioning, running, or the final one."""
        return self._status

    @workflow.run
    async def run(self, inp: ContainerExecutionInput) -> ContainerExecutionOutcome:
        ref = self._inp
        try:
            plan: ContainerPlan = await workflow.execute_local_activity_method(
                ContainerActivities.prepare, ref, start_to_close_timeout=SHORT, retry_policy=BOOKKEEPING_RETRY)
        except ActivityError as err:
            return await self._finish(ContainerExecutionOutcome("failed", error=_cause_message(err)))
        if plan.status in FINAL_STATUSES:
            return ContainerExecutionOutcome(plan.status)  # already ended: a re-run changes nothing
        self._status = plan.status

        cancelled = False
        outcome: ContainerExecutionOutcome | None = None
        provisioned = False
        try:
            if plan.status == "queued":
                outcome = await self._wait_for_quota(ref)
            if outcome is None:
                self._status = "provisioning"
                provisioned = True
                try:
                    await workflow.execute_activity_method(
                        ContainerActivities.provision, ref, start_to_close_timeout=timedelta(minutes=5),
                        retry_policy=DOCKER_RETRY, summary=f"provision container-{inp.instance_id}",
                        # A cancel waits for the provisioning in flight, so the removal comes after it.
                        cancellation_type=ActivityCancellationType.WAIT_CANCELLATION_COMPLETED)
                except ActivityError as err:
                    outcome = ContainerExecutionOutcome("failed", error=_cause_message(err))
            if outcome is None:
                self._status = "running"
                outcome = await self._run_to_exit(ref, plan)
        except asyncio.CancelledError:
            cancelled = True
            outcome = ContainerExecutionOutcome("cancelled", error="cancelled")
            if provisioned:
                await self._cleanup(ContainerActivities.kill, ref)
        assert outcome is not None

        if provisioned:
            if outcome.status in ("completed", "failed") and plan.artifact_count:
                with contextlib.suppress(ActivityError):
                    await workflow.execute_activity_method(
                        ContainerActivities.collect_artifacts, ref, start_to_close_timeout=timedelta(minutes=10),
                        heartbeat_timeout=timedelta(minutes=2), retry_policy=DOCKER_RETRY)
            await self._cleanup(ContainerActivities.remove, ref)
        await self._finish(outcome)
        if cancelled:
            raise asyncio.CancelledError()
        return outcome

    async def _wait_for_quota(self, ref: ContainerInstanceInput) -> ContainerExecutionOutcome | None:
        """Try to reserve until it works (None), can never work, or the instance ended while it
        waited (cancelled through the API, say): then the outcome."""
        delay = QUEUE_SLEEP_FIRST
        while True:
            try:
                result: ReserveResult = await workflow.execute_activity_method(
                    ContainerActivities.reserve_or_wait, ref, start_to_close_timeout=SHORT,
                    retry_policy=DOCKER_RETRY)
            except ActivityError as err:
                cause = err.cause
                if isinstance(cause, ApplicationError) and cause.type == QUOTA_NEVER_FITS:
                    return ContainerExecutionOutcome(
                        "failed", error=f"the quota can never fit this container: {cause.message}")
                return ContainerExecutionOutcome("failed", error=_cause_message(err))
            if result.reserved:
                self._status = result.status
                return None
            if result.status in FINAL_STATUSES:
                return ContainerExecutionOutcome(result.status, error=f"ended while queued ({result.status})")
            await workflow.sleep(delay)
            delay = min(delay * 1.5, QUEUE_SLEEP_MAX)

    async def _run_to_exit(self, ref: ContainerInstanceInput, plan: ContainerPlan) -> ContainerExecutionOutcome:
        waiter = workflow.start_activity_method(
            ContainerActivities.wait_for_exit, ref,
            start_to_close_timeout=timedelta(seconds=plan.timeout_seconds + 3600),
            heartbeat_timeout=timedelta(seconds=max(plan.heartbeat_timeout_seconds, 3.0)),
            retry_policy=WAIT_RETRY, cancellation_type=ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
            summary=f"wait for container-{ref.instance_id}")
        timed_out = False
        try:
            await workflow.wait_condition(waiter.done, timeout=plan.timeout_seconds)
        except TimeoutError:
            timed_out = True
        except asyncio.CancelledError:
            # Kill first, so the follower sees the exit and stores the whole log, then re-raise.
            await self._cleanup(ContainerActivities.kill, ref)
            await self._settle(waiter)
            raise
        if timed_out:
            await self._cleanup(ContainerActivities.kill, ref)
            await self._settle(waiter)
            return ContainerExecutionOutcome("timeout", error=f"timed out after {plan.timeout_seconds} seconds")
        try:
            exit_info: ContainerExit = await waiter
        except ActivityError as err:
            return ContainerExecutionOutcome("failed", error=_cause_message(err))
        if exit_info.oom_killed:
            return ContainerExecutionOutcome("failed", exit_code=exit_info.exit_code,
                                             error=f"killed: out of memory (limit {plan.memory_mb} MB)")
        if exit_info.exit_code == 0:
            return ContainerExecutionOutcome("completed", exit_code=0)
        return ContainerExecutionOutcome("failed", exit_code=exit_info.exit_code,
                                         error=f"exited with code {exit_info.exit_code}")

    async def _settle(self, waiter: workflow.ActivityHandle[ContainerExit]) -> None:
        """Give the follower a moment to record the exit of the killed container; cancel it after."""
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            await workflow.wait_condition(waiter.done, timeout=KILL_SETTLE)
        if not waiter.done():
            waiter.cancel()
        with contextlib.suppress(ActivityError, asyncio.CancelledError):
            await waiter

    async def _cleanup(self, method, ref: ContainerInstanceInput) -> None:  # noqa: ANN001 - an activity method
        """A kill or remove that must run even while the workflow is being cancelled."""
        with contextlib.suppress(ActivityError):
            await asyncio.shield(asyncio.ensure_future(workflow.execute_activity_method(
                method, ref, start_to_close_timeout=SHORT, retry_policy=CLEANUP_RETRY,
                schedule_to_close_timeout=timedelta(minutes=10))))

    async def _finish(self, outcome: ContainerExecutionOutcome) -> ContainerExecutionOutcome:
        ref = self._inp
        self._status = outcome.status
        durable = bool(self._a2a_callback_attempts) and workflow.patched(PATCH_A2A_CALLBACK)
        await workflow.execute_activity_method(
            ContainerActivities.finish,
            FinishContainerInput(instance_id=ref.instance_id, account_id=ref.account_id, status=outcome.status,
                                 error=outcome.error, exit_code=outcome.exit_code, send_callback=not durable),
            start_to_close_timeout=SHORT, retry_policy=RetryPolicy(maximum_attempts=5,
                                                                   non_retryable_error_types=NON_RETRYABLE_TYPES))
        if durable:
            await start_container_callback(ref.instance_id, ref.account_id, self._a2a_callback_attempts)
        return outcome


__all__ = ["ContainerExecutionInput", "ContainerExecutionOutcome", "ContainerExecutionWorkflow",
           "ProvisionResult", "container_workflow_id"]
