"""Request and response shapes of ``/pipeline_templates`` (the marketplace), kept apart from
``api.schemas`` by resource."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from api.pages import Page
from domain.statuses import TemplateStatus
from services.templates import TemplateCategory, TemplateDifficulty, TemplateVersionString

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
    status: TemplateStatus
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


TemplatesPublic = Page[TemplatePublic]


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


TemplateRatingsPublic = Page[TemplateRatingPublic]
