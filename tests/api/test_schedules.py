"""The schedules routes against the real dev server: each row is a Temporal Schedule created,
updated, paused and deleted with it; 422s name the field and change nothing; pipeline
documents' triggers.schedule follow pipeline saves; reconcile repairs what drifted."""

from __future__ import annotations

import logging
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from temporalio.client import (
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleDescription,
    ScheduleOverlapPolicy,
    ScheduleSpec,
    ScheduleState,
)
from temporalio.service import RPCError, RPCStatusCode

from db.models import Schedule as ScheduleRow
from services.schedules import reconcile_schedules
from tests.harness import ApiServer, free_port, wait_for, wait_run
from workflows.scheduled_trigger import ScheduledTriggerInput

DAILY = "0 3 * * *"


def step(step_id: str = "a", command: str = "true") -> dict[str, Any]:
    return {"id": step_id, "type": "run_tests", "with": {"command": command}}


def create_pipeline(client: httpx.Client, **fields: Any) -> dict[str, Any]:
    document = {"name": f"p-{uuid.uuid4().hex[:8]}", "steps": [step()], **fields}
    response = client.post("/pipelines", json=document)
    assert response.status_code == 201, response.text
    return response.json()


def create_schedule(client: httpx.Client, pipeline_id: int, **fields: Any) -> dict[str, Any]:
    response = client.post("/schedules", json={"pipeline_id": pipeline_id, "cron": DAILY, **fields})
    assert response.status_code == 201, response.text
    return response.json()


def describe(stack, schedule_id: int) -> ScheduleDescription:
    return stack.infra.run(stack.temporal.get_schedule_handle(f"schedule-{schedule_id}").describe())


def in_temporal(stack, schedule_id: int) -> bool:
    try:
        describe(stack, schedule_id)
    except RPCError as exc:
        assert exc.status == RPCStatusCode.NOT_FOUND
        return False
    return True


def memo_cron(stack, description: ScheduleDescription) -> str:
    payload = description.schedule.action.memo["cron"]
    return stack.temporal.data_converter.payload_converter.from_payload(payload)


def schedule_rows(stack, account_id: int) -> int:
    with stack.sessions() as session:
        return session.scalar(select(func.count()).select_from(ScheduleRow).where(ScheduleRow.account_id == account_id))


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


# ---- create, read, Temporal's view ---------------------------------------------------------


def test_create_makes_the_temporal_schedule_and_answers_its_next_five_fires(stack):
    client = stack.account().client
    pipeline = create_pipeline(client, inputs={"greeting": {"type": "string", "default": "hi"}})
    created = create_schedule(client, pipeline["id"], cron="* * * * *", inputs={"greeting": "tick"},
                              description="every minute")
    try:
        assert created["temporal_schedule_id"] == f"schedule-{created['id']}"
        assert (created["pipeline_id"], created["cron"], created["timezone"]) == (pipeline["id"], "* * * * *", "UTC")
        assert created["inputs"] == {"greeting": "tick"} and created["description"] == "every minute"
        assert created["is_active"] is True and created["source"] == "api"
        assert created["temporal_state"] == "scheduled" and created["overlap_policy"] == "allow_all"
        assert created["last_run"] is None and created["last_run_at"] is None
        # the next 5 minute boundaries, as Temporal computes them
        times = [utc(t) for t in created["next_run_times"]]
        assert len(times) == 5
        assert all(t.second == 0 and t.microsecond == 0 for t in times)
        assert all(b - a == timedelta(minutes=1) for a, b in zip(times, times[1:], strict=False))
        assert datetime.now(UTC) - timedelta(seconds=5) < times[0] <= datetime.now(UTC) + timedelta(minutes=1)

        description = describe(stack, created["id"])
        action = description.schedule.action
        assert isinstance(action, ScheduleActionStartWorkflow)
        assert action.workflow == "ScheduledTriggerWorkflow" and action.task_queue == stack.settings.task_queue
        assert description.schedule.spec.time_zone_name == "UTC"
        assert memo_cron(stack, description) == "* * * * *"
        assert description.schedule.state.paused is False

        shown = client.get(f"/schedules/{created['id']}").json()
        assert shown["id"] == created["id"] and len(shown["next_run_times"]) == 5
        listed = client.get("/schedules", params={"pipeline_id": pipeline["id"]}).json()
        assert listed["count"] == 1 and [s["id"] for s in listed["data"]] == [created["id"]]
    finally:
        assert client.delete(f"/schedules/{created['id']}").status_code == 204


def test_the_time_zone_reaches_temporal(stack):
    client = stack.account().client
    created = create_schedule(client, create_pipeline(client)["id"], cron="30 2 * * *", timezone="Asia/Kolkata")
    times = [utc(t) for t in created["next_run_times"]]
    # 02:30 in Kolkata (UTC+05:30, no daylight saving) is 21:00 UTC the day before
    assert len(times) == 5 and all((t.hour, t.minute) == (21, 0) for t in times)
    assert describe(stack, created["id"]).schedule.spec.time_zone_name == "Asia/Kolkata"


# ---- validation: 422 naming the field, nothing changed --------------------------------------


@pytest.mark.parametrize("case, body, loc, message", [
    ("bad_cron", {"cron": "61 * * * *"}, ["body", "cron"], "not a valid 5-field cron expression"),
    ("six_fields", {"cron": "0 0 3 * * *"}, ["body", "cron"], "not a valid 5-field cron expression"),
    ("cron_temporal_refuses", {"cron": "0 0 L * *"}, ["body", "cron"], "Temporal refused the schedule"),
    ("bad_timezone", {"timezone": "Mars/Olympus"}, ["body", "timezone"], "unknown time zone 'Mars/Olympus'"),
    ("unknown_input", {"inputs": {"nope": 1}}, ["body", "inputs", "nope"], "unknown input 'nope'"),
    ("input_type", {"inputs": {"target": "x", "times": "many"}}, ["body", "inputs", "times"], "expected a number"),
    ("missing_required_input", {"inputs": {}}, ["body", "inputs", "target"], "this input is required"),
    ("other_accounts_pipeline", {"pipeline_id": "other"}, ["body", "pipeline_id"], "not found in this account"),
])
def test_bad_input_answers_422_naming_the_field_and_changes_nothing(stack, case, body, loc, message):
    acct = stack.account()
    pipeline = create_pipeline(acct.client, inputs={"target": {"type": "string", "required": True},
                                                    "times": {"type": "number", "default": 1}})
    request = {"pipeline_id": pipeline["id"], "cron": DAILY, "inputs": {"target": "prod"}, **body}
    if body.get("pipeline_id") == "other":
        other = stack.account().client
        request["pipeline_id"] = create_pipeline(other)["id"]
    response = acct.client.post("/schedules", json=request)
    assert response.status_code == 422, response.text
    problems = response.json()["detail"]
    assert any(p["loc"] == loc and message in p["msg"] for p in problems), problems
    assert schedule_rows(stack, acct.id) == 0
    assert acct.client.get("/schedules").json()["count"] == 0


def test_a_bad_patch_changes_neither_the_row_nor_temporal(stack):
    client = stack.account().client
    created = create_schedule(client, create_pipeline(client)["id"])
    for body, loc in [({"cron": "0 0 L * *"}, ["body", "cron"]), ({"timezone": "Nowhere/Land"}, ["body", "timezone"]),
                      ({"cron": None}, ["body", "cron"]), ({"inputs": {"x": 1}}, ["body", "inputs", "x"])]:
        response = client.patch(f"/schedules/{created['id']}", json=body)
        assert response.status_code == 422, response.text
        assert response.json()["detail"][0]["loc"] == loc
    shown = client.get(f"/schedules/{created['id']}").json()
    assert (shown["cron"], shown["timezone"], shown["inputs"]) == (DAILY, "UTC", {})
    description = describe(stack, created["id"])
    assert memo_cron(stack, description) == DAILY and description.schedule.spec.time_zone_name == "UTC"


def test_patch_updates_the_temporal_schedule(stack):
    client = stack.account().client
    created = create_schedule(client, create_pipeline(client)["id"])
    updated = client.patch(f"/schedules/{created['id']}", json={"cron": "15 4 * * *", "timezone": "Asia/Tokyo",
                                                                "description": "nightly"})
    assert updated.status_code == 200, updated.text
    body = updated.json()
    assert (body["cron"], body["timezone"], body["description"]) == ("15 4 * * *", "Asia/Tokyo", "nightly")
    # 04:15 in Tokyo (UTC+9) is 19:15 UTC
    assert all((utc(t).hour, utc(t).minute) == (19, 15) for t in body["next_run_times"])
    description = describe(stack, created["id"])
    assert memo_cron(stack, description) == "15 4 * * *"
    assert description.schedule.spec.time_zone_name == "Asia/Tokyo"


# ---- pause, delete, trigger ----------------------------------------------------------------


def test_is_active_pauses_and_unpauses_the_temporal_schedule(stack):
    client = stack.account().client
    created = create_schedule(client, create_pipeline(client)["id"])
    paused = client.patch(f"/schedules/{created['id']}", json={"is_active": False}).json()
    assert paused["is_active"] is False and paused["temporal_state"] == "paused"
    state = describe(stack, created["id"]).schedule.state
    assert state.paused is True and "is_active false" in (state.note or "")
    assert client.get("/schedules", params={"is_active": False}).json()["count"] == 1
    resumed = client.patch(f"/schedules/{created['id']}", json={"is_active": True}).json()
    assert resumed["temporal_state"] == "scheduled"
    assert describe(stack, created["id"]).schedule.state.paused is False


def test_a_schedule_can_be_created_paused(stack):
    client = stack.account().client
    created = create_schedule(client, create_pipeline(client)["id"], is_active=False)
    assert created["temporal_state"] == "paused" and describe(stack, created["id"]).schedule.state.paused


def test_delete_removes_the_temporal_schedule(stack):
    client = stack.account().client
    created = create_schedule(client, create_pipeline(client)["id"])
    assert in_temporal(stack, created["id"])
    assert client.delete(f"/schedules/{created['id']}").status_code == 204
    with pytest.raises(RPCError) as raised:
        describe(stack, created["id"])
    assert raised.value.status == RPCStatusCode.NOT_FOUND
    assert client.get(f"/schedules/{created['id']}").status_code == 404


def test_trigger_runs_now_through_the_temporal_schedule(stack):
    client = stack.account().client
    pipeline = create_pipeline(client, inputs={"greeting": {"type": "string"}},
                               steps=[{"id": "say", "type": "run_tests", "with": {
                                   "command": 'echo "said=$G/$S" >> "$DEVOPS_OUTPUT"',
                                   "env": {"G": "${{ inputs.greeting }}", "S": "${{ trigger.schedule_id }}"}}}])
    created = create_schedule(client, pipeline["id"], inputs={"greeting": "hello"}, is_active=False)
    response = client.post(f"/schedules/{created['id']}/trigger")
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["trigger_workflow_id"].startswith(f"schedule-{created['id']}-trigger-")
    run = body["run"]
    assert run is not None and run["trigger_type"] == "schedule" and run["pipeline_id"] == pipeline["id"]
    assert run["trigger_context"]["schedule_id"] == created["id"]
    assert run["trigger_context"]["trigger_workflow_id"] == body["trigger_workflow_id"]
    finished = wait_run(client, run["id"])
    assert finished["status"] == "success", finished
    assert finished["outputs"]["say"] == {"said": f"hello/{created['id']}"}
    # it went through Temporal's Schedule, which counts it (a paused schedule can still be run now)
    assert describe(stack, created["id"]).info.num_actions == 1
    shown = client.get(f"/schedules/{created['id']}").json()
    assert shown["last_run"]["id"] == run["id"] and shown["last_run"]["status"] == "success"
    assert shown["last_run"]["started_at"] is not None and shown["last_run_at"] is not None
    assert client.get("/pipeline_runs", params={"trigger_type": "schedule"}).json()["count"] == 1


def test_trigger_refuses_an_inactive_pipeline(stack):
    client = stack.account().client
    pipeline = create_pipeline(client)
    created = create_schedule(client, pipeline["id"])
    client.patch(f"/pipelines/{pipeline['id']}", json={"is_active": False})
    response = client.post(f"/schedules/{created['id']}/trigger")
    assert response.status_code == 409 and "inactive" in response.json()["detail"]
    assert describe(stack, created["id"]).info.num_actions == 0


# ---- accounts and roles --------------------------------------------------------------------


def test_another_accounts_schedule_answers_404_on_every_route(stack):
    owner = stack.account().client
    created = create_schedule(owner, create_pipeline(owner)["id"])
    other = stack.account().client
    path = f"/schedules/{created['id']}"
    for method, url, body in [("GET", path, None), ("PATCH", path, {"is_active": False}), ("DELETE", path, None),
                              ("POST", f"{path}/trigger", None)]:
        response = other.request(method, url, json=body)
        assert response.status_code == 404, (method, url, response.text)
        assert response.json()["detail"] == "schedule not found"
    assert other.get("/schedules").json() == {"data": [], "count": 0}
    assert in_temporal(stack, created["id"]) and describe(stack, created["id"]).schedule.state.paused is False


def test_a_viewer_reads_but_cannot_change_schedules(stack):
    viewer = stack.account(role="viewer").client
    assert viewer.get("/schedules").status_code == 200
    for method, url in [("POST", "/schedules"), ("PATCH", "/schedules/1"), ("DELETE", "/schedules/1"),
                        ("POST", "/schedules/1/trigger")]:
        response = viewer.request(method, url, json={"pipeline_id": 1, "cron": DAILY} if method == "POST" else {})
        assert response.status_code == 403, (method, url, response.text)


# ---- pipeline documents and allow_concurrent ------------------------------------------------


def document_schedules(client: httpx.Client, pipeline_id: int) -> list[dict[str, Any]]:
    return [s for s in client.get("/schedules", params={"pipeline_id": pipeline_id}).json()["data"]
            if s["source"] == "document"]


def test_a_document_schedule_follows_pipeline_saves(stack):
    client = stack.account().client
    document = {"name": f"doc-{uuid.uuid4().hex[:6]}", "steps": [step()],
                "inputs": {"greeting": {"type": "string", "default": "hi"}},
                "triggers": {"manual": {}, "schedule": {"cron": DAILY, "timezone": "UTC", "inputs": {"greeting": "x"}}}}
    pipeline = client.post("/pipelines", json=document).json()
    [schedule] = document_schedules(client, pipeline["id"])
    assert (schedule["cron"], schedule["timezone"], schedule["inputs"]) == (DAILY, "UTC", {"greeting": "x"})
    assert memo_cron(stack, describe(stack, schedule["id"])) == DAILY

    # replacing the document updates the same schedule
    document["triggers"]["schedule"] = {"cron": "15 4 * * *", "timezone": "Asia/Tokyo"}
    assert client.put(f"/pipelines/{pipeline['id']}", json=document).status_code == 200
    [updated] = document_schedules(client, pipeline["id"])
    assert updated["id"] == schedule["id"] and (updated["cron"], updated["timezone"]) == ("15 4 * * *", "Asia/Tokyo")
    assert all((utc(t).hour, utc(t).minute) == (19, 15) for t in updated["next_run_times"])

    # its definition belongs to the document; pausing it here is fine and survives saves
    assert client.patch(f"/schedules/{schedule['id']}", json={"cron": "0 5 * * *"}).status_code == 409
    assert client.delete(f"/schedules/{schedule['id']}").status_code == 409
    assert client.patch(f"/schedules/{schedule['id']}", json={"is_active": False}).status_code == 200
    assert client.patch(f"/pipelines/{pipeline['id']}", json={"description": "changed"}).status_code == 200
    assert describe(stack, schedule["id"]).schedule.state.paused is True

    # a document without triggers.schedule removes it, from the database and from Temporal
    assert client.patch(f"/pipelines/{pipeline['id']}", json={"triggers": {"manual": {}}}).status_code == 200
    assert document_schedules(client, pipeline["id"]) == []
    assert not in_temporal(stack, schedule["id"])


def test_an_imported_yaml_document_creates_its_schedule(stack):
    client = stack.account().client
    yaml_text = (f"name: imported-{uuid.uuid4().hex[:6]}\n"
                 "triggers:\n  schedule: {cron: '*/30 * * * *', timezone: Europe/Paris}\n"
                 "steps:\n  - {id: a, type: run_tests, with: {command: 'true'}}\n")
    response = client.post("/pipelines/import", content=yaml_text, headers={"Content-Type": "application/yaml"})
    assert response.status_code == 201, response.text
    [schedule] = document_schedules(client, response.json()["id"])
    assert schedule["cron"] == "*/30 * * * *" and schedule["timezone"] == "Europe/Paris"
    assert in_temporal(stack, schedule["id"])


def test_a_bad_document_schedule_answers_422_and_saves_nothing(stack):
    acct = stack.account()
    base = {"name": "bad-doc", "steps": [step()], "inputs": {"n": {"type": "number"}}}
    cases = [({"cron": DAILY, "inputs": {"n": "lots"}}, ["body", "triggers", "schedule", "inputs", "n"]),
             ({"cron": DAILY, "inputs": {"m": 1}}, ["body", "triggers", "schedule", "inputs", "m"]),
             ({"cron": "0 0 L * *"}, ["body", "triggers", "schedule", "cron"])]
    for trigger, loc in cases:
        response = acct.client.post("/pipelines", json={**base, "triggers": {"schedule": trigger}})
        assert response.status_code == 422, response.text
        assert [p["loc"] for p in response.json()["detail"]] == [loc]
    assert acct.client.get("/pipelines").json()["count"] == 0
    assert schedule_rows(stack, acct.id) == 0


def test_clone_gets_its_own_schedule_and_deleting_a_pipeline_deletes_its_schedules(stack):
    client = stack.account().client
    pipeline = create_pipeline(client, triggers={"schedule": {"cron": DAILY}})
    [from_document] = document_schedules(client, pipeline["id"])
    extra = create_schedule(client, pipeline["id"], cron="0 12 * * *")
    clone = client.post(f"/pipelines/{pipeline['id']}/clone").json()
    [cloned] = document_schedules(client, clone["id"])
    assert cloned["id"] not in (from_document["id"], extra["id"]) and in_temporal(stack, cloned["id"])

    assert client.delete(f"/pipelines/{pipeline['id']}").status_code == 204
    for gone in (from_document["id"], extra["id"]):
        assert client.get(f"/schedules/{gone}").status_code == 404
        assert not in_temporal(stack, gone)
    assert client.get(f"/schedules/{cloned['id']}").status_code == 200 and in_temporal(stack, cloned["id"])


def test_overlap_policy_follows_allow_concurrent(stack):
    client = stack.account().client
    pipeline = create_pipeline(client, allow_concurrent=False, triggers={"schedule": {"cron": DAILY}})
    [from_document] = document_schedules(client, pipeline["id"])
    extra = create_schedule(client, pipeline["id"])
    assert extra["overlap_policy"] == "skip" and from_document["overlap_policy"] == "skip"
    for schedule_id in (from_document["id"], extra["id"]):
        assert describe(stack, schedule_id).schedule.policy.overlap == ScheduleOverlapPolicy.SKIP
    assert client.patch(f"/pipelines/{pipeline['id']}", json={"allow_concurrent": True}).status_code == 200
    for schedule_id in (from_document["id"], extra["id"]):
        assert describe(stack, schedule_id).schedule.policy.overlap == ScheduleOverlapPolicy.ALLOW_ALL
    assert client.get(f"/schedules/{extra['id']}").json()["overlap_policy"] == "allow_all"


# ---- reconcile and Temporal outages ---------------------------------------------------------


async def _listed_ids(stack) -> set[str]:
    return {s.id async for s in await stack.temporal.list_schedules()}


def _orphan(stack) -> str:
    """A Temporal Schedule with our prefix and no row (an id far beyond any row's)."""
    orphan_id = f"schedule-{10**9 + uuid.uuid4().int % 10**6}"
    stack.infra.run(stack.temporal.create_schedule(orphan_id, Schedule(
        action=ScheduleActionStartWorkflow("ScheduledTriggerWorkflow", ScheduledTriggerInput(schedule_id=0, account_id=0),
                                           id=f"{orphan_id}-trigger", task_queue=stack.settings.task_queue),
        spec=ScheduleSpec(cron_expressions=[DAILY]), state=ScheduleState(paused=True))))
    return orphan_id


def test_reconcile_repairs_what_drifted_and_removes_orphans(stack, caplog):
    client = stack.account().client
    pipeline = create_pipeline(client)
    deleted = create_schedule(client, pipeline["id"])
    drifted = create_schedule(client, pipeline["id"])
    stack.infra.run(stack.temporal.get_schedule_handle(f"schedule-{deleted['id']}").delete())
    stack.infra.run(stack.temporal.get_schedule_handle(f"schedule-{drifted['id']}").pause(note="paused in the UI"))
    orphan_id = _orphan(stack)
    wait_for(lambda: orphan_id in stack.infra.run(_listed_ids(stack)), message="the orphan to be listed")
    assert client.get(f"/schedules/{deleted['id']}").json()["temporal_state"] == "missing"

    with caplog.at_level(logging.INFO, logger="services.schedules"):
        report = stack.infra.run(reconcile_schedules(stack.temporal, stack.sessions, stack.settings))
    assert deleted["id"] in report.recreated
    assert drifted["id"] in report.updated
    assert orphan_id in report.orphans_removed
    assert report.summary().startswith("schedules reconciled: ")
    assert f"{len(report.recreated)} recreated" in report.summary()
    assert report.summary() in caplog.text
    assert f"schedule {deleted['id']}: schedule-{deleted['id']} was missing in Temporal; recreated" in caplog.text

    assert in_temporal(stack, deleted["id"]) and memo_cron(stack, describe(stack, deleted["id"])) == DAILY
    assert describe(stack, drifted["id"]).schedule.state.paused is False
    with pytest.raises(RPCError):
        stack.infra.run(stack.temporal.get_schedule_handle(orphan_id).describe())
    assert client.get(f"/schedules/{deleted['id']}").json()["temporal_state"] == "scheduled"

    again = stack.infra.run(reconcile_schedules(stack.temporal, stack.sessions, stack.settings))
    assert deleted["id"] not in again.recreated + again.updated and drifted["id"] not in again.updated


def test_the_api_reconciles_when_it_starts(stack):
    client = stack.account().client
    created = create_schedule(client, create_pipeline(client)["id"])
    stack.infra.run(stack.temporal.get_schedule_handle(f"schedule-{created['id']}").delete())
    server = ApiServer(stack.settings)  # its lifespan reconciles in the background
    try:
        wait_for(lambda: in_temporal(stack, created["id"]), timeout=15, message="the start-up reconcile")
    finally:
        server.stop()


def test_temporal_unavailable_answers_503_and_saves_nothing(stack):
    acct = stack.account()
    pipeline = create_pipeline(acct.client)
    settings = stack.settings.model_copy(update={"temporal_address": f"127.0.0.1:{free_port()}",
                                                 "schedule_reconcile_on_start": False})
    server = ApiServer(settings)
    down = httpx.Client(base_url=f"{server.url}/api/v1/devops", headers={"Authorization": f"Bearer {acct.token}"})
    try:
        response = down.post("/schedules", json={"pipeline_id": pipeline["id"], "cron": DAILY})
        assert response.status_code == 503, response.text
        assert "Temporal is unavailable" in response.json()["detail"]
        assert "the schedule was not created" in response.json()["detail"]
        document = {"name": "with-schedule", "steps": [step()], "triggers": {"schedule": {"cron": DAILY}}}
        assert down.post("/pipelines", json=document).status_code == 503
        listed = down.get("/schedules")  # reads still answer, saying Temporal cannot be asked
        assert listed.status_code == 200 and listed.json()["count"] == 0
    finally:
        down.close()
        server.stop()
    assert schedule_rows(stack, acct.id) == 0
    assert acct.client.get("/pipelines").json()["count"] == 1


def test_the_start_up_reconcile_can_be_switched_off(stack):
    client = stack.account().client
    created = create_schedule(client, create_pipeline(client)["id"])
    stack.infra.run(stack.temporal.get_schedule_handle(f"schedule-{created['id']}").delete())
    server = ApiServer(stack.settings.model_copy(update={"schedule_reconcile_on_start": False}))
    try:
        time.sleep(0.5)
        assert not in_temporal(stack, created["id"])
    finally:
        server.stop()
    stack.infra.run(reconcile_schedules(stack.temporal, stack.sessions, stack.settings))
    assert in_temporal(stack, created["id"])
