"""Accounts of the install, for the service operator: ``Authorization: Bearer
<DEVOPS_OPERATOR_TOKEN>`` (when set) or the API token of a user flagged ``is_operator`` (the
first admin bootstrap created). Everyone else is 403; no token is 401."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, status
from fastapi.security import HTTPAuthorizationCredentials

from api.auth import issue_token
from api.commits import commit_or_conflict
from api.deps import SessionDep, SettingsDep, actor_of, authenticate, bearer, request_actor
from api.token_schemas import TokenCreated
from api.user_schemas import AccountCreate, AccountCreated, AccountPublic, AccountsPublic, UserPublic
from db.models import User
from domain import access
from domain.errors import Forbidden
from services import accounts as account_service
from services import audit

router = APIRouter(prefix="/accounts", tags=["accounts"])

NOT_OPERATOR = {403: {"description": "the caller is not the service operator"}}


def require_operator(request: Request, session: SessionDep, settings: SettingsDep,
                     credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> audit.Actor:
    """The operator token (compared in constant time), else an API token whose user is an
    operator; the audit actor either way."""
    expected = settings.operator_token
    given = credentials.credentials if credentials else ""
    if expected and given and hmac.compare_digest(given.encode(), expected.encode()):
        return request_actor(request, "operator")
    caller = authenticate(request, session, credentials)
    user = session.get(User, caller.user_id)
    if user is None or not user.is_operator:
        raise Forbidden("only the service operator may manage accounts")
    return actor_of(request, caller)


OperatorActor = Annotated[audit.Actor, Depends(require_operator)]


@router.get("", response_model=AccountsPublic, responses=NOT_OPERATOR, summary="List accounts")
def list_accounts(session: SessionDep, actor: OperatorActor,
                  limit: Annotated[int, Query(ge=1, le=500)] = 100,
                  offset: Annotated[int, Query(ge=0)] = 0) -> AccountsPublic:
    """Every account of the install, oldest first (operator only)."""
    rows, total = account_service.list_accounts(session, limit=limit, offset=offset)
    return AccountsPublic(data=[AccountPublic.of(row) for row in rows], count=total)


@router.post("", response_model=AccountCreated, status_code=status.HTTP_201_CREATED, responses=NOT_OPERATOR,
             summary="Create an account")
def create_account(body: AccountCreate, session: SessionDep, actor: OperatorActor) -> AccountCreated:
    """A new account with its first admin (``admin_email``) and that admin's first API token,
    shown this once. An existing account name (case-insensitive) is 409."""
    account, user = account_service.create_account(session, actor, name=body.name, admin_email=body.admin_email)
    issued = issue_token(session, user, "first token", scopes=[access.ALL])
    answer = AccountCreated(account=AccountPublic.of(account), admin=UserPublic.of(user),
                            token=TokenCreated.of_issued(issued.row, issued.token))
    commit_or_conflict(session, f"an account named {body.name!r} already exists")
    return answer
