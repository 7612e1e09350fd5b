"""Approval gates: minting single-use tokens, delivering each to its own recipient, and
recording decisions (the seed's ``StepApprovalToken`` and ``ApprovalTokensController``).

Clear tokens exist only inside :meth:`ApprovalActivities.open_gate` and in the recipient's
notification; the database and the workflow (so Temporal's history) see SHA-256 hashes.
"""

import asyncio
import hashlib
import json
import logging
import secrets
import smtplib
from dataclasses import dataclass, field
from datetime import datetime

import httpx
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session, sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.steps import refuse_private_target
from adapters import notifiers
from db.models import ApprovalDecision, RunEvent, StepApprovalToken, User
from domain.access import ROLES
from settings import Settings

log = logging.getLogger(__name__)
TOKEN_PREFIX = "apv_"


def hash_approval_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def role_of(recipient: str) -> str | None:
    """``role:approver`` or a bare role name (``approver``) designates every active user of the
    account with that role (``domain.access.ROLES``)."""
    name = recipient.removeprefix("role:")
    return name if name in ROLES and (recipient.startswith("role:") or recipient == name) else None


@dataclass
class OpenApprovalGateInput:
    run_id: int
    account_id: int
    pipeline_id: int
    pipeline_name: str
    run_number: int
    step_id: str
    step_name: str
    attempt: int
    recipients: list[str]
    expires_at: str


@dataclass
class ApprovalTicket:
    recipient: str  # an email address
    token_hash: str
    delivered: bool


@dataclass(frozen=True)
class Channels:
    """Where one recipient's notification goes (none set: the recipient decides from the inbox)."""

    notify_url: str | None = None
    slack_url: str | None = None
    email: bool = False


@dataclass
class OpenApprovalGateResult:
    tickets: list[ApprovalTicket] = field(default_factory=list)
    unresolved: list[str] = field(default_factory=list)  # roles with no user


@dataclass
class RecordApprovalDecisionInput:
    run_id: int
    account_id: int
    pipeline_id: int
    step_id: str
    attempt: int
    decision: str  # approved | rejected
    decided_by: str
    comment: str
    at: str
    event_key: str
    user_id: int | None = None
    token_hash: str | None = None


class ApprovalActivities:
    def __init__(self, settings: Settings, session_factory: sessionmaker[Session],
                 http_client: httpx.AsyncClient | None = None) -> None:
        self._settings = settings
        self._sessions = session_factory
        self._http = http_client

    def _approval_links(self, token: str) -> dict[str, str]:
        """The decision links (POST) and the page a person opens to decide (GET)."""
        page = f"{self._settings.resolved_public_api_url}/api/v1/devops/approval_tokens/{token}"
        return {"approve": f"{page}/approve", "reject": f"{page}/reject", "page": page}

    def _mint(self, inp: OpenApprovalGateInput) -> tuple[list[tuple[str, str, Channels]], list[str]]:
        """Resolve recipients to users' emails (deactivated users are never recipients), replace
        any tokens of an earlier try of this activity, and store new token hashes. Returns
        (email, clear token, the recipient's notification channels)."""
        expires_at = datetime.fromisoformat(inp.expires_at)
        with self._sessions.begin() as session:
            users = session.scalars(select(User).where(User.account_id == inp.account_id)).all()
            active = [u for u in users if u.deactivated_at is None]
            inactive = {u.email.lower() for u in users if u.deactivated_at is not None}
            by_email = {u.email.lower(): u for u in active}
            emails: list[str] = []
            unresolved: list[str] = []
            for recipient in inp.recipients:
                role = role_of(recipient)
                if role:
                    matched = [u.email for u in active if u.role == role]
                else:
                    matched = [] if recipient.lower() in inactive else [recipient]
                if not matched:
                    unresolved.append(recipient)
                emails.extend(e for e in matched if e.lower() not in {x.lower() for x in emails})
            # A retried try re-mints: tokens delivered by an interrupted try stop working.
            session.execute(delete(StepApprovalToken).where(
                StepApprovalToken.run_id == inp.run_id, StepApprovalToken.step_id == inp.step_id,
                StepApprovalToken.attempt == inp.attempt))
            minted = []
            for email in emails:
                token = TOKEN_PREFIX + secrets.token_urlsafe(32)
                session.add(StepApprovalToken(account_id=inp.account_id, run_id=inp.run_id, step_id=inp.step_id,
                                              attempt=inp.attempt, recipient=email,
                                              token_hash=hash_approval_token(token), expires_at=expires_at))
                user = by_email.get(email.lower())
                channels = Channels(notify_url=user.notify_url, slack_url=user.notify_slack_url,
                                    email=bool(user.notify_email)) if user else Channels()
                minted.append((email, token, channels))
        return minted, unresolved

    @activity.defn(name="open_approval_gate")
    async def open_gate(self, inp: OpenApprovalGateInput) -> OpenApprovalGateResult:
        """Mint one token per recipient and deliver each inside that recipient's notifications
        (JSON webhook, Slack-compatible webhook, email). A channel failing never fails the gate:
        the recipient can still decide from ``GET /approvals``."""
        minted, unresolved = await asyncio.to_thread(self._mint, inp)
        tickets = []
        client = self._http or httpx.AsyncClient()
        try:
            for email, token, channels in minted:
                results = []
                if channels.notify_url:
                    results.append(await self._deliver(client, inp, email, token, channels.notify_url))
                if channels.slack_url:
                    results.append(await self._deliver_slack(client, inp, email, token, channels.slack_url))
                if channels.email and self._settings.smtp_host:
                    results.append(await self._deliver_email(inp, email, token))
                tickets.append(ApprovalTicket(recipient=email, token_hash=hash_approval_token(token),
                                              delivered=any(results)))
        finally:
            if self._http is None:
                await client.aclose()
        return OpenApprovalGateResult(tickets=tickets, unresolved=unresolved)

    def _notice(self, inp: OpenApprovalGateInput, email: str, token: str) -> notifiers.ApprovalNotice:
        links = self._approval_links(token)
        return notifiers.ApprovalNotice(recipient=email, pipeline=inp.pipeline_name, run_number=inp.run_number,
                                        step_id=inp.step_id, step_name=inp.step_name, expires_at=inp.expires_at,
                                        page=links["page"], approve=links["approve"], reject=links["reject"])

    async def _deliver(self, client: httpx.AsyncClient, inp: OpenApprovalGateInput, email: str, token: str,
                       url: str) -> bool:
        body = {
            "event": "approval_requested", "recipient": email, "run_id": inp.run_id, "run_number": inp.run_number,
            "pipeline_id": inp.pipeline_id, "pipeline": inp.pipeline_name, "step_id": inp.step_id,
            "step_name": inp.step_name, "expires_at": inp.expires_at, "links": self._approval_links(token),
        }
        return await self._post(client, inp, url, body, "webhook", {"X-Devops-Event": "approval.requested"})

    async def _deliver_slack(self, client: httpx.AsyncClient, inp: OpenApprovalGateInput, email: str, token: str,
                             url: str) -> bool:
        return await self._post(client, inp, url, notifiers.slack_payload(self._notice(inp, email, token)), "Slack")

    async def _post(self, client: httpx.AsyncClient, inp: OpenApprovalGateInput, url: str, body: dict[str, object],
                    channel: str, headers: dict[str, str] | None = None) -> bool:
        try:
            if not self._settings.private_targets_allowed:
                await refuse_private_target(url)
            response = await client.post(url, content=json.dumps(body).encode(), timeout=15,
                                         headers={"Content-Type": "application/json", **(headers or {})})
            ok = response.status_code < 300
        except (httpx.HTTPError, ApplicationError) as exc:
            log.warning("approval request for run %s step %s not delivered to its recipient's %s: %s",
                        inp.run_id, inp.step_id, channel, type(exc).__name__)
            return False
        if not ok:
            log.warning("approval request for run %s step %s: recipient's %s answered HTTP %s",
                        inp.run_id, inp.step_id, channel, response.status_code)
        return ok

    async def _deliver_email(self, inp: OpenApprovalGateInput, email: str, token: str) -> bool:
        message = notifiers.approval_email(self._notice(inp, email, token), self._settings.smtp_from)
        try:
            await notifiers.send_email(self._settings, message)
        except (smtplib.SMTPException, OSError, ValueError) as exc:
            # the exception's text may quote the message (and so the links): its type only
            log.warning("approval request for run %s step %s not emailed to its recipient: %s",
                        inp.run_id, inp.step_id, type(exc).__name__)
            return False
        return True

    @activity.defn(name="record_approval_decision")
    def record_decision(self, inp: RecordApprovalDecisionInput) -> None:
        """Store who decided, when and why; mark the token used. Idempotent by event key."""
        at = datetime.fromisoformat(inp.at)
        with self._sessions.begin() as session:
            already = session.scalar(select(RunEvent.id).where(RunEvent.run_id == inp.run_id,
                                                               RunEvent.dedupe_key == inp.event_key))
            if already is not None:
                return
            token_id = None
            if inp.token_hash:
                token_id = session.scalar(select(StepApprovalToken.id).where(
                    StepApprovalToken.token_hash == inp.token_hash))
                session.execute(update(StepApprovalToken).where(StepApprovalToken.token_hash == inp.token_hash)
                                .values(used_at=at))
            session.add(ApprovalDecision(account_id=inp.account_id, run_id=inp.run_id, step_id=inp.step_id,
                                         attempt=inp.attempt, decision=inp.decision, decided_by=inp.decided_by,
                                         user_id=inp.user_id, token_id=token_id, comment=inp.comment, created_at=at))
            session.add(RunEvent(account_id=inp.account_id, run_id=inp.run_id, pipeline_id=inp.pipeline_id,
                                 event_type="approval_decided", dedupe_key=inp.event_key, created_at=at,
                                 payload={"run_id": inp.run_id, "step_id": inp.step_id, "decision": inp.decision,
                                          "decided_by": inp.decided_by, "comment": inp.comment}))
