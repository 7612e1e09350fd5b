"""Approval gates end to end: tokens delivered only to their recipients, decisions through a
Temporal Update over HTTP, refusals, code_factory_gate, and a worker restart while waiting."""

import dataclasses
import json
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from sqlalchemy import select

from api.auth import issue_token
from db.models import Pipeline, RunEvent, StepApprovalToken, User
from services import runs as services
from tests.harness import wait_for, wait_run
from tests.workflows.test_pipeline_run import create_pipeline, sh, steps_by_id, trigger
from workflows.pipeline_run import PipelineRunWorkflow


class Inbox:
    """A recipient's notification endpoint on 127.0.0.1, keeping what it receives."""

    def __init__(self) -> None:
        self.messages: list[dict] = []
        inbox = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                inbox.messages.append(json.loads(body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def link(self, step_id: str, decision: str = "approve") -> str:
        message = wait_for(lambda: next((m for m in self.messages if m["step_id"] == step_id), None),
                           message=f"the approval request for {step_id}")
        return message["links"][decision]

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def inbox():
    box = Inbox()
    yield box
    box.close()


def add_user(stack, acct, role: str = "member", notify_url: str | None = None) -> tuple[str, httpx.Client]:
    """Another user in the same account, with their own API token."""
    email = f"{role}-{uuid.uuid4().hex[:6]}@example.test"
    with stack.sessions.begin() as session:
        user = User(account_id=acct.id, email=email, role=role, notify_url=notify_url)
        session.add(user)
        session.flush()
        token = issue_token(session, user, "test").token
    client = httpx.Client(base_url=f"{stack.url}/api/v1/devops", headers={"Authorization": f"Bearer {token}"},
                          timeout=60)
    stack._clients.append(client)
    return email, client


def gated_pipeline(acct, recipients: list[str], **approval) -> int:
    return create_pipeline(acct, steps=[
        sh("build", 'echo "sha=abc123" >> "$DEVOPS_OUTPUT"'),
        sh("deploy", 'echo "deployed=$SHA" >> "$DEVOPS_OUTPUT"', env={"SHA": "${{ steps.build.outputs.sha }}"},
           requires_approval=True, approval={"recipients": recipients, "timeout_minutes": 60, **approval}),
    ])


def waiting(acct, run_id: int, step_id: str) -> dict:
    return wait_for(lambda: (r := acct.client.get(f"/pipeline_runs/{run_id}").json())
                    and steps_by_id(r)[step_id]["status"] == "waiting_approval" and r,
                    message=f"{step_id} to wait for approval")


def test_a_token_link_approves_the_gate_once_and_the_decision_is_shown(stack, inbox):
    acct = stack.account()
    alice, _ = add_user(stack, acct, notify_url=inbox.url)
    bob, _ = add_user(stack, acct)  # a recipient without a notify URL gets no message
    run = trigger(acct, gated_pipeline(acct, [alice, bob]))
    shown = waiting(acct, run["id"], "deploy")
    assert shown["status"] == "running"
    assert sorted(steps_by_id(shown)["deploy"]["approval"]["recipients"]) == sorted([alice, bob])
    approve = inbox.link("deploy")
    assert [m["recipient"] for m in inbox.messages] == [alice]  # each token reaches only its recipient

    token = approve.rsplit("/", 2)[-2]
    with stack.sessions() as session:
        events = session.scalars(select(RunEvent).where(RunEvent.run_id == run["id"])).all()
        hashes = session.scalars(select(StepApprovalToken.token_hash).where(StepApprovalToken.run_id == run["id"])).all()
    requested = [e for e in events if e.event_type == "approval_requested"]
    assert len(requested) == 1 and token not in json.dumps(requested[0].payload)
    assert token not in hashes and len(hashes) == 2  # stored hashed only
    history = stack.infra.run(stack.temporal.get_workflow_handle(run["workflow_id"]).fetch_history())
    assert token not in history.to_json()  # never in Temporal history

    response = httpx.post(approve, json={"comment": "ship it"})
    assert response.status_code == 200, response.text
    assert response.json() == {"run_id": run["id"], "step_id": "deploy", "decision": "approved",
                               "outcome": "approved", "approvals": 1, "required": 1, "decided_by": alice}
    final = wait_run(acct.client, run["id"])
    assert final["status"] == "success"
    assert steps_by_id(final)["deploy"]["outputs"] == {"deployed": "abc123"}
    assert [(a["decision"], a["decided_by"], a["comment"]) for a in final["approvals"]] == [("approved", alice, "ship it")]
    assert httpx.post(approve, json={}).status_code == 410  # single use
    assert httpx.post(approve.replace(token, token[:-2] + "xx"), json={}).status_code == 404


def test_twenty_parallel_uses_of_one_token_let_exactly_one_through(stack, inbox):
    acct = stack.account()
    alice, _ = add_user(stack, acct, notify_url=inbox.url)
    run = trigger(acct, gated_pipeline(acct, [alice]))
    approve = inbox.link("deploy")
    with ThreadPoolExecutor(20) as pool:
        codes = list(pool.map(lambda _: httpx.post(approve, json={}, timeout=60).status_code, range(20)))
    assert sorted(codes) == [200] + [410] * 19, codes
    assert wait_run(acct.client, run["id"])["status"] == "success"


def test_a_rejection_fails_the_run_with_the_reviewers_reason(stack):
    acct = stack.account()
    bob, bob_client = add_user(stack, acct)
    run = trigger(acct, gated_pipeline(acct, [bob]))
    waiting(acct, run["id"], "deploy")
    response = bob_client.post(f"/pipeline_runs/{run['id']}/steps/deploy/reject", json={"comment": "not on a Friday"})
    assert response.status_code == 200, response.text
    assert response.json()["outcome"] == "rejected"
    final = wait_run(acct.client, run["id"])
    assert final["status"] == "failure"
    assert final["error"] == f"step 'deploy' failed: rejected by {bob}: not on a Friday"
    assert final["approvals"][0]["decision"] == "rejected"


def test_refusals_change_nothing(stack):
    acct = stack.account()
    reviewer, reviewer_client = add_user(stack, acct)
    _outsider, outsider_client = add_user(stack, acct)
    _viewer, viewer_client = add_user(stack, acct, role="viewer")
    stranger = stack.account()
    admin_email = acct.client.get("/users/me").json()["email"]
    run = trigger(acct, gated_pipeline(acct, [reviewer, admin_email], require_comment=True))
    waiting(acct, run["id"], "deploy")
    url = f"/pipeline_runs/{run['id']}/steps/deploy/approve"
    assert outsider_client.post(url, json={"comment": "x"}).status_code == 403  # not a recipient
    assert viewer_client.post(url, json={"comment": "x"}).status_code == 403  # viewers cannot decide
    assert stranger.client.post(url, json={"comment": "x"}).status_code == 404  # another account
    assert reviewer_client.post(url, json={}).status_code == 422  # comment required
    self_approval = acct.client.post(url, json={"comment": "mine"})
    assert self_approval.status_code == 403 and "someone else" in self_approval.json()["detail"]
    assert reviewer_client.post(f"/pipeline_runs/{run['id']}/steps/build/approve", json={"comment": "x"}).status_code == 409
    shown = acct.client.get(f"/pipeline_runs/{run['id']}").json()
    assert shown["approvals"] == [] and steps_by_id(shown)["deploy"]["status"] == "waiting_approval"
    assert reviewer_client.post(url, json={"comment": "fine"}).status_code == 200
    assert wait_run(acct.client, run["id"])["status"] == "success"


def test_min_approvals_needs_distinct_approvers(stack):
    acct = stack.account()
    first, first_client = add_user(stack, acct)
    second, second_client = add_user(stack, acct)
    run = trigger(acct, gated_pipeline(acct, [first, second], min_approvals=2))
    waiting(acct, run["id"], "deploy")
    url = f"/pipeline_runs/{run['id']}/steps/deploy/approve"
    assert first_client.post(url, json={}).json()["outcome"] == "pending"
    assert first_client.post(url, json={}).status_code == 409  # the same person twice
    assert second_client.post(url, json={}).json()["outcome"] == "approved"
    final = wait_run(acct.client, run["id"])
    assert final["status"] == "success" and len(final["approvals"]) == 2


def test_role_recipients_reach_every_user_with_that_role(stack, inbox):
    acct = stack.account()
    lead, lead_client = add_user(stack, acct, role="admin", notify_url=inbox.url)
    run = trigger(acct, gated_pipeline(acct, ["role:admin"], allow_self_approval=True))
    shown = waiting(acct, run["id"], "deploy")
    admin_email = acct.client.get("/users/me").json()["email"]
    assert sorted(steps_by_id(shown)["deploy"]["approval"]["recipients"]) == sorted([admin_email, lead])
    assert inbox.link("deploy")
    assert acct.client.post(f"/pipeline_runs/{run['id']}/steps/deploy/approve", json={}).status_code == 200
    assert wait_run(acct.client, run["id"])["status"] == "success"


def test_code_factory_gate_passes_on_its_own_or_asks_for_approval(stack):
    acct = stack.account()
    reviewer, reviewer_client = add_user(stack, acct)
    pid = create_pipeline(acct, inputs={"failed": {"type": "number", "default": 0}}, steps=[
        sh("tests", 'echo "tests_failed=$F" >> "$DEVOPS_OUTPUT"; echo "coverage=85" >> "$DEVOPS_OUTPUT"',
           env={"F": "${{ inputs.failed }}"}),
        {"id": "gate", "type": "code_factory_gate",
         "with": {"condition": "steps.tests.outputs.tests_failed == 0 && steps.tests.outputs.coverage >= 80"},
         "approval": {"recipients": [reviewer]}},
        sh("merge", "true"),
    ])
    clean = wait_run(acct.client, trigger(acct, pid)["id"])
    assert clean["status"] == "success"
    assert steps_by_id(clean)["gate"]["outputs"] == {"gate": "passed", "approved_by": ""}
    flaky = trigger(acct, pid, failed=2)
    waiting(acct, flaky["id"], "gate")
    assert reviewer_client.post(f"/pipeline_runs/{flaky['id']}/steps/gate/approve", json={}).status_code == 200
    final = wait_run(acct.client, flaky["id"])
    assert final["status"] == "success"
    assert steps_by_id(final)["gate"]["outputs"] == {"gate": "approved", "approved_by": reviewer}


def test_an_approval_survives_a_worker_restart_while_waiting(stack):
    acct = stack.account()
    reviewer, reviewer_client = add_user(stack, acct)
    run = trigger(acct, gated_pipeline(acct, [reviewer]))
    waiting(acct, run["id"], "deploy")
    stack.stop_workers()
    try:
        response = reviewer_client.post(f"/pipeline_runs/{run['id']}/steps/deploy/approve", json={},
                                        timeout=3)
        pytest.fail(f"no worker is running, yet the update answered {response.status_code}")
    except httpx.TimeoutException:
        pass  # the update waits for a worker; the client gave up, nothing was decided
    stack.start_worker()
    response = reviewer_client.post(f"/pipeline_runs/{run['id']}/steps/deploy/approve", json={})
    assert response.status_code in (200, 409), response.text  # 409 if the abandoned request went through
    final = wait_run(acct.client, run["id"])
    assert final["status"] == "success" and len(final["approvals"]) == 1


def test_waiting_for_reviewers_does_not_use_up_the_run_timeout(stack):
    acct = stack.account()
    reviewer, reviewer_client = add_user(stack, acct)
    pid = gated_pipeline(acct, [reviewer])
    with stack.sessions.begin() as session:
        run = services.create_run(session, session.get(Pipeline, pid), trigger_type="manual", inputs={})
        session.flush()
        inp = dataclasses.replace(services.workflow_input(run, stack.settings), timeout_seconds=3)
        run_id, workflow_id = run.id, run.workflow_id
    stack.infra.run(stack.temporal.start_workflow(PipelineRunWorkflow.run, inp, id=workflow_id,
                                                  task_queue=stack.settings.task_queue))
    waiting(acct, run_id, "deploy")
    import time

    time.sleep(4)  # longer than the run's whole budget, spent waiting at the gate
    assert reviewer_client.post(f"/pipeline_runs/{run_id}/steps/deploy/approve", json={}).status_code == 200
    assert wait_run(acct.client, run_id)["status"] == "success"
