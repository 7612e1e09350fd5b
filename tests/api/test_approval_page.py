"""GET /approval_tokens/{token}: the phone-friendly HTML page behind a notification's link, and
its form posted to POST /approval_tokens/{token}/{decision} (HTML answers); the JSON use of
that POST is unchanged (tests/workflows/test_approvals.py)."""

from __future__ import annotations

import base64
import hashlib
import re
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from urllib.parse import urljoin

import httpx
from sqlalchemy import select, update

from api.approval_page import PAGE_CSP
from db.access_models import AuditEvent
from db.models import StepApprovalToken, User
from tests.harness import wait_run
from tests.workflows.test_approvals import Inbox, add_user, waiting
from tests.workflows.test_pipeline_run import create_pipeline, sh, steps_by_id, trigger

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


class Forms(HTMLParser):
    """The page's forms: each with its action, method, fields and submit buttons."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.forms: list[dict] = []
        self.scripts = 0
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "script":
            self.scripts += 1
        if tag == "form":
            self.forms.append({"action": values.get("action"), "method": (values.get("method") or "get").lower(),
                               "fields": {}, "buttons": {}})
        elif tag in ("textarea", "input") and self.forms and values.get("name"):
            self.forms[-1]["fields"][values["name"]] = values.get("value") or ""
        elif tag == "button" and self.forms:
            self._button = values

    def handle_data(self, data: str) -> None:
        if getattr(self, "_button", None) is not None and data.strip():
            button = self._button
            self.forms[-1]["buttons"][data.strip()] = button.get("formaction") or self.forms[-1]["action"]
            self._button = None


def submit(page_url: str, html: str, button: str, comment: str) -> httpx.Response:
    """What a browser does: post the form's fields, urlencoded, to the chosen button's action."""
    [form] = Forms(html).forms
    assert form["method"] == "post"
    return httpx.post(urljoin(page_url, form["buttons"][button]), data={**form["fields"], "comment": comment},
                      timeout=60)


def gated(acct, recipients, **approval) -> int:
    return create_pipeline(acct, steps=[
        sh("build", "true"),
        sh("deploy", "true", name='Deploy <prod> & "go"', requires_approval=True,
           approval={"recipients": recipients, "timeout_minutes": 60, **approval}),
    ])


def test_the_link_opens_a_page_whose_form_decides(stack):
    inbox = Inbox()
    try:
        acct = stack.account()
        alice, _ = add_user(stack, acct, notify_url=inbox.url)
        bob, _ = add_user(stack, acct)
        run = trigger(acct, gated(acct, [alice, bob]))
        waiting(acct, run["id"], "deploy")
        message = wait_run_message(inbox)
        link = message["links"]["page"]
        assert link == message["links"]["approve"].removesuffix("/approve")

        page = httpx.get(link)
        assert page.status_code == 200, page.text
        assert page.headers["content-type"].startswith("text/html")
        assert page.headers["content-security-policy"] == PAGE_CSP
        assert page.headers["cache-control"] == "no-store" and page.headers["referrer-policy"] == "no-referrer"
        assert page.headers["x-frame-options"] == "DENY"
        html = page.text
        style = re.search(r"<style>(.*?)</style>", html, re.DOTALL).group(1)
        digest = base64.b64encode(hashlib.sha256(style.encode()).digest()).decode()
        assert f"style-src 'sha256-{digest}'" in PAGE_CSP and "form-action 'self'" in PAGE_CSP
        assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in html
        assert Forms(html).scripts == 0 and " style=" not in html
        assert not re.search(r"(src|href)=", html)  # nothing loaded from anywhere
        # what is asked, escaped: the step's name, who else may decide, the expiry
        assert "Deploy &lt;prod&gt; &amp; &quot;go&quot; (deploy)" in html and '<prod>' not in html
        assert f"#{run['run_number']}" in html and bob in html and alice in html and " UTC" in html
        [form] = Forms(html).forms
        token = link.rsplit("/", 1)[1]
        assert form["action"] == f"/api/v1/devops/approval_tokens/{token}/approve"
        assert form["buttons"] == {"Approve": form["action"],
                                   "Reject": f"/api/v1/devops/approval_tokens/{token}/reject"}
        assert form["fields"] == {"comment": ""}
        assert 'class="reject chosen"' in httpx.get(link, params={"decision": "reject"}).text
        assert httpx.get(link, params={"decision": "maybe"}).status_code == 422

        # a comment too long, or a form too large: refused in words, nothing decided
        too_long = submit(link, html, "Approve", "x" * 5001)
        assert too_long.status_code == 422 and "at most 5000" in too_long.text
        assert too_long.headers["content-type"].startswith("text/html")
        huge = httpx.post(f"{link}/approve", content=b"comment=" + b"x" * 70_000, headers=FORM)
        assert huge.status_code == 413 and "<h1>Too much text</h1>" in huge.text

        decided = submit(link, html, "Reject", "not <today> & not tomorrow")
        assert decided.status_code == 200, decided.text
        assert decided.headers["content-type"].startswith("text/html")
        assert decided.headers["content-security-policy"] == PAGE_CSP
        assert "<h1>Rejected</h1>" in decided.text and "the run stops there" in decided.text
        final = wait_run(acct.client, run["id"])
        assert final["status"] == "failure"
        assert final["error"] == f"step 'deploy' failed: rejected by {alice}: not <today> & not tomorrow"
        with stack.sessions() as session:
            [event] = session.scalars(select(AuditEvent).where(AuditEvent.action == "approval.decided",
                                                               AuditEvent.target_id == str(run["id"]))).all()
        assert event.actor == alice and event.actor_user_id is not None and event.token_id is None
        assert event.details == {"step_id": "deploy", "decision": "rejected", "outcome": "rejected",
                                 "comment": "not <today> & not tomorrow"}
        assert event.ip == "127.0.0.1" and event.user_agent.startswith("python-httpx")

        # afterwards: the link is used (410 page and 410 form answer; JSON stays JSON)
        again = httpx.get(link)
        assert again.status_code == 410 and "already been used" in again.text
        assert again.headers["content-security-policy"] == PAGE_CSP
        refused = submit(link, html, "Approve", "")
        assert refused.status_code == 410 and "already been used" in refused.text
        assert refused.headers["content-type"].startswith("text/html")
        as_json = httpx.post(f"{link}/approve", json={})
        assert as_json.status_code == 410 and as_json.json() == {"detail": "this approval link has already been used"}
        # unknown links: 404 pages
        unknown = httpx.get(link[:-4] + "zzzz")
        assert unknown.status_code == 404 and "not valid" in unknown.text
        assert unknown.headers["content-type"].startswith("text/html")
        assert httpx.post(f"{link[:-4]}zzzz/approve", data={"comment": ""}).status_code == 404
    finally:
        inbox.close()


def wait_run_message(inbox: Inbox) -> dict:
    inbox.link("deploy")
    return next(m for m in inbox.messages if m["step_id"] == "deploy")


def test_expired_closed_and_refused_decisions_answer_pages(stack):
    inbox = Inbox()
    try:
        acct = stack.account()
        admin = acct.client.get("/users/me").json()["email"]
        with stack.sessions.begin() as session:
            session.execute(update(User).where(User.email == admin).values(notify_url=inbox.url))
        carol, _ = add_user(stack, acct, notify_url=inbox.url)
        dave, _ = add_user(stack, acct, notify_url=inbox.url)
        run = trigger(acct, gated(acct, [admin, carol, dave], require_comment=True))
        shown = waiting(acct, run["id"], "deploy")
        assert steps_by_id(shown)["deploy"]["status"] == "waiting_approval"
        inbox.link("deploy")
        pages = {m["recipient"]: m["links"]["page"] for m in inbox.messages}
        assert set(pages) == {admin, carol, dave}

        # the admin started the run: their own link refuses them (403 page), nothing recorded
        own = httpx.get(pages[admin])
        assert own.status_code == 200
        self_approval = submit(pages[admin], own.text, "Approve", "mine")
        assert self_approval.status_code == 403 and "someone else must approve" in self_approval.text
        # the step requires a comment
        carol_page = httpx.get(pages[carol]).text
        assert "Comment (required)" in carol_page and " required>" in carol_page
        empty = submit(pages[carol], carol_page, "Approve", "  ")
        assert empty.status_code == 422 and "a comment is required" in empty.text
        # dave's link ran out
        with stack.sessions.begin() as session:
            session.execute(update(StepApprovalToken).where(StepApprovalToken.recipient == dave)
                            .values(expires_at=datetime.now(UTC) - timedelta(minutes=1)))
        expired = httpx.get(pages[dave])
        assert expired.status_code == 410 and "expired at" in expired.text
        late = httpx.post(f"{pages[dave]}/approve", data={"comment": "late"})
        assert late.status_code == 410 and "expired" in late.text
        with stack.sessions() as session:
            assert session.scalars(select(AuditEvent).where(
                AuditEvent.account_id == acct.id, AuditEvent.target_type == "pipeline_run",
                AuditEvent.target_id == str(run["id"]))).all() == []

        approved = submit(pages[carol], carol_page, "Approve", "ok by me")
        assert approved.status_code == 200 and "<h1>Approved</h1>" in approved.text
        assert "the run continues" in approved.text
        assert wait_run(acct.client, run["id"])["status"] == "success"
        # the admin's link still unused, but the gate is closed
        closed = httpx.get(pages[admin])
        assert closed.status_code == 410 and "no longer waits" in closed.text
    finally:
        inbox.close()


def test_the_access_log_never_shows_an_approval_link_token():
    """Opening the page logs its path while the token still works: uvicorn's access record
    goes through api.security's filter, which masks the token in the path."""
    import logging

    from api.security import RedactAccessToken

    token = "apv_" + "A1b2_-" * 7
    record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
                               ("127.0.0.1:5000", "GET", f"/api/v1/devops/approval_tokens/{token}?decision=approve",
                                "1.1", 200), None)
    assert RedactAccessToken().filter(record)
    assert token not in record.getMessage()
    assert "/api/v1/devops/approval_tokens/***?decision=approve" in record.getMessage()
    record.args = ("127.0.0.1:5000", "POST", f"/api/v1/devops/approval_tokens/{token}/approve", "1.1", 200)
    RedactAccessToken().filter(record)
    assert record.getMessage().endswith('"POST /api/v1/devops/approval_tokens/***/approve HTTP/1.1" 200')
