"""Shapes of users, invitations and accounts (``/users``, ``/invitations``, ``/accounts``)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from api.pages import Page
from api.token_schemas import TokenCreated
from db.access_models import Invitation
from db.models import Account, User
from domain import access
from services import users as user_service

Role = Literal[access.ROLES]  # type: ignore[valid-type]  # admin, member, approver, viewer
InvitationStatus = Literal["pending", "accepted", "revoked", "expired"]


def _aware(value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def _email(value: str) -> str:
    value = value.strip()
    problem = user_service.email_problem(value)
    if problem:
        raise ValueError(problem)
    return value


def _http_url(value: str | None) -> str | None:
    if value is None or value == "":
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http(s) URL")
    return value


class UserPublic(BaseModel):
    id: int
    email: str
    name: str
    role: str = Field(description=f"one of: {', '.join(access.ROLES)}")
    active: bool = Field(description="false once deactivated: the user's tokens answer 401")
    deactivated_at: datetime | None
    is_operator: bool = Field(description="may create accounts (POST /accounts)")
    notify_url: str | None
    notify_slack_url: str | None
    notify_email: bool
    created_at: datetime

    @classmethod
    def of(cls, user: User) -> UserPublic:
        return cls(id=user.id, email=user.email, name=user.name or "", role=user.role,
                   active=user.deactivated_at is None, deactivated_at=_aware(user.deactivated_at),
                   is_operator=bool(user.is_operator), notify_url=user.notify_url,
                   notify_slack_url=user.notify_slack_url, notify_email=bool(user.notify_email),
                   created_at=_aware(user.created_at))


UsersPublic = Page[UserPublic]


class ProfileUpdate(BaseModel):
    """PATCH /users/me: only the fields given change."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"notify_url": "https://hooks.example.com/me"}]})

    name: str | None = Field(None, max_length=200)
    notify_url: str | None = Field(None, max_length=2000, description="http(s) URL receiving your approval requests")
    notify_slack_url: str | None = Field(
        None, max_length=2000, description="a Slack-compatible incoming webhook receiving them as messages")
    notify_email: bool | None = Field(None, description="also send them to your email (when the install has SMTP)")

    @field_validator("notify_url", "notify_slack_url")
    @classmethod
    def _urls(cls, value: str | None) -> str | None:
        return _http_url(value)


class UserAdminUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"role": "approver"}]})

    role: Role | None = None
    name: str | None = Field(None, max_length=200)


class InvitationCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "examples": [{"email": "ana@example.com", "role": "approver"}]})

    email: str = Field(max_length=320)
    role: Role = Field(description=f"the new user's role: {', '.join(access.ROLES)}")
    name: str | None = Field(None, max_length=200, description="noted in the audit log; the user sets their own on accept")

    @field_validator("email")
    @classmethod
    def _valid_email(cls, value: str) -> str:
        return _email(value)


class InvitationPublic(BaseModel):
    id: int
    email: str
    role: str
    status: InvitationStatus
    expires_at: datetime
    invited_by: int | None = Field(description="the inviting admin's user id")
    created_at: datetime
    accepted_at: datetime | None = None
    revoked_at: datetime | None = None
    user_id: int | None = Field(None, description="the user who accepted it")

    @classmethod
    def of(cls, row: Invitation) -> InvitationPublic:
        return cls(id=row.id, email=row.email, role=row.role, status=user_service.invitation_status(row),
                   expires_at=_aware(row.expires_at), invited_by=row.invited_by, created_at=_aware(row.created_at),
                   accepted_at=_aware(row.accepted_at), revoked_at=_aware(row.revoked_at), user_id=row.user_id)


InvitationsPublic = Page[InvitationPublic]


class InvitationCreated(InvitationPublic):
    token: str = Field(description="the invitation's value (`inv_...`): shown this once")
    accept_url: str = Field(description="POST here (body {name?}) to accept; GET /invitations/{token} shows it")


class InvitationInfo(BaseModel):
    """What an invitation offers, for the person holding its token."""

    email: str
    role: str
    account: str = Field(description="the inviting account's name")
    expires_at: datetime


class InvitationAccept(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, max_length=200, description="your display name")


class AcceptedInvitation(BaseModel):
    user: UserPublic
    token: TokenCreated = Field(description="your first API token (all your role allows); shown this once")


class AccountPublic(BaseModel):
    id: int
    name: str
    created_at: datetime

    @classmethod
    def of(cls, account: Account) -> AccountPublic:
        return cls(id=account.id, name=account.name, created_at=_aware(account.created_at))


AccountsPublic = Page[AccountPublic]


class AccountCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "examples": [{"name": "team-b", "admin_email": "lead@example.com"}]})

    name: str = Field(min_length=1, max_length=200)
    admin_email: str = Field(max_length=320, description="the account's first admin")

    @field_validator("admin_email")
    @classmethod
    def _valid_email(cls, value: str) -> str:
        return _email(value)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value.strip()


class AccountCreated(BaseModel):
    account: AccountPublic
    admin: UserPublic
    token: TokenCreated = Field(description="the admin's first API token; shown this once")
