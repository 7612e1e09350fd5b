"""Invitations over HTTP on the real stack: an admin invites (token ``inv_…`` shown once, only its
SHA-256 stored), the invited person sees and accepts it without an API token and gets their first
token once; duplicates, unknown roles, used, revoked, expired and unknown tokens are refused."""

from __future__ import annotations

import hashlib
import threading
import uuid
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import select, update

from db.access_models import AuditEvent, Invitation
from db.models import ApiToken, User

PIPELINE = {"name": "p", "steps": [{"id": "a", "type": "run_tests", "with": {"command": "true"}}]}


def public(stack) -> httpx.Client:
    return httpx.Client(base_url=f"{stack.url}/api/v1/devops", timeout=30)


def bearer(stack, token: str) -> httpx.Client:
    return httpx.Client(base_url=f"{stack.url}/api/v1/devops", headers={"Authorization": f"Bearer {token}"},
                        timeout=30)


def email() -> str:
    return f"{uuid.uuid4().hex[:8]}@example.test"


def events(stack, account_id: int, action: str) -> list[AuditEvent]:
    with stack.sessions() as session:
        return list(session.scalars(select(AuditEvent).where(AuditEvent.account_id == account_id,
                                                             AuditEvent.action == action).order_by(AuditEvent.id)))


def aware(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def test_an_invited_member_accepts_and_works_in_the_inviting_account_only(stack):
    admin, other = stack.account(), stack.account()
    mine = admin.client.post("/pipelines", json=PIPELINE).json()
    other.client.post("/pipelines", json={**PIPELINE, "name": "elsewhere"})
    address = email()

    response = admin.client.post("/users", json={"email": address, "role": "member"})
    assert response.status_code == 201, response.text
    invitation = response.json()
    token = invitation["token"]
    assert token.startswith("inv_") and len(token) > 40
    assert invitation["email"] == address and invitation["role"] == "member"
    assert invitation["status"] == "pending" and invitation["invited_by"] == admin.user_id
    assert invitation["accept_url"] == f"{stack.url}/api/v1/devops/invitations/{token}/accept"
    ttl = aware(invitation["expires_at"]) - datetime.now(UTC)
    assert timedelta(hours=71) < ttl <= timedelta(hours=72)
    with stack.sessions() as session:
        row = session.get_one(Invitation, invitation["id"])
        assert row.token_hash == hashlib.sha256(token.encode()).hexdigest()
    listed = admin.client.get("/invitations").json()
    assert listed["count"] == 1 and "token" not in listed["data"][0]
    assert listed["data"][0]["status"] == "pending"

    with public(stack) as anonymous:
        shown = anonymous.get(f"/invitations/{token}")
        assert shown.status_code == 200, shown.text
        account_name = shown.json()["account"]
        assert shown.json() == {"email": address, "role": "member", "account": account_name,
                                "expires_at": shown.json()["expires_at"]}
        assert account_name.startswith("acct-")
        accepted = anonymous.post(invitation["accept_url"], json={"name": "Ana Lima"})
        assert accepted.status_code == 201, accepted.text
        body = accepted.json()
        again = anonymous.post(invitation["accept_url"], json={})
        assert again.status_code == 410, again.text
        assert "accepted" in again.json()["detail"]
        assert anonymous.get(f"/invitations/{token}").status_code == 410

    user, first = body["user"], body["token"]
    assert user["email"] == address and user["role"] == "member" and user["name"] == "Ana Lima"
    assert user["active"] is True and user["is_operator"] is False
    assert first["token"].startswith("dvo_") and first["scopes"] == ["*"] and first["user_id"] == user["id"]
    assert first["active"] is True and first["prefix"] == first["token"][:12]

    with bearer(stack, first["token"]) as member:
        me = member.get("/users/me").json()
        assert me["id"] == user["id"] and me["role"] == "member"
        pipelines = member.get("/pipelines").json()
        assert [p["id"] for p in pipelines["data"]] == [mine["id"]]
        assert member.post("/users", json={"email": email(), "role": "viewer"}).status_code == 403
        assert member.get("/invitations").status_code == 403
    assert admin.client.get("/invitations").json()["data"][0]["status"] == "accepted"
    assert admin.client.get("/invitations").json()["data"][0]["user_id"] == user["id"]

    invited = events(stack, admin.id, "user.invited")
    assert [(e.actor_user_id, e.details["email"], e.details["role"]) for e in invited] == [
        (admin.user_id, address, "member")]
    joined = events(stack, admin.id, "invitation.accepted")
    assert [(e.actor_user_id, e.target_id) for e in joined] == [(user["id"], str(user["id"]))]
    for event in invited + joined:
        assert token not in str(event.details) and first["token"] not in str(event.details)


def test_a_duplicate_email_is_409_whether_a_user_or_a_pending_invitation(stack):
    admin = stack.account()
    own = admin.client.get("/users/me").json()["email"]
    response = admin.client.post("/users", json={"email": own.upper(), "role": "member"})
    assert response.status_code == 409, response.text
    assert "already a user" in response.json()["detail"]

    address = email()
    first = admin.client.post("/users", json={"email": address, "role": "viewer"})
    assert first.status_code == 201
    again = admin.client.post("/users", json={"email": address.upper(), "role": "member"})
    assert again.status_code == 409, again.text
    assert "pending invitation" in again.json()["detail"]
    assert admin.client.get("/invitations").json()["count"] == 1

    # an expired invitation no longer blocks; a revoked one neither
    with stack.sessions.begin() as session:
        session.execute(update(Invitation).where(Invitation.id == first.json()["id"])
                        .values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    second = admin.client.post("/users", json={"email": address, "role": "viewer"})
    assert second.status_code == 201, second.text
    assert admin.client.delete(f"/invitations/{second.json()['id']}").status_code == 204
    assert admin.client.post("/users", json={"email": address, "role": "viewer"}).status_code == 201
    statuses = sorted(i["status"] for i in admin.client.get("/invitations").json()["data"])
    assert statuses == ["expired", "pending", "revoked"]

    # another account may invite the same address
    assert stack.account().client.post("/users", json={"email": own, "role": "member"}).status_code == 201


def test_bad_invitation_bodies_are_422_naming_the_field_and_create_nothing(stack):
    admin = stack.account()
    cases = [
        ({"email": email(), "role": "owner"}, ["body", "role"]),
        ({"email": email(), "role": ""}, ["body", "role"]),
        ({"email": "not-an-address", "role": "member"}, ["body", "email"]),
        ({"email": "a b@example.test", "role": "member"}, ["body", "email"]),
        ({"role": "member"}, ["body", "email"]),
        ({"email": email()}, ["body", "role"]),
        ({"email": email(), "role": "member", "extra": 1}, ["body", "extra"]),
    ]
    for body, loc in cases:
        response = admin.client.post("/users", json=body)
        assert response.status_code == 422, (body, response.text)
        assert loc in [problem["loc"] for problem in response.json()["detail"]], (body, response.text)
    assert admin.client.get("/invitations").json()["count"] == 0
    assert events(stack, admin.id, "user.invited") == []


def test_expired_revoked_and_unknown_invitations_are_refused(stack):
    admin = stack.account()
    expired = admin.client.post("/users", json={"email": email(), "role": "member"}).json()
    revoked = admin.client.post("/users", json={"email": email(), "role": "member"}).json()
    with stack.sessions.begin() as session:
        session.execute(update(Invitation).where(Invitation.id == expired["id"])
                        .values(expires_at=datetime.now(UTC) - timedelta(minutes=1)))
    assert admin.client.delete(f"/invitations/{revoked['id']}").status_code == 204
    assert admin.client.delete(f"/invitations/{revoked['id']}").status_code == 204  # again: no change
    assert len(events(stack, admin.id, "invitation.revoked")) == 1
    with public(stack) as anonymous:
        for invitation, word in ((expired, "expired"), (revoked, "revoked")):
            shown = anonymous.get(f"/invitations/{invitation['token']}")
            assert shown.status_code == 410 and word in shown.json()["detail"], shown.text
            accepted = anonymous.post(invitation["accept_url"], json={"name": "x"})
            assert accepted.status_code == 410 and word in accepted.json()["detail"], accepted.text
        unknown = "inv_" + "A" * 43
        assert anonymous.get(f"/invitations/{unknown}").status_code == 404
        assert anonymous.post(f"/invitations/{unknown}/accept", json={}).status_code == 404
        bad_body = anonymous.post(f"/invitations/{unknown}/accept", json={"name": "x" * 201})
        assert bad_body.status_code == 422
    with stack.sessions() as session:
        users = session.scalars(select(User.email).where(User.account_id == admin.id)).all()
    assert users == [admin.client.get("/users/me").json()["email"]]


def test_accept_is_409_when_the_email_became_a_user_meanwhile(stack):
    admin = stack.account()
    address = email()
    invitation = admin.client.post("/users", json={"email": address, "role": "approver"}).json()
    with stack.sessions.begin() as session:
        session.add(User(account_id=admin.id, email=address.upper(), role="viewer"))
    with public(stack) as anonymous:
        response = anonymous.post(invitation["accept_url"], json={})
    assert response.status_code == 409, response.text
    assert admin.client.get("/invitations").json()["data"][0]["status"] == "pending"
    with stack.sessions() as session:
        assert session.scalars(select(ApiToken).join(User).where(User.email == address.upper())).all() == []


def test_two_accepts_at_once_make_one_user(stack):
    admin = stack.account()
    address = email()
    invitation = admin.client.post("/users", json={"email": address, "role": "member"}).json()
    codes: list[int] = []

    def accept() -> None:
        with public(stack) as anonymous:
            codes.append(anonymous.post(invitation["accept_url"], json={}).status_code)

    threads = [threading.Thread(target=accept) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(codes)[0] == 201 and codes.count(201) == 1, codes
    assert set(codes) <= {201, 409, 410}, codes
    with stack.sessions() as session:
        assert len(session.scalars(select(User).where(User.account_id == admin.id, User.email == address)).all()) == 1


def test_revoking_an_accepted_or_foreign_invitation_and_the_ttl_setting(stack):
    admin, other = stack.account(), stack.account()
    invitation = admin.client.post("/users", json={"email": email(), "role": "viewer"}).json()
    assert other.client.delete(f"/invitations/{invitation['id']}").status_code == 404
    assert other.client.get("/invitations").json()["count"] == 0
    with public(stack) as anonymous:
        assert anonymous.post(invitation["accept_url"], json={}).status_code == 201
    response = admin.client.delete(f"/invitations/{invitation['id']}")
    assert response.status_code == 409 and "accepted" in response.json()["detail"]
    assert admin.client.delete("/invitations/999999").status_code == 404

    before = stack.settings.invitation_ttl_hours
    stack.settings.invitation_ttl_hours = 1  # the running API reads this very object
    try:
        short = admin.client.post("/users", json={"email": email(), "role": "viewer"}).json()
    finally:
        stack.settings.invitation_ttl_hours = before
    assert timedelta(minutes=59) < aware(short["expires_at"]) - datetime.now(UTC) <= timedelta(hours=1)
