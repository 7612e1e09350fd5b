"""WebhookDispatchWorkflow: the durable half of a webhook delivery (``webhook-event-<id>``).

The route stored the verified delivery and answered the provider; this workflow asks
:meth:`~activities.webhooks.WebhookActivities.dispatch_webhook_event` to match it against the
repository's linked pipelines and start their runs. The activity is idempotent (the runs it
creates are recorded on the event in the same transaction), so Temporal may retry it freely.
"""

from dataclasses import dataclass, field
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.webhooks import DispatchInput, DispatchResult, WebhookActivities

DISPATCH_TIMEOUT = timedelta(seconds=60)
DISPATCH_RETRY = RetryPolicy(initial_interval=timedelta(milliseconds=500), maximum_interval=timedelta(seconds=30),
                             maximum_attempts=20)


def dispatch_workflow_id(event_id: int) -> str:
    return f"webhook-event-{event_id}"


@dataclass
class WebhookDispatchInput:
    event_id: int
    account_id: int


@dataclass
class WebhookDispatchOutcome:
    pipeline_ids: list[int] = field(default_factory=list)
    run_ids: list[int] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


@workflow.defn
class WebhookDispatchWorkflow:
    @workflow.run
    async def run(self, inp: WebhookDispatchInput) -> WebhookDispatchOutcome:
        # A local activity: it is short, and a webhook burst costs Temporal half the events and
        # task dispatches of a regular one (see bench/webhooks.py).
        result: DispatchResult = await workflow.execute_local_activity_method(
            WebhookActivities.dispatch_webhook_event,
            DispatchInput(event_id=inp.event_id, account_id=inp.account_id),
            start_to_close_timeout=DISPATCH_TIMEOUT,
            retry_policy=DISPATCH_RETRY,
            summary="match pipelines and start runs",
        )
        return WebhookDispatchOutcome(pipeline_ids=result.pipeline_ids, run_ids=result.run_ids,
                                      skipped=result.skipped)
