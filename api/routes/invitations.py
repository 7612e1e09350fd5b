"""Invitations: the admin's list and revocation, and the two public routes the invited person
uses with the token (no API token yet): see what it offers, and accept it (which creates the
user and answers their first API token, once)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status

from api.auth import issue_token
from api.commits import commit_or_conflict
from api.deps import ActorDep, SessionDep
from api.routes.users import AdminCaller
from api.token_schemas import TokenCreated
from api.user_schemas import (
    AcceptedInvitation,
    InvitationAccept,
    InvitationInfo,
    InvitationPublic,
    InvitationsPublic,
    UserPublic,
)
from db.models import Account
from domain import access
from services import users as user_service

router = APIRouter(prefix="/invitations", tags=["users"])

GONE = {410: {"description": "the invitation was already used, was revoked or has expired"}}


@router.get("", response_model=InvitationsPublic, summary="List invitations")
def list_invitations(session: SessionDep, caller: AdminCaller,
                     limit: Annotated[int, Query(ge=1, le=500)] = 100,
                     offset: Annotated[int, Query(ge=0)] = 0) -> InvitationsPublic:
    """Every invitation of the account, newest first, with its status (pending, accepted,
    revoked, expired); never the token."""
    rows, total = user_service.list_invitations(session, caller.account_id, limit=limit, offset=offset)
    return InvitationsPublic(data=[InvitationPublic.of(row) for row in rows], count=total)


@router.delete("/{invitation_id}", status_code=status.HTTP_204_NO_CONTENT, summary="Revoke an invitation")
def revoke_invitation(invitation_id: int, session: SessionDep, caller: AdminCaller, actor: ActorDep) -> Response:
    """Its token answers 410 from now on. An accepted invitation is 409 (deactivate the user)."""
    user_service.revoke_invitation(session, caller.account_id, actor, invitation_id)
    session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{token}", response_model=InvitationInfo, responses=GONE, summary="Show an invitation")
def show_invitation(token: str, session: SessionDep) -> InvitationInfo:
    """Public (the token is the credential): the email, role and account it invites to, and
    until when. 404 for an unknown token, 410 when used, revoked or expired."""
    row = user_service.invitation_of_token(session, token)
    account = session.get_one(Account, row.account_id)
    return InvitationInfo(email=row.email, role=row.role, account=account.name,
                          expires_at=InvitationPublic.of(row).expires_at)


@router.post("/{token}/accept", response_model=AcceptedInvitation, status_code=status.HTTP_201_CREATED,
             responses=GONE, summary="Accept an invitation")
def accept_invitation(token: str, request: Request, session: SessionDep,
                      body: InvitationAccept | None = None) -> AcceptedInvitation:
    """Public (the token is the credential): creates your user with the invited email and role
    and answers your first API token (all your role allows) — shown this once. The invitation
    is used up: a second accept is 410; 409 when the email became a user meanwhile."""
    user = user_service.accept(session, token, name=body.name if body else None,
                               ip=request.client.host if request.client else "",
                               user_agent=request.headers.get("user-agent", "")[:300])
    issued = issue_token(session, user, "first token", scopes=[access.ALL])
    created = TokenCreated.of_issued(issued.row, issued.token)
    answer = AcceptedInvitation(user=UserPublic.of(user), token=created)
    commit_or_conflict(session, f"{user.email} is already a user of this account")
    return answer
