"""Who may do what: roles, API token scopes, and the scope every route of the API requires.

A request is allowed when the caller's **role** grants the route's scope *and* the **token**
carries it. Roles are the coarse switch an admin sets per user; scopes let a user narrow one
token (a CI job that only triggers runs holds ``runs:trigger`` and nothing else).

* ``X:write`` implies ``X:read``; ``*`` on a token means "everything my role allows".
* ``admin`` is the account administration scope (users, invitations, everyone's tokens, the
  audit log, container policy and quotas); only the admin role grants it.
* Every route is classified by :func:`required_scope` from its method and path template; a
  path this table does not know raises, so a new route cannot ship unclassified
  (tests/api/test_scopes.py walks the whole OpenAPI document).
"""

from __future__ import annotations

from collections.abc import Iterable

ROLES = ("admin", "member", "approver", "viewer")
ROLE_DESCRIPTIONS = {
    "admin": "everything, including users, tokens of others, policies and the audit log",
    "member": "reads and changes pipelines, runs, repositories, engines and containers; decides approvals",
    "approver": "reads everything and decides approvals it is a recipient of; changes nothing else",
    "viewer": "reads everything, changes nothing",
}

AREAS = ("pipelines", "runs", "secrets", "repositories", "docker", "swarm", "containers", "users", "tokens",
         "approvals", "ai", "integrations")
#: Every scope a token may carry (besides ``*``).
SCOPES: tuple[str, ...] = (
    *(f"{area}:{level}" for area in AREAS for level in ("read", "write")
      if (area, level) not in (("approvals", "write"), ("users", "write"))),
    "runs:trigger", "approvals:decide", "admin",
)
ALL = "*"

_READS = frozenset(scope for scope in SCOPES if scope.endswith(":read"))
ROLE_SCOPES: dict[str, frozenset[str]] = {
    "viewer": _READS | {"tokens:write"},
    "approver": _READS | {"tokens:write", "approvals:decide"},
    "member": frozenset(SCOPES) - {"admin"},
    "admin": frozenset(SCOPES),
}

# First path segment (after /api/v1/devops) -> scope area; reads need ``area:read``, the rest
# ``area:write``, unless OVERRIDES names the route.
_AREA_OF = {
    "pipelines": "pipelines", "pipeline_templates": "pipelines", "schedules": "pipelines",
    "pipeline_runs": "runs", "secrets": "secrets", "providers": "repositories", "repositories": "repositories",
    "docker": "docker", "swarm": "swarm", "containers": "containers", "container_templates": "containers",
    "container_policy": "containers", "container_quotas": "containers", "users": "users", "tokens": "tokens",
    "approvals": "approvals", "audit_events": "admin", "invitations": "admin", "accounts": "admin",
    "ai_configs": "ai", "prompt_templates": "ai", "ai_usage": "ai",
    "integration_templates": "integrations", "integration_instances": "integrations",
    "integration_executions": "integrations", "integration_credentials": "integrations",
    "missions": "runs",
}
OVERRIDES: dict[tuple[str, str], str] = {
    ("POST", "/pipelines/{pipeline_id}/trigger"): "runs:trigger",
    ("POST", "/schedules/{schedule_id}/trigger"): "runs:trigger",
    ("POST", "/pipeline_runs/{run_id}/cancel"): "runs:trigger",
    ("POST", "/pipeline_runs/{run_id}/retry"): "runs:trigger",
    ("POST", "/pipeline_runs/{run_id}/steps/{step_id}/{decision}"): "approvals:decide",
    ("GET", "/providers/{provider_id}/oauth/authorize"): "repositories:write",
    ("PUT", "/container_policy"): "admin",
    ("PUT", "/container_quotas"): "admin",
    # your own profile (notification targets) is yours to change whatever your role
    ("PATCH", "/users/me"): "users:read",
    # a preview changes nothing
    ("POST", "/prompt_templates/{template_id}/render"): "ai:read",
    # starting a run for an external mission is triggering a run
    ("POST", "/missions/trigger"): "runs:trigger",
}
#: Routes that take no API token at all (their own credential, or none): everything under these
#: prefixes, and these exact paths (exact, so a later admin route such as
#: ``/invitations/{token}/resend`` is not public by accident).
PUBLIC_PREFIXES = ("/approval_tokens/", "/webhooks/")
PUBLIC_PATHS = frozenset({"/health", "/providers/oauth/callback", "/invitations/{token}",
                          "/invitations/{token}/accept"})
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


def required_scope(method: str, path: str) -> str:
    """The scope a route needs. ``path`` is the route's template without the API prefix
    (``/pipelines/{pipeline_id}``). Raises ``KeyError`` for a path of an unknown area."""
    method = method.upper()
    exact = OVERRIDES.get((method, path))
    if exact:
        return exact
    area = _AREA_OF[path.strip("/").split("/", 1)[0]]
    if area == "admin":
        return "admin"
    if area == "users":  # changing users (invite, role, deactivate, delete) is administration
        return "users:read" if method in READ_METHODS else "admin"
    if area == "approvals":
        return "approvals:read" if method in READ_METHODS else "approvals:decide"
    return f"{area}:{'read' if method in READ_METHODS else 'write'}"


def satisfies(held: Iterable[str], needed: str) -> bool:
    """Whether a token holding ``held`` has ``needed`` (``*``, the scope itself, or for a read
    the same area's write)."""
    held = set(held)
    if ALL in held or needed in held:
        return True
    area, _, level = needed.partition(":")
    return level == "read" and f"{area}:write" in held


def refusal(role: str, token_scopes: Iterable[str], needed: str) -> str | None:
    """Why a caller with ``role`` and a token of ``token_scopes`` may not use a route needing
    ``needed``, or None when it may."""
    if needed not in ROLE_SCOPES.get(role, frozenset()):
        if needed == "admin":  # reads of the audit log or invitations too, so not "change"
            return f"your role is {role}: only an account admin can use this"
        if role == "viewer":
            return "your role is viewer: it can read but not change anything"
        return f"your role is {role}: it does not grant the scope '{needed}' this needs"
    if not satisfies(token_scopes, needed):
        return f"this API token lacks the scope '{needed}'"
    return None


def unknown_scopes(scopes: Iterable[str]) -> list[str]:
    return [scope for scope in scopes if scope != ALL and scope not in SCOPES]


def beyond_role(role: str, scopes: Iterable[str]) -> list[str]:
    """Scopes a user of ``role`` could never use (asking for them on a token is refused)."""
    granted = ROLE_SCOPES.get(role, frozenset())
    return [scope for scope in scopes if scope != ALL and scope not in granted]


def not_held(held: Iterable[str], requested: Iterable[str]) -> list[str]:
    """Scopes of ``requested`` that a token holding ``held`` may not hand on: a token never
    makes a token stronger than itself (only a ``*`` token can make a ``*`` one)."""
    held = set(held)
    if ALL in held:
        return []
    return [scope for scope in requested if scope == ALL or not satisfies(held, scope)]
