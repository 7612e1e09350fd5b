"""API tokens over HTTP: create (value once, scopes, expiry), list (own; admin ?all=true),
revoke (own; admin any of the account; idempotent), rotate without downtime, the no-escalation
rule, bad input, and the audit events (never the value or its hash)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import select

from api.auth import hash_token, issue_token
from db.access_models import AuditEvent
from db.models import ApiToken, User

PUBLIC_FIELDS = {"id", "name", "prefix", "scopes", "expires_at", "last_used_at", "revoked_at", "created_at",
                 "user_id", "active"}


def client_of(stack, token: str) -> httpx.Client:
    client = httpx.Client(base_url=f"{stack.url}/api/v1/devops", headers={"Authorization": f"Bearer {token}"},
                          timeout=60)
    stack._clients.append(client)
    return client


def add_user(stack, acct, role: str) -> tuple[int, httpx.Client]:
    """Another user of ``acct`` with a ``*`` token."""
    with stack.sessions.begin() as session:
        user = User(account_id=acct.id, email=f"{role}-{uuid.uuid4().hex[:6]}@example.test", role=role)
        session.add(user)
        session.flush()
        token = issue_token(session, user, "default").token
        user_id = user.id
    return user_id, client_of(stack, token)


def made(response: httpx.Response) -> dict:
    assert response.status_code == 201, response.text
    return response.json()


def when(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def events(stack, account_id: int, action: str) -> list[AuditEvent]:
    with stack.sessions() as session:
        return list(session.scalars(select(AuditEvent).where(AuditEvent.account_id == account_id,
                                                             AuditEvent.action == action).order_by(AuditEvent.id)))


def token_count(stack, account_id: int) -> int:
    with stack.sessions() as session:
        return len(session.scalars(select(ApiToken.id).where(ApiToken.account_id == account_id)).all())


def test_create_shows_the_value_once_and_the_list_never(stack):
    acct = stack.account()
    body = made(acct.client.post("/tokens", json={"name": "ci"}))
    assert set(body) == PUBLIC_FIELDS | {"token"}
    assert body["token"].startswith("dvo_") and body["prefix"] == body["token"][:12]
    assert body["scopes"] == ["*"] and body["expires_at"] is None and body["revoked_at"] is None
    assert body["active"] is True and body["user_id"] == acct.user_id and body["name"] == "ci"
    assert client_of(stack, body["token"]).get("/pipelines").status_code == 200

    listed = acct.client.get("/tokens")
    assert listed.status_code == 200, listed.text
    page = listed.json()
    assert page["count"] == 2 and [t["name"] for t in page["data"]] == ["ci", "default"]  # newest first
    assert all(set(t) == PUBLIC_FIELDS for t in page["data"])
    assert body["token"] not in listed.text and acct.token not in listed.text
    default = page["data"][1]
    assert default["last_used_at"] is not None  # this very request used it
    with stack.sessions() as session:
        row = session.get(ApiToken, body["id"])
        assert row.token_hash == hash_token(body["token"]) and body["token"] not in row.token_hash

    [event] = events(stack, acct.id, "token.created")
    assert event.target_type == "token" and event.target_id == str(body["id"])
    assert event.actor_user_id == acct.user_id and event.token_id is not None
    assert event.details["name"] == "ci" and event.details["scopes"] == ["*"]
    assert event.details["prefix"] == body["prefix"]
    dumped = json.dumps(event.details)
    assert body["token"] not in dumped and hash_token(body["token"]) not in dumped


def test_scopes_and_expiry_are_kept(stack):
    acct = stack.account()
    body = made(acct.client.post("/tokens", json={"name": "deploy", "scopes": ["runs:trigger", "pipelines:read",
                                                                               "runs:trigger"],
                                                 "expires_in_days": 30}))
    assert body["scopes"] == ["runs:trigger", "pipelines:read"]
    expected = datetime.now(UTC) + timedelta(days=30)
    assert abs(when(body["expires_at"]) - expected) < timedelta(minutes=1)
    at = (datetime.now(UTC) + timedelta(hours=2)).replace(microsecond=0)
    fixed = made(acct.client.post("/tokens", json={"name": "fixed", "expires_at": at.isoformat()}))
    assert when(fixed["expires_at"]) == at
    assert client_of(stack, fixed["token"]).get("/pipelines").status_code == 200


@pytest.mark.parametrize(("body", "loc", "words"), [
    ({"name": ""}, ["body", "name"], "at least 1"),
    ({"name": "x" * 201}, ["body", "name"], "at most 200"),
    ({}, ["body", "name"], "required"),
    ({"name": "t", "scopes": []}, ["body", "scopes"], "at least 1"),
    ({"name": "t", "scopes": ["pipelines:read", "pipelines:admin"]}, ["body", "scopes", 1], "'pipelines:admin'"),
    ({"name": "t", "scopes": ["root"]}, ["body", "scopes", 0], "unknown scope 'root'"),
    ({"name": "t", "expires_in_days": 0}, ["body", "expires_in_days"], "greater than or equal to 1"),
    ({"name": "t", "expires_in_days": 3651}, ["body", "expires_in_days"], "less than or equal to 3650"),
    ({"name": "t", "expires_at": "2001-01-01T00:00:00Z"}, ["body", "expires_at"], "future"),
    ({"name": "t", "expires_at": "2999-01-01T00:00:00Z"}, ["body", "expires_at"], "3650 days"),
    ({"name": "t", "expires_at": "tomorrow"}, ["body", "expires_at"], "datetime"),
    ({"name": "t", "expires_at": "2999-01-01T00:00:00Z", "expires_in_days": 3}, ["body", "expires_in_days"], "not both"),
    ({"name": "t", "value": "dvo_mine"}, ["body", "value"], "not permitted"),
], ids=["empty_name", "long_name", "no_name", "no_scopes", "unknown_scope", "unknown_scope_first", "zero_days",
        "too_many_days", "past", "too_far", "not_a_time", "both_expiries", "extra_field"])
def test_bad_input_is_422_naming_the_field_and_creates_nothing(stack, body, loc, words):
    acct = stack.account()
    response = acct.client.post("/tokens", json=body)
    assert response.status_code == 422, response.text
    problems = response.json()["detail"]
    assert [p["loc"] for p in problems] == [loc], problems
    assert words in problems[0]["msg"]
    assert token_count(stack, acct.id) == 1


@pytest.mark.parametrize(("role", "scopes", "index", "scope"), [
    ("member", ["pipelines:write", "admin"], 1, "admin"),
    ("viewer", ["pipelines:write"], 0, "pipelines:write"),
    ("approver", ["approvals:decide", "runs:trigger"], 1, "runs:trigger"),
])
def test_a_scope_the_role_can_never_use_is_422_naming_it(stack, role, scopes, index, scope):
    acct = stack.account(role=role)
    response = acct.client.post("/tokens", json={"name": "t", "scopes": scopes})
    assert response.status_code == 422, response.text
    [problem] = response.json()["detail"]
    assert problem["loc"] == ["body", "scopes", index] and f"'{scope}'" in problem["msg"] and role in problem["msg"]
    assert token_count(stack, acct.id) == 1


def test_every_role_may_make_tokens_within_its_role(stack):
    for role, scopes in [("viewer", ["pipelines:read"]), ("approver", ["approvals:decide"]), ("viewer", ["*"])]:
        acct = stack.account(role=role)
        assert made(acct.client.post("/tokens", json={"name": "mine", "scopes": scopes}))["scopes"] == scopes


def test_a_token_cannot_make_a_stronger_token(stack):
    acct = stack.account()
    narrow = client_of(stack, made(acct.client.post(
        "/tokens", json={"name": "ci", "scopes": ["runs:trigger", "tokens:write", "pipelines:write"]}))["token"])
    response = narrow.post("/tokens", json={"name": "all"})  # scopes default to "*"
    assert response.status_code == 403 and "'*'" in response.json()["detail"], response.text
    response = narrow.post("/tokens", json={"name": "more", "scopes": ["runs:trigger", "docker:write", "admin"]})
    assert response.status_code == 403, response.text
    assert "'docker:write', 'admin'" in response.json()["detail"]
    # the same or less (write implies read) is fine
    assert made(narrow.post("/tokens", json={"name": "less", "scopes": ["runs:trigger", "pipelines:read"]}))
    # a runs:trigger-only token cannot make tokens at all
    trigger_only = client_of(stack, made(acct.client.post("/tokens", json={"name": "t", "scopes": ["runs:trigger"]}))["token"])
    response = trigger_only.post("/tokens", json={"name": "all", "scopes": ["*"]})
    assert response.status_code == 403 and "'tokens:write'" in response.json()["detail"], response.text
    assert token_count(stack, acct.id) == 4


def test_revoke_stops_the_token_at_once_and_is_idempotent(stack):
    acct = stack.account()
    body = made(acct.client.post("/tokens", json={"name": "old"}))
    other = client_of(stack, body["token"])
    assert other.get("/pipelines").status_code == 200
    assert acct.client.delete(f"/tokens/{body['id']}").status_code == 204
    assert other.get("/pipelines").status_code == 401
    [shown] = [t for t in acct.client.get("/tokens").json()["data"] if t["id"] == body["id"]]
    assert shown["revoked_at"] is not None and shown["active"] is False
    assert acct.client.delete(f"/tokens/{body['id']}").status_code == 204  # again: nothing changes
    [event] = events(stack, acct.id, "token.revoked")
    assert event.target_id == str(body["id"]) and event.details["prefix"] == body["prefix"]
    assert body["token"] not in json.dumps(event.details)
    # a token may revoke itself
    self_id = next(t["id"] for t in acct.client.get("/tokens").json()["data"] if t["name"] == "default")
    assert acct.client.delete(f"/tokens/{self_id}").status_code == 204
    assert acct.client.get("/tokens").status_code == 401


@pytest.mark.parametrize("token_id", ["999999999", "0", "abc", str(2**63)])
def test_revoking_an_unknown_token_is_404_or_422(stack, token_id):
    acct = stack.account()
    assert acct.client.delete(f"/tokens/{token_id}").status_code == (404 if token_id == "999999999" else 422)


def test_other_users_tokens_are_invisible_to_members_and_revocable_by_admins(stack):
    admin = stack.account()
    member_id, member = add_user(stack, admin, "member")
    _, colleague = add_user(stack, admin, "member")
    mine = made(member.post("/tokens", json={"name": "member-ci"}))
    theirs = made(colleague.post("/tokens", json={"name": "colleague-ci"}))

    assert [t["name"] for t in member.get("/tokens").json()["data"]] == ["member-ci", "default"]
    assert member.delete(f"/tokens/{theirs['id']}").status_code == 404
    assert member.post(f"/tokens/{theirs['id']}/rotate", json={}).status_code == 404
    assert client_of(stack, theirs["token"]).get("/pipelines").status_code == 200
    response = member.get("/tokens", params={"all": "true"})
    assert response.status_code == 403 and "admin" in response.json()["detail"]

    everything = admin.client.get("/tokens", params={"all": "true"}).json()
    assert everything["count"] == 5 and {t["user_id"] for t in everything["data"]} >= {admin.user_id, member_id}
    assert [t["name"] for t in admin.client.get("/tokens").json()["data"]] == ["default"]
    # an admin revokes anyone's token of the account, but does not rotate it (the value would be theirs)
    response = admin.client.post(f"/tokens/{mine['id']}/rotate", json={})
    assert response.status_code == 403 and "revoke" in response.json()["detail"]
    assert admin.client.delete(f"/tokens/{mine['id']}").status_code == 204
    assert client_of(stack, mine["token"]).get("/pipelines").status_code == 401
    [event] = events(stack, admin.id, "token.revoked")
    assert event.actor_user_id == admin.user_id and event.details["user_id"] == member_id

    # an admin whose token lacks the admin scope is told so
    limited = client_of(stack, made(admin.client.post("/tokens", json={"name": "t", "scopes": ["tokens:write"]}))["token"])
    response = limited.delete(f"/tokens/{theirs['id']}")
    assert response.status_code == 403 and "'admin'" in response.json()["detail"]
    # another account's token is 404 even to an admin
    stranger = stack.account()
    assert stranger.client.delete(f"/tokens/{theirs['id']}").status_code == 404
    assert stranger.client.post(f"/tokens/{theirs['id']}/rotate", json={}).status_code == 404
    assert stranger.client.get("/tokens", params={"all": "true"}).json()["count"] == 1
    assert client_of(stack, theirs["token"]).get("/pipelines").status_code == 200


def test_rotate_keeps_name_scopes_and_expiry_and_the_old_value_works_during_the_grace(stack):
    acct = stack.account()
    old = made(acct.client.post("/tokens", json={"name": "ci", "scopes": ["pipelines:read"], "expires_in_days": 30}))
    new = made(acct.client.post(f"/tokens/{old['id']}/rotate", json={"grace_minutes": 30}))
    assert (new["name"], new["scopes"], new["expires_at"]) == (old["name"], old["scopes"], old["expires_at"])
    assert new["id"] != old["id"] and new["token"] != old["token"] and new["prefix"] == new["token"][:12]
    assert client_of(stack, new["token"]).get("/pipelines").status_code == 200
    assert client_of(stack, old["token"]).get("/pipelines").status_code == 200  # still within the grace
    [shown] = [t for t in acct.client.get("/tokens").json()["data"] if t["id"] == old["id"]]
    assert abs(when(shown["expires_at"]) - (datetime.now(UTC) + timedelta(minutes=30))) < timedelta(minutes=1)
    [event] = events(stack, acct.id, "token.rotated")
    assert event.target_id == str(old["id"]) and event.details["new_token_id"] == new["id"]
    assert event.details["grace_minutes"] == 30 and event.details["prefix"] == new["prefix"]
    assert new["token"] not in json.dumps(event.details) and old["token"] not in json.dumps(event.details)


def test_rotate_without_grace_stops_the_old_value_and_the_default_grace_comes_from_settings(stack):
    acct = stack.account()
    old = made(acct.client.post("/tokens", json={"name": "ci"}))
    new = made(acct.client.post(f"/tokens/{old['id']}/rotate", json={"grace_minutes": 0}))
    assert client_of(stack, old["token"]).get("/pipelines").status_code == 401
    assert client_of(stack, new["token"]).get("/pipelines").status_code == 200
    assert new["expires_at"] is None

    newer = made(acct.client.post(f"/tokens/{new['id']}/rotate"))  # no body: the settings' grace
    [shown] = [t for t in acct.client.get("/tokens").json()["data"] if t["id"] == new["id"]]
    grace = timedelta(minutes=stack.settings.token_rotation_grace_minutes)
    assert abs(when(shown["expires_at"]) - (datetime.now(UTC) + grace)) < timedelta(minutes=1)
    assert client_of(stack, new["token"]).get("/pipelines").status_code == 200
    assert client_of(stack, newer["token"]).get("/pipelines").status_code == 200
    # a token may rotate itself and keep going during the grace
    self_id = next(t["id"] for t in acct.client.get("/tokens").json()["data"] if t["name"] == "default")
    made(acct.client.post(f"/tokens/{self_id}/rotate", json={"grace_minutes": 5}))
    assert acct.client.get("/pipelines").status_code == 200


def test_rotate_refuses_bad_grace_revoked_or_expired_tokens_and_escalation(stack):
    acct = stack.account()
    old = made(acct.client.post("/tokens", json={"name": "ci"}))
    for grace in (-1, 10081, "soon"):
        response = acct.client.post(f"/tokens/{old['id']}/rotate", json={"grace_minutes": grace})
        assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["body", "grace_minutes"]
    assert acct.client.post(f"/tokens/{old['id']}/rotate", json={"grace": 5}).status_code == 422
    assert acct.client.post("/tokens/999999999/rotate", json={}).status_code == 404
    # a narrower token cannot rotate a "*" token into a fresh "*" value
    narrow = client_of(stack, made(acct.client.post("/tokens", json={"name": "n", "scopes": ["tokens:write"]}))["token"])
    response = narrow.post(f"/tokens/{old['id']}/rotate", json={})
    assert response.status_code == 403 and "'*'" in response.json()["detail"]
    assert acct.client.delete(f"/tokens/{old['id']}").status_code == 204
    response = acct.client.post(f"/tokens/{old['id']}/rotate", json={})
    assert response.status_code == 409 and "revoked" in response.json()["detail"]
    gone = made(acct.client.post("/tokens", json={"name": "brief"}))
    made(acct.client.post(f"/tokens/{gone['id']}/rotate", json={"grace_minutes": 0}))
    response = acct.client.post(f"/tokens/{gone['id']}/rotate", json={})
    assert response.status_code == 409 and "expired" in response.json()["detail"]
    assert len(events(stack, acct.id, "token.rotated")) == 1
    assert token_count(stack, acct.id) == 5
