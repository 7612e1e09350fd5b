"""The ``integration`` step of a pipeline run: ``with: {instance: <name or id>, inputs: {...}}``.

An activity makes the execution row (trigger ``pipeline``, the run and step ids; the instance
looked up in the run's account, the inputs checked against its template's ``input_schema``), then
the instance runs as a child ``IntegrationExecutionWorkflow``. The step's outputs are the
execution's outputs plus ``execution_id``; a failed execution fails the step with its error.
Called from ``PipelineRunWorkflow._run_step`` only for steps of this type (issue 14): histories of
runs without one never reach the patch marker.
"""

import math
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, ChildWorkflowError

with workflow.unsafe.imports_passed_through():
    from activities.integrations import IntegrationActivities, IntegrationStepPlan
    from activities.step_contract import STEP_FAILED, StepInput
    from workflows.integration_execution import (
        IntegrationExecutionInput,
        IntegrationExecutionOutcome,
        IntegrationExecutionWorkflow,
    )

PATCH_INTEGRATION_STEP = "14-integration-step"
PREPARE_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=10),
                            maximum_attempts=5, non_retryable_error_types=[STEP_FAILED])


async def run_integration_step(step_input: StepInput, attempt: int,
                               timeout: timedelta) -> tuple[dict[str, Any], str | None]:
    """(outputs, error) of one attempt of an ``integration`` step; error None on success. The
    execution gets the shorter of the step's timeout and the installation's integration timeout."""
    workflow.patched(PATCH_INTEGRATION_STEP)
    name = step_input.step_name
    try:
        plan: IntegrationStepPlan = await workflow.execute_activity_method(
            IntegrationActivities.prepare_step, step_input, start_to_close_timeout=timedelta(minutes=1),
            retry_policy=PREPARE_RETRY, activity_id=f"{step_input.step_id}-attempt-{attempt}-integration",
            summary=f"{name} (integration execution for attempt {attempt})")
    except ActivityError as err:
        return {}, _message(err)
    minutes = max(1, min(plan.timeout_minutes, math.ceil(timeout.total_seconds() / 60)))
    try:
        outcome: IntegrationExecutionOutcome = await workflow.execute_child_workflow(
            IntegrationExecutionWorkflow.run,
            IntegrationExecutionInput(execution_id=plan.execution_id, account_id=step_input.account_id,
                                      timeout_minutes=minutes),
            id=plan.workflow_id, task_queue=workflow.info().task_queue,
            execution_timeout=timedelta(minutes=minutes + 5),
            static_summary=f"{name} #{step_input.run_number} attempt {attempt}")
    except ChildWorkflowError as err:
        return {"execution_id": plan.execution_id}, f"integration execution {plan.execution_id} failed: {_message(err)}"
    if outcome.status != "success":
        return {"execution_id": plan.execution_id}, f"integration execution {plan.execution_id} ended {outcome.status}"
    return {**outcome.outputs, "execution_id": plan.execution_id}, None


def _message(err: ActivityError | ChildWorkflowError) -> str:
    cause = err.cause
    if isinstance(cause, ApplicationError):
        return cause.message
    return str(getattr(cause, "message", None) or err)
