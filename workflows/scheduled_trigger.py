"""ScheduledTriggerWorkflow: what the Temporal Schedule ``schedule-<id>`` starts at each fire.

It creates one run of the schedule's pipeline (trigger type ``schedule``, a normal run row) and
then waits until that run has finished. Waiting is what makes the Schedule's overlap policy
mean something: with SKIP (pipelines with ``allow_concurrent: false``) a fire that comes while
the previous scheduled run is still going is skipped by Temporal instead of piling up behind it.

The wait is an activity that awaits the run workflow's result with heartbeats (the answer comes
the moment the run closes, with no polling interval to overshoot the next fire), in slices of
a few minutes so that no single activity runs for hours. A schedule or pipeline that is gone,
or a pipeline that is inactive, ends the trigger quietly: one log line, no run.
"""

from dataclasses import dataclass
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeKey

with workflow.unsafe.imports_passed_through():
    from activities.schedules import AwaitRunInput, ScheduleActivities, StartScheduledRunInput

# Set by Temporal on every workflow a Schedule starts: the fire's nominal time.
SCHEDULED_START_TIME = SearchAttributeKey.for_datetime("TemporalScheduledStartTime")

START_TIMEOUT = timedelta(seconds=60)
# A database or Temporal outage longer than this fails the fire rather than holding the
# schedule (under SKIP, a trigger that never ends would block every later fire).
START_GIVE_UP_AFTER = timedelta(minutes=10)
START_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30))
WAIT_SLICE = timedelta(minutes=5)
WAIT_HEARTBEAT_TIMEOUT = timedelta(seconds=30)


@dataclass
class ScheduledTriggerInput:
    schedule_id: int
    account_id: int


@dataclass
class ScheduledTriggerOutcome:
    run_id: int | None
    status: str  # the run's final status, or "skipped"
    reason: str | None = None


@workflow.defn
class ScheduledTriggerWorkflow:
    def __init__(self) -> None:
        self._run_id: int | None = None

    @workflow.query
    def run_id(self) -> int | None:
        """The run this fire created, once it exists."""
        return self._run_id

    @workflow.run
    async def run(self, inp: ScheduledTriggerInput) -> ScheduledTriggerOutcome:
        info = workflow.info()
        scheduled_at = info.typed_search_attributes.get(SCHEDULED_START_TIME) or workflow.now()
        started = await workflow.execute_activity_method(
            ScheduleActivities.start_scheduled_run,
            StartScheduledRunInput(schedule_id=inp.schedule_id, account_id=inp.account_id,
                                   trigger_workflow_id=info.workflow_id, scheduled_at=scheduled_at.isoformat()),
            start_to_close_timeout=START_TIMEOUT,
            schedule_to_close_timeout=START_GIVE_UP_AFTER,
            retry_policy=START_RETRY,
        )
        if started.run_id is None:
            workflow.logger.info("schedule %s fired at %s and started no run: %s",
                                 inp.schedule_id, scheduled_at.isoformat(), started.skipped)
            return ScheduledTriggerOutcome(run_id=None, status="skipped", reason=started.skipped)
        self._run_id = started.run_id
        while True:
            waited = await workflow.execute_activity_method(
                ScheduleActivities.await_run,
                AwaitRunInput(run_id=started.run_id, account_id=inp.account_id,
                              max_wait_seconds=WAIT_SLICE.total_seconds()),
                start_to_close_timeout=WAIT_SLICE + timedelta(minutes=1),
                heartbeat_timeout=WAIT_HEARTBEAT_TIMEOUT,
            )
            if waited.finished:
                return ScheduledTriggerOutcome(run_id=started.run_id, status=waited.status)
