"""API tokens of the caller (and, for an admin, of the whole account): list, create, revoke,
rotate. The rules are in ``services.tokens``; the value is shown once, at creation."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Path, Query, Response, status

from api.auth import issue_token
from api.deps import ActorDep, Caller, CurrentCaller, SessionDep, SettingsDep
from api.token_schemas import TokenCreate, TokenCreated, TokenPublic, TokenRotate, TokensPublic
from services import tokens

router = APIRouter(prefix="/tokens", tags=["tokens"])

TokenId = Annotated[int, Path(ge=1, le=2**63 - 1)]


def _requester(caller: Caller) -> tokens.Requester:
    return tokens.Requester(account_id=caller.account_id, user_id=caller.user_id, role=caller.role,
                            scopes=caller.scopes)


@router.get("", response_model=TokensPublic, summary="List API tokens")
def list_tokens(session: SessionDep, caller: CurrentCaller,
                everyone: Annotated[bool, Query(alias="all", description="every token of the account, with its user_id "
                                                       "(needs the admin role and scope)")] = False,
                limit: Annotated[int, Query(ge=1, le=500)] = 100,
                offset: Annotated[int, Query(ge=0)] = 0) -> TokensPublic:
    """Your API tokens, newest first, revoked and expired ones included (`active` says which
    still work). Never their values: only the `prefix` to recognise one."""
    rows, total = tokens.list_tokens(session, _requester(caller), everyone=everyone, limit=limit, offset=offset)
    return TokensPublic(data=[TokenPublic.of(row) for row in rows], count=total)


@router.post("", response_model=TokenCreated, status_code=status.HTTP_201_CREATED, summary="Create an API token",
             responses={403: {"description": "a requested scope is not held by the calling token (a token cannot "
                                             "create a stronger one)"}})
def create_token(body: TokenCreate, session: SessionDep, caller: CurrentCaller, actor: ActorDep) -> TokenCreated:
    """A new API token of yours. Its value is in `token`, shown this once. `scopes` (default `["*"]`:
    everything your role allows) narrow what it may do; each must be held by the token you call with.
    An unknown scope, or one your role can never use, is 422 naming it."""
    issued = tokens.create_token(session, _requester(caller), actor, issue_token, name=body.name, scopes=body.scopes,
                                 expires_at=body.expires_at, expires_in_days=body.expires_in_days)
    return TokenCreated.of_issued(issued.row, issued.token)


@router.delete("/{token_id}", status_code=status.HTTP_204_NO_CONTENT, summary="Revoke an API token")
def revoke_token(token_id: TokenId, session: SessionDep, caller: CurrentCaller, actor: ActorDep) -> Response:
    """Revoke a token at once (yours; an admin: any of the account). Idempotent: revoking a revoked
    token is 204 again. Another user's token is 404 unless you are an admin."""
    tokens.revoke_token(session, _requester(caller), actor, token_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{token_id}/rotate", response_model=TokenCreated, status_code=status.HTTP_201_CREATED,
             summary="Rotate an API token without downtime",
             responses={403: {"description": "not your token (admins revoke others' tokens, they do not rotate "
                                             "them), or the calling token lacks one of its scopes"}})
def rotate_token(token_id: TokenId, session: SessionDep, caller: CurrentCaller, actor: ActorDep,
                 settings: SettingsDep, body: Annotated[TokenRotate | None, Body()] = None) -> TokenCreated:
    """A new value for one of your tokens, with the same name, scopes and expiry (shown once).
    The old value keeps working for `grace_minutes` (default from the server's settings; 0: it
    stops at once), then expires. A revoked or expired token is 409."""
    grace = body.grace_minutes if body and body.grace_minutes is not None else settings.token_rotation_grace_minutes
    issued, _old = tokens.rotate_token(session, _requester(caller), actor, issue_token, token_id, grace)
    return TokenCreated.of_issued(issued.row, issued.token)
