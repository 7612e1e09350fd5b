"""The Integration Framework's pure rules: the template types and categories, execution
statuses, how an instance's configuration is formed from its template's defaults, and which
required credential fields a credential lacks. No I/O here (see ``services.integrations``)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import Any


class IntegrationType(StrEnum):
    GITHUB_ACTION = "github_action"
    WEBHOOK = "webhook"
    MCP_SERVER = "mcp_server"
    REST_API = "rest_api"
    CUSTOM = "custom"


class IntegrationCategory(StrEnum):
    CI_CD = "ci_cd"
    NOTIFICATIONS = "notifications"
    MONITORING = "monitoring"
    DEPLOYMENT = "deployment"
    SECURITY = "security"
    ANALYTICS = "analytics"
    TESTING = "testing"


class InstanceStatus(StrEnum):
    ACTIVE = "active"
    PAUSED = "paused"


class ExecutionStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCESS = "success"
    FAILURE = "failure"
    CANCELLED = "cancelled"


FINISHED_EXECUTION = frozenset({ExecutionStatus.SUCCESS, ExecutionStatus.FAILURE, ExecutionStatus.CANCELLED})
# Attempts of the executor's start (and of each poll) before the execution fails with the last message.
MAX_ATTEMPTS = 4


def execution_workflow_id(execution_id: int) -> str:
    return f"integration-execution-{execution_id}"


def merged_configuration(defaults: Mapping[str, Any] | None, own: Mapping[str, Any] | None) -> dict[str, Any]:
    """The template's ``default_configuration`` with the instance's own on top; objects merge
    key by key (deeply), anything else in ``own`` replaces the default."""
    result: dict[str, Any] = dict(defaults or {})
    for key, value in (own or {}).items():
        if isinstance(value, Mapping) and isinstance(result.get(key), Mapping):
            result[key] = merged_configuration(result[key], value)
        else:
            result[key] = value
    return result


def missing_credential_fields(requirements: Iterable[Mapping[str, Any]], field_names: Iterable[str]) -> list[str]:
    """The names of required credential fields that ``field_names`` lacks, in requirement order."""
    have = set(field_names)
    return [str(req["name"]) for req in requirements
            if req.get("required", True) and str(req.get("name")) not in have]


def required_credential_fields(requirements: Iterable[Mapping[str, Any]]) -> list[str]:
    return [str(req["name"]) for req in requirements if req.get("required", True)]
