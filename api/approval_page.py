"""The approval page a reviewer opens from a notification (``GET /approval_tokens/{token}``),
and the HTML answers to its form (``POST /approval_tokens/{token}/{decision}`` sent as
``application/x-www-form-urlencoded``).

Made for a phone: a viewport, large buttons, no JavaScript, no external resource, one inline
``<style>`` allowed by its hash. Every value shown is escaped. The link's token is the
credential, so the pages go out with ``no-store`` and ``no-referrer`` (api/security.py adds
those and keeps the page's own Content-Security-Policy, as for /docs).
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Coroutine
from datetime import datetime
from html import escape
from typing import Any
from urllib.parse import parse_qs, quote

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.errors import status_of
from domain.errors import DomainError
from services.approvals import Gate

API_PREFIX = "/api/v1/devops"
FORM_TYPE = "application/x-www-form-urlencoded"
FORM_BODY_LIMIT = 64 * 1024  # a 5000-character comment, percent-encoded, fits several times
COMMENT_LIMIT = 5000

STYLE = (
    "body{font:17px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;padding:16px;"
    "background:#f5f6f8;color:#1b1f24}"
    "main{max-width:34rem;margin:0 auto;background:#fff;border-radius:12px;padding:20px;"
    "box-shadow:0 1px 3px rgba(0,0,0,.12)}"
    "h1{font-size:1.35rem;margin:0 0 12px}dl{margin:0 0 16px}dt{font-weight:600;color:#57606a;"
    "font-size:.85rem;text-transform:uppercase;letter-spacing:.03em;margin-top:10px}dd{margin:2px 0 0;"
    "overflow-wrap:anywhere}label{display:block;font-weight:600;margin-bottom:6px}"
    "textarea{box-sizing:border-box;width:100%;min-height:6.5rem;font:inherit;padding:10px;border:1px solid #8c959f;"
    "border-radius:8px}.buttons{display:flex;flex-wrap:wrap;gap:12px;margin-top:14px}"
    "button{flex:1 1 10rem;min-height:3.25rem;font:inherit;font-weight:700;border:0;border-radius:10px;"
    "color:#fff;cursor:pointer}.approve{background:#1a7f37}.reject{background:#cf222e}"
    ".chosen{outline:4px solid #0969da;outline-offset:2px}.note{color:#57606a;font-size:.9rem}"
    ".outcome{font-size:1.1rem}"
)
_STYLE_HASH = base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode()
#: Exactly what these pages need: their one <style>, and posting their form to this origin.
PAGE_CSP = (f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; form-action 'self'; "
            "frame-ancestors 'none'; base-uri 'none'")
HEADERS = {"Content-Security-Policy": PAGE_CSP, "Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}


def _document(title: str, body: str, status_code: int = 200) -> HTMLResponse:
    html = ("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            "<meta name=\"referrer\" content=\"no-referrer\">"
            f"<meta name=\"robots\" content=\"noindex\"><title>{escape(title)}</title>"
            f"<style>{STYLE}</style></head>\n<body><main>\n{body}\n</main></body></html>\n")
    return HTMLResponse(html, status_code=status_code, headers=HEADERS)


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def decision_url(request: Request, token: str, decision: str) -> str:
    """Where the form posts: this API's own path (behind a proxy, under its root path)."""
    root = request.scope.get("root_path", "").rstrip("/")
    return f"{root}{API_PREFIX}/approval_tokens/{quote(token, safe='')}/{decision}"


def approval_page(request: Request, token: str, gate: Gate, recipient: str, *, require_comment: bool = False,
                  chosen: str | None = None) -> HTMLResponse:
    """The confirmation page: what is asked, who else may decide, until when, and the form."""
    others = [r for r in gate.recipients if r.lower() != recipient.lower()]
    step = gate.step_name if gate.step_name == gate.step_id else f"{gate.step_name} ({gate.step_id})"
    rows = [("Pipeline", gate.pipeline), ("Run", f"#{gate.run_number}"), ("Step", step),
            ("You decide as", recipient), ("Others who may decide", ", ".join(others) or "nobody else"),
            ("Approvals", f"{gate.approvals} of {gate.required} needed"
             + (f" (so far: {', '.join(gate.decided_by)})" if gate.decided_by else "")),
            ("Expires", _when(gate.expires_at))]
    details = "".join(f"<dt>{escape(name)}</dt><dd>{escape(value)}</dd>" for name, value in rows)
    approve, reject = (escape(decision_url(request, token, d)) for d in ("approve", "reject"))
    hint = {"approve": "You chose Approve: add a comment if you like, then confirm below.",
            "reject": "You chose Reject: say why in the comment, then confirm below."}.get(chosen or "", "")
    chosen_class = {d: " chosen" if chosen == d else "" for d in ("approve", "reject")}
    body = (
        f"<h1>Approval requested</h1>\n<dl>{details}</dl>\n"
        + (f"<p class=\"note\">{escape(hint)}</p>\n" if hint else "")
        + f"<form method=\"post\" action=\"{approve}\">\n"
        f"<label for=\"comment\">Comment{' (required)' if require_comment else ''}</label>\n"
        f"<textarea id=\"comment\" name=\"comment\" rows=\"4\" maxlength=\"{COMMENT_LIMIT}\""
        f"{' required' if require_comment else ''}></textarea>\n"
        "<div class=\"buttons\">"
        f"<button type=\"submit\" class=\"approve{chosen_class['approve']}\">Approve</button>"
        f"<button type=\"submit\" class=\"reject{chosen_class['reject']}\" formaction=\"{reject}\">Reject</button>"
        "</div>\n</form>\n"
        "<p class=\"note\">This link is yours alone and works once. Deciding here is the same as deciding "
        "in the API.</p>")
    return _document(f"Approve {gate.pipeline} #{gate.run_number} step {gate.step_name}", body)


def problem_page(status_code: int, message: str) -> HTMLResponse:
    """A refusal (unknown link 404, used or expired 410, ...) in words, with its status code."""
    titles = {404: "Approval link not found", 410: "This approval link no longer works",
              403: "You may not decide this", 409: "Nothing left to decide", 413: "Too much text",
              415: "Unsupported form", 422: "Not decided"}
    title = titles.get(status_code, "Not decided")
    return _document(title, f"<h1>{escape(title)}</h1>\n<p class=\"outcome\">{escape(message)}</p>", status_code)


def result_page(result: dict[str, Any]) -> HTMLResponse:
    """The outcome of a decision made with the page's form (``DecisionPublic`` as JSON)."""
    decision = str(result.get("decision", ""))
    outcome = str(result.get("outcome", ""))
    step = str(result.get("step_id", ""))
    if outcome == "pending":
        sentence = (f"Your approval of step {step} is recorded: {result.get('approvals')} of "
                    f"{result.get('required')} approvals so far; the run waits for the others.")
    elif outcome == "approved":
        sentence = f"Step {step} is approved: the run continues."
    else:
        sentence = f"Step {step} is rejected: the run stops there."
    title = "Approved" if decision == "approved" else "Rejected"
    return _document(title, f"<h1>{escape(title)}</h1>\n<p class=\"outcome\">{escape(sentence)}</p>\n"
                            f"<p class=\"note\">Decided by {escape(str(result.get('decided_by', '')))} "
                            f"on run {escape(str(result.get('run_id', '')))}.</p>")


def _message(detail: Any) -> str:
    if isinstance(detail, list):
        return "; ".join(str(p.get("msg", p)) if isinstance(p, dict) else str(p) for p in detail)
    return str(detail)


async def _form_comment(request: Request) -> str | HTMLResponse:
    """The ``comment`` field of a small form body, or the HTML refusal of a body too large."""
    try:
        declared = int(request.headers.get("content-length") or 0)
    except ValueError:
        declared = 0
    too_large = problem_page(413, f"the form is larger than {FORM_BODY_LIMIT} bytes")
    if declared > FORM_BODY_LIMIT:
        return too_large
    raw = bytearray()
    async for chunk in request.stream():
        raw.extend(chunk)
        if len(raw) > FORM_BODY_LIMIT:
            return too_large
    try:
        fields = parse_qs(bytes(raw).decode("utf-8"), keep_blank_values=True, max_num_fields=20)
    except (UnicodeDecodeError, ValueError):
        return problem_page(422, "the form could not be read")
    comment = (fields.get("comment") or [""])[0]
    if len(comment) > COMMENT_LIMIT or "\x00" in comment:
        return problem_page(422, f"the comment must be at most {COMMENT_LIMIT} characters of text")
    return comment


class FormDecisionRoute(APIRoute):
    """A JSON route that also takes the approval page's form: the form's ``comment`` is handed
    to the route as its JSON body, and the answer (or refusal) comes back as an HTML page."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle_json = super().get_route_handler()

        async def handle(request: Request) -> Response:
            content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
            if content_type != FORM_TYPE:
                return await handle_json(request)
            comment = await _form_comment(request)
            if isinstance(comment, HTMLResponse):
                return comment
            body = json.dumps({"comment": comment}).encode()
            scope = request.scope
            scope["headers"] = [(k, v) for k, v in scope.get("headers", [])
                                if k.lower() not in (b"content-type", b"content-length")] + [
                (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]

            async def receive() -> dict[str, Any]:
                return {"type": "http.request", "body": body, "more_body": False}

            try:
                response = await handle_json(Request(scope, receive))
            except DomainError as exc:
                return problem_page(status_of(exc), _message(exc.detail))
            except RequestValidationError as exc:
                return problem_page(422, _message(exc.errors()))
            except StarletteHTTPException as exc:
                return problem_page(exc.status_code, _message(exc.detail))
            if response.status_code != 200:
                return response
            return result_page(json.loads(bytes(response.body)))

        return handle
