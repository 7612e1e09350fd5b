"""Users of the account: the caller's own profile (``/users/me``: where notifications go), and for
admins inviting (``POST /users`` answers an invitation token), listing, changing roles,
deactivating and deleting users. The last active admin stays: demoting, deactivating or
deleting them is 409."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlsplit

from fastapi import APIRouter, Query, Response, status

from adapters.network_targets import check_host
from api import errors
from api.commits import commit_or_conflict
from api.deps import ActorDep, CurrentCaller, SessionDep, SettingsDep
from api.user_schemas import (
    InvitationCreate,
    InvitationCreated,
    InvitationPublic,
    ProfileUpdate,
    Role,
    UserAdminUpdate,
    UserPublic,
    UsersPublic,
)
from services import users as user_service

router = APIRouter(prefix="/users", tags=["users"])


# Admin-only routes: their scope is ``admin`` (domain.access), which only the admin role grants;
# ``authenticate`` refuses everyone else before the route runs.
AdminCaller = CurrentCaller


def notify_url_problem(url: str, allow_private: bool) -> str | None:
    """Approval requests carry single-use approval links and are POSTed by the worker: an
    internal address (loopback, private, link-local) is refused at save unless private targets
    are allowed. A name that does not resolve now is accepted; delivery checks it again."""
    if allow_private:
        return None
    parts = urlsplit(url)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return "has an invalid port"
    return check_host(parts.hostname or "", port, what="the notify URL's", timeout=2.0, unresolvable_ok=True).problem


@router.get("/me", response_model=UserPublic, summary="Show the calling user")
def show_current_user(session: SessionDep, caller: CurrentCaller) -> UserPublic:
    """Who the token belongs to: email, name, role and where notifications go."""
    return UserPublic.of(user_service.get_user(session, caller.account_id, caller.user_id))


@router.patch("/me", response_model=UserPublic, summary="Update your own profile")
def update_current_user(body: ProfileUpdate, session: SessionDep, caller: CurrentCaller, actor: ActorDep,
                        settings: SettingsDep) -> UserPublic:
    """Set your name and where your notifications are delivered (each approval link reaches only
    you): ``notify_url`` (a webhook), ``notify_slack_url`` (a Slack-compatible incoming webhook),
    ``notify_email``. URLs are http(s); loopback, private and link-local hosts are 422 unless
    private targets are allowed. Only the fields given change (null clears a URL)."""
    changes: dict[str, object] = {}
    for field in ("notify_url", "notify_slack_url"):
        if field in body.model_fields_set:
            value = getattr(body, field)
            if value:
                problem = notify_url_problem(value, settings.private_targets_allowed)
                if problem:
                    raise errors.field_error([field], problem)
            changes[field] = value
    if body.name is not None:
        changes["name"] = body.name.strip()
    if body.notify_email is not None:
        changes["notify_email"] = body.notify_email
    user = user_service.update_profile(session, caller.user_id, actor, changes)
    session.commit()
    return UserPublic.of(user)


@router.get("", response_model=UsersPublic, summary="List the account's users")
def list_users(session: SessionDep, caller: CurrentCaller,
               role: Annotated[Role | None, Query(description="only users of this role")] = None,
               active: Annotated[bool | None, Query(description="true: active users; false: deactivated ones")] = None,
               limit: Annotated[int, Query(ge=1, le=500)] = 100,
               offset: Annotated[int, Query(ge=0)] = 0) -> UsersPublic:
    """Every user of the account, oldest first (``count`` is the total matching)."""
    rows, total = user_service.list_users(session, caller.account_id, role=role, active=active, limit=limit,
                                          offset=offset)
    return UsersPublic(data=[UserPublic.of(row) for row in rows], count=total)


@router.post("", response_model=InvitationCreated, status_code=status.HTTP_201_CREATED, summary="Invite a user")
def invite_user(body: InvitationCreate, session: SessionDep, caller: AdminCaller, actor: ActorDep,
                settings: SettingsDep) -> InvitationCreated:
    """Invite someone by email with a role: the answer holds the invitation token (shown once) and
    its accept URL to hand over; it is single use and expires after the install's invitation TTL.
    409 when the email already is a user of the account or has a pending invitation."""
    invited = user_service.invite(session, caller.account_id, actor, email=body.email, role=body.role,
                                  ttl_hours=settings.invitation_ttl_hours, name=body.name)
    commit_or_conflict(session, f"{body.email} was invited concurrently")
    accept_url = f"{settings.resolved_public_api_url}/api/v1/devops/invitations/{invited.token}/accept"
    return InvitationCreated(**InvitationPublic.of(invited.row).model_dump(), token=invited.token,
                             accept_url=accept_url)


@router.get("/{user_id}", response_model=UserPublic, summary="Show a user")
def show_user(user_id: int, session: SessionDep, caller: CurrentCaller) -> UserPublic:
    """One user of the account."""
    return UserPublic.of(user_service.get_user(session, caller.account_id, user_id))


@router.patch("/{user_id}", response_model=UserPublic, summary="Change a user's role or name")
def update_user(user_id: int, body: UserAdminUpdate, session: SessionDep, caller: AdminCaller,
                actor: ActorDep) -> UserPublic:
    """An admin sets a user's role (admin, member, approver, viewer) or name; the role applies to
    every token of theirs at once. Demoting the last active admin is 409."""
    user = user_service.update_user(session, caller.account_id, actor, user_id, role=body.role, name=body.name)
    session.commit()
    return UserPublic.of(user)


@router.post("/{user_id}/deactivate", response_model=UserPublic, summary="Deactivate a user")
def deactivate_user(user_id: int, session: SessionDep, caller: AdminCaller, actor: ActorDep) -> UserPublic:
    """Their tokens answer 401 from now on; the user and their history stay. Deactivating the last
    active admin is 409."""
    user = user_service.set_active(session, caller.account_id, actor, user_id, active=False)
    session.commit()
    return UserPublic.of(user)


@router.post("/{user_id}/activate", response_model=UserPublic, summary="Activate a user again")
def activate_user(user_id: int, session: SessionDep, caller: AdminCaller, actor: ActorDep) -> UserPublic:
    """Their tokens (those not revoked or expired) work again."""
    user = user_service.set_active(session, caller.account_id, actor, user_id, active=True)
    session.commit()
    return UserPublic.of(user)


@router.delete("/{user_id}", status_code=status.HTTP_204_NO_CONTENT, summary="Delete a user")
def delete_user(user_id: int, session: SessionDep, caller: AdminCaller, actor: ActorDep) -> Response:
    """The user and their API tokens go; runs they triggered and the audit log stay. Deleting the
    last active admin is 409."""
    user_service.delete_user(session, caller.account_id, actor, user_id)
    session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)
