"""Users of an account over HTTP on the real stack: list and filter, change role and name,
deactivate (their tokens answer 401 at once) and activate, delete (tokens go, history stays), the
last active admin kept, other accounts' users 404, and the caller's own profile."""

from __future__ import annotations

import uuid
from contextlib import contextmanager

import httpx
from sqlalchemy import func, select

from db.access_models import AuditEvent
from db.models import ApiToken, PipelineRun
from tests.harness import wait_run

PIPELINE = {"name": "p", "steps": [{"id": "a", "type": "run_tests", "with": {"command": "true"}}]}


def join(stack, admin, role: str, name: str = "") -> tuple[dict, httpx.Client]:
    """Invite a user of ``role`` through the API and accept: (user, their client)."""
    invitation = admin.client.post("/users", json={"email": f"{uuid.uuid4().hex[:8]}@example.test", "role": role})
    assert invitation.status_code == 201, invitation.text
    accepted = httpx.post(invitation.json()["accept_url"], json={"name": name} if name else {}, timeout=30)
    assert accepted.status_code == 201, accepted.text
    body = accepted.json()
    client = httpx.Client(base_url=f"{stack.url}/api/v1/devops", timeout=60,
                          headers={"Authorization": f"Bearer {body['token']['token']}"})
    return body["user"], client


def actions(stack, account_id: int, prefix: str = "user.") -> list[tuple[str, str, dict]]:
    with stack.sessions() as session:
        rows = session.scalars(select(AuditEvent).where(AuditEvent.account_id == account_id,
                                                        AuditEvent.action.startswith(prefix))
                               .order_by(AuditEvent.id)).all()
        return [(row.action, row.target_id, row.details) for row in rows]


@contextmanager
def private_targets_off(stack):
    settings = stack.settings
    before = (settings.notify_allow_private_targets, settings.allow_private_targets)
    settings.notify_allow_private_targets = False  # the running API reads this very object
    settings.allow_private_targets = False
    try:
        yield
    finally:
        settings.notify_allow_private_targets, settings.allow_private_targets = before


def test_users_are_listed_and_filtered_by_role_and_activity(stack):
    admin = stack.account()
    viewer, _ = join(stack, admin, "viewer")
    approver, _ = join(stack, admin, "approver", name="Rita")
    listed = admin.client.get("/users").json()
    assert listed["count"] == 3
    assert [u["id"] for u in listed["data"]] == [admin.user_id, viewer["id"], approver["id"]]
    assert set(listed["data"][0]) == {"id", "email", "name", "role", "active", "deactivated_at", "is_operator",
                                      "notify_url", "notify_slack_url", "notify_email", "created_at"}
    assert admin.client.get("/users", params={"role": "approver"}).json()["data"] == [approver]
    assert admin.client.get("/users", params={"limit": 1, "offset": 1}).json() == {"data": [viewer], "count": 3}
    assert admin.client.post(f"/users/{viewer['id']}/deactivate").status_code == 200
    inactive = admin.client.get("/users", params={"active": "false"}).json()
    assert [u["id"] for u in inactive["data"]] == [viewer["id"]] and inactive["data"][0]["active"] is False
    assert admin.client.get("/users", params={"active": "true"}).json()["count"] == 2
    assert admin.client.get(f"/users/{approver['id']}").json() == approver
    bad = admin.client.get("/users", params={"role": "owner"})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["query", "role"]


def test_an_admin_changes_roles_and_names_and_each_change_is_audited(stack):
    admin = stack.account()
    member, member_client = join(stack, admin, "member")
    assert member_client.post("/pipelines", json=PIPELINE).status_code == 201
    response = admin.client.patch(f"/users/{member['id']}", json={"role": "approver", "name": "Mo"})
    assert response.status_code == 200, response.text
    assert response.json()["role"] == "approver" and response.json()["name"] == "Mo"
    # the new role applies to the tokens the user already holds
    refused = member_client.post("/pipelines", json={**PIPELINE, "name": "q"})
    assert refused.status_code == 403, refused.text
    assert member_client.get("/pipelines").status_code == 200

    for body, loc in (({"role": "owner"}, ["body", "role"]), ({"role": None, "extra": 1}, ["body", "extra"]),
                      ({"name": "x" * 201}, ["body", "name"])):
        bad = admin.client.patch(f"/users/{member['id']}", json=body)
        assert bad.status_code == 422 and loc in [p["loc"] for p in bad.json()["detail"]], bad.text
    assert admin.client.get(f"/users/{member['id']}").json()["role"] == "approver"
    # only admins change users
    assert member_client.patch(f"/users/{member['id']}", json={"role": "admin"}).status_code == 403
    assert admin.client.get(f"/users/{member['id']}").json()["role"] == "approver"

    changes = [(a, t, d) for a, t, d in actions(stack, admin.id) if a != "user.invited"]
    assert changes == [("user.role_changed", str(member["id"]), {"email": member["email"], "from": "member",
                                                                 "to": "approver"}),
                       ("user.updated", str(member["id"]), {"email": member["email"], "fields": ["name"]})]


def test_the_last_active_admin_cannot_be_demoted_deactivated_or_deleted(stack):
    admin = stack.account()
    me = admin.user_id
    for method, path, body in (("PATCH", f"/users/{me}", {"role": "member"}), ("POST", f"/users/{me}/deactivate", None),
                               ("DELETE", f"/users/{me}", None)):
        response = admin.client.request(method, path, json=body)
        assert response.status_code == 409, (method, response.text)
        assert "last active admin" in response.json()["detail"]
    second, second_client = join(stack, admin, "admin")
    # a deactivated admin does not count
    assert admin.client.post(f"/users/{second['id']}/deactivate").status_code == 200
    assert admin.client.patch(f"/users/{me}", json={"role": "member"}).status_code == 409
    assert admin.client.post(f"/users/{second['id']}/activate").json()["active"] is True
    # with another active admin the first may step down
    assert admin.client.patch(f"/users/{me}", json={"role": "viewer"}).json()["role"] == "viewer"
    response = second_client.post(f"/users/{second['id']}/deactivate")
    assert response.status_code == 409, response.text
    assert second_client.get("/users/me").json()["role"] == "admin"


def test_a_deactivated_users_tokens_answer_401_at_once_and_work_again_when_activated(stack):
    admin = stack.account()
    member, member_client = join(stack, admin, "member")
    assert member_client.get("/pipelines").status_code == 200
    response = admin.client.post(f"/users/{member['id']}/deactivate")
    assert response.status_code == 200, response.text
    assert response.json()["active"] is False and response.json()["deactivated_at"]
    refused = member_client.get("/pipelines")
    assert refused.status_code == 401, refused.text
    assert refused.json() == {"detail": "this API token's user has been deactivated"}
    assert member_client.get("/users/me").status_code == 401
    assert admin.client.post(f"/users/{member['id']}/deactivate").status_code == 200  # again: no change
    assert admin.client.post(f"/users/{member['id']}/activate").json()["active"] is True
    assert member_client.get("/pipelines").status_code == 200
    assert [a for a, _, _ in actions(stack, admin.id)] == ["user.invited", "user.deactivated", "user.activated"]


def test_deleting_a_user_deletes_their_tokens_and_keeps_their_runs_and_the_audit_log(stack):
    admin = stack.account()
    member, member_client = join(stack, admin, "member")
    pipeline = member_client.post("/pipelines", json=PIPELINE).json()
    run = wait_run(member_client, member_client.post(f"/pipelines/{pipeline['id']}/trigger", json={}).json()["id"])
    assert run["status"] == "success"
    assert member_client.delete(f"/users/{admin.user_id}").status_code == 403  # members cannot

    assert admin.client.delete(f"/users/{member['id']}").status_code == 204
    assert member_client.get("/pipelines").status_code == 401
    assert admin.client.get(f"/users/{member['id']}").status_code == 404
    assert admin.client.delete(f"/users/{member['id']}").status_code == 404
    assert admin.client.get(f"/pipeline_runs/{run['id']}").json()["status"] == "success"
    with stack.sessions() as session:
        assert session.scalar(select(func.count()).select_from(ApiToken)
                              .where(ApiToken.user_id == member["id"])) == 0
        assert session.get_one(PipelineRun, run["id"]).triggered_by_user_id is None
    deleted = [(t, d) for a, t, d in actions(stack, admin.id) if a == "user.deleted"]
    assert deleted == [(str(member["id"]), {"email": member["email"], "role": "member"})]
    assert admin.client.get("/users").json()["count"] == 1


def test_another_accounts_users_are_404_and_viewers_cannot_change_users(stack):
    admin, other = stack.account(), stack.account()
    theirs = other.user_id
    for method, path, body in (("GET", f"/users/{theirs}", None), ("PATCH", f"/users/{theirs}", {"name": "x"}),
                               ("POST", f"/users/{theirs}/deactivate", None),
                               ("POST", f"/users/{theirs}/activate", None), ("DELETE", f"/users/{theirs}", None)):
        response = admin.client.request(method, path, json=body)
        assert response.status_code == 404, (method, path, response.text)
    assert other.client.get("/users/me").json()["active"] is True
    viewer = stack.account(role="viewer")
    assert viewer.client.get("/users").json()["count"] == 1
    assert viewer.client.post("/users", json={"email": "v@example.test", "role": "viewer"}).status_code == 403
    assert viewer.client.post(f"/users/{viewer.user_id}/deactivate").status_code == 403


def test_own_profile_name_and_notification_targets(stack):
    acct = stack.account(role="viewer")
    response = acct.client.patch("/users/me", json={"name": "Vera", "notify_slack_url": "https://hooks.example.com/T/B/x",
                                                    "notify_email": True})
    assert response.status_code == 200, response.text
    me = response.json()
    assert (me["name"], me["notify_slack_url"], me["notify_email"], me["notify_url"]) == (
        "Vera", "https://hooks.example.com/T/B/x", True, None)
    # only the fields given change
    assert acct.client.patch("/users/me", json={}).json() == me
    assert acct.client.patch("/users/me", json={"notify_email": False}).json()["notify_slack_url"] == me["notify_slack_url"]
    for body, loc in (({"notify_slack_url": "ftp://x"}, ["body", "notify_slack_url"]),
                      ({"notify_email": "maybe"}, ["body", "notify_email"]),
                      ({"role": "admin"}, ["body", "role"]), ({"name": "x" * 201}, ["body", "name"])):
        bad = acct.client.patch("/users/me", json=body)
        assert bad.status_code == 422 and loc in [p["loc"] for p in bad.json()["detail"]], bad.text
    with private_targets_off(stack):
        bad = acct.client.patch("/users/me", json={"notify_slack_url": "http://127.0.0.1:9/hook"})
        assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "notify_slack_url"], bad.text
    assert acct.client.patch("/users/me", json={"notify_slack_url": None}).json()["notify_slack_url"] is None
    assert acct.client.get("/users/me").json()["role"] == "viewer"
    updates = [d for a, _, d in actions(stack, acct.id) if a == "user.updated"]
    assert updates == [{"fields": ["name", "notify_email", "notify_slack_url"]}, {"fields": ["notify_email"]},
                       {"fields": ["notify_slack_url"]}]
    assert "hooks.example.com" not in str(updates)
