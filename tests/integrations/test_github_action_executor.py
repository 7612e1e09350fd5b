"""The ``github_action`` executor called directly against the fake GitHub Actions API."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest

from adapters.integrations import EXECUTORS
from adapters.integrations.base import ExecutorCall, ExecutorOutcome, IntegrationFailed
from adapters.integrations.github_action import GithubActionExecutor
from settings import Settings
from tests.integrations.fake_github_actions import FakeGithubActions

TOKEN = "ghp_test_token_abcdef123456"


@pytest.fixture
def fake() -> Iterator[FakeGithubActions]:
    server = FakeGithubActions(TOKEN)
    yield server
    server.close()


def call(fake: FakeGithubActions, inputs: dict[str, Any] | None = None, token: str = TOKEN,
         **config: Any) -> ExecutorCall:
    configuration = {"repository": "octo/app", "workflow": "deploy.yml", "ref": "main", "api_url": fake.url, **config}
    return ExecutorCall(account_id=1, execution_id=1, integration_type="github_action", configuration=configuration,
                        credentials={"token": token}, inputs=inputs or {},
                        settings=Settings(environment="test", allow_private_targets=True,
                                          integration_poll_interval_seconds=0.25))


def drive(c: ExecutorCall) -> tuple[ExecutorOutcome, int]:
    """start, then poll until outputs; returns the outcome and how many polls it took."""
    async def go() -> tuple[ExecutorOutcome, int]:
        executor = GithubActionExecutor()
        outcome = await executor.start(c)
        polls = 0
        while outcome.outputs is None:
            assert outcome.poll_state is not None and TOKEN not in json.dumps(outcome.poll_state)
            assert outcome.poll_after_seconds == 0.25
            outcome = await executor.poll(c, outcome.poll_state)
            polls += 1
        return outcome, polls
    return asyncio.run(go())


def test_registered() -> None:
    assert isinstance(EXECUTORS["github_action"], GithubActionExecutor)


def test_dispatch_then_wait_for_success(fake: FakeGithubActions) -> None:
    outcome, polls = drive(call(fake, {"version": "1.2.3", "dry_run": True, "replicas": 3}))
    assert fake.dispatches == [{"owner": "octo", "repo": "app", "workflow": "deploy.yml", "ref": "main",
                                "inputs": {"version": "1.2.3", "dry_run": "true", "replicas": "3"}}]
    assert polls == 3  # queued, in_progress, completed
    assert outcome.outputs == {"run_id": 1001, "run_number": 1, "conclusion": "success", "status": "completed",
                               "html_url": "https://github.com/octo/app/actions/runs/1001"}
    assert set(fake.auth_headers) == {f"Bearer {TOKEN}"}


def test_failure_conclusion_fails_with_the_run_url(fake: FakeGithubActions) -> None:
    fake.conclusion = "failure"
    with pytest.raises(IntegrationFailed, match=r"GitHub Actions run #1 concluded failure: "
                                                r"https://github.com/octo/app/actions/runs/1001"):
        drive(call(fake))


def test_bad_token_and_unknown_workflow_give_githubs_message(fake: FakeGithubActions) -> None:
    with pytest.raises(IntegrationFailed, match="HTTP 401 .*Bad credentials") as failed:
        drive(call(fake, token="ghp_wrong_token"))
    assert "ghp_wrong_token" not in str(failed.value)
    with pytest.raises(IntegrationFailed, match="HTTP 404 .*Not Found"):
        drive(call(fake, workflow="nope.yml"))
    assert fake.dispatches == []


def test_bad_configuration_and_private_api_url(fake: FakeGithubActions) -> None:
    with pytest.raises(IntegrationFailed, match="owner/name"):
        drive(call(fake, repository="no-slash"))
    c = call(fake)
    c.settings = Settings(environment="test", allow_private_targets=False, notify_allow_private_targets=False)
    with pytest.raises(IntegrationFailed, match="loopback|private|internal"):
        drive(c)
    assert fake.dispatches == []
