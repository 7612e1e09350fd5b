"""The dashboard's browser tests: Debian's Chromium (``/usr/bin/chromium``, installed by
scripts/test-services.sh) driven by Playwright, never a downloaded browser. Screenshots go to
``tests/ui/artifacts/`` (gitignored); with ``UPDATE_SCREENSHOTS=1`` the ones the README shows are
also written to ``docs/screenshots/`` (committed, so an ordinary run leaves the tree clean)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from api.auth import issue_token
from db.models import User
from tests.docker_support import IN_CI

CHROMIUM = os.environ.get("TEST_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
TIMEOUT_MS = 30_000


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """Per module, not per session: Playwright's sync API keeps an asyncio loop marked running
    in this thread while it is started, so later tests of the same worker process that call
    ``asyncio.run`` would fail; stopping it after each module gives the thread back."""
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        problem = f"no Chromium at {CHROMIUM} (scripts/test-services.sh installs Debian's chromium)"
        pytest.fail(problem) if IN_CI else pytest.skip(problem)  # under CI a skipped browser is a failure
    playwright = sync_api.sync_playwright().start()
    # --no-sandbox: the suite may run as root, where Chromium's sandbox refuses to start
    launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                          args=["--no-sandbox", "--disable-dev-shm-usage"])
    yield launched
    launched.close()
    playwright.stop()


@pytest.fixture
def new_page(browser, request: pytest.FixtureRequest):
    """``new_page(viewport=...)``: a page in a fresh context (its own cookies); after the test
    each page's last state is kept as a screenshot in tests/ui/artifacts/ (for failures)."""
    contexts = []

    def make(**context_options):
        context = browser.new_context(**context_options)
        context.set_default_timeout(TIMEOUT_MS)
        contexts.append(context)
        page = context.new_page()
        page.on("console", lambda message: print(f"[browser {message.type}] {message.text}"))
        page.on("pageerror", lambda error: print(f"[browser error] {error}"))
        return page

    yield make
    ARTIFACTS.mkdir(exist_ok=True)
    for index, context in enumerate(contexts):
        for number, page in enumerate(context.pages):
            try:
                page.screenshot(path=str(ARTIFACTS / f"{request.node.name}-{index}-{number}-last.png"), full_page=True)
            except Exception:  # noqa: BLE001 - a closed page has nothing to show
                pass
        context.close()


def shot(page, name: str, *, docs: bool = False) -> None:
    """A screenshot as a test artefact (and for the README when ``docs``)."""
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
    if docs and os.environ.get("UPDATE_SCREENSHOTS") == "1":
        page.locator("#toasts").evaluate("region => region.replaceChildren()")  # transient, not the page
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=False)


def sign_in(page, base_url: str, token: str) -> None:
    """Sign ``page`` in through the dashboard's own form, and wait for the navigation."""
    page.goto(f"{base_url}/ui/")
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("button", name="Sign out").wait_for()


def add_user(stack, acct, role: str) -> tuple[str, str, httpx.Client]:
    """Another user of ``acct`` with ``role``: (email, API token, client)."""
    email = f"{role}-{uuid.uuid4().hex[:6]}@example.test"
    with stack.sessions.begin() as session:
        user = User(account_id=acct.id, email=email, role=role)
        session.add(user)
        session.flush()
        token = issue_token(session, user, "ui-test").token
    client = httpx.Client(base_url=f"{stack.url}/api/v1/devops", headers={"Authorization": f"Bearer {token}"},
                          timeout=60)
    stack._clients.append(client)
    return email, token, client
