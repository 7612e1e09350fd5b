"""Response and request shapes of pipelines, runs, secrets and health (templates and providers
have their own modules): ``XPublic`` for one object, ``XsPublic = Page[XPublic]`` for lists
(``api.pages``: ``count`` is the total across pages). Statuses are ``domain.statuses`` enums, so
OpenAPI lists their values."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from api.pages import Page
from domain.statuses import ApprovalDecision, RunStatus, StepStatus


class PipelineStepPublic(BaseModel):
    id: str = Field(description="the step id used in expressions")
    name: str
    type: str
    position: int
    with_: dict[str, Any] = Field(alias="with", serialization_alias="with")
    if_: str | None = Field(None, alias="if", serialization_alias="if")
    continue_on_error: bool
    timeout_minutes: int | None
    retry: dict[str, Any]
    requires_approval: bool
    approval: dict[str, Any]
    requires_trust: bool = False

    model_config = ConfigDict(populate_by_name=True)


class PipelinePublic(BaseModel):
    id: int
    name: str
    slug: str
    description: str
    pipeline_type: str
    triggers: dict[str, Any]
    is_system: bool
    allow_concurrent: bool
    timeout_minutes: int
    runner_labels: list[str]
    features: dict[str, Any]
    inputs: dict[str, Any]
    env: dict[str, str]
    is_active: bool
    steps: list[PipelineStepPublic]
    last_run_number: int
    template_version_id: int | None = Field(None, description="the template version it was installed from")
    created_at: datetime
    updated_at: datetime


PipelinesPublic = Page[PipelinePublic]


class TriggerRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"inputs": {"greeting": "hello"}}]})

    inputs: dict[str, Any] = Field(default_factory=dict, description="typed values for the pipeline's declared inputs")
    trigger_type: Literal["manual", "workflow_dispatch"] = "manual"
    context: dict[str, Any] = Field(default_factory=dict, description="extra data visible as ${{ trigger.* }}")
    a2a_task_id: str | None = Field(None, min_length=1, max_length=200, description="a linked external (A2A) task")
    callback_url: str | None = Field(None, max_length=2000, description="http(s) URL told when the run finishes")
    callback_secret: str | None = Field(None, max_length=100,
                                        description="the name of an account secret whose value signs the callback")


class CloneRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, min_length=1, max_length=200)
    slug: str | None = Field(None, pattern=r"^[a-z0-9][a-z0-9-]{0,99}$")


class StepAttemptPublic(BaseModel):
    attempt: int
    status: StepStatus
    outputs: dict[str, Any]
    error: str | None
    started_at: datetime | None
    finished_at: datetime | None


class ApprovalDecisionPublic(BaseModel):
    step_id: str
    attempt: int
    decision: ApprovalDecision
    decided_by: str
    comment: str
    created_at: datetime


class StepApprovalPublic(BaseModel):
    """The gate a step is waiting at (recipients, expiry) and the decisions so far."""

    recipients: list[str]
    expires_at: datetime | None
    required: int
    decisions: list[ApprovalDecisionPublic]


class StepExecutionPublic(BaseModel):
    step_id: str
    name: str
    type: str
    position: int
    status: StepStatus
    attempts: int
    outputs: dict[str, Any]
    error: str | None
    started_at: datetime | None
    finished_at: datetime | None
    reused_from_run_id: int | None
    history: list[StepAttemptPublic]
    approval: StepApprovalPublic | None = None


class PipelineRunPublic(BaseModel):
    id: int
    pipeline_id: int
    run_number: int
    status: RunStatus
    trigger_type: str
    trigger_context: dict[str, Any]
    inputs: dict[str, Any]
    outputs: dict[str, Any]
    error: str | None
    workflow_id: str
    temporal_ui_url: str
    retry_of_run_id: int | None
    from_step: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    duration_seconds: float | None
    steps: list[StepExecutionPublic] | None = None
    approvals: list[ApprovalDecisionPublic] | None = Field(None, description="who decided which gate, when, why")
    a2a_task_id: str | None = None
    a2a_callback_url: str | None = None
    a2a_callback_status: str | None = None


class PipelineRunsPublic(Page[PipelineRunPublic]):
    next_cursor: int | None = Field(None, description="pass as `cursor` to get the next (older) page")


class StepLogPublic(BaseModel):
    step_id: str
    attempt: int
    seq: int
    content: str
    created_at: datetime


RunLogsPublic = Page[StepLogPublic]


class SecretCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,99}$", description="used as ${{ secrets.NAME }}")
    value: str = Field(min_length=1, max_length=65536, description="write-only: never returned")


class SecretPublic(BaseModel):
    name: str
    created_at: datetime
    updated_at: datetime


SecretsPublic = Page[SecretPublic]


class HealthPublic(BaseModel):
    status: Literal["ok", "degraded"]
    api: str
    database: str
    temporal: str
