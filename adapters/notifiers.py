"""Notification channels beyond a JSON webhook: email over SMTP and Slack-compatible incoming
webhooks (Slack, Mattermost, Rocket.Chat and others accept the same ``{text, blocks}`` body).

Both carry a recipient's personal approval links, which are credentials: nothing here logs a
message body, a link or a token; callers log only that a channel failed and why (its type).
"""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any

from settings import Settings

SMTP_TIMEOUT_SECONDS = 20


@dataclass(frozen=True)
class ApprovalNotice:
    """What a recipient is asked, and their three links (the page and both decisions)."""

    recipient: str
    pipeline: str
    run_number: int
    step_id: str
    step_name: str
    expires_at: str
    page: str
    approve: str
    reject: str

    @property
    def title(self) -> str:
        return f"Approval requested: {self.pipeline} #{self.run_number} step {self.step_name or self.step_id}"


def approval_email(notice: ApprovalNotice, sender: str) -> EmailMessage:
    """A plain-text email with the page link and both decision links."""
    message = EmailMessage()
    message["Subject"] = notice.title
    message["From"] = sender
    message["To"] = notice.recipient
    message["Date"] = formatdate(localtime=False, usegmt=True)
    message["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or "localhost")
    message.set_content(
        f"Run #{notice.run_number} of pipeline {notice.pipeline} is waiting for your approval at step "
        f"{notice.step_name or notice.step_id}.\n\n"
        f"Review it and decide (with a comment) on this page:\n{notice.page}\n\n"
        f"Or decide at once:\n  Approve: {notice.approve}\n  Reject:  {notice.reject}\n"
        "(these two links need a POST: a mail client opening them changes nothing)\n\n"
        f"The request expires at {notice.expires_at}. The links are yours alone and work once; "
        "do not forward this email.\n")
    return message


def smtp_tls_context() -> ssl.SSLContext:
    """What STARTTLS verifies the server with: the system's trust store and hostname checks."""
    return ssl.create_default_context()


def _send(settings: Settings, message: EmailMessage) -> None:
    with smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=SMTP_TIMEOUT_SECONDS) as smtp:
        smtp.ehlo()
        if settings.smtp_starttls:
            smtp.starttls(context=smtp_tls_context())
            smtp.ehlo()
        if settings.smtp_username:
            smtp.login(settings.smtp_username, settings.smtp_password)
        smtp.send_message(message)


async def send_email(settings: Settings, message: EmailMessage) -> None:
    """Deliver ``message`` over the install's SMTP server (blocking smtplib in a thread).
    Raises ``smtplib.SMTPException`` or ``OSError`` when it cannot."""
    await asyncio.to_thread(_send, settings, message)


def slack_payload(notice: ApprovalNotice) -> dict[str, Any]:
    """An incoming-webhook body: ``text`` (the fallback a notification shows) and ``blocks``
    (a section plus two URL buttons, each opening the approval page with that decision chosen:
    a button opens a link with GET, and deciding is a POST of the page's form)."""
    text = (f"{notice.title}. Review and decide: {notice.page} (expires {notice.expires_at})")
    return {
        "text": text,
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": (
                f"*{_mrkdwn(notice.title)}*\nRun #{notice.run_number} of *{_mrkdwn(notice.pipeline)}* waits for "
                f"your decision at step *{_mrkdwn(notice.step_name or notice.step_id)}* "
                f"(expires {_mrkdwn(notice.expires_at)}).")}},
            {"type": "actions", "elements": [
                {"type": "button", "text": {"type": "plain_text", "text": "Approve"}, "style": "primary",
                 "url": f"{notice.page}?decision=approve", "action_id": "approve"},
                {"type": "button", "text": {"type": "plain_text", "text": "Reject"}, "style": "danger",
                 "url": f"{notice.page}?decision=reject", "action_id": "reject"},
            ]},
        ],
    }


def _mrkdwn(text: str) -> str:
    """Slack's three control characters escaped (names cannot inject links or mentions)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
