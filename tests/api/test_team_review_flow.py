"""The issue's acceptance test, over HTTP without a browser: an install's lone admin cannot get
past an approval gate (they may not approve their own run); they invite a reviewer through the
API, the reviewer accepts, sets where notifications go, sees the gate in their inbox, opens the
link from the notification, submits the page's Approve form with a comment, and the run
succeeds, with the decision in the run and in the audit log under the reviewer's name."""

from __future__ import annotations

import uuid

import httpx

from tests.api.test_approval_page import Forms, submit
from tests.harness import wait_run
from tests.workflows.test_approvals import Inbox, waiting
from tests.workflows.test_pipeline_run import create_pipeline, sh, steps_by_id, trigger


def test_an_invited_reviewer_approves_from_the_link_page_and_the_run_succeeds(stack):
    inbox = Inbox()
    try:
        admin = stack.account()
        admin_email = admin.client.get("/users/me").json()["email"]
        pipeline_id = create_pipeline(admin, steps=[
            sh("build", 'echo "sha=abc123" >> "$DEVOPS_OUTPUT"'),
            sh("deploy", 'echo "deployed=$SHA" >> "$DEVOPS_OUTPUT"', env={"SHA": "${{ steps.build.outputs.sha }}"},
               requires_approval=True, approval={"recipients": ["role:admin", "role:approver"],
                                                 "timeout_minutes": 60}),
        ])

        # alone, the admin is stuck: their own run needs someone else
        alone = trigger(admin, pipeline_id)
        waiting(admin, alone["id"], "deploy")
        stuck = admin.client.post(f"/pipeline_runs/{alone['id']}/steps/deploy/approve", json={"comment": "me"})
        assert stuck.status_code == 403 and "someone else must approve" in stuck.json()["detail"]
        assert admin.client.post(f"/pipeline_runs/{alone['id']}/cancel").status_code in (200, 202)

        # invite a reviewer through the API; the reviewer accepts (public, the token is the credential)
        email = f"reviewer-{uuid.uuid4().hex[:6]}@example.test"
        invited = admin.client.post("/users", json={"email": email, "role": "approver", "name": "Rae Viewer"})
        assert invited.status_code == 201, invited.text
        invitation = invited.json()
        assert invitation["role"] == "approver" and invitation["token"].startswith("inv_")
        assert admin.client.post("/users", json={"email": email, "role": "approver"}).status_code == 409
        assert admin.client.post("/users", json={"email": "x@example.test", "role": "boss"}).status_code == 422
        accepted = httpx.post(invitation["accept_url"], json={"name": "Rae"}, timeout=30)
        assert accepted.status_code == 201, accepted.text
        assert accepted.json()["user"]["role"] == "approver"
        assert httpx.post(invitation["accept_url"], json={}, timeout=30).status_code == 410  # single use
        reviewer = httpx.Client(base_url=f"{stack.url}/api/v1/devops", timeout=60,
                                headers={"Authorization": f"Bearer {accepted.json()['token']['token']}"})
        stack._clients.append(reviewer)
        reviewer_id = accepted.json()["user"]["id"]

        # the reviewer says where notifications go; an approver changes nothing else
        profile = reviewer.patch("/users/me", json={"notify_url": inbox.url})
        assert profile.status_code == 200 and profile.json()["notify_url"] == inbox.url
        assert reviewer.post("/pipelines", json={"name": "nope", "steps": [sh("a", "true")]}).status_code == 403
        assert reviewer.get("/approvals").json() == {"data": [], "count": 0}

        # the admin triggers; the gate waits on the reviewer
        run = trigger(admin, pipeline_id)
        waiting(admin, run["id"], "deploy")
        assert admin.client.post(f"/pipeline_runs/{run['id']}/steps/deploy/approve", json={}).status_code == 403
        pending = reviewer.get("/approvals", params={"status": "pending"}).json()
        assert pending["count"] == 1
        gate = pending["data"][0]
        assert (gate["run_id"], gate["step_id"], gate["approvals"], gate["required"]) == (run["id"], "deploy", 0, 1)
        assert sorted(gate["recipients"]) == sorted([admin_email, email])

        # the notification carries the page link; the page's form decides
        inbox.link("deploy")
        [message] = [m for m in inbox.messages if m["run_id"] == run["id"]]
        assert message["recipient"] == email
        page_url = message["links"]["page"]
        page = httpx.get(page_url, timeout=30)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert admin_email in page.text  # who else may decide
        [form] = Forms(page.text).forms
        assert set(form["buttons"]) == {"Approve", "Reject"}
        result = submit(page_url, page.text, "Approve", "looks good to me")
        assert result.status_code == 200, result.text
        assert "<h1>Approved</h1>" in result.text and "the run continues" in result.text

        final = wait_run(admin.client, run["id"])
        assert final["status"] == "success"
        assert steps_by_id(final)["deploy"]["outputs"] == {"deployed": "abc123"}
        assert [(a["decision"], a["decided_by"], a["comment"]) for a in final["approvals"]] == [
            ("approved", email, "looks good to me")]
        assert reviewer.get("/approvals").json()["count"] == 0
        audit = admin.client.get("/audit_events", params={"action": "approval.decided"})
        assert audit.status_code == 200, audit.text
        [event] = [e for e in audit.json()["data"] if e["target_id"] == str(run["id"])]
        assert (event["actor"], event["actor_user_id"], event["target_type"]) == (email, reviewer_id, "pipeline_run")
        assert event["details"] == {"step_id": "deploy", "decision": "approved", "outcome": "approved",
                                    "comment": "looks good to me"}
        assert reviewer.get("/audit_events").status_code == 403  # the audit log is the admin's
    finally:
        inbox.close()
