"""domain.access: the scope each route needs, who is refused and why, what implies what."""

from __future__ import annotations

import pytest

from domain import access


@pytest.mark.parametrize(("method", "path", "scope"), [
    ("GET", "/pipelines", "pipelines:read"),
    ("HEAD", "/pipelines/{pipeline_id}", "pipelines:read"),
    ("POST", "/pipelines", "pipelines:write"),
    ("delete", "/pipelines/{pipeline_id}", "pipelines:write"),
    ("GET", "/schedules", "pipelines:read"),
    ("POST", "/pipelines/{pipeline_id}/trigger", "runs:trigger"),
    ("POST", "/pipeline_runs/{run_id}/cancel", "runs:trigger"),
    ("GET", "/pipeline_runs/{run_id}", "runs:read"),
    ("POST", "/pipeline_runs/{run_id}/steps/{step_id}/{decision}", "approvals:decide"),
    ("GET", "/approvals", "approvals:read"),
    ("GET", "/docker/hosts", "docker:read"),
    ("POST", "/swarm/clusters", "swarm:write"),
    ("GET", "/container_policy", "containers:read"),
    ("PUT", "/container_policy", "admin"),
    ("GET", "/users/me", "users:read"),
    ("PATCH", "/users/me", "users:read"),
    ("PATCH", "/users/{user_id}", "admin"),
    ("POST", "/users", "admin"),
    ("GET", "/tokens", "tokens:read"),
    ("POST", "/tokens/{token_id}/rotate", "tokens:write"),
    ("GET", "/audit_events", "admin"),
    ("GET", "/invitations", "admin"),
])
def test_required_scope_follows_area_method_and_overrides(method, path, scope):
    assert access.required_scope(method, path) == scope
    assert scope in access.SCOPES


def test_an_unknown_area_raises_so_a_new_route_cannot_ship_unclassified():
    with pytest.raises(KeyError):
        access.required_scope("GET", "/brand_new_things")


@pytest.mark.parametrize("path", ["/health", "/approval_tokens/{token}/{decision}", "/webhooks/{provider}/{repository_id}",
                                  "/providers/oauth/callback", "/invitations/{token}", "/invitations/{token}/accept"])
def test_public_routes(path):
    assert access.is_public(path)


@pytest.mark.parametrize("path", ["/invitations", "/invitations/{invitation_id}", "/invitations/{token}/resend",
                                  "/healthz", "/pipelines", "/tokens",
                                  "/providers/{provider_id}/oauth/authorize"])
def test_routes_taking_a_token_are_not_public(path):
    assert not access.is_public(path)


def test_scopes_are_known_and_the_shape_is_area_level():
    assert len(set(access.SCOPES)) == len(access.SCOPES)
    assert {"pipelines:read", "pipelines:write", "runs:trigger", "approvals:decide", "docker:write",
            "swarm:write", "admin"} <= set(access.SCOPES)
    assert "approvals:write" not in access.SCOPES and "users:write" not in access.SCOPES
    assert access.ALL not in access.SCOPES
    assert set(access.ROLE_SCOPES) == set(access.ROLES)


def test_write_implies_read_of_the_same_area_only():
    assert access.satisfies(["pipelines:write"], "pipelines:read")
    assert not access.satisfies(["pipelines:read"], "pipelines:write")
    assert not access.satisfies(["pipelines:write"], "runs:read")
    assert not access.satisfies(["runs:trigger"], "runs:read")
    assert not access.satisfies(["runs:write"], "runs:trigger")
    assert access.satisfies([access.ALL], "admin")
    assert not access.satisfies([], "pipelines:read")


def test_refusal_names_the_role_or_the_missing_token_scope():
    assert access.refusal("member", ["*"], "pipelines:write") is None
    assert access.refusal("member", ["pipelines:read"], "pipelines:write") == \
        "this API token lacks the scope 'pipelines:write'"
    assert "viewer" in access.refusal("viewer", ["*"], "pipelines:write")
    assert access.refusal("viewer", ["*"], "pipelines:read") is None
    assert access.refusal("member", ["*"], "admin") == "your role is member: only an account admin can use this"
    assert access.refusal("viewer", ["*"], "admin") == "your role is viewer: only an account admin can use this"
    assert access.refusal("admin", ["containers:write"], "admin") == "this API token lacks the scope 'admin'"
    assert access.refusal("approver", ["*"], "approvals:decide") is None
    assert "'pipelines:write'" in access.refusal("approver", ["*"], "pipelines:write")
    assert access.refusal("viewer", ["*"], "tokens:write") is None  # everyone manages their own tokens
    assert access.refusal("nobody", ["*"], "pipelines:read") is not None


def test_unknown_and_beyond_role_scopes():
    assert access.unknown_scopes(["*", "pipelines:read", "pipelines:admin", "root"]) == ["pipelines:admin", "root"]
    assert access.beyond_role("member", ["*", "pipelines:write", "admin"]) == ["admin"]
    assert access.beyond_role("viewer", ["pipelines:read", "pipelines:write", "tokens:write"]) == ["pipelines:write"]
    assert access.beyond_role("approver", ["approvals:decide", "runs:trigger"]) == ["runs:trigger"]
    assert access.beyond_role("admin", list(access.SCOPES)) == []


def test_a_token_hands_on_only_what_it_holds():
    assert access.not_held(["*"], ["*", "admin"]) == []
    assert access.not_held(["runs:trigger", "tokens:write"], ["*"]) == ["*"]
    assert access.not_held(["runs:trigger", "tokens:write"], ["runs:trigger", "pipelines:write"]) == ["pipelines:write"]
    assert access.not_held(["pipelines:write"], ["pipelines:read"]) == []  # write implies read
    assert access.not_held(["pipelines:read"], ["pipelines:write"]) == ["pipelines:write"]
