"""The audit log on the real stack: every change of secrets, provider credentials, registries, the
container policy and quotas is recorded with who, what, when and from where; GET /audit_events is
for the account's admins only, filters and pages; another account's events never show; and no
secret value ever reaches the log, its table or the application's logs."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

import httpx
import pytest
from sqlalchemy import select

from api.auth import issue_token
from db.access_models import AuditEvent
from db.models import ApiToken, User
from services import audit

AGENT = "audit-test/1.0 (+https://example.test)"


@dataclass
class Member:
    account_id: int
    user_id: int
    email: str
    token_id: int
    client: httpx.Client


@pytest.fixture
def clients() -> Iterator[list[httpx.Client]]:
    made: list[httpx.Client] = []
    yield made
    for client in made:
        client.close()


def admin_of(stack, clients: list[httpx.Client]) -> Member:
    """A fresh account's admin, with a recognisable user agent."""
    acct = stack.account()
    with stack.sessions() as session:
        email = session.scalar(select(User.email).where(User.id == acct.user_id))
        token_id = session.scalar(select(ApiToken.id).where(ApiToken.user_id == acct.user_id))
    acct.client.headers["User-Agent"] = AGENT
    return Member(acct.id, acct.user_id, email, token_id, acct.client)


def colleague(stack, admin: Member, role: str, clients: list[httpx.Client]) -> Member:
    """Another user of the admin's account with ``role`` and a token of its own."""
    with stack.sessions.begin() as session:
        user = User(account_id=admin.account_id, email=f"{role}-{uuid.uuid4().hex[:8]}@example.test", role=role)
        session.add(user)
        session.flush()
        issued = issue_token(session, user, role)
        found = Member(admin.account_id, user.id, user.email, issued.row.id, None)  # type: ignore[arg-type]
        token = issued.token
    found.client = httpx.Client(base_url=f"{stack.url}/api/v1/devops", timeout=90,
                                headers={"Authorization": f"Bearer {token}", "User-Agent": AGENT})
    clients.append(found.client)
    return found


def ok(response: httpx.Response, status: int = 200) -> dict:
    assert response.status_code == status, response.text
    return response.json() if response.content else {}


def events(client: httpx.Client, **params) -> dict:
    return ok(client.get("/audit_events", params=params))


def every_event(client: httpx.Client) -> list[dict]:
    found, offset = [], 0
    while True:
        page = events(client, limit=200, offset=offset)
        found += page["data"]
        offset += 200
        if offset >= page["count"]:
            return found


def locs(response: httpx.Response) -> list[list]:
    assert response.status_code == 422, response.text
    return [problem["loc"] for problem in response.json()["detail"]]


def make_every_change(client: httpx.Client, values: dict[str, str]) -> dict[str, int]:
    """One of each audited change; ``values`` are the secret values to use. Returns the ids made."""
    ok(client.put("/secrets", json={"name": "DB_PASSWORD", "value": values["secret"]}))
    ok(client.put("/secrets", json={"name": "DB_PASSWORD", "value": values["secret2"]}))
    ok(client.delete("/secrets/DB_PASSWORD"), 204)
    provider = ok(client.post("/providers", json={"name": f"gh-{uuid.uuid4().hex[:6]}", "provider_type": "github"}),
                  201)
    credential = ok(client.post(f"/providers/{provider['id']}/credentials",
                                json={"name": "ci-bot", "token": values["token"]}), 201)
    ok(client.delete(f"/providers/{provider['id']}/credentials/{credential['id']}"), 204)
    registry = ok(client.post("/docker/registries", json={"name": "internal", "url": "https://registry.example.com",
                                                          "username": "ci", "password": values["password"]}), 201)
    ok(client.patch(f"/docker/registries/{registry['id']}", json={"password": values["password2"],
                                                                   "username": "deployer"}))
    ok(client.delete(f"/docker/registries/{registry['id']}"), 204)
    ok(client.put("/container_policy", json={"allow_privileged": True, "allowed_capabilities": ["NET_ADMIN"]}))
    ok(client.put("/container_quotas", json={"max_concurrent": 7}))
    return {"provider": provider["id"], "credential": credential["id"], "registry": registry["id"]}


def distinctive() -> dict[str, str]:
    return {kind: f"{kind}-{uuid.uuid4().hex}" for kind in ("secret", "secret2", "token", "password", "password2")}


# ---- what is recorded -------------------------------------------------------------------------


def test_each_change_is_recorded_with_who_what_and_from_where(stack, clients):
    admin = admin_of(stack, clients)
    started = datetime.now(UTC) - timedelta(seconds=5)
    ids = make_every_change(admin.client, distinctive())

    quota = ok(admin.client.get("/container_quotas"))["limits"]
    page = events(admin.client)
    assert page["count"] == 10
    registry = {"name": "internal", "url": "https://registry.example.com"}
    credential = {"provider_id": ids["provider"], "name": "ci-bot", "kind": "token"}
    got = [(e["action"], e["target_type"], e["target_id"], e["details"]) for e in reversed(page["data"])]
    assert got == [
        ("secret.created", "secret", "DB_PASSWORD", {"name": "DB_PASSWORD"}),
        ("secret.updated", "secret", "DB_PASSWORD", {"name": "DB_PASSWORD"}),
        ("secret.deleted", "secret", "DB_PASSWORD", {"name": "DB_PASSWORD"}),
        ("credential.created", "credential", str(ids["credential"]), credential),
        ("credential.deleted", "credential", str(ids["credential"]), credential),
        ("registry.created", "registry", str(ids["registry"]), {**registry, "username": "ci"}),
        ("registry.updated", "registry", str(ids["registry"]),
         {**registry, "username": "deployer", "changed": ["password", "username"]}),
        ("registry.deleted", "registry", str(ids["registry"]), {**registry, "username": "deployer"}),
        ("policy.updated", "container_policy", str(admin.account_id),
         {"changed": ["allow_privileged", "allowed_capabilities"], "allow_privileged": True,
          "allow_host_network": False, "allowed_capabilities": ["NET_ADMIN"], "allowed_bind_paths": []}),
        ("quota.updated", "container_quota", str(admin.account_id), {"changed": ["max_concurrent"], **quota}),
    ]
    assert quota["max_concurrent"] == 7

    times = [datetime.fromisoformat(e["created_at"]) for e in page["data"]]
    assert times == sorted(times, reverse=True)
    assert all(started <= t <= datetime.now(UTC) + timedelta(seconds=5) for t in times)
    ids_ = [e["id"] for e in page["data"]]
    assert ids_ == sorted(ids_, reverse=True)
    for event in page["data"]:
        assert set(event) == {"id", "action", "actor", "actor_user_id", "token_id", "target_type", "target_id",
                              "details", "ip", "user_agent", "created_at"}
        assert (event["actor"], event["actor_user_id"], event["token_id"]) == (admin.email, admin.user_id,
                                                                               admin.token_id)
        assert event["ip"] == "127.0.0.1"
        assert event["user_agent"] == AGENT
        assert ok(admin.client.get(f"/audit_events/{event['id']}")) == event


def test_a_member_is_recorded_as_themselves(stack, clients):
    admin = admin_of(stack, clients)
    member = colleague(stack, admin, "member", clients)
    ok(member.client.put("/secrets", json={"name": "API_KEY", "value": "x" * 20}))
    [event] = events(admin.client)["data"]
    assert (event["action"], event["actor"], event["actor_user_id"], event["token_id"]) == (
        "secret.created", member.email, member.user_id, member.token_id)


def test_a_refused_change_records_nothing(stack, clients):
    admin = admin_of(stack, clients)
    viewer = colleague(stack, admin, "viewer", clients)
    member = colleague(stack, admin, "member", clients)
    assert admin.client.delete("/secrets/MISSING").status_code == 404
    assert locs(admin.client.put("/secrets", json={"name": "bad name", "value": "v"})) == [["body", "name"]]
    assert viewer.client.put("/secrets", json={"name": "X", "value": "v"}).status_code == 403
    assert member.client.put("/container_policy", json={"allow_privileged": True}).status_code == 403
    assert member.client.put("/container_quotas", json={"max_concurrent": 1}).status_code == 403
    assert locs(admin.client.put("/container_policy", json={"allowed_capabilities": ["no such"]})) == [
        ["body", "allowed_capabilities", 0]]
    assert locs(admin.client.put("/container_quotas", json={"max_concurrent": None})) == [["body", "max_concurrent"]]
    ok(admin.client.post("/docker/registries", json={"name": "taken", "url": "https://r.example.com"}), 201)
    clash = admin.client.post("/docker/registries", json={"name": "taken", "url": "https://r2.example.com",
                                                          "password": "p"})
    assert clash.status_code == 409, clash.text
    provider = ok(admin.client.post("/providers", json={"name": "gh", "provider_type": "github"}), 201)
    ok(admin.client.post(f"/providers/{provider['id']}/credentials", json={"name": "bot", "token": "t"}), 201)
    again = admin.client.post(f"/providers/{provider['id']}/credentials", json={"name": "bot", "token": "t2"})
    assert again.status_code == 409
    assert admin.client.delete(f"/providers/{provider['id']}/credentials/999999999").status_code == 404
    assert [e["action"] for e in events(admin.client)["data"]] == ["credential.created", "registry.created"]


# ---- never a secret value -------------------------------------------------------------------


def test_no_secret_value_reaches_the_log_its_table_or_the_app_logs(stack, clients, caplog):
    caplog.set_level(logging.DEBUG)
    # SQLAlchemy's and uvicorn's loggers hold back below WARNING on their own: open them up, so the
    # statements with their parameters and the access log are searched too
    for name in ("sqlalchemy.engine", "uvicorn.access", "uvicorn.error"):
        caplog.set_level(logging.INFO, logger=name)
    admin = admin_of(stack, clients)
    values = distinctive()
    make_every_change(admin.client, values)
    # a secret sent in the wrong shape is refused without being echoed or recorded
    refused = admin.client.put("/secrets", json={"name": "bad name", "value": values["secret"]})
    assert refused.status_code == 422 and values["secret"] not in refused.text

    listed = every_event(admin.client)
    assert len(listed) == 10
    one_by_one = [admin.client.get(f"/audit_events/{e['id']}").text for e in listed]
    with stack.sessions() as session:
        rows = session.scalars(select(AuditEvent).where(AuditEvent.account_id == admin.account_id)).all()
        stored = json.dumps([{column.name: getattr(row, column.name) for column in AuditEvent.__table__.columns}
                             for row in rows], default=str)
    assert len(rows) == 10
    texts = {"GET /audit_events": json.dumps(listed), "GET /audit_events/{id}": "\n".join(one_by_one),
             "audit_events table": stored, "app logs": caplog.text}
    for value in values.values():
        for where, text in texts.items():
            assert value not in text, f"{value!r} found in {where}"
    # the names are there: the search above would have found the values if they had been recorded
    assert "DB_PASSWORD" in texts["audit_events table"] and "ci-bot" in texts["GET /audit_events"]


def test_scrub_redacts_secret_keys_and_our_credentials_however_they_are_passed():
    token = "dvo_" + "A1b2" * 10
    assert audit.scrub({"name": "X", "value": "v", "token": "t", "password": "p", "api_key": "k",
                        "token_id": 3, "token_name": "ci", "scopes": ["*"], "changed": ["password"],
                        "nested": [{"secret": "s"}, f"saw {token}"], "note": "inv_" + "z" * 20}) == {
        "name": "X", "value": "[redacted]", "token": "[redacted]", "password": "[redacted]",
        "api_key": "[redacted]", "token_id": 3, "token_name": "ci", "scopes": ["*"], "changed": ["password"],
        "nested": [{"secret": "[redacted]"}, "saw [redacted]"], "note": "[redacted]"}


# ---- who may read ---------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["member", "viewer", "approver"])
def test_only_admins_read_the_log(stack, clients, role):
    admin = admin_of(stack, clients)
    ok(admin.client.put("/secrets", json={"name": "S", "value": "v"}))
    event_id = events(admin.client)["data"][0]["id"]
    other = colleague(stack, admin, role, clients)
    for path in ("/audit_events", f"/audit_events/{event_id}"):
        refused = other.client.get(path)
        assert refused.status_code == 403, refused.text
    alone = stack.account(role=role)
    assert alone.client.get("/audit_events").status_code == 403
    assert httpx.get(f"{stack.url}/api/v1/devops/audit_events").status_code == 401


def test_an_admin_token_without_the_admin_scope_is_refused(stack, clients):
    admin = admin_of(stack, clients)
    with stack.sessions.begin() as session:
        user = session.get(User, admin.user_id)
        narrow = issue_token(session, user, "ci", scopes=["secrets:write"]).token
    client = httpx.Client(base_url=f"{stack.url}/api/v1/devops", headers={"Authorization": f"Bearer {narrow}"})
    clients.append(client)
    ok(client.put("/secrets", json={"name": "FROM_CI", "value": "v"}))
    refused = client.get("/audit_events")
    assert refused.status_code == 403 and "'admin'" in refused.text, refused.text
    [event] = events(admin.client)["data"]
    assert event["action"] == "secret.created" and event["token_id"] not in (None, admin.token_id)


def test_another_accounts_events_never_show(stack, clients):
    mine, theirs = admin_of(stack, clients), admin_of(stack, clients)
    ok(mine.client.put("/secrets", json={"name": "MINE", "value": "v"}))
    ok(theirs.client.put("/secrets", json={"name": "THEIRS", "value": "v"}))
    ok(theirs.client.put("/container_policy", json={"allow_host_network": True}))
    their_ids = [e["id"] for e in events(theirs.client)["data"]]
    assert len(their_ids) == 2

    page = events(mine.client)
    assert page["count"] == 1 and page["data"][0]["details"] == {"name": "MINE"}
    assert "THEIRS" not in json.dumps(every_event(mine.client))
    for event_id in their_ids:
        missing = mine.client.get(f"/audit_events/{event_id}")
        assert missing.status_code == 404 and missing.json() == {"detail": "audit event not found"}
    assert events(mine.client, actor_user_id=theirs.user_id) == {"data": [], "count": 0}
    assert events(mine.client, target_type="container_policy") == {"data": [], "count": 0}


# ---- filters, pages and bad input --------------------------------------------------------------


def test_filters_and_pages(stack, clients):
    admin = admin_of(stack, clients)
    member = colleague(stack, admin, "member", clients)
    for name in ("A", "B", "C"):
        ok(admin.client.put("/secrets", json={"name": name, "value": "v"}))
    ok(admin.client.put("/secrets", json={"name": "A", "value": "w"}))
    ok(member.client.delete("/secrets/B"), 204)
    ok(admin.client.put("/container_policy", json={"allow_host_network": True}))
    everything = events(admin.client)
    assert everything["count"] == 6

    def actions(**params) -> tuple[int, list[str]]:
        page = events(admin.client, **params)
        return page["count"], [e["action"] for e in page["data"]]

    assert actions(action="secret.created") == (3, ["secret.created"] * 3)
    assert actions(action="secret.") == (5, ["secret.deleted", "secret.updated"] + ["secret.created"] * 3)
    assert actions(action="secret") == (0, [])  # no dot: an exact action, and there is none
    assert actions(action="policy.updated") == (1, ["policy.updated"])
    assert actions(target_type="container_policy") == (1, ["policy.updated"])
    assert actions(target_type="secret", action="secret.created", limit=1) == (3, ["secret.created"])
    assert actions(actor_user_id=member.user_id) == (1, ["secret.deleted"])
    assert actions(actor_user_id=admin.user_id)[0] == 5

    # since: an event's own time includes it; a zone is honoured; a naive time is UTC
    newest = everything["data"][0]
    at = datetime.fromisoformat(newest["created_at"])
    assert actions(since=at.isoformat()) == (1, ["policy.updated"])
    assert actions(since=at.astimezone(timezone_plus(5)).isoformat()) == (1, ["policy.updated"])
    assert actions(since=at.astimezone(UTC).replace(tzinfo=None).isoformat()) == (1, ["policy.updated"])
    assert actions(since=(at + timedelta(seconds=1)).isoformat()) == (0, [])
    assert actions(since="2000-01-01T00:00:00Z")[0] == 6

    # pages: count is the total, pages do not overlap and keep newest-first order
    pages = [events(admin.client, limit=4, offset=offset) for offset in (0, 4, 8)]
    assert [p["count"] for p in pages] == [6, 6, 6]
    assert [len(p["data"]) for p in pages] == [4, 2, 0]
    assert [e["id"] for p in pages for e in p["data"]] == [e["id"] for e in everything["data"]]

    # unknown filter values: empty pages, not errors
    for params in ({"action": "nope.nothing"}, {"action": "nope."}, {"action": "%."}, {"action": "s_cret.created"},
                   {"target_type": "nope"}, {"actor_user_id": 999_999_999}, {"actor_user_id": -1},
                   {"offset": 1000}):
        assert events(admin.client, **params)["data"] == [], params
        assert events(admin.client, **params)["count"] == (6 if params == {"offset": 1000} else 0), params


def timezone_plus(hours: int) -> timezone:
    return timezone(timedelta(hours=hours))


def test_bad_query_values_are_422_naming_the_field(stack, clients):
    admin = admin_of(stack, clients)
    client = admin.client
    for params, loc in (({"limit": 0}, ["query", "limit"]), ({"limit": 201}, ["query", "limit"]),
                        ({"limit": "ten"}, ["query", "limit"]), ({"offset": -1}, ["query", "offset"]),
                        ({"since": "yesterday"}, ["query", "since"]), ({"since": "2026-13-45"}, ["query", "since"]),
                        ({"since": "9999-12-31T23:59:59-05:00"}, ["query", "since"]),
                        ({"actor_user_id": "me"}, ["query", "actor_user_id"]),
                        ({"action": "a" * 101}, ["query", "action"]),
                        ({"target_type": "t" * 51}, ["query", "target_type"])):
        assert locs(client.get("/audit_events", params=params)) == [loc], params
    assert events(client, limit=200)["count"] == 0
    assert events(client, limit=1)["data"] == []
    assert locs(client.get("/audit_events/abc")) == [["path", "event_id"]]
    assert client.get("/audit_events/0").status_code == 404
    assert client.get(f"/audit_events/{2**31 - 1}").status_code == 404
    beyond = client.get(f"/audit_events/{2**62}")  # beyond the id column: 404 or 422, never 500
    assert beyond.status_code == 404 or locs(beyond) == [["path", "event_id"]], beyond.text
