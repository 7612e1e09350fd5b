"""Response and request shapes: ``XPublic`` for one object, ``XsPublic(data, count)`` for lists."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from services.templates import TemplateCategory, TemplateDifficulty, TemplateVersionString


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


class PipelinesPublic(BaseModel):
    data: list[PipelinePublic]
    count: int


class TriggerRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"inputs": {"greeting": "hello"}}]})

    inputs: dict[str, Any] = Field(default_factory=dict, description="typed values for the pipeline's declared inputs")
    trigger_type: Literal["manual", "workflow_dispatch"] = "manual"
    context: dict[str, Any] = Field(default_factory=dict, description="extra data visible as ${{ trigger.* }}")


class CloneRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, min_length=1, max_length=200)
    slug: str | None = Field(None, pattern=r"^[a-z0-9][a-z0-9-]{0,99}$")


class StepAttemptPublic(BaseModel):
    attempt: int
    status: str
    outputs: dict[str, Any]
    error: str | None
    started_at: datetime | None
    finished_at: datetime | None


class ApprovalDecisionPublic(BaseModel):
    step_id: str
    attempt: int
    decision: str
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
    status: str
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
    status: str
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


class PipelineRunsPublic(BaseModel):
    data: list[PipelineRunPublic]
    count: int
    next_cursor: int | None = Field(None, description="pass as `cursor` to get the next (older) page")


class StepLogPublic(BaseModel):
    step_id: str
    attempt: int
    seq: int
    content: str
    created_at: datetime


class RunLogsPublic(BaseModel):
    data: list[StepLogPublic]
    count: int


class SecretCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,99}$", description="used as ${{ secrets.NAME }}")
    value: str = Field(min_length=1, max_length=65536, description="write-only: never returned")


class SecretPublic(BaseModel):
    name: str
    created_at: datetime
    updated_at: datetime


class SecretsPublic(BaseModel):
    data: list[SecretPublic]
    count: int


class HealthPublic(BaseModel):
    status: Literal["ok", "degraded"]
    api: str
    database: str
    temporal: str


# ---- pipeline templates --------------------------------------------------------------------

SLUG_PATTERN = r"^[a-z0-9][a-z0-9-]{0,99}$"
TEMPLATE_DOCUMENT_EXAMPLE = {"name": "unit-tests", "pipeline_type": "custom",
                             "steps": [{"id": "test", "type": "run_tests", "with": {"command": "make test"}}]}


class TemplateVersionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"version": "1.0.0", "document": TEMPLATE_DOCUMENT_EXAMPLE, "changelog": "first release"}]})

    version: TemplateVersionString
    document: dict[str, Any] = Field(description="a pipeline document, validated like POST /pipelines")
    changelog: str = Field("", max_length=10000)


class TemplateVersionUpdate(BaseModel):
    """Replaces a draft version's document and changelog."""

    model_config = ConfigDict(extra="forbid")

    document: dict[str, Any]
    changelog: str = Field("", max_length=10000)


class TemplateVersionPublic(BaseModel):
    version: str
    changelog: str
    published: bool = Field(description="published versions are immutable")
    published_at: datetime | None
    created_at: datetime
    document: dict[str, Any]


class TemplateCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"name": "Unit tests", "category": "review", "difficulty": "beginner", "is_public": True,
         "initial_version": {"version": "1.0.0", "document": TEMPLATE_DOCUMENT_EXAMPLE}}]})

    name: str = Field(min_length=1, max_length=200)
    slug: str | None = Field(None, pattern=SLUG_PATTERN, description="unique per account; default: from the name")
    description: str = Field("", max_length=5000)
    category: TemplateCategory = "custom"
    difficulty: TemplateDifficulty = "beginner"
    is_public: bool = Field(False, description="listed in the marketplace once published")
    initial_version: TemplateVersionCreate | None = None


class TemplateUpdate(BaseModel):
    """Metadata only: status changes through publish/archive, documents through versions."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"is_public": True}]})

    name: str | None = Field(None, min_length=1, max_length=200)
    slug: str | None = Field(None, pattern=SLUG_PATTERN)
    description: str | None = Field(None, max_length=5000)
    category: TemplateCategory | None = None
    difficulty: TemplateDifficulty | None = None
    is_public: bool | None = None

    @field_validator("*")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        # runs for given fields only: an explicit null is refused, an absent field is unchanged
        if value is None:
            raise PydanticCustomError("not_null", "may not be null; leave the field out to keep it")
        return value


class TemplatePublic(BaseModel):
    id: int
    name: str
    slug: str
    description: str
    category: str
    difficulty: str
    status: Literal["draft", "published", "archived"]
    is_public: bool
    is_owner: bool = Field(description="the template belongs to the caller's account")
    installation_count: int
    rating_average: float
    rating_count: int
    my_rating: int | None = Field(description="the caller's account's rating, if any")
    latest_version: str | None = Field(description="the highest version the caller can see")
    published_version: str | None = Field(description="the highest published version: what install uses by default")
    created_at: datetime
    updated_at: datetime
    versions: list[TemplateVersionPublic] | None = Field(None, description="newest first; on a single template only")


class TemplatesPublic(BaseModel):
    data: list[TemplatePublic]
    count: int


class TemplatePublishRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: TemplateVersionString | None = Field(None, description="default: the highest version")


class TemplateInstallRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"version": "1.0.0"}]})

    version: TemplateVersionString | None = Field(None, description="default: the highest published version")
    name: str | None = Field(None, min_length=1, max_length=200, description="default: the document's name")
    slug: str | None = Field(None, pattern=SLUG_PATTERN, description="default: the document's slug, or from `name`")


class TemplateRatingCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"rating": 5, "review": "works"}]})

    rating: int = Field(ge=1, le=5)
    review: str = Field("", max_length=5000)


class TemplateRatingPublic(BaseModel):
    rating: int
    review: str
    is_mine: bool
    created_at: datetime
    updated_at: datetime


class TemplateRatingsPublic(BaseModel):
    data: list[TemplateRatingPublic]
    count: int


# ---- git providers and credentials ---------------------------------------------------------

GitProviderType = Literal["github", "gitlab", "gitea", "bitbucket"]
ProviderName = Annotated[str, Field(min_length=1, max_length=100)]
ProviderBaseUrl = Annotated[str, Field(min_length=1, max_length=2000, examples=["https://gitea.example.com"],
                                       description="http(s); absent: the public service (required for gitea)")]


def _http_base_url(value: str | None) -> str | None:
    if value is None:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PydanticCustomError("url_scheme", "must be an http:// or https:// URL with a host")
    return value.rstrip("/")


OAuthClientId = Annotated[str, Field(min_length=1, max_length=500, description="the OAuth application's client id")]
OAuthClientSecret = Annotated[str, Field(min_length=1, max_length=10000,
                                         description="write-only: encrypted at rest, never returned")]
OAuthScope = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^\S+$")]
OAuthScopes = Annotated[list[OAuthScope], Field(max_length=50, description="scopes asked for on authorize")]
OAuthBaseUrl = Annotated[str, Field(min_length=1, max_length=2000, examples=["https://ghe.example.com"],
                                    description="web origin of the authorize/token endpoints when it differs "
                                    "from base_url; absent: derived from base_url")]


class GitProviderCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"name": "github", "provider_type": "github"},
        {"name": "our gitea", "provider_type": "gitea", "base_url": "https://gitea.example.com"}]})

    name: ProviderName
    provider_type: GitProviderType
    base_url: ProviderBaseUrl | None = None
    is_active: bool = True
    oauth_client_id: OAuthClientId | None = None
    oauth_client_secret: OAuthClientSecret | None = None
    oauth_base_url: OAuthBaseUrl | None = None
    oauth_scopes: OAuthScopes = Field(default_factory=list)

    @field_validator("base_url", "oauth_base_url")
    @classmethod
    def _base_url(cls, value: str | None) -> str | None:
        return _http_base_url(value)


class GitProviderUpdate(BaseModel):
    """Only the fields sent change; ``base_url: null`` means the public service. The type is fixed.
    ``oauth_client_id`` / ``oauth_client_secret`` / ``oauth_base_url`` null clear them."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"is_active": False}]})

    name: ProviderName | None = None
    base_url: ProviderBaseUrl | None = None
    is_active: bool | None = None
    oauth_client_id: OAuthClientId | None = None
    oauth_client_secret: OAuthClientSecret | None = None
    oauth_base_url: OAuthBaseUrl | None = None
    oauth_scopes: OAuthScopes | None = None

    @field_validator("base_url", "oauth_base_url")
    @classmethod
    def _base_url(cls, value: str | None) -> str | None:
        return _http_base_url(value)

    @field_validator("name", "is_active", "oauth_scopes")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        if value is None:
            raise PydanticCustomError("not_null", "may not be null; leave the field out to keep it")
        return value


class GitProviderPublic(BaseModel):
    id: int
    name: str
    provider_type: str
    base_url: str | None = Field(description="null: the public service")
    is_active: bool
    capabilities: list[str] = Field(description="the seed's capability matrix for this provider type")
    oauth_client_id: str | None = None
    oauth_base_url: str | None = None
    oauth_scopes: list[str] = Field(default_factory=list)
    oauth_configured: bool = Field(False, description="client id and secret are set: the OAuth flow can run")
    created_at: datetime
    updated_at: datetime


class GitProvidersPublic(BaseModel):
    data: list[GitProviderPublic]
    count: int


class GitProviderCredentialCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"name": "ci-bot", "token": "ghp_..."}]})

    name: ProviderName
    token: str = Field(min_length=1, max_length=10000, description="write-only: encrypted at rest, never returned")


class GitProviderCredentialPublic(BaseModel):
    id: int
    provider_id: int
    name: str
    auth_type: str
    username: str | None = Field(description="who the token belongs to, from the last connection test")
    scopes: list[str]
    last_tested_at: datetime | None
    last_test_ok: bool | None
    last_test_error: str | None
    created_at: datetime
    updated_at: datetime


class GitProviderCredentialsPublic(BaseModel):
    data: list[GitProviderCredentialPublic]
    count: int


class GitProviderTestRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    credential_id: int | None = Field(None, description="default: the provider's first credential")


class GitProviderTestPublic(BaseModel):
    ok: bool
    credential_id: int
    login: str | None = None
    name: str | None = None
    scopes: list[str] = Field(default_factory=list)
    error: str | None = Field(None, description="why the test failed; never contains the token")
