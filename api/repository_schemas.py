"""Request and response shapes of ``/repositories`` (kept apart from ``api.schemas`` by resource).

A repository's webhook secret is never part of any of them: only the provider and we know it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from api.pages import Page
from domain.statuses import WebhookEventStatus

BranchFilterType = Literal["none", "exact", "wildcard", "regex"]
FullName = Annotated[str, Field(min_length=3, max_length=500, pattern=r"^[^/\s]+(/[^/\s]+)+$",
                                examples=["acme/web"], description="owner/name (GitLab: group/subgroup/name)")]


class RepositoryWebhookPublic(BaseModel):
    configured: bool
    id: str | None = Field(description="the hook's id at the provider")
    url: str | None = Field(description="where the provider delivers (our webhook endpoint)")
    events: list[str] = Field(description="provider-neutral event names the hook delivers")
    configured_at: datetime | None
    rejected_deliveries: int = Field(description="deliveries refused for a bad signature")
    last_delivery_at: datetime | None


class RepositoryPublic(BaseModel):
    id: int
    provider_id: int
    provider_type: str
    credential_id: int | None
    full_name: str
    default_branch: str
    language: str | None
    topics: list[str]
    visibility: str
    is_fork: bool
    is_archived: bool
    clone_url: str
    html_url: str
    branch_filter_type: str
    branch_filter: str | None
    webhook: RepositoryWebhookPublic
    last_synced_at: datetime | None
    removed: bool = Field(description="the provider no longer lists it for its credential")
    removed_at: datetime | None
    created_at: datetime
    updated_at: datetime


RepositoriesPublic = Page[RepositoryPublic]


class RepositoryCreate(BaseModel):
    """Register one repository by name; nothing is fetched (a sync fills in the details)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"provider_id": 1, "full_name": "acme/web"}, {"provider_id": 1, "full_name": "acme/web", "credential_id": 2}]})

    provider_id: int
    full_name: FullName
    credential_id: int | None = Field(None, description="default: the provider's newest credential when used")
    default_branch: str = Field("main", min_length=1, max_length=255)


class RepositoryUpdate(BaseModel):
    """Only the fields sent change. The branch filter applies to webhook events before pipeline matching."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"branch_filter_type": "wildcard", "branch_filter": "release/*"},
        {"branch_filter_type": "regex", "branch_filter": "^(main|release/.+)$"},
        {"branch_filter_type": "none"}]})

    branch_filter_type: BranchFilterType | None = None
    branch_filter: str | None = Field(None, max_length=500)
    credential_id: int | None = Field(None, description="a credential of the same provider")

    @field_validator("branch_filter_type")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        if value is None:
            raise PydanticCustomError("not_null", "may not be null; leave the field out to keep it")
        return value


class RepositorySyncRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"credential_id": 1}]})

    credential_id: int


class RepositorySyncPublic(BaseModel):
    status: Literal["completed", "running"] = Field(
        description="running: still going after the wait; follow it in the Temporal UI by its workflow id")
    workflow_id: str
    temporal_ui_url: str
    credential_id: int
    provider_id: int
    created: int | None = None
    updated: int | None = None
    unchanged: int | None = None
    removed: int | None = None


class RepositoryStatsPublic(BaseModel):
    repository_id: int
    pipelines: int = Field(description="pipelines linked to the repository")
    total_runs: int
    by_status: dict[str, int]
    success_rate: float | None = Field(description="success / (success + failure); null when neither happened")
    last_run_at: datetime | None


class PipelineLinkPublic(BaseModel):
    repository_id: int
    pipeline_id: int
    pipeline_name: str
    pipeline_slug: str
    is_active: bool
    created_at: datetime


PipelineLinksPublic = Page[PipelineLinkPublic]


class WebhookEventPublic(BaseModel):
    id: int
    delivery_id: str
    event_name: str | None
    status: WebhookEventStatus
    matched_pipeline_ids: list[int]
    run_ids: list[int]
    error: str | None
    created_at: datetime


class WebhookEventDetailPublic(WebhookEventPublic):
    headers: dict[str, Any]
    payload: Any
    events: list[Any] = Field(description="the delivery normalised to trigger events")
    processed_at: datetime | None


WebhookEventsPublic = Page[WebhookEventPublic]
