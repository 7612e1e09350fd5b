"""github_action integrations end to end: the dispatch reaches the fake GitHub Actions API and
the workflow waits for the run on durable timers (no busy wait), then records the conclusion."""

from __future__ import annotations

import pytest

from tests.harness import wait_for
from tests.integrations.fake_github_actions import FakeGithubActions
from tests.integrations.helpers import create_credential, create_template, execute, install, wait_execution

TOKEN = "ghp_e2e_token_never_in_history_91ab"


@pytest.fixture
def fake():
    server = FakeGithubActions(TOKEN, steps_to_complete=5)
    yield server
    server.close()


def instance_for(client, fake: FakeGithubActions) -> dict:
    template = create_template(client, "github_action", category="ci_cd",
                               credential_requirements=[{"name": "token"}],
                               default_configuration={"ref": "main", "workflow": "deploy.yml"})
    credential = create_credential(client, {"token": TOKEN})
    return install(client, template["id"], {"repository": "octo/app", "api_url": fake.url}, credential["id"])


def test_a_dispatched_run_is_waited_for_on_timers_then_succeeds(stack, fake):
    client = stack.account().client
    instance = instance_for(client, fake)
    started = execute(client, instance["id"], {"version": "2.0"}, wait=0)
    wait_for(lambda: fake.run_gets.get(1001, 0) >= 2, timeout=30, message="the run to be in progress")
    assert client.get(f"/integration_executions/{started['id']}").json()["status"] == "running"
    done = wait_execution(client, started["id"])
    assert done["status"] == "success", done
    assert done["output"]["conclusion"] == "success"
    assert done["output"]["html_url"] == "https://github.com/octo/app/actions/runs/1001"
    assert fake.dispatches == [{"owner": "octo", "repo": "app", "workflow": "deploy.yml", "ref": "main",
                                "inputs": {"version": "2.0"}}]
    history = stack.infra.run(stack.temporal.get_workflow_handle(done["workflow_id"]).fetch_history())
    timers = [e for e in history.events if e.HasField("timer_started_event_attributes")]
    assert len(timers) >= 4  # one durable timer per poll
    assert TOKEN not in history.to_json()


def test_a_failed_run_fails_the_execution_with_the_message(stack, fake):
    fake.conclusion = "failure"
    fake.steps_to_complete = 2
    client = stack.account().client
    instance = instance_for(client, fake)
    done = wait_execution(client, execute(client, instance["id"], {}, wait=0)["id"])
    assert done["status"] == "failure"
    assert done["error"] == "GitHub Actions run #1 concluded failure: https://github.com/octo/app/actions/runs/1001"


def test_a_bad_token_fails_with_githubs_message(stack, fake):
    fake.token = "something-else"
    client = stack.account().client
    instance = instance_for(client, fake)
    done = wait_execution(client, execute(client, instance["id"], {}, wait=0)["id"])
    assert done["status"] == "failure" and "HTTP 401" in done["error"] and "Bad credentials" in done["error"]
    assert TOKEN not in done["error"]
