"""Accounts over HTTP on the real stack: the service operator (the operator token, or a user
flagged ``is_operator``) creates accounts with their first admin and lists them; everyone else is
403 (no token 401); duplicate names and bad input are refused."""

from __future__ import annotations

import uuid
from contextlib import contextmanager

import httpx
from sqlalchemy import func, select

from api.auth import create_account_with_admin, hash_token
from db.access_models import AuditEvent
from db.models import Account, ApiToken


def client(stack, token: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return httpx.Client(base_url=f"{stack.url}/api/v1/devops", headers=headers, timeout=30)


def operator_user_token(stack) -> str:
    with stack.sessions.begin() as session:
        _, _, issued = create_account_with_admin(session, f"ops-{uuid.uuid4().hex[:8]}",
                                                 f"{uuid.uuid4().hex[:8]}@example.test", is_operator=True)
        return issued.token


@contextmanager
def operator_token(stack, value: str):
    before = stack.settings.operator_token
    stack.settings.operator_token = value  # the running API reads this very object
    try:
        yield
    finally:
        stack.settings.operator_token = before


def account_count(stack) -> int:
    with stack.sessions() as session:
        return session.scalar(select(func.count()).select_from(Account))


def name() -> str:
    return f"team-{uuid.uuid4().hex[:8]}"


def test_an_operator_user_creates_an_account_whose_admin_token_works(stack):
    other = stack.account()
    other.client.post("/pipelines", json={"name": "p", "steps": [
        {"id": "a", "type": "run_tests", "with": {"command": "true"}}]})
    with client(stack, operator_user_token(stack)) as operator:
        team = name()
        response = operator.post("/accounts", json={"name": team, "admin_email": "Lead@Example.com"})
        assert response.status_code == 201, response.text
        body = response.json()
        assert set(body) == {"account", "admin", "token"}
        assert body["account"]["name"] == team and set(body["account"]) == {"id", "name", "created_at"}
        admin = body["admin"]
        assert admin["email"] == "Lead@Example.com" and admin["role"] == "admin"
        assert admin["is_operator"] is False and admin["active"] is True
        token = body["token"]
        assert token["token"].startswith("dvo_") and token["scopes"] == ["*"] and token["user_id"] == admin["id"]
        with stack.sessions() as session:
            row = session.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(token["token"])))
            assert row.user_id == admin["id"] and row.account_id == body["account"]["id"]
            event = session.scalar(select(AuditEvent).where(AuditEvent.account_id == body["account"]["id"],
                                                            AuditEvent.action == "account.created"))
            assert event.details["name"] == team and event.actor_user_id is not None
            assert token["token"] not in str(event.details)

        listed = operator.get("/accounts", params={"limit": 500}).json()
        assert listed["count"] == account_count(stack)
        assert body["account"] in listed["data"]

        duplicate = operator.post("/accounts", json={"name": team.upper(), "admin_email": "x@example.com"})
        assert duplicate.status_code == 409, duplicate.text

    with client(stack, token["token"]) as new_admin:
        assert new_admin.get("/users/me").json()["id"] == admin["id"]
        assert new_admin.get("/pipelines").json() == {"data": [], "count": 0}
        assert new_admin.get("/users").json()["count"] == 1
        # an account's admin is not an operator
        assert new_admin.post("/accounts", json={"name": name(), "admin_email": "y@example.com"}).status_code == 403


def test_bad_account_bodies_are_422_and_create_nothing(stack):
    before = account_count(stack)
    with client(stack, operator_user_token(stack)) as operator:
        before += 1
        cases = [({"name": "", "admin_email": "a@example.com"}, ["body", "name"]),
                 ({"name": "   ", "admin_email": "a@example.com"}, ["body", "name"]),
                 ({"name": "x" * 201, "admin_email": "a@example.com"}, ["body", "name"]),
                 ({"name": name(), "admin_email": "nope"}, ["body", "admin_email"]),
                 ({"name": name()}, ["body", "admin_email"]),
                 ({"name": name(), "admin_email": "a@example.com", "role": "admin"}, ["body", "role"])]
        for body, loc in cases:
            response = operator.post("/accounts", json=body)
            assert response.status_code == 422, (body, response.text)
            assert loc in [p["loc"] for p in response.json()["detail"]], (body, response.text)
    assert account_count(stack) == before


def test_only_the_operator_may_manage_accounts(stack):
    admin, member = stack.account(), stack.account(role="member")
    before = account_count(stack)
    body = {"name": name(), "admin_email": "a@example.com"}
    for who in (admin.client, member.client):
        assert who.post("/accounts", json=body).status_code == 403
        assert who.get("/accounts").status_code == 403
    with client(stack, None) as anonymous:
        assert anonymous.post("/accounts", json=body).status_code == 401
        assert anonymous.get("/accounts").status_code == 401
    with client(stack, "some-guess") as guess:
        assert guess.post("/accounts", json=body).status_code == 401
    # no operator token configured: an empty bearer value is no match
    with operator_token(stack, ""), client(stack, None) as empty:
        assert empty.post("/accounts", json=body, headers={"Authorization": "Bearer"}).status_code == 401
    assert account_count(stack) == before


def test_the_operator_token_creates_and_lists_accounts(stack):
    secret = f"op-{uuid.uuid4().hex}"
    team = name()
    with operator_token(stack, secret), client(stack, secret) as operator:
        response = operator.post("/accounts", json={"name": team, "admin_email": "boss@example.com"})
        assert response.status_code == 201, response.text
        listed = operator.get("/accounts", params={"limit": 1}).json()
        assert listed["count"] == account_count(stack) and len(listed["data"]) == 1
        with client(stack, secret + "x") as wrong:
            assert wrong.get("/accounts").status_code == 401
        # the operator token is no API token: other routes refuse it
        assert operator.get("/pipelines").status_code == 401
    with client(stack, secret) as stale:  # unset again: refused
        assert stale.get("/accounts").status_code == 401
    body = response.json()
    with stack.sessions() as session:
        event = session.scalar(select(AuditEvent).where(AuditEvent.account_id == body["account"]["id"],
                                                        AuditEvent.action == "account.created"))
    assert (event.actor, event.actor_user_id) == ("operator", None)
    assert secret not in str(event.details) and body["token"]["token"] not in str(event.details)
    with client(stack, body["token"]["token"]) as new_admin:
        assert new_admin.get("/users/me").json()["email"] == "boss@example.com"
