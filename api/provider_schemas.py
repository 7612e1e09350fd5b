"""Request and response shapes of ``/providers`` (git providers and their credentials), kept apart
from ``api.schemas`` by resource. Tokens and OAuth client secrets are write-only: no answer has them."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from api.pages import Page

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


GitProvidersPublic = Page[GitProviderPublic]


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


GitProviderCredentialsPublic = Page[GitProviderCredentialPublic]


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
