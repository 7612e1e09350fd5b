"""Signing in to the dashboard: ``POST /ui/session`` takes an API token (JSON ``{"token"}`` or a
form field ``token``), checks it exactly as the API does (:func:`api.deps.caller_of_token`: the
failed-authentication limit, revoked, expired and deactivated tokens), and sets

* ``devops_session``: the token, ``HttpOnly`` (no script reads it), ``SameSite=Strict``,
  ``Secure`` over https; the API accepts it as the bearer token when there is no
  ``Authorization`` header (api/deps.py);
* ``devops_csrf``: a random value a page of this origin reads and sends back as
  ``X-CSRF-Token`` on every change (POST/PUT/PATCH/DELETE), which the API compares in constant
  time: another site can make the browser send the cookies, but cannot read this one.

``DELETE /ui/session`` (or ``POST /ui/session/logout``) clears both. A sign-in from a page of
another origin (``Origin`` header not ours) is refused, so no site can sign a visitor in as
someone else.
"""

from __future__ import annotations

import json
import secrets
from typing import Any
from urllib.parse import parse_qs, urlsplit

from fastapi import APIRouter, HTTPException, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.security import HTTPAuthorizationCredentials

from api.deps import CSRF_COOKIE, SESSION_COOKIE, caller_of_token

router = APIRouter(prefix="/ui/session", include_in_schema=False)

BODY_LIMIT = 8 * 1024
FORM_TYPE = "application/x-www-form-urlencoded"


def _same_origin(request: Request) -> bool:
    origin = request.headers.get("origin")
    if not origin or origin == "null":
        return origin is None
    host = request.headers.get("host", "")
    return urlsplit(origin).netloc.lower() == host.lower()


async def _token_of(request: Request) -> tuple[str, bool]:
    """The token sent, and whether it came as a form (then the answer is a redirect)."""
    body = await request.body()
    if len(body) > BODY_LIMIT:
        raise HTTPException(status.HTTP_413_REQUEST_ENTITY_TOO_LARGE, "the sign-in body is too large")
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == FORM_TYPE:
        values = parse_qs(body.decode("utf-8", errors="replace"), keep_blank_values=True).get("token", [""])
        return values[-1].strip(), True
    try:
        data: Any = json.loads(body or b"{}")
    except ValueError:
        data = None
    if not isinstance(data, dict) or not isinstance(data.get("token"), str):
        raise HTTPException(422, [
            {"loc": ["body", "token"], "type": "missing", "msg": "send your API token as {\"token\": \"dvo_...\"}"}])
    return data["token"].strip(), False


def _check(request: Request, token: str) -> dict[str, Any]:
    with request.app.state.sessions() as session:
        caller = caller_of_token(request, session, HTTPAuthorizationCredentials(scheme="Bearer", credentials=token))
        return {"user_id": caller.user_id, "account_id": caller.account_id, "email": caller.email,
                "role": caller.role}


def _set_cookies(response: Response, request: Request, token: str) -> None:
    secure = request.url.scheme == "https"
    response.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="strict", secure=secure, path="/")
    response.set_cookie(CSRF_COOKIE, secrets.token_urlsafe(32), httponly=False, samesite="strict", secure=secure,
                        path="/")


def _clear_cookies(response: Response, request: Request) -> None:
    secure = request.url.scheme == "https"
    for name, http_only in ((SESSION_COOKIE, True), (CSRF_COOKIE, False)):
        response.delete_cookie(name, path="/", secure=secure, httponly=http_only, samesite="strict")


@router.post("")
async def create_ui_session(request: Request) -> Response:
    """Sign in with an API token: 200 (JSON) or 303 to ``/ui/`` (form) with the cookies set;
    401 for a token the API would refuse, with no cookie."""
    if not _same_origin(request):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "sign in from this site's own page")
    token, as_form = await _token_of(request)
    who = await run_in_threadpool(_check, request, token)
    response: Response = RedirectResponse("/ui/", status.HTTP_303_SEE_OTHER) if as_form else JSONResponse(who)
    response.headers["Cache-Control"] = "no-store"
    _set_cookies(response, request, token)
    return response


@router.delete("", status_code=status.HTTP_204_NO_CONTENT)
async def delete_ui_session(request: Request) -> Response:
    """Sign out: both cookies cleared (the API token itself stays valid)."""
    response = Response(status_code=status.HTTP_204_NO_CONTENT)
    _clear_cookies(response, request)
    return response


@router.post("/logout")
async def logout_ui_session(request: Request) -> Response:
    """The same as ``DELETE /ui/session``, for a plain form: 303 to ``/ui/``."""
    response = RedirectResponse("/ui/", status.HTTP_303_SEE_OTHER)
    _clear_cookies(response, request)
    return response
