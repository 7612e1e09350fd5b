"""Bearer API tokens (missing, wrong, revoked, expired), roles, and the unauthenticated
``/health``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import select, update

from api.auth import hash_token
from db.models import ApiToken, User
from tests.harness import wait_run

PIPELINE = {"name": "p", "steps": [{"id": "a", "type": "run_tests", "with": {"command": "true"}}]}


def devops(stack, headers: dict[str, str] | None = None) -> httpx.Client:
    return httpx.Client(base_url=f"{stack.url}/api/v1/devops", headers=headers or {}, timeout=30)


def assert_unauthorized(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json() == {"detail": "missing or invalid API token"}


def set_token(stack, token: str, **values) -> None:
    with stack.sessions.begin() as session:
        session.execute(update(ApiToken).where(ApiToken.token_hash == hash_token(token)).values(**values))


@pytest.mark.parametrize("headers", [
    {},
    {"Authorization": "Bearer dvo_not-a-real-token"},
    {"Authorization": "Bearer"},
    {"Authorization": "Basic dXNlcjpwYXNz"},
], ids=["no_token", "wrong_token", "empty_token", "basic_scheme"])
def test_a_missing_or_wrong_token_is_401_with_www_authenticate(stack, headers):
    stack.account()  # at least one real token exists
    with devops(stack, headers) as client:
        assert_unauthorized(client.get("/pipelines"))
        assert_unauthorized(client.post("/pipelines", json=PIPELINE))
        assert_unauthorized(client.get("/pipeline_runs"))
        assert_unauthorized(client.get("/secrets"))


def test_a_revoked_token_is_401(stack):
    acct = stack.account()
    assert acct.client.get("/pipelines").status_code == 200
    set_token(stack, acct.token, revoked_at=datetime.now(UTC))
    assert_unauthorized(acct.client.get("/pipelines"))
    assert_unauthorized(acct.client.post("/pipelines", json=PIPELINE))


def test_an_expired_token_is_401_and_a_future_expiry_is_accepted(stack):
    acct = stack.account()
    set_token(stack, acct.token, expires_at=datetime.now(UTC) + timedelta(hours=1))
    assert acct.client.get("/pipelines").status_code == 200
    set_token(stack, acct.token, expires_at=datetime.now(UTC) - timedelta(seconds=1))
    assert_unauthorized(acct.client.get("/pipelines"))


def test_tokens_are_stored_hashed_and_last_use_is_recorded(stack):
    acct = stack.account()
    acct.client.get("/pipelines")
    with stack.sessions() as session:
        row = session.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(acct.token)))
        tokens = session.scalars(select(ApiToken.token_hash).where(ApiToken.account_id == acct.id)).all()
    assert acct.token not in tokens
    assert row.prefix == acct.token[:12]
    assert row.last_used_at is not None


def test_a_viewer_can_read_but_not_change_anything(stack):
    acct = stack.account()
    client = acct.client
    pipeline = client.post("/pipelines", json=PIPELINE).json()
    run = wait_run(client, client.post(f"/pipelines/{pipeline['id']}/trigger", json={}).json()["id"])
    client.put("/secrets", json={"name": "KEY", "value": "value-1"})
    pipeline = client.get(f"/pipelines/{pipeline['id']}").json()
    with stack.sessions.begin() as session:
        session.execute(update(User).where(User.id == acct.user_id).values(role="viewer"))

    pid, rid = pipeline["id"], run["id"]
    for path in ("/pipelines", f"/pipelines/{pid}", f"/pipelines/{pid}/export", "/pipeline_runs",
                 f"/pipeline_runs/{rid}", f"/pipeline_runs/{rid}/logs", "/secrets"):
        assert client.get(path).status_code == 200, path

    writes = [
        ("POST", "/pipelines", PIPELINE),
        ("POST", "/pipelines/import", None),
        ("PUT", f"/pipelines/{pid}", PIPELINE),
        ("PATCH", f"/pipelines/{pid}", {"is_active": False}),
        ("DELETE", f"/pipelines/{pid}", None),
        ("POST", f"/pipelines/{pid}/clone", None),
        ("POST", f"/pipelines/{pid}/trigger", {}),
        ("POST", f"/pipeline_runs/{rid}/cancel", None),
        ("POST", f"/pipeline_runs/{rid}/retry", None),
        ("PUT", "/secrets", {"name": "KEY", "value": "value-2"}),
        ("DELETE", "/secrets/KEY", None),
    ]
    for method, path, body in writes:
        response = client.request(method, path, json=body)
        assert response.status_code == 403, (method, path, response.text)
        assert response.json() == {"detail": "your role is viewer: it can read but not change anything"}

    assert client.get(f"/pipelines/{pid}").json() == pipeline
    assert client.get("/pipelines").json()["count"] == 1
    assert client.get("/pipeline_runs").json()["count"] == 1
    assert [s["name"] for s in client.get("/secrets").json()["data"]] == ["KEY"]


def test_a_fresh_viewer_account_gets_403_on_writes(stack):
    client = stack.account(role="viewer").client
    assert client.get("/pipelines").json() == {"data": [], "count": 0}
    response = client.post("/pipelines", json=PIPELINE)
    assert response.status_code == 403
    assert client.get("/pipelines").json()["count"] == 0


def test_a_member_can_write(stack):
    client = stack.account(role="member").client
    created = client.post("/pipelines", json=PIPELINE)
    assert created.status_code == 201
    assert client.put("/secrets", json={"name": "K", "value": "v12"}).status_code == 200


def test_health_reports_database_and_temporal_without_a_token(stack):
    response = httpx.get(f"{stack.url}/health", timeout=30)
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "api": "ok", "database": "ok", "temporal": "ok"}
