"""Issue 10 item 7, auth hygiene: ``?access_token=`` works on the SSE routes only and never
reaches a log or an answer; failed authentications are rate limited per client address (429
with Retry-After); every response carries security headers; the API docs can be turned off;
the SQLite database file is the service user's only."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import re
import stat
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from httpx_sse import connect_sse
from sqlalchemy import text

from api.main import create_app
from api.security import AuthFailureLimiter, RedactAccessToken
from db.migrate import upgrade
from db.session import make_engine
from settings import Settings
from tests.harness import ApiServer, Stack, make_settings, wait_run

API = "/api/v1/devops"


@contextmanager
def own_server(stack: Stack, data_dir: Path, **overrides) -> Iterator[ApiServer]:
    """A second API process on the stack's database with settings of our own (the shared stack
    runs with a limit no test suite reaches)."""
    settings = make_settings(stack.settings.database_url, data_dir, stack.settings.temporal_address,
                             temporal_namespace=stack.settings.temporal_namespace,
                             schedule_reconcile_on_start=False, **overrides)
    server = ApiServer(settings)
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def access_log() -> Iterator[list[str]]:
    lines: list[str] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    logger, handler = logging.getLogger("uvicorn.access"), Capture()
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def wait_logged(lines: list[str], part: str) -> list[str]:
    # uvicorn logs the line when the response starts; the client may see the answer first
    deadline = time.monotonic() + 5
    while not any(part in line for line in lines) and time.monotonic() < deadline:
        time.sleep(0.02)
    return [line for line in lines if part in line]


# ---- ?access_token= ---------------------------------------------------------------------------


def test_query_token_authenticates_the_sse_stream_only_and_is_logged_as_stars(stack):
    acct = stack.account()
    pipeline = acct.client.post("/pipelines", json={"name": f"p-{uuid.uuid4().hex[:8]}", "steps": [
        {"id": "a", "type": "run_tests", "with": {"command": "echo hello"}}]})
    assert pipeline.status_code == 201, pipeline.text
    run = acct.client.post(f"/pipelines/{pipeline.json()['id']}/trigger", json={})
    assert run.status_code == 201, run.text
    run_id = wait_run(acct.client, run.json()["id"])["id"]
    with access_log() as lines, httpx.Client(base_url=f"{stack.url}{API}", timeout=30) as anonymous:
        with connect_sse(anonymous, "GET", f"/pipeline_runs/{run_id}/logs/stream",
                         params={"access_token": acct.token}) as source:
            assert source.response.status_code == 200
            events = [event for event in source.iter_sse()]
        assert events[-1].event == "end" and json.loads(events[-1].data)["status"] == "success"
        assert any(e.event == "log" and json.loads(e.data)["line"] == "hello" for e in events)
        # any other route: a query token is no token (and is masked in its log line too)
        listing = anonymous.get("/pipeline_runs", params={"access_token": acct.token})
        assert listing.status_code == 401 and acct.token not in listing.text
        # a percent-encoded name is the same parameter to the server, and masked alike
        encoded = anonymous.get(f"/pipelines?access%5Ftoken={acct.token}&limit=1")
        assert encoded.status_code == 401
        # an error answer on the SSE route does not echo it either
        bad = anonymous.get(f"/pipeline_runs/{run_id}/logs/stream",
                            params={"access_token": acct.token, "last_event_id": "12.x"})
        assert bad.status_code == 422 and acct.token not in bad.text
        stream_lines = wait_logged(lines, f"/pipeline_runs/{run_id}/logs/stream?access_token=***")
        listing_lines = wait_logged(lines, "/pipeline_runs?access_token=***")
        encoded_lines = wait_logged(lines, "/pipelines?access_token=***&limit=1")
    assert len(stream_lines) == 2 and listing_lines and encoded_lines, lines
    assert not any(acct.token in line for line in lines), lines


def test_the_access_log_filter_masks_tokens_it_is_handed():
    # Belt and braces behind the request rewrite: whatever reaches uvicorn's loggers is masked.
    record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
                               ("127.0.0.1:5", "GET", "/x?a=1&access_token=dvo_secret&ACCESS%5FTOKEN=dvo_two", "1.1",
                                200), None)
    assert RedactAccessToken().filter(record)
    message = record.getMessage()
    assert "dvo_secret" not in message and "dvo_two" not in message
    assert "access_token=***&ACCESS%5FTOKEN=***" in message

    create_app(Settings(environment="test", database_url="sqlite://"))
    assert any(isinstance(f, RedactAccessToken) for f in logging.getLogger("uvicorn.access").filters)


# ---- failed-auth rate limit ---------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_limiter_locks_out_one_address_for_the_rest_of_the_window():
    clock = Clock()
    limiter = AuthFailureLimiter(3, 10.0, clock=clock)
    for _ in range(2):
        limiter.failed("203.0.113.7")
        clock.now += 1
    assert limiter.retry_after("203.0.113.7") is None
    limiter.failed("203.0.113.7")  # third failure at t+2: locked until the first (t) leaves the window
    assert limiter.retry_after("203.0.113.7") == pytest.approx(8.0)
    assert limiter.retry_after("198.51.100.1") is None  # another address is not affected
    clock.now += 7.9
    assert limiter.retry_after("203.0.113.7") == pytest.approx(0.1)
    clock.now += 0.2  # the first failure left the window: one more try is allowed
    assert limiter.retry_after("203.0.113.7") is None
    limiter.failed("203.0.113.7")
    assert limiter.retry_after("203.0.113.7") == pytest.approx(1.0 - 0.1)
    clock.now += 20
    assert limiter.retry_after("203.0.113.7") is None
    assert len(limiter) == 0  # expired addresses are forgotten


def test_limiter_memory_is_bounded():
    clock = Clock()
    limiter = AuthFailureLimiter(2, 60.0, max_addresses=100, clock=clock)
    for n in range(5000):
        limiter.failed(f"10.0.{n // 256}.{n % 256}")
        limiter.failed(f"10.0.{n // 256}.{n % 256}")
        clock.now += 0.001
    assert len(limiter) <= 100
    assert limiter.retry_after("10.0.19.135") is not None  # the latest (n=4999) are still tracked
    assert limiter.retry_after("10.0.0.0") is None  # the oldest were evicted


def test_failed_authentications_lock_out_the_address_with_429_and_retry_after(stack, tmp_path):
    acct = stack.account()
    bad = {"Authorization": "Bearer dvo_not-a-real-token"}
    good = {"Authorization": f"Bearer {acct.token}"}
    with own_server(stack, tmp_path, auth_failure_limit=3, auth_failure_window_seconds=5) as server, \
            httpx.Client(base_url=f"{server.url}{API}", timeout=30) as client:
        # what does not count: successes, /health, webhooks (their credential is the signature)
        for _ in range(4):
            assert client.get("/pipelines", headers=good).status_code == 200
            assert httpx.get(f"{server.url}/health", timeout=30).status_code in (200, 503)
            assert client.post("/webhooks/github/999999999", content=b"{}", headers={
                **bad, "Content-Type": "application/json", "X-GitHub-Event": "push"}).status_code in (401, 404)
        started = time.monotonic()
        assert client.get("/pipelines", headers=bad).status_code == 401
        assert client.get("/pipelines").status_code == 401
        assert client.get("/pipeline_runs/stream", params={"access_token": "dvo_wrong"}).status_code == 401
        locked = client.get("/pipelines", headers=bad)
        assert locked.status_code == 429, locked.text
        assert "too many failed authentications" in locked.json()["detail"]
        retry_after = int(locked.headers["Retry-After"])
        assert 1 <= retry_after <= 5
        # the valid token from the same address waits too: the token is not even looked at
        assert client.get("/pipelines", headers=good).status_code == 429
        assert client.get("/pipeline_runs/stream", params={"access_token": acct.token}).status_code == 429
        # health and webhooks are still served
        assert httpx.get(f"{server.url}/health", timeout=30).status_code in (200, 503)
        assert client.post("/webhooks/github/999999999", content=b"{}", headers={
            "Content-Type": "application/json", "X-GitHub-Event": "push"}).status_code in (401, 404)
        # another client address (here: named by a proxy uvicorn trusts, loopback) is not affected
        assert client.get("/pipelines", headers={**good, "X-Forwarded-For": "198.51.100.23"}).status_code == 200
        time.sleep(max(0.0, started + 5.2 - time.monotonic()))
        assert client.get("/pipelines", headers=good).status_code == 200


# ---- security headers and docs ------------------------------------------------------------------


def assert_security_headers(response: httpx.Response) -> None:
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]


def test_every_response_carries_security_headers(stack):
    acct = stack.account()
    with httpx.Client(base_url=stack.url, timeout=30) as anonymous:
        for response in (acct.client.get("/pipelines"), anonymous.get(f"{API}/pipelines"),
                         anonymous.get("/no/such/page"), anonymous.get("/health"),
                         acct.client.post("/pipelines", json={"name": ""}),
                         anonymous.get("/openapi.json")):
            assert_security_headers(response)
            assert response.headers["Content-Security-Policy"].startswith("default-src 'none';")
        assert acct.client.get("/pipelines").headers["Cache-Control"] == "no-store"
        assert anonymous.get(f"{API}/pipelines").headers["Cache-Control"] == "no-store"

        swagger = anonymous.get("/docs")
        assert swagger.status_code == 200 and swagger.headers["Content-Type"].startswith("text/html")
        assert_security_headers(swagger)
        csp = swagger.headers["Content-Security-Policy"]
        assert csp.startswith("default-src 'none';") and "https://cdn.jsdelivr.net" in csp
        assert "connect-src 'self'" in csp and "unsafe-eval" not in csp
        # the page's one inline script (SwaggerUIBundle(...)) is allowed by its hash, nothing else is
        scripts = re.findall(r"<script>(.*?)</script>", swagger.text, flags=re.DOTALL)
        assert len(scripts) == 1
        digest = base64.b64encode(hashlib.sha256(scripts[0].encode()).digest()).decode()
        assert f"'sha256-{digest}'" in csp and "script-src https://cdn.jsdelivr.net 'sha256-" in csp
        for src in re.findall(r'(?:src|href)="([^"]+)"', swagger.text):
            assert src.startswith(("https://cdn.jsdelivr.net/", "https://fastapi.tiangolo.com/")), src

        redoc = anonymous.get("/redoc")
        assert redoc.status_code == 200
        assert_security_headers(redoc)
        assert "worker-src blob:" in redoc.headers["Content-Security-Policy"]
        assert "https://fonts.googleapis.com" in redoc.headers["Content-Security-Policy"]
        assert anonymous.get("/openapi.json").json()["paths"]


@pytest.mark.parametrize("environment, docs_enabled, served", [
    ("production", None, False), ("production", True, True), ("test", False, False),
])
def test_docs_follow_the_setting(stack, tmp_path, environment, docs_enabled, served):
    with own_server(stack, tmp_path, environment=environment, docs_enabled=docs_enabled) as server, \
            httpx.Client(base_url=server.url, timeout=30) as client:
        for path in ("/docs", "/redoc", "/openapi.json"):
            response = client.get(path)
            assert response.status_code == (200 if served else 404), (path, response.text)
            assert_security_headers(response)
        assert client.get("/health").status_code in (200, 503)  # the API itself is up either way


# ---- the SQLite file ----------------------------------------------------------------------------


@contextmanager
def permissive_umask() -> Iterator[None]:
    previous = os.umask(0o022)  # what a shell usually has: files 0644 unless we say otherwise
    try:
        yield
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_sqlite_database_and_its_wal_are_created_0600(tmp_path):
    migrated = tmp_path / "data" / "devops.db"
    with permissive_umask():
        upgrade(f"sqlite:///{migrated}")
        fresh = tmp_path / "fresh.db"
        engine = make_engine(f"sqlite:///{fresh}")
        try:
            with engine.connect() as connection:
                connection.execute(text("CREATE TABLE t (x INTEGER)"))
                connection.commit()
                companions = [fresh.with_name(fresh.name + suffix) for suffix in ("-wal", "-shm")]
                assert all(p.exists() for p in companions)
                assert {p.name: mode(p) for p in [fresh, *companions]} == {p.name: 0o600 for p in [fresh, *companions]}
        finally:
            engine.dispose()
    assert mode(migrated) == 0o600


def test_an_existing_world_readable_sqlite_file_is_tightened(tmp_path):
    database = tmp_path / "devops.db"
    with permissive_umask():
        upgrade(f"sqlite:///{database}")
    database.chmod(0o644)
    wal = database.with_name("devops.db-wal")
    wal.touch()
    wal.chmod(0o644)
    make_engine(f"sqlite:///{database}").dispose()
    assert mode(database) == 0o600 and mode(wal) == 0o600
