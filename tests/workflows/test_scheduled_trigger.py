"""ScheduledTriggerWorkflow fired by real Temporal Schedules on the dev server, on both backends.

Cron fires are at least a minute apart, so firing is proven two ways without waiting for the
clock: a backfill over a past cron time (Temporal's scheduler evaluates the row's cron and time
zone and fires with that nominal time), and, for "every few seconds" and pause, the Schedule's
spec swapped for a one-second interval behind the API's back (everything else — action, task
queue, overlap policy, paused state — stays what the API made).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from sqlalchemy import delete
from temporalio.client import (
    ScheduleBackfill,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    ScheduleSpec,
    ScheduleUpdate,
    ScheduleUpdateInput,
    WorkflowFailureError,
)
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment
from temporalio.worker import Replayer

from activities.schedules import (
    SCHEDULE_INPUTS_INVALID,
    AwaitRunInput,
    ScheduleActivities,
    StartScheduledRunInput,
)
from db.models import Schedule
from services.schedules import trigger_workflow_ids
from tests.harness import wait_for, wait_run
from workflows.scheduled_trigger import ScheduledTriggerOutcome, ScheduledTriggerWorkflow


def create_pipeline(client: httpx.Client, command: str = "true", **fields: Any) -> dict[str, Any]:
    document = {"name": f"p-{uuid.uuid4().hex[:8]}",
                "steps": [{"id": "a", "type": "run_tests", "with": {"command": command}}], **fields}
    response = client.post("/pipelines", json=document)
    assert response.status_code == 201, response.text
    return response.json()


def create_schedule(client: httpx.Client, pipeline_id: int, **fields: Any) -> dict[str, Any]:
    response = client.post("/schedules", json={"pipeline_id": pipeline_id, "cron": "0 3 * * *", **fields})
    assert response.status_code == 201, response.text
    return response.json()


def schedule_runs(client: httpx.Client, pipeline_id: int) -> list[dict[str, Any]]:
    body = client.get("/pipeline_runs", params={"pipeline_id": pipeline_id, "limit": 200}).json()
    assert all(run["trigger_type"] == "schedule" for run in body["data"])
    return sorted(body["data"], key=lambda run: run["id"])


def handle(stack, schedule_id: int):
    return stack.temporal.get_schedule_handle(f"schedule-{schedule_id}")


def every_second(stack, schedule_id: int) -> None:
    """Swap only the spec for a one-second interval, as if edited in the Temporal UI."""

    def swap(current: ScheduleUpdateInput) -> ScheduleUpdate:
        schedule = current.description.schedule
        schedule.spec = ScheduleSpec(intervals=[ScheduleIntervalSpec(every=timedelta(seconds=1))])
        return ScheduleUpdate(schedule=schedule)

    stack.infra.run(handle(stack, schedule_id).update(swap))


def fire(stack, schedule_id: int) -> tuple[str, Any]:
    """Trigger through Temporal (not the API) and return the trigger workflow id and its outcome
    (or the exception it failed with)."""

    async def go() -> tuple[str, Any]:
        schedule = handle(stack, schedule_id)
        before = trigger_workflow_ids(await schedule.describe())
        await schedule.trigger()
        for _ in range(200):
            new = trigger_workflow_ids(await schedule.describe()) - before
            if new:
                break
            await asyncio.sleep(0.05)
        workflow_id = max(new)
        trigger = stack.temporal.get_workflow_handle_for(ScheduledTriggerWorkflow.run, workflow_id)
        try:
            return workflow_id, await trigger.result()
        except WorkflowFailureError as exc:
            return workflow_id, exc

    return stack.infra.run(go())


def last_cron_time(hour: int, zone: str) -> datetime:
    """The latest past ``0 <hour> * * *`` in that time zone, in UTC."""
    now = datetime.now(ZoneInfo(zone))
    last = now.replace(hour=hour, minute=0, second=0, microsecond=0)
    if last > now:
        last = (last - timedelta(days=1)).replace(hour=hour)
    return last.astimezone(UTC)


def test_a_cron_fire_creates_a_schedule_run_and_ends_with_the_run(stack):
    client = stack.account().client
    pipeline = create_pipeline(client, 'echo "at=$AT" >> "$DEVOPS_OUTPUT"',
                               inputs={"who": {"type": "string", "default": "cron"}})
    pipeline_doc = client.get(f"/pipelines/{pipeline['id']}/export", params={"format": "json"}).json()
    pipeline_doc["steps"][0]["with"]["env"] = {"AT": "${{ trigger.scheduled_at }}"}
    assert client.put(f"/pipelines/{pipeline['id']}", json=pipeline_doc).status_code == 200
    schedule = create_schedule(client, pipeline["id"], timezone="Europe/Paris", inputs={"who": "nightly"})
    nominal = last_cron_time(3, "Europe/Paris")
    # Temporal's scheduler walks the row's cron over that window and fires at 03:00 Paris time
    stack.infra.run(handle(stack, schedule["id"]).backfill(ScheduleBackfill(
        start_at=nominal - timedelta(minutes=1), end_at=nominal + timedelta(minutes=1),
        overlap=ScheduleOverlapPolicy.ALLOW_ALL)))

    [run] = wait_for(lambda: schedule_runs(client, pipeline["id"]), message="the scheduled run")
    finished = wait_run(client, run["id"])
    assert finished["status"] == "success", finished
    assert finished["trigger_type"] == "schedule" and finished["inputs"] == {"who": "nightly"}
    context = finished["trigger_context"]
    assert context["schedule_id"] == schedule["id"] and context["cron"] == "0 3 * * *"
    assert datetime.fromisoformat(context["scheduled_at"]) == nominal
    assert datetime.fromisoformat(finished["outputs"]["a"]["at"]) == nominal

    # the trigger workflow ended with the run's own outcome, so it waited for the run to finish
    workflow_id = context["trigger_workflow_id"]
    assert workflow_id.startswith(f"schedule-{schedule['id']}-trigger-")
    trigger = stack.temporal.get_workflow_handle_for(ScheduledTriggerWorkflow.run, workflow_id)
    outcome = stack.infra.run(trigger.result())
    assert outcome == ScheduledTriggerOutcome(run_id=run["id"], status="success")
    closed_at = stack.infra.run(trigger.describe()).close_time
    assert closed_at >= datetime.fromisoformat(finished["finished_at"])
    shown = client.get(f"/schedules/{schedule['id']}").json()
    assert shown["last_run"]["id"] == run["id"] and shown["last_run"]["status"] == "success"

    # and its history replays on the current code
    history = stack.infra.run(trigger.fetch_history())
    stack.infra.run(Replayer(workflows=[ScheduledTriggerWorkflow]).replay_workflow(history))


def test_a_schedule_every_second_produces_runs_and_pausing_stops_them(stack):
    client = stack.account().client
    pipeline = create_pipeline(client)
    schedule = create_schedule(client, pipeline["id"])
    try:
        every_second(stack, schedule["id"])
        wait_for(lambda: len(schedule_runs(client, pipeline["id"])) >= 2, timeout=15, message="two fires")

        paused = client.patch(f"/schedules/{schedule['id']}", json={"is_active": False}).json()
        assert paused["temporal_state"] == "paused"
        description = stack.infra.run(handle(stack, schedule["id"]).describe())
        assert description.schedule.state.paused and description.schedule.spec.intervals  # the spec is untouched
        wait_for(lambda: not stack.infra.run(handle(stack, schedule["id"]).describe()).info.running_actions,
                 message="the fire in flight to finish")
        count = len(schedule_runs(client, pipeline["id"]))
        actions = stack.infra.run(handle(stack, schedule["id"]).describe()).info.num_actions
        time.sleep(2.5)
        assert len(schedule_runs(client, pipeline["id"])) == count
        assert stack.infra.run(handle(stack, schedule["id"]).describe()).info.num_actions == actions

        client.patch(f"/schedules/{schedule['id']}", json={"is_active": True})
        wait_for(lambda: len(schedule_runs(client, pipeline["id"])) > count, timeout=10, message="fires again")
    finally:
        assert client.delete(f"/schedules/{schedule['id']}").status_code == 204
    runs = schedule_runs(client, pipeline["id"])
    assert all(wait_run(client, run["id"])["status"] == "success" for run in runs)
    assert len({run["trigger_context"]["trigger_workflow_id"] for run in runs}) == len(runs)


def test_overlap_skip_drops_fires_while_the_scheduled_run_is_going(stack):
    client = stack.account().client
    pipeline = create_pipeline(client, "sleep 2", allow_concurrent=False)
    schedule = create_schedule(client, pipeline["id"])
    assert schedule["overlap_policy"] == "skip"
    try:
        every_second(stack, schedule["id"])
        wait_for(lambda: stack.infra.run(handle(stack, schedule["id"]).describe()).info.num_actions_skipped_overlap >= 2,
                 timeout=15, message="fires skipped for overlap")
    finally:
        assert client.delete(f"/schedules/{schedule['id']}").status_code == 204
    runs = [wait_run(client, run["id"]) for run in schedule_runs(client, pipeline["id"])]
    assert 1 <= len(runs) <= 2, runs  # one fire a second for over 2 s: ALLOW_ALL would have made 3 or more
    assert all(run["status"] == "success" for run in runs)
    for earlier, later in zip(runs, runs[1:], strict=False):
        assert later["started_at"] >= earlier["finished_at"]


def test_an_inactive_pipeline_ends_the_fire_quietly(stack, caplog):
    client = stack.account().client
    pipeline = create_pipeline(client)
    schedule = create_schedule(client, pipeline["id"])
    client.patch(f"/pipelines/{pipeline['id']}", json={"is_active": False})
    with caplog.at_level("INFO"):
        _, outcome = fire(stack, schedule["id"])
    assert outcome.run_id is None and outcome.status == "skipped"
    assert f"pipeline '{pipeline['name']}' (id {pipeline['id']}) is inactive" in outcome.reason
    assert f"schedule {schedule['id']} fired at" in caplog.text and "started no run" in caplog.text
    assert schedule_runs(client, pipeline["id"]) == []


def test_a_schedule_row_gone_ends_the_fire_quietly(stack):
    client = stack.account().client
    pipeline = create_pipeline(client)
    schedule = create_schedule(client, pipeline["id"])
    with stack.sessions.begin() as session:
        session.execute(delete(Schedule).where(Schedule.id == schedule["id"]))
    try:
        _, outcome = fire(stack, schedule["id"])
    finally:
        stack.infra.run(handle(stack, schedule["id"]).delete())
    assert outcome == ScheduledTriggerOutcome(run_id=None, status="skipped",
                                              reason=f"schedule {schedule['id']} no longer exists")
    assert schedule_runs(client, pipeline["id"]) == []


def test_inputs_the_pipeline_no_longer_accepts_fail_the_fire_with_a_typed_error(stack):
    client = stack.account().client
    pipeline = create_pipeline(client)
    schedule = create_schedule(client, pipeline["id"])
    document = client.get(f"/pipelines/{pipeline['id']}/export", params={"format": "json"}).json()
    document["inputs"] = {"target": {"type": "string", "required": True}}
    assert client.put(f"/pipelines/{pipeline['id']}", json=document).status_code == 200
    _, failure = fire(stack, schedule["id"])
    assert isinstance(failure, WorkflowFailureError)
    cause = failure.cause.cause  # workflow failure <- activity error <- application error
    assert isinstance(cause, ApplicationError) and cause.type == SCHEDULE_INPUTS_INVALID and cause.non_retryable
    assert "inputs.target: this input is required" in cause.message
    assert schedule_runs(client, pipeline["id"]) == []
    # and the API says so before firing
    response = client.post(f"/schedules/{schedule['id']}/trigger")
    assert response.status_code == 409 and "inputs.target: this input is required" in response.json()["detail"]


def test_a_retried_start_finds_the_run_its_first_try_created(stack):
    acct = stack.account()
    pipeline = create_pipeline(acct.client)
    schedule = create_schedule(acct.client, pipeline["id"])
    activities = ScheduleActivities(stack.settings, stack.sessions, stack.temporal)
    inp = StartScheduledRunInput(schedule_id=schedule["id"], account_id=acct.id,
                                 trigger_workflow_id=f"schedule-{schedule['id']}-trigger-test",
                                 scheduled_at=datetime.now(UTC).isoformat())

    async def twice() -> list[Any]:
        env = ActivityEnvironment()
        return [await env.run(activities.start_scheduled_run, inp) for _ in range(2)]

    first, second = stack.infra.run(twice())
    assert first.run_id is not None and second.run_id == first.run_id
    [run] = schedule_runs(acct.client, pipeline["id"])
    assert run["id"] == first.run_id and wait_run(acct.client, run["id"])["status"] == "success"


@pytest.mark.parametrize("allow_concurrent", [True, False])
def test_await_run_answers_when_the_run_has_finished(stack, allow_concurrent):
    acct = stack.account()
    pipeline = create_pipeline(acct.client, "sleep 1", allow_concurrent=allow_concurrent)
    schedule = create_schedule(acct.client, pipeline["id"])
    activities = ScheduleActivities(stack.settings, stack.sessions, stack.temporal)

    async def start_and_wait() -> tuple[Any, Any, Any]:
        env = ActivityEnvironment()
        started = await env.run(activities.start_scheduled_run, StartScheduledRunInput(
            schedule_id=schedule["id"], account_id=acct.id, trigger_workflow_id=f"t-{uuid.uuid4().hex}",
            scheduled_at=datetime.now(UTC).isoformat()))
        short = await env.run(activities.await_run, AwaitRunInput(run_id=started.run_id, account_id=acct.id,
                                                                  max_wait_seconds=0.2))
        full = await env.run(activities.await_run, AwaitRunInput(run_id=started.run_id, account_id=acct.id,
                                                                 max_wait_seconds=30))
        return started, short, full

    started, short, full = stack.infra.run(start_and_wait())
    assert short.finished is False and short.status in ("pending", "queued", "running")
    assert full.finished is True and full.status == "success"
    run = acct.client.get(f"/pipeline_runs/{started.run_id}").json()
    assert run["status"] == "success"
