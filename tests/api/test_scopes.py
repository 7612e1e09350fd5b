"""Token scopes are enforced on every route: each operation of the app is public or needs a known
scope (a new unclassified route fails here), and real requests with narrowed tokens and
limited roles get 403 naming the scope; revoked, expired and rotated-out tokens get 401."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from starlette.requests import Request

from api import openapi
from api.deps import bearer, required_scope_of
from api.main import API_PREFIX, create_app
from domain import access
from domain.errors import Forbidden
from settings import Settings
from tests.api.test_tokens import add_user, client_of, made
from tests.harness import wait_run
from tests.workflows.test_approvals import gated_pipeline, waiting
from tests.workflows.test_pipeline_run import trigger

METHODS = ("get", "put", "post", "delete", "patch", "options", "head", "trace")
PIPELINE = {"name": "p", "steps": [{"id": "a", "type": "run_tests", "with": {"command": "true"}}]}


@pytest.fixture(scope="module")
def app():
    return create_app(Settings())


def _operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(method.upper(), path, operation) for path, item in spec["paths"].items()
            for method, operation in item.items() if method in METHODS]


def test_every_operation_is_public_or_needs_a_known_scope(app):
    spec = app.openapi()
    unclassified, documented = [], []
    for method, path, operation in _operations(spec):
        template = path.removeprefix(API_PREFIX)
        if not path.startswith(API_PREFIX) or access.is_public(template):
            assert "x-required-scope" not in operation, f"{method} {path}"
            continue
        try:
            scope = access.required_scope(method, template)
        except KeyError:
            unclassified.append(f"{method} {path}")
            continue
        if scope not in access.SCOPES:
            unclassified.append(f"{method} {path}: {scope}")
        if operation.get("x-required-scope") != scope or f"`{scope}`" not in operation.get("description", "") \
                or "403" not in operation["responses"]:
            documented.append(f"{method} {path}")
    assert not unclassified, "routes without an access rule (add their area to domain/access.py):\n" + \
        "\n".join(unclassified)
    assert not documented, f"scope not published in the OpenAPI document: {documented}"
    assert len(_operations(spec)) > 150  # the whole app, not a fragment


def test_every_route_taking_a_token_is_in_the_document_that_decides_its_scope(app):
    """api.deps.required_scope_of finds a route's template by operation id in the OpenAPI
    document: a token-taking route hidden from it would be refused at every call."""
    templates = app.state.route_templates
    hidden = [route.name for route in openapi._api_routes(app.routes)
              if any(call is bearer for call in openapi._calls(route.dependant)) and route.name not in templates]
    assert hidden == []
    public = [path for path in templates.values() if access.is_public(path.removeprefix(API_PREFIX))]
    assert {"/health", f"{API_PREFIX}/webhooks/{{provider}}/{{repository_id}}"} <= set(public)


@pytest.mark.parametrize(("template", "expected"), [
    ("/brand_new_things", "this route has no access rule; refusing it"),  # an area nobody classified
    ("", "this route has no access rule; refusing it"),  # a route missing from the document
    ("/pipelines/{pipeline_id}", None),
])
def test_a_route_without_an_access_rule_is_refused_not_a_500(template, expected):
    templates = {"brand_new": API_PREFIX + template} if template else {}
    request = Request({"type": "http", "method": "DELETE", "path": "/", "headers": [],
                       "app": SimpleNamespace(state=SimpleNamespace(route_templates=templates)),
                       "route": SimpleNamespace(name="brand_new")})
    if expected is None:
        assert required_scope_of(request) == "pipelines:write"
        return
    with pytest.raises(Forbidden) as refused_:
        required_scope_of(request)
    assert refused_.value.detail == expected


def scoped(stack, acct, *scopes: str) -> httpx.Client:
    return client_of(stack, made(acct.client.post("/tokens", json={"name": "scoped", "scopes": list(scopes)}))["token"])


def refused(response: httpx.Response, scope: str) -> None:
    assert response.status_code == 403, response.text
    assert f"'{scope}'" in response.json()["detail"], response.text


def test_a_read_token_reads_but_does_not_write(stack):
    acct = stack.account()
    reader = scoped(stack, acct, "pipelines:read")
    assert reader.get("/pipelines").status_code == 200
    refused(reader.post("/pipelines", json=PIPELINE), "pipelines:write")
    refused(reader.get("/pipeline_runs"), "runs:read")
    refused(reader.get("/secrets"), "secrets:read")
    refused(reader.get("/tokens"), "tokens:read")
    assert acct.client.get("/pipelines").json()["count"] == 0  # the refused write changed nothing


def test_write_implies_read(stack):
    acct = stack.account()
    writer = scoped(stack, acct, "pipelines:write")
    created = writer.post("/pipelines", json=PIPELINE)
    assert created.status_code == 201, created.text
    assert writer.get(f"/pipelines/{created.json()['id']}").status_code == 200
    assert writer.get("/pipelines").json()["count"] == 1
    refused(writer.post(f"/pipelines/{created.json()['id']}/trigger", json={}), "runs:trigger")


def test_a_trigger_token_triggers_runs_but_reads_no_docker_hosts(stack):
    acct = stack.account()
    pipeline = acct.client.post("/pipelines", json=PIPELINE).json()
    ci = scoped(stack, acct, "runs:trigger")
    run = ci.post(f"/pipelines/{pipeline['id']}/trigger", json={})
    assert run.status_code == 201, run.text
    refused(ci.get("/docker/hosts"), "docker:read")
    refused(ci.get(f"/pipeline_runs/{run.json()['id']}"), "runs:read")
    refused(ci.post("/pipelines", json=PIPELINE), "pipelines:write")
    assert wait_run(acct.client, run.json()["id"])["status"] == "success"


def test_a_viewers_star_token_cannot_write(stack):
    acct = stack.account(role="viewer")
    assert acct.client.get("/pipelines").status_code == 200
    for response in (acct.client.post("/pipelines", json=PIPELINE), acct.client.put("/secrets", json={"name": "A", "value": "b"}),
                     acct.client.post("/docker/hosts", json={"name": "h", "endpoint": "unix:///var/run/docker.sock"})):
        assert response.status_code == 403, response.text
        assert "viewer" in response.json()["detail"]


def test_an_approver_reads_and_decides_approvals_but_changes_nothing_else(stack):
    admin = stack.account()
    _, approver = add_user(stack, admin, "approver")
    email = approver.get("/users/me").json()["email"]
    run = trigger(admin, gated_pipeline(admin, [email]))
    waiting(admin, run["id"], "deploy")
    assert approver.get(f"/pipeline_runs/{run['id']}").status_code == 200
    assert approver.get("/pipelines").status_code == 200
    assert approver.get("/approvals", params={"status": "pending"}).status_code == 200
    refused(approver.post("/pipelines", json=PIPELINE), "pipelines:write")
    refused(approver.post(f"/pipeline_runs/{run['id']}/retry", json={}), "runs:trigger")
    response = approver.post(f"/pipeline_runs/{run['id']}/steps/deploy/approve", json={"comment": "ok"})
    assert response.status_code == 200, response.text  # reached the workflow and was accepted
    assert response.json()["decided_by"] == email and response.json()["outcome"] == "approved"
    assert wait_run(admin.client, run["id"])["status"] == "success"
    # an approver's token narrowed to reading cannot decide
    reader = client_of(stack, made(approver.post("/tokens", json={"name": "r", "scopes": ["runs:read"]}))["token"])
    refused(reader.post(f"/pipeline_runs/{run['id']}/steps/deploy/approve", json={}), "approvals:decide")


def test_admin_routes_need_the_admin_scope_and_role(stack):
    admin = stack.account()
    assert admin.client.put("/container_policy", json={"allow_privileged": False}).status_code == 200
    no_admin = scoped(stack, admin, "containers:write", "containers:read")
    refused(no_admin.put("/container_policy", json={"allow_privileged": False}), "admin")
    assert no_admin.get("/container_policy").status_code == 200
    with_admin = scoped(stack, admin, "admin")
    assert with_admin.put("/container_policy", json={"allow_privileged": False}).status_code == 200
    _, member = add_user(stack, admin, "member")
    response = member.put("/container_policy", json={"allow_privileged": False})
    assert response.status_code == 403 and "admin" in response.json()["detail"]


def test_revoked_and_expired_tokens_are_401(stack):
    acct = stack.account()
    revoked = made(acct.client.post("/tokens", json={"name": "r", "scopes": ["pipelines:read"]}))
    client = client_of(stack, revoked["token"])
    assert client.get("/pipelines").status_code == 200
    assert acct.client.delete(f"/tokens/{revoked['id']}").status_code == 204
    assert client.get("/pipelines").status_code == 401

    soon = datetime.now(UTC) + timedelta(seconds=2)
    expiring = client_of(stack, made(acct.client.post("/tokens", json={"name": "e", "expires_at": soon.isoformat()}))["token"])
    assert expiring.get("/pipelines").status_code == 200
    time.sleep(max(0.0, (soon - datetime.now(UTC)).total_seconds()) + 0.2)
    response = expiring.get("/pipelines")
    assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"


def test_a_rotated_pair_both_work_during_the_grace_and_the_old_one_fails_after(stack):
    acct = stack.account()
    old = made(acct.client.post("/tokens", json={"name": "ci", "scopes": ["runs:trigger", "pipelines:read"]}))
    new = made(acct.client.post(f"/tokens/{old['id']}/rotate", json={"grace_minutes": 10}))
    old_client, new_client = client_of(stack, old["token"]), client_of(stack, new["token"])
    assert old_client.get("/pipelines").status_code == 200 and new_client.get("/pipelines").status_code == 200
    refused(new_client.get("/docker/hosts"), "docker:read")  # the scopes carried over, no more
    newest = made(acct.client.post(f"/tokens/{new['id']}/rotate", json={"grace_minutes": 0}))
    assert new_client.get("/pipelines").status_code == 401
    assert client_of(stack, newest["token"]).get("/pipelines").status_code == 200
    assert old_client.get("/pipelines").status_code == 200  # its own grace is not cut short
