"""Request and response shapes of ``/swarm/deployments`` (rollouts), and the pure check of a
rollout's strategy options, shared with the ``deploy`` pipeline step's save-time validation.

:func:`rollout_problems` returns every problem as ``(location, message)``; the location is
relative to the object holding ``strategy`` / ``steps`` / ``blue_green`` / ``rolling``, so the
API prefixes ``body`` and a pipeline document prefixes ``steps.<n>.with``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from api.pages import Page
from domain.rollouts import (  # noqa: F401  (the strategy check, re-exported)
    Problem,
    analysis_problems,
    rollout_problems,
)
from domain.statuses import DeploymentStatus

# ---- request / response models ---------------------------------------------------------------------


class DeploymentCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "cluster_id": 1, "service": "web", "image": "registry.example/web:2", "strategy": "canary",
        "steps": [{"set_weight": 20}, {"pause": {"duration": "30s"}},
                  {"analysis": {"interval": 5, "count": 3, "failure_limit": 0, "http": {"port": 80, "path": "/"}}},
                  {"set_weight": 50}, {"pause": {}}],
    }]})

    cluster_id: int
    service: str = Field(min_length=1, max_length=300)
    image: str = Field(min_length=1, max_length=500)
    strategy: str
    steps: list[Any] | None = None
    blue_green: dict[str, Any] | None = None
    rolling: dict[str, Any] | None = None
    env: dict[str, str] | None = None
    progress_deadline_seconds: int | None = Field(default=None, ge=5, le=3600)


class DeploymentControl(BaseModel):
    model_config = ConfigDict(extra="forbid")

    full: bool = False
    reason: str = Field(default="", max_length=1000)


class RollbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    revision_number: int = Field(ge=1)
    rolling: dict[str, Any] | None = None


class DeploymentPublic(BaseModel):
    id: int
    cluster_id: int
    service: str
    strategy: str
    status: DeploymentStatus
    revision: int | None
    previous_revision: int | None
    image: str | None
    image_digest: str | None
    config: dict[str, Any]
    state: dict[str, Any]
    current_step: int | None
    error: str | None
    workflow_id: str | None
    pipeline_run_id: int | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    live: bool = False  # state comes from the running workflow's query


DeploymentsPublic = Page[DeploymentPublic]


class DeploymentControlPublic(BaseModel):
    deployment_id: int
    action: str
    status: DeploymentStatus
    message: str


class DeploymentEventPublic(BaseModel):
    id: int
    event_type: str
    result: str | None
    payload: dict[str, Any]
    created_at: datetime


DeploymentEventsPublic = Page[DeploymentEventPublic]
