"""Request and answer shapes of AI configs, prompt templates and AI usage."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from api.pages import Page
from domain.ai import MAX_TOKENS_LIMIT

Provider = Literal["anthropic", "openai_compatible"]
Name = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9 ._-]*$")]
ModelName = Annotated[str, Field(min_length=1, max_length=200)]
ApiKey = Annotated[str, Field(min_length=1, max_length=4096, description="write-only: encrypted, never returned")]
BaseUrl = Annotated[str, Field(min_length=1, max_length=2000, description="http(s); the API root of the server")]
MaxTokens = Annotated[int, Field(ge=1, le=MAX_TOKENS_LIMIT)]
Temperature = Annotated[float, Field(ge=0, le=2)]
Budget = Annotated[int, Field(gt=0, description="tokens (input + output); null: unlimited")]
Price = Annotated[float, Field(ge=0, description="USD per million tokens; null: no cost estimate")]
TemplateText = Annotated[str, Field(min_length=1, max_length=200_000, description="Jinja2 text (sandboxed)")]
Category = Annotated[str, Field(min_length=1, max_length=50)]
Description = Annotated[str, Field(max_length=5000)]


class AiConfigCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"name": "claude", "provider": "anthropic", "model": "claude-sonnet-4-5", "api_key": "sk-ant-...",
         "max_tokens": 1024, "run_token_budget": 50000, "is_default": True}]})

    name: Name
    provider: Provider
    model: ModelName
    api_key: ApiKey | None = None
    base_url: BaseUrl | None = Field(None, description="required for openai_compatible; default for anthropic: "
                                                       "https://api.anthropic.com")
    max_tokens: MaxTokens = 1024
    temperature: Temperature | None = None
    run_token_budget: Budget | None = None
    monthly_token_budget: Budget | None = None
    input_cost_per_mtok: Price | None = None
    output_cost_per_mtok: Price | None = None
    is_default: bool = False


class AiConfigUpdate(BaseModel):
    """Only the fields sent change; ``api_key: null`` removes the key, a null budget or price unsets it."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"monthly_token_budget": 1000000}]})

    name: Name | None = None
    provider: Provider | None = None
    model: ModelName | None = None
    api_key: ApiKey | None = None
    base_url: BaseUrl | None = None
    max_tokens: MaxTokens | None = None
    temperature: Temperature | None = None
    run_token_budget: Budget | None = None
    monthly_token_budget: Budget | None = None
    input_cost_per_mtok: Price | None = None
    output_cost_per_mtok: Price | None = None
    is_default: bool | None = None


class AiConfigPublic(BaseModel):
    id: int
    name: str
    provider: Provider
    model: str
    has_api_key: bool
    base_url: str | None
    max_tokens: int
    temperature: float | None
    run_token_budget: int | None
    monthly_token_budget: int | None
    input_cost_per_mtok: float | None
    output_cost_per_mtok: float | None
    is_default: bool
    created_at: datetime
    updated_at: datetime


class PromptTemplateCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"name": "review", "category": "code_review", "body": "Review this diff:\n{{ diff }}",
         "system": "You are a careful reviewer.",
         "variables_schema": {"type": "object", "required": ["diff"], "properties": {"diff": {"type": "string"}}}}]})

    name: Name
    description: Description = ""
    category: Category = "general"
    body: TemplateText
    system: TemplateText | None = None
    variables_schema: dict[str, Any] = Field(default_factory=dict, description="JSON Schema of the variables")


class PromptTemplateUpdate(BaseModel):
    """Metadata only: a new text is a new version (POST .../versions)."""

    model_config = ConfigDict(extra="forbid")

    name: Name | None = None
    description: Description | None = None
    category: Category | None = None


class PromptTemplateVersionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    body: TemplateText
    system: TemplateText | None = None
    variables_schema: dict[str, Any] = Field(default_factory=dict)


class PromptTemplateVersionPublic(BaseModel):
    version: int
    body: str
    system: str | None
    variables_schema: dict[str, Any]
    created_by_user_id: int | None
    created_at: datetime


class PromptTemplatePublic(BaseModel):
    id: int
    name: str
    description: str
    category: str
    current_version: int
    body: str = Field(description="the current version's text")
    system: str | None
    variables_schema: dict[str, Any]
    created_at: datetime
    updated_at: datetime


class PromptRenderRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"variables": {"diff": "+x"}}]})

    variables: dict[str, Any] = Field(default_factory=dict)
    version: int | None = Field(None, ge=1, description="default: the current version")


class PromptRenderPublic(BaseModel):
    rendered: str
    system: str | None
    version: int
    bytes: int = Field(description="UTF-8 size of the rendered body")


class AiUsagePublic(BaseModel):
    id: int
    ai_config_id: int | None
    run_id: int | None
    step_id: str | None
    attempt: int | None
    provider: str
    model: str
    input_tokens: int
    output_tokens: int
    total_tokens: int
    cost_estimate: float | None
    latency_ms: int
    stop_reason: str | None
    error: str | None
    created_at: datetime


class AiUsageTotals(BaseModel):
    calls: int
    input_tokens: int
    output_tokens: int
    total_tokens: int
    cost_estimate: float | None


class AiUsagePage(Page[AiUsagePublic]):
    totals: AiUsageTotals = Field(description="sums over every matching row (all pages)")
