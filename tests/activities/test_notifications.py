"""Approval-request notifications beyond the JSON webhook: email over SMTP (a real aiosmtpd
server on loopback, with login and STARTTLS), Slack-compatible incoming webhooks and the JSON
webhook's page link (a tiny HTTP server on loopback); who the recipients are (roles incl.
approver, never a deactivated user); a failing channel never fails the gate nor logs a link."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import json
import logging
import socket
import threading
import uuid
from email import message_from_bytes, policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import select

from activities.approvals import ApprovalActivities, OpenApprovalGateInput, hash_approval_token, role_of
from adapters import notifiers
from db.models import StepApprovalToken, User
from settings import Settings
from tests.activities.conftest import make_run_rows, make_test_settings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Mailbox:
    """aiosmtpd handler keeping every message it accepts."""

    def __init__(self) -> None:
        self.messages: list[Any] = []
        self.envelopes: list[tuple[str, list[str]]] = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's hook name
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        self.messages.append(message_from_bytes(envelope.original_content or envelope.content, policy=policy.default))
        return "250 OK"


@pytest.fixture
def smtp():
    box = Mailbox()
    controller = Controller(box, hostname="127.0.0.1", port=free_port())
    controller.start()
    box.port = controller.port
    yield box
    controller.stop()


class Hooks:
    """A tiny HTTP server on 127.0.0.1 keeping every POST (path, headers, JSON body)."""

    def __init__(self, status: int = 200) -> None:
        self.received: list[tuple[str, dict[str, str], dict[str, Any]]] = []
        hooks = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                hooks.received.append((self.path, dict(self.headers), json.loads(body)))
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def on(self, path: str) -> list[dict[str, Any]]:
        return [body for got, _, body in self.received if got == path]


@pytest.fixture
def hooks():
    server = Hooks()
    yield server
    server.server.shutdown()


def add_user(sessions, account_id: int, role: str = "member", **columns: Any) -> str:
    email = f"{role}-{uuid.uuid4().hex[:6]}@example.test"
    with sessions.begin() as session:
        session.add(User(account_id=account_id, email=email, role=role, **columns))
    return email


def gate_input(rows, recipients: list[str], **overrides: Any) -> OpenApprovalGateInput:
    expires = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
    values = dict(run_id=rows.run_id, account_id=rows.account_id, pipeline_id=rows.pipeline_id,
                  pipeline_name="web <shop>", run_number=7, step_id="deploy", step_name="Deploy", attempt=1,
                  recipients=recipients, expires_at=expires)
    values.update(overrides)
    return OpenApprovalGateInput(**values)


def open_gate(settings: Settings, sessions, inp: OpenApprovalGateInput):
    return asyncio.run(ApprovalActivities(settings, sessions).open_gate(inp))


def smtp_settings(sqlite_url: str, tmp_path: Path, port: int, **overrides: Any) -> Settings:
    return make_test_settings(sqlite_url, tmp_path, smtp_host="127.0.0.1", smtp_port=port,
                              smtp_from="ci@devops.example", public_api_url="https://ci.example", **overrides)


def test_email_slack_and_webhook_each_carry_the_recipients_links(sqlite_url, sqlite_sessions, tmp_path, smtp,
                                                                 hooks):
    rows = make_run_rows(sqlite_sessions)
    alice = add_user(sqlite_sessions, rows.account_id, notify_url=f"{hooks.base}/json",
                     notify_slack_url=f"{hooks.base}/slack", notify_email=True)
    quiet = add_user(sqlite_sessions, rows.account_id)  # no channel: decides from GET /approvals
    settings = smtp_settings(sqlite_url, tmp_path, smtp.port)
    result = open_gate(settings, sqlite_sessions, gate_input(rows, [alice, quiet]))

    assert [(t.recipient, t.delivered) for t in result.tickets] == [(alice, True), (quiet, False)]
    # the JSON webhook: the existing keys plus links.page
    [body] = hooks.on("/json")
    token = body["links"]["page"].rsplit("/", 1)[1]
    page = f"https://ci.example/api/v1/devops/approval_tokens/{token}"
    assert body["links"] == {"approve": f"{page}/approve", "reject": f"{page}/reject", "page": page}
    assert {k: body[k] for k in ("event", "recipient", "run_number", "pipeline", "step_id", "step_name")} == {
        "event": "approval_requested", "recipient": alice, "run_number": 7, "pipeline": "web <shop>",
        "step_id": "deploy", "step_name": "Deploy"}
    with sqlite_sessions() as session:
        stored = session.scalar(select(StepApprovalToken).where(StepApprovalToken.recipient == alice))
    assert stored.token_hash == hash_approval_token(token) and token.startswith("apv_")

    # Slack: text and blocks (a section, then two URL buttons opening the page with a decision)
    [slack] = hooks.on("/slack")
    assert set(slack) == {"text", "blocks"}
    assert slack["text"].startswith("Approval requested: web <shop> #7 step Deploy") and page in slack["text"]
    section, actions = slack["blocks"]
    assert section["type"] == "section" and "web &lt;shop&gt;" in section["text"]["text"]
    assert actions["type"] == "actions"
    assert [(b["text"]["text"], b["url"]) for b in actions["elements"]] == [
        ("Approve", f"{page}?decision=approve"), ("Reject", f"{page}?decision=reject")]

    # email: subject, from/to, plain text with the page link and both decision links
    assert smtp.envelopes == [("ci@devops.example", [alice])]
    [mail] = smtp.messages
    assert mail["Subject"] == "Approval requested: web <shop> #7 step Deploy"
    assert mail["To"] == alice and mail["From"] == "ci@devops.example"
    assert mail.get_content_type() == "text/plain"
    text = mail.get_content().replace("\r\n", "\n")
    assert page + "\n" in text and f"Approve: {page}/approve" in text and f"Reject:  {page}/reject" in text


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_smtp_login_is_used_when_configured(sqlite_url, sqlite_sessions, tmp_path):
    box, logins = Mailbox(), []

    def authenticator(server, session, envelope, mechanism, data):
        logins.append((mechanism, data.login, data.password) if isinstance(data, LoginPassword) else mechanism)
        return AuthResult(success=data == LoginPassword(b"ci", b"s3cret"), handled=False)

    controller = Controller(box, hostname="127.0.0.1", port=free_port(), authenticator=authenticator,
                            auth_required=True, auth_require_tls=False)
    controller.start()
    try:
        rows = make_run_rows(sqlite_sessions)
        bob = add_user(sqlite_sessions, rows.account_id, notify_email=True)
        good = smtp_settings(sqlite_url, tmp_path, controller.port, smtp_username="ci", smtp_password="s3cret")
        assert open_gate(good, sqlite_sessions, gate_input(rows, [bob])).tickets[0].delivered
        assert len(box.messages) == 1 and logins[-1][1:] == (b"ci", b"s3cret")
        # a wrong password: not delivered, the gate still opens (bob decides from the inbox)
        bad = smtp_settings(sqlite_url, tmp_path, controller.port, smtp_username="ci", smtp_password="wrong")
        ticket = open_gate(bad, sqlite_sessions, gate_input(rows, [bob])).tickets[0]
        assert (ticket.recipient, ticket.delivered) == (bob, False) and len(box.messages) == 1
    finally:
        controller.stop()


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_starttls_upgrades_the_connection_and_verifies_the_server(sqlite_url, sqlite_sessions, tmp_path,
                                                                  monkeypatch):
    import ssl

    cert, key = self_signed(tmp_path)
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(cert, key)
    box, secure = Mailbox(), []
    original = box.handle_DATA

    async def handle_data(server, session, envelope):
        secure.append(session.ssl is not None)
        return await original(server, session, envelope)

    box.handle_DATA = handle_data
    controller = Controller(box, hostname="127.0.0.1", port=free_port(), tls_context=server_tls,
                            require_starttls=True)
    controller.start()
    try:
        rows = make_run_rows(sqlite_sessions)
        carol = add_user(sqlite_sessions, rows.account_id, notify_email=True)
        settings = smtp_settings(sqlite_url, tmp_path, controller.port, smtp_starttls=True)
        # the system trust store does not know this server: refused, not delivered, the gate opens
        assert not open_gate(settings, sqlite_sessions, gate_input(rows, [carol])).tickets[0].delivered
        assert box.messages == []
        # trusting its certificate: delivered over TLS
        monkeypatch.setattr(notifiers, "smtp_tls_context", lambda: ssl.create_default_context(cafile=str(cert)))
        assert open_gate(settings, sqlite_sessions, gate_input(rows, [carol])).tickets[0].delivered
        assert secure == [True] and len(box.messages) == 1
        # without STARTTLS this server refuses the mail
        plain = smtp_settings(sqlite_url, tmp_path, controller.port)
        assert not open_gate(plain, sqlite_sessions, gate_input(rows, [carol])).tickets[0].delivered
    finally:
        controller.stop()


def test_a_failing_channel_never_fails_the_gate_nor_logs_a_link(sqlite_url, sqlite_sessions, tmp_path, caplog):
    failing = Hooks(status=500)
    try:
        rows = make_run_rows(sqlite_sessions)
        dave = add_user(sqlite_sessions, rows.account_id, notify_url=f"{failing.base}/json",
                        notify_slack_url=f"{failing.base}/slack", notify_email=True)
        # SMTP on a port nobody listens on; private targets allowed so the 500s are reached
        settings = smtp_settings(sqlite_url, tmp_path, free_port())
        with caplog.at_level(logging.WARNING, logger="activities.approvals"):
            result = open_gate(settings, sqlite_sessions, gate_input(rows, [dave]))
        assert [(t.recipient, t.delivered) for t in result.tickets] == [(dave, False)]
        assert len(failing.on("/json")) == 1 and len(failing.on("/slack")) == 1
        warnings = [r.getMessage() for r in caplog.records]
        assert any("webhook answered HTTP 500" in w for w in warnings), warnings
        assert any("Slack answered HTTP 500" in w for w in warnings), warnings
        assert any("not emailed" in w and "ConnectionRefusedError" in w for w in warnings), warnings
        assert not any("apv_" in w or "approval_tokens" in w for w in warnings), warnings

        # private targets refused (the install's default): the Slack URL like notify_url
        caplog.clear()
        strict = make_test_settings(sqlite_url, tmp_path, notify_allow_private_targets=False)
        with caplog.at_level(logging.WARNING, logger="activities.approvals"):
            again = open_gate(strict, sqlite_sessions, gate_input(rows, [dave]))
        assert not again.tickets[0].delivered
        assert len(failing.on("/json")) == 1 and len(failing.on("/slack")) == 1  # nothing sent
        assert sum("ApplicationError" in r.getMessage() for r in caplog.records) == 2
    finally:
        failing.server.shutdown()


def test_roles_name_recipients_and_deactivated_users_never_are(sqlite_url, sqlite_sessions, tmp_path):
    assert role_of("role:approver") == role_of("approver") == "approver"
    assert role_of("role:viewer") == "viewer" and role_of("role:owner") is None and role_of("x@y.z") is None
    rows = make_run_rows(sqlite_sessions)
    first = add_user(sqlite_sessions, rows.account_id, role="approver")
    second = add_user(sqlite_sessions, rows.account_id, role="approver")
    gone = add_user(sqlite_sessions, rows.account_id, role="approver", deactivated_at=dt.datetime.now(dt.UTC))
    add_user(sqlite_sessions, rows.account_id, role="member")
    settings = make_test_settings(sqlite_url, tmp_path)

    def recipients(names: list[str]) -> tuple[list[str], list[str]]:
        result = open_gate(settings, sqlite_sessions, gate_input(rows, names))
        return sorted(t.recipient for t in result.tickets), result.unresolved

    assert recipients(["role:approver"]) == (sorted([first, second]), [])
    assert recipients(["approver", first]) == (sorted([first, second]), [])
    # a deactivated user named directly gets no link; a role with no active user is unresolved
    assert recipients([gone, first]) == ([first], [gone])
    assert recipients(["role:viewer"]) == ([], ["role:viewer"])
    with sqlite_sessions() as session:
        stored = session.scalars(select(StepApprovalToken.recipient).where(
            StepApprovalToken.run_id == rows.run_id)).all()
    assert gone not in stored  # the last try's tokens replace earlier ones; never the deactivated user's


def test_slack_payload_escapes_names_and_email_never_needs_html():
    notice = notifiers.ApprovalNotice(recipient="a@b.c", pipeline="<!channel> & co", run_number=3, step_id="s",
                                      step_name="s", expires_at="2030-01-01T00:00:00+00:00", page="https://x/p",
                                      approve="https://x/p/approve", reject="https://x/p/reject")
    section = notifiers.slack_payload(notice)["blocks"][0]["text"]["text"]
    assert "<!channel>" not in section and "&lt;!channel&gt; &amp; co" in section
    mail = notifiers.approval_email(notice, "ci@x")
    assert mail.get_content_type() == "text/plain" and "https://x/p/approve" in mail.get_content()
