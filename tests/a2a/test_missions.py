"""POST /missions/trigger: a run for an external mission, with its context, once per mission + task."""

from __future__ import annotations

import uuid

from tests.harness import wait_run
from tests.workflows.test_pipeline_run import create_pipeline, sh


def mission(acct, **body) -> object:
    body.setdefault("mission_id", f"m-{uuid.uuid4().hex[:8]}")
    return acct.client.post("/missions/trigger", json=body)


def test_a_mission_starts_a_run_whose_steps_read_its_context_as_data(stack):
    acct = stack.account()
    name = f"mission-{uuid.uuid4().hex[:6]}"
    pid = create_pipeline(acct, name=name, steps=[
        sh("read", 'printf "goal=%s\\n" "$GOAL" >> "$DEVOPS_OUTPUT"',
           env={"GOAL": "${{ trigger.mission.context.goal }}"})])
    hostile = 'ship it"; touch /tmp/pwned-$$; echo "'
    first = mission(acct, pipeline=name, mission_id="m-1", a2a_task_id="task-1", context={"goal": hostile})
    assert first.status_code == 201, first.text
    run = first.json()
    assert run["trigger_type"] == "mission" and run["pipeline_id"] == pid and run["a2a_task_id"] == "task-1"
    assert run["trigger_context"]["mission"] == {"id": "m-1", "context": {"goal": hostile}}
    done = wait_run(acct.client, run["id"])
    assert done["status"] == "success", done
    assert done["outputs"]["read"] == {"goal": hostile}  # verbatim: never spliced into the shell
    again = mission(acct, pipeline_id=pid, mission_id="m-1", a2a_task_id="task-1", context={"goal": "other"})
    assert again.status_code == 200 and again.json()["id"] == run["id"]
    other_task = mission(acct, pipeline_id=pid, mission_id="m-1", a2a_task_id="task-2")
    assert other_task.status_code == 201 and other_task.json()["id"] != run["id"]
    audit = acct.client.get("/audit_events", params={"action": "mission.triggered"}).json()
    assert any(e["action"] == "mission.triggered" for e in audit["data"])


def test_bad_missions_are_refused_and_start_nothing(stack):
    acct = stack.account()
    pid = create_pipeline(acct, inputs={"n": {"type": "number"}}, steps=[sh("ok", "true")])
    big = mission(acct, pipeline_id=pid, context={"blob": "x" * (64 * 1024)})
    assert big.status_code == 422 and big.json()["detail"][0]["loc"] == ["body", "context"]
    bad_url = mission(acct, pipeline_id=pid, callback_url="file:///etc/passwd", inputs={"n": 1})
    assert bad_url.status_code == 422 and bad_url.json()["detail"][0]["loc"] == ["body", "callback_url"]
    bad_input = mission(acct, pipeline_id=pid, inputs={"n": "many"})
    assert bad_input.status_code == 422 and "inputs" in str(bad_input.json()["detail"][0]["loc"])
    assert mission(acct, pipeline="no-such-pipeline").status_code == 404
    assert mission(acct, pipeline_id=999_999_999).status_code == 404
    assert mission(acct).status_code == 422  # neither pipeline_id nor pipeline
    long_id = mission(acct, pipeline_id=pid, mission_id="m" * 201)
    assert long_id.status_code == 422 and long_id.json()["detail"][0]["loc"] == ["body", "mission_id"]
    other = stack.account()
    assert mission(other, pipeline_id=pid, inputs={"n": 1}).status_code == 404
    assert acct.client.get("/pipeline_runs").json()["data"] == []
