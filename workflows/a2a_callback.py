"""A2ACallbackWorkflow: the durable delivery of a finished run's signed callback. A worker
restart between attempts loses nothing: the activity's retry state lives in Temporal."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from activities.a2a import A2ACallbackActivities, DeliverCallbackInput

PATCH_A2A_CALLBACK = "14-a2a-callback"


@workflow.defn(name="A2ACallbackWorkflow")
class A2ACallbackWorkflow:
    @workflow.run
    async def run(self, inp: DeliverCallbackInput, max_attempts: int = 10) -> str:
        try:
            return await workflow.execute_activity_method(
                A2ACallbackActivities.deliver, inp,
                start_to_close_timeout=timedelta(seconds=60),
                retry_policy=RetryPolicy(initial_interval=timedelta(seconds=1), backoff_coefficient=2.0,
                                         maximum_interval=timedelta(minutes=10), maximum_attempts=max_attempts),
                summary=f"callback of {inp.kind} {inp.target_id}",
            )
        except ActivityError as exc:  # the last attempt records "gave up"; this is a worker-side failure
            return f"gave up: {exc.cause or exc}"


def callback_workflow_id(kind: str, target_id: int) -> str:
    return f"a2a-callback-{kind}-{target_id}"


async def start_run_callback(run_id: int, account_id: int, max_attempts: int = 10) -> None:
    """From the end of PipelineRunWorkflow (only when the run has a callback URL): start the
    delivery as an abandoned child, so the run does not wait for the receiver."""
    if workflow.patched(PATCH_A2A_CALLBACK):
        await _start("run", run_id, account_id, max_attempts)


async def start_container_callback(instance_id: int, account_id: int, max_attempts: int) -> None:
    """From ContainerExecutionWorkflow's finish, the patch already checked by the caller."""
    await _start("container", instance_id, account_id, max_attempts)


async def _start(kind: str, target_id: int, account_id: int, max_attempts: int) -> None:
    await workflow.start_child_workflow(
        A2ACallbackWorkflow.run, args=[DeliverCallbackInput(kind=kind, target_id=target_id, account_id=account_id),
                                       max_attempts],
        id=callback_workflow_id(kind, target_id), parent_close_policy=ParentClosePolicy.ABANDON,
    )
