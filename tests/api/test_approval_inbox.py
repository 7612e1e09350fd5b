"""GET /approvals: the gates waiting on the caller (and only on the caller); approvers decide;
every decision, and no refusal, is in the audit log as ``approval.decided``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update

from db.access_models import AuditEvent
from db.models import StepApprovalToken
from tests.harness import wait_for, wait_run
from tests.workflows.test_approvals import add_user, gated_pipeline, waiting
from tests.workflows.test_pipeline_run import trigger


def inbox(client, **params) -> dict:
    response = client.get("/approvals", params=params)
    assert response.status_code == 200, response.text
    return response.json()


def audit_events(stack, run_id: int) -> list[AuditEvent]:
    with stack.sessions() as session:
        return list(session.scalars(select(AuditEvent).where(
            AuditEvent.action == "approval.decided", AuditEvent.target_id == str(run_id)).order_by(AuditEvent.id)))


def test_the_inbox_lists_the_gates_waiting_on_the_caller_only(stack):
    acct = stack.account()
    reviewer, reviewer_client = add_user(stack, acct, role="approver")
    member, member_client = add_user(stack, acct)
    _outsider, outsider_client = add_user(stack, acct)
    _viewer, viewer_client = add_user(stack, acct, role="viewer")
    stranger = stack.account()
    pipeline_id = gated_pipeline(acct, ["role:approver", member.upper()], min_approvals=2)
    run = trigger(acct, pipeline_id)
    waiting(acct, run["id"], "deploy")

    page = inbox(reviewer_client)
    assert page["count"] == 1 and len(page["data"]) == 1
    gate = page["data"][0]
    name = acct.client.get(f"/pipelines/{pipeline_id}").json()["name"]
    assert {k: v for k, v in gate.items() if k not in ("requested_at", "expires_at", "recipients")} == {
        "run_id": run["id"], "run_number": run["run_number"], "pipeline_id": pipeline_id, "pipeline": name,
        "step_id": "deploy", "step_name": "deploy", "attempt": 1, "status": "pending", "approvals": 0,
        "required": 2, "decided_by": []}
    assert sorted(r.lower() for r in gate["recipients"]) == sorted([reviewer, member])
    requested, expires = (datetime.fromisoformat(gate[k]) for k in ("requested_at", "expires_at"))
    assert 3500 < (expires - requested).total_seconds() < 3700  # the step's 60-minute timeout
    # the address in the document was upper-case: the inbox matches it case-insensitively
    assert inbox(member_client)["count"] == 1
    # not a recipient, another account, the admin who triggered it (not named): nothing
    assert inbox(outsider_client) == {"data": [], "count": 0}
    assert inbox(stranger.client) == {"data": [], "count": 0}
    assert inbox(acct.client) == {"data": [], "count": 0}
    assert inbox(viewer_client)["count"] == 0  # viewers read the inbox, they are just not asked

    # bad input: unknown status, limits out of range; a viewer cannot decide
    for params in ({"status": "waiting"}, {"limit": 0}, {"limit": 201}, {"offset": -1}):
        assert reviewer_client.get("/approvals", params=params).status_code == 422, params
    url = f"/pipeline_runs/{run['id']}/steps/deploy/approve"
    refused = viewer_client.post(url, json={})
    assert refused.status_code == 403 and "viewer" in refused.json()["detail"]
    assert outsider_client.post(url, json={}).status_code == 403  # not a recipient
    assert audit_events(stack, run["id"]) == []  # refusals record nothing

    # the approver role decides (it could not before: decisions needed a writer)
    first = reviewer_client.post(url, json={"comment": "first look ok"}, headers={"User-Agent": "inbox-test/1"})
    assert first.status_code == 200, first.text
    assert first.json()["outcome"] == "pending" and first.json()["approvals"] == 1
    assert inbox(reviewer_client)["count"] == 0  # decided: no longer waiting on the reviewer
    decided = inbox(reviewer_client, status="all")
    assert decided["count"] == 1 and decided["data"][0]["status"] == "decided"
    still = inbox(member_client)["data"][0]
    assert (still["approvals"], still["decided_by"], still["required"]) == (1, [reviewer], 2)

    assert member_client.post(url, json={}).json()["outcome"] == "approved"
    assert wait_run(acct.client, run["id"])["status"] == "success"
    assert inbox(member_client)["count"] == 0
    assert [g["status"] for g in inbox(member_client, status="all")["data"]] == ["decided"]

    events = audit_events(stack, run["id"])
    assert [(e.actor, e.target_type, e.details) for e in events] == [
        (reviewer, "pipeline_run", {"step_id": "deploy", "decision": "approved", "outcome": "pending",
                                    "comment": "first look ok"}),
        (member, "pipeline_run", {"step_id": "deploy", "decision": "approved", "outcome": "approved",
                                  "comment": ""})]
    assert events[0].ip == "127.0.0.1" and events[0].user_agent == "inbox-test/1"
    assert events[0].actor_user_id is not None and events[0].token_id is not None
    assert all(e.account_id == acct.id for e in events)


def test_a_gate_leaves_the_inbox_when_it_closes_or_expires(stack):
    acct = stack.account()
    late, late_client = add_user(stack, acct, role="approver")
    bystander, bystander_client = add_user(stack, acct, role="approver")
    other, other_client = add_user(stack, acct, role="approver")
    run = trigger(acct, gated_pipeline(acct, ["role:approver"]))
    waiting(acct, run["id"], "deploy")
    assert inbox(late_client)["count"] == inbox(bystander_client)["count"] == inbox(other_client)["count"] == 1
    with stack.sessions.begin() as session:  # this person's link ran out
        session.execute(update(StepApprovalToken).where(StepApprovalToken.run_id == run["id"],
                                                        StepApprovalToken.recipient == late)
                        .values(expires_at=datetime.now(UTC) - timedelta(minutes=1)))
    assert inbox(late_client)["count"] == 0
    assert [g["status"] for g in inbox(late_client, status="all")["data"]] == ["expired"]

    rejected = other_client.post(f"/pipeline_runs/{run['id']}/steps/deploy/reject", json={"comment": "no"})
    assert rejected.status_code == 200, rejected.text
    assert wait_run(acct.client, run["id"])["status"] == "failure"
    # someone else closed the gate: gone from the bystander's pending inbox, "closed" in all
    wait_for(lambda: inbox(bystander_client)["count"] == 0, message="the closed gate to leave the inbox")
    assert [g["status"] for g in inbox(bystander_client, status="all")["data"]] == ["closed"]
    assert [g["status"] for g in inbox(other_client, status="all")["data"]] == ["decided"]
    [event] = audit_events(stack, run["id"])
    assert (event.actor, event.details["decision"], event.details["outcome"]) == (other, "rejected", "rejected")
    assert bystander not in (late, other)
