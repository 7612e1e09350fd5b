"""A2A task links: a finished run (or container execution) tells the linked task's callback
URL, signed, durably (A2ACallbackWorkflow retries on 5xx, stops at 4xx)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from activities.containers.callbacks import callback_signing_key
from tests.a2a.receiver import Receiver
from tests.docker_support import busybox_image, docker_or_skip
from tests.harness import wait_for, wait_run
from tests.workflows.test_pipeline_run import create_pipeline, sh, steps_by_id
from workflows.a2a_callback import callback_workflow_id


@pytest.fixture
def receiver_factory():
    made: list[Receiver] = []

    def make(key: bytes, codes: list[int] | None = None) -> Receiver:
        made.append(Receiver(key, codes))
        return made[-1]

    yield make
    for receiver in made:
        receiver.close()


def put_secret(acct, name: str, value: str) -> None:
    assert acct.client.put("/secrets", json={"name": name, "value": value}).status_code in (200, 201)


def trigger_linked(acct, pipeline_id: int, **link) -> dict:
    response = acct.client.post(f"/pipelines/{pipeline_id}/trigger", json=link)
    assert response.status_code == 201, response.text
    return response.json()


def callback_status(acct, run_id: int, prefix: str) -> str:
    return wait_for(lambda: (s := acct.client.get(f"/pipeline_runs/{run_id}").json()["a2a_callback_status"])
                    and s.startswith(prefix) and s, timeout=30, message=f"callback status {prefix}")


def test_a_linked_run_sends_a_signed_callback_with_its_outcome(stack, receiver_factory):
    acct = stack.account()
    secret = f"A2A_{uuid.uuid4().hex[:6].upper()}"
    put_secret(acct, secret, "the-signing-value")
    receiver = receiver_factory(b"the-signing-value")
    pid = create_pipeline(acct, steps=[sh("hello", 'echo "said=hi" >> "$DEVOPS_OUTPUT"')])
    task = f"task-{uuid.uuid4().hex[:8]}"
    run = trigger_linked(acct, pid, a2a_task_id=task, callback_url=receiver.url, callback_secret=secret)
    assert run["a2a_task_id"] == task and run["a2a_callback_url"] == receiver.url
    assert "the-signing-value" not in str(run) and "callback_secret" not in run
    assert wait_run(acct.client, run["id"])["status"] == "success"
    assert callback_status(acct, run["id"], "delivered") == "delivered: HTTP 200"
    [delivery] = receiver.deliveries
    assert delivery["signature_ok"]
    assert delivery["headers"]["X-Devops-Event"] == "pipeline_run.finished"
    assert delivery["headers"]["X-Devops-Delivery"] == f"run-{run['id']}"
    body = delivery["body"]
    assert body["event"] == "pipeline_run.finished" and body["a2a_task_id"] == task
    assert (body["run_id"], body["run_number"], body["pipeline_id"]) == (run["id"], run["run_number"], pid)
    assert body["status"] == "success" and body["error"] is None
    assert body["outputs"] == {"hello": {"said": "hi"}}
    assert body["started_at"] and body["finished_at"] and body["run_url"].endswith(f"/pipeline_runs/{run['id']}")


def test_a_failed_run_callback_carries_the_failure_signed_with_the_account_key(stack, receiver_factory):
    acct = stack.account()
    receiver = receiver_factory(callback_signing_key(stack.settings, acct.id))
    pid = create_pipeline(acct, steps=[sh("boom", "exit 3")])
    run = trigger_linked(acct, pid, a2a_task_id="t-fail", callback_url=receiver.url)
    assert wait_run(acct.client, run["id"])["status"] == "failure"
    callback_status(acct, run["id"], "delivered")
    [delivery] = receiver.deliveries
    assert delivery["signature_ok"]
    assert delivery["body"]["status"] == "failure" and delivery["body"]["error"]


def test_5xx_answers_are_retried_with_backoff_until_delivered(stack, receiver_factory):
    acct = stack.account()
    receiver = receiver_factory(callback_signing_key(stack.settings, acct.id), codes=[503, 503])
    pid = create_pipeline(acct, steps=[sh("ok", "true")])
    run = trigger_linked(acct, pid, a2a_task_id="t-retry", callback_url=receiver.url)
    wait_run(acct.client, run["id"])
    assert callback_status(acct, run["id"], "delivered") == "delivered: HTTP 200"
    assert [d["code"] for d in receiver.deliveries] == [503, 503, 200]
    # the same delivery id every attempt: the receiver can de-duplicate
    assert {d["headers"]["X-Devops-Delivery"] for d in receiver.deliveries} == {f"run-{run['id']}"}


def test_a_4xx_answer_is_recorded_as_failed_and_not_retried(stack, receiver_factory):
    acct = stack.account()
    receiver = receiver_factory(b"unused", codes=[404, 404, 404])
    pid = create_pipeline(acct, steps=[sh("ok", "true")])
    run = trigger_linked(acct, pid, a2a_task_id="t-404", callback_url=receiver.url)
    wait_run(acct.client, run["id"])
    assert callback_status(acct, run["id"], "failed") == "failed: HTTP 404"
    handle = stack.temporal.get_workflow_handle(callback_workflow_id("run", run["id"]))
    assert stack.infra.run(handle.result()) == "failed: HTTP 404"  # the delivery ended: no retry to come
    assert len(receiver.deliveries) == 1


def test_a_cancelled_run_sends_its_callback_with_status_cancelled(stack, receiver_factory):
    acct = stack.account()
    receiver = receiver_factory(callback_signing_key(stack.settings, acct.id))
    pid = create_pipeline(acct, steps=[sh("long", "sleep 300"), sh("never", "true")])
    run = trigger_linked(acct, pid, a2a_task_id="t-cancel", callback_url=receiver.url)
    wait_for(lambda: steps_by_id(acct.client.get(f"/pipeline_runs/{run['id']}").json())["long"]["status"]
             == "running", message="the step to start")
    assert acct.client.post(f"/pipeline_runs/{run['id']}/cancel").status_code == 202
    assert wait_run(acct.client, run["id"], timeout=30)["status"] == "cancelled"
    assert callback_status(acct, run["id"], "delivered") == "delivered: HTTP 200"
    [delivery] = receiver.deliveries
    assert delivery["signature_ok"]
    body = delivery["body"]
    assert (body["a2a_task_id"], body["run_id"], body["status"]) == ("t-cancel", run["id"], "cancelled")
    assert body["error"] == "run cancelled" and body["finished_at"]


@contextmanager
def callback_attempts(stack, attempts: int) -> Iterator[None]:
    """The running API (the run's workflow input) and worker (the activity's last-attempt check)
    read this very settings object; tests in a process run one at a time."""
    before = stack.settings.a2a_callback_max_attempts
    stack.settings.a2a_callback_max_attempts = attempts
    try:
        yield
    finally:
        stack.settings.a2a_callback_max_attempts = before


def test_a_receiver_failing_every_attempt_is_given_up_after_the_configured_attempts(stack, receiver_factory):
    acct = stack.account()
    receiver = receiver_factory(callback_signing_key(stack.settings, acct.id), codes=[503] * 5)
    pid = create_pipeline(acct, steps=[sh("ok", "true")])
    with callback_attempts(stack, 2):
        run = trigger_linked(acct, pid, a2a_task_id="t-gave-up", callback_url=receiver.url)
        assert wait_run(acct.client, run["id"])["status"] == "success"
        status = callback_status(acct, run["id"], "gave up after")
    assert status == "gave up after 2 attempts: HTTP 503"
    assert [d["code"] for d in receiver.deliveries] == [503, 503]
    assert all(d["signature_ok"] for d in receiver.deliveries)
    closed = stack.infra.run(stack.temporal.get_workflow_handle(callback_workflow_id("run", run["id"])).result())
    assert closed == status  # the workflow ends with the same answer: no attempt after it


def test_a_retry_keeps_the_link(stack, receiver_factory):
    acct = stack.account()
    receiver = receiver_factory(callback_signing_key(stack.settings, acct.id))
    pid = create_pipeline(acct, steps=[sh("boom", "exit 1")])
    run = trigger_linked(acct, pid, a2a_task_id="t-again", callback_url=receiver.url)
    wait_run(acct.client, run["id"])
    again = acct.client.post(f"/pipeline_runs/{run['id']}/retry")
    assert again.status_code == 201, again.text
    assert again.json()["a2a_task_id"] == "t-again"
    wait_run(acct.client, again.json()["id"])
    wait_for(lambda: len(receiver.deliveries) == 2, timeout=30, message="two callbacks")
    assert {d["body"]["run_id"] for d in receiver.deliveries} == {run["id"], again.json()["id"]}


def test_bad_links_are_refused_naming_the_field(stack):
    from tests.api.test_isolation_targets import private_targets_off

    acct = stack.account()
    pid = create_pipeline(acct, steps=[sh("ok", "true")])
    bad = acct.client.post(f"/pipelines/{pid}/trigger", json={"callback_url": "ftp://example.com/x"})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "callback_url"]
    bad = acct.client.post(f"/pipelines/{pid}/trigger", json={"callback_url": "http://example.com/x",
                                                               "callback_secret": "NO_SUCH_SECRET"})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "callback_secret"]
    bad = acct.client.post(f"/pipelines/{pid}/trigger", json={"a2a_task_id": "x" * 201})
    assert bad.status_code == 422
    with private_targets_off(stack):
        bad = acct.client.post(f"/pipelines/{pid}/trigger", json={"callback_url": "http://127.0.0.1:9/hook"})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "callback_url"]
    runs = acct.client.get("/pipeline_runs", params={"pipeline_id": pid}).json()
    assert runs["data"] == []


def test_a_container_execution_carries_its_a2a_task_id_in_the_callback(stack, receiver_factory):
    image = busybox_image(docker_or_skip())
    acct = stack.account()
    receiver = receiver_factory(callback_signing_key(stack.settings, acct.id))
    response = acct.client.post("/containers", json={"image": image, "command": ["sh", "-c", "exit 0"],
                                                     "callback_url": receiver.url, "a2a_task_id": "c-task"})
    assert response.status_code == 201, response.text
    assert response.json()["a2a_task_id"] == "c-task"
    wait_for(lambda: receiver.deliveries, timeout=60, message="container callback")
    [delivery] = receiver.deliveries
    assert delivery["signature_ok"] and delivery["body"]["a2a_task_id"] == "c-task"
    assert delivery["body"]["event"] == "container.finished"
