"""``devops approve`` and ``devops approvals`` as a second, invited user unblock a gated run."""

from __future__ import annotations

import uuid

import httpx

from tests.harness import wait_run
from tests.workflows.test_approvals import waiting
from tests.workflows.test_pipeline_run import create_pipeline, sh, trigger


def test_a_second_user_approves_the_gate_from_the_cli(stack, devops):
    admin = stack.account()
    pid = create_pipeline(admin, steps=[
        sh("build", "echo building"),
        sh("deploy", "echo deployed", requires_approval=True,
           approval={"recipients": ["role:admin", "role:approver"], "timeout_minutes": 60}),
    ])
    email = f"reviewer-{uuid.uuid4().hex[:6]}@example.test"
    invitation = admin.client.post("/users", json={"email": email, "role": "approver"}).json()
    accepted = httpx.post(invitation["accept_url"], json={"name": "Rae"}, timeout=30)
    assert accepted.status_code == 201, accepted.text
    reviewer_token = accepted.json()["token"]["token"]

    run = trigger(admin, pid)
    waiting(admin, run["id"], "deploy")
    own = devops(stack.url, admin.token, "approve", str(run["id"]), "deploy", "-m", "mine")
    assert own.exit_code == 1 and "someone else must approve" in own.stderr

    inbox = devops(stack.url, reviewer_token, "approvals")
    assert inbox.exit_code == 0 and "deploy" in inbox.stdout and f"{run['id']} (#" in inbox.stdout
    approved = devops(stack.url, reviewer_token, "approve", str(run["id"]), "deploy", "-m", "looks good")
    assert approved.exit_code == 0, approved.output
    assert "approved step deploy" in approved.stdout and "gate approved (1/1" in approved.stdout
    final = wait_run(admin.client, run["id"])
    assert final["status"] == "success"
    assert [(a["decided_by"], a["comment"]) for a in final["approvals"]] == [(email, "looks good")]
