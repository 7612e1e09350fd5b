"""Shapes of API tokens: ``TokenPublic`` (never the value), ``TokenCreated`` (the value, shown
once), and the bodies of POST /tokens and POST /tokens/{token_id}/rotate."""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, Field

from api.pages import Page
from domain import access

MAX_EXPIRES_IN_DAYS = 3650
MAX_GRACE_MINUTES = 10080  # one week


class TokenPublic(BaseModel):
    id: int
    name: str
    prefix: str = Field(description="the first 12 characters of the value, to recognise it")
    scopes: list[str] = Field(description="what the token may do, within its user's role (`*` = all of it)")
    expires_at: datetime | None = Field(None, description="null: never expires")
    last_used_at: datetime | None = Field(None, description="to the minute")
    revoked_at: datetime | None = None
    created_at: datetime
    user_id: int
    active: bool = Field(description="neither revoked nor expired")

    @classmethod
    def of(cls, row) -> TokenPublic:
        now = datetime.now(UTC)
        expires_at = _aware(row.expires_at)
        return cls(id=row.id, name=row.name, prefix=row.prefix, scopes=list(row.scopes or []),
                   expires_at=expires_at, last_used_at=_aware(row.last_used_at),
                   revoked_at=_aware(row.revoked_at), created_at=_aware(row.created_at), user_id=row.user_id,
                   active=row.revoked_at is None and (expires_at is None or expires_at > now))


class TokenCreated(TokenPublic):
    token: str = Field(description="the token's value (`dvo_...`): shown this once, store it now")

    @classmethod
    def of_issued(cls, row, value: str) -> TokenCreated:
        return cls(**TokenPublic.of(row).model_dump(), token=value)


TokensPublic = Page[TokenPublic]


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "examples": [{"name": "ci", "scopes": ["runs:trigger", "pipelines:read"], "expires_in_days": 90}]})

    name: str = Field(min_length=1, max_length=200)
    scopes: list[str] = Field(default_factory=lambda: [access.ALL], min_length=1,
                              description=f"`*` or any of: {', '.join(access.SCOPES)}")
    expires_at: datetime | None = Field(None, description="a future time (not with expires_in_days); none: never")
    expires_in_days: int | None = Field(None, ge=1, le=MAX_EXPIRES_IN_DAYS, description="not with expires_at")


class TokenRotate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    grace_minutes: int | None = Field(
        None, ge=0, le=MAX_GRACE_MINUTES,
        description="how long the old value keeps working (0: stops at once); default from settings")


def _aware(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value
