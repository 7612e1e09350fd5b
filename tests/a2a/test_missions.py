"""POST /missions/trigger: a run for an external mission, with its context, once per mission + task."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
from sqlalchemy import func, select

from db.models import PipelineRun
from services import missions
from services.audit import Actor
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


def test_concurrent_identical_triggers_start_exactly_one_run(stack):
    """The unique (account, mission key) index, not a check-then-insert, keeps it to one run."""
    acct = stack.account()
    pid = create_pipeline(acct, steps=[sh("ok", "true")])
    body = {"pipeline_id": pid, "mission_id": f"m-{uuid.uuid4().hex[:8]}", "a2a_task_id": "t-race",
            "context": {"goal": "once"}}
    barrier = threading.Barrier(8)

    def post(_: int) -> httpx.Response:
        with httpx.Client(base_url=acct.client.base_url, headers=acct.client.headers, timeout=90) as client:
            barrier.wait(timeout=30)
            return client.post("/missions/trigger", json=body)

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(post, range(8)))
    assert all(a.status_code in (200, 201) for a in answers), [(a.status_code, a.text) for a in answers]
    assert sorted(a.status_code for a in answers) == [200] * 7 + [201]
    [run_id] = {a.json()["id"] for a in answers}
    runs = acct.client.get("/pipeline_runs", params={"pipeline_id": pid}).json()
    assert runs["count"] == 1 and [r["id"] for r in runs["data"]] == [run_id]
    assert wait_run(acct.client, run_id)["status"] == "success"
    audit = acct.client.get("/audit_events", params={"action": "mission.triggered"}).json()["data"]
    assert [e["target_id"] for e in audit] == [str(run_id)]  # the losers' audit events were rolled back


def test_a_trigger_that_loses_the_race_at_commit_answers_the_winners_run(stack, monkeypatch):
    """The race made certain: the loser's lookup found nothing, so its insert meets the winner's
    committed key at commit; it rolls back (run number and audit event included) and answers that run."""
    acct = stack.account()
    pid = create_pipeline(acct, steps=[sh("ok", "true")])
    mission_id = f"m-{uuid.uuid4().hex[:8]}"
    actor = Actor(name="test", user_id=acct.user_id)

    def trigger(session):
        return missions.trigger(session, stack.settings, acct.id, actor, acct.user_id, pipeline_id=pid, pipeline=None,
                                mission_id=mission_id, a2a_task_id="t-1", callback_url=None, callback_secret=None,
                                context={}, inputs={})

    with stack.sessions() as winner_session:
        winner, created = trigger(winner_session)
        assert created and missions.commit_or_existing(winner_session, acct.id, mission_id, "t-1") is None
        winner_id = winner.id
    looked_up = missions.existing_run
    calls = []

    def blind_first_lookup(*args):
        calls.append(args)
        return None if len(calls) == 1 else looked_up(*args)

    monkeypatch.setattr(missions, "existing_run", blind_first_lookup)
    with stack.sessions() as loser_session:
        loser, created = trigger(loser_session)
        assert created and loser.id != winner_id
        found = missions.commit_or_existing(loser_session, acct.id, mission_id, "t-1")
        assert found is not None and found.id == winner_id
    assert len(calls) == 2
    with stack.sessions() as session:
        assert session.scalar(select(func.count()).select_from(PipelineRun)
                              .where(PipelineRun.pipeline_id == pid)) == 1
    # a different task of the same mission is another run
    with stack.sessions() as session:
        other, created = missions.trigger(
            session, stack.settings, acct.id, actor, acct.user_id, pipeline_id=pid, pipeline=None,
            mission_id=mission_id, a2a_task_id=None, callback_url=None, callback_secret=None, context={}, inputs={})
        assert created and missions.commit_or_existing(session, acct.id, mission_id, None) is None
        assert other.id != winner_id
