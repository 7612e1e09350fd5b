"""The whole way through, as a user sets it up over the API: provider + credential, repository,
our webhook created at the (fake) provider, a pipeline linked to the repository; then a signed
push delivery → run → private checkout of a real bare repository over smart HTTP → a comment on
the provider → commit statuses pending then success. The token appears nowhere a user can read."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from domain.webhooks.signatures import sign
from tests.adapters.git_providers.fakes import FAKES, TOKEN, FakeProviderServer
from tests.harness import wait_for, wait_run
from tests.workflows.test_durability import HISTORIES, _histories_of, _replay

PAYLOADS = Path(__file__).parent.parent / "domain" / "webhooks" / "payloads"


@pytest.fixture(scope="module")
def github() -> Iterator[FakeProviderServer]:
    server = FAKES["github"]().start()
    yield server
    server.stop()


def test_signed_push_runs_checkout_comments_and_sets_commit_statuses(stack, github):
    github.reset()
    account = stack.account()
    client = account.client
    provider = client.post("/providers", json={"name": f"gh-{uuid.uuid4().hex[:6]}", "provider_type": "github",
                                               "base_url": github.base_url}).json()
    credential = client.post(f"/providers/{provider['id']}/credentials", json={"name": "bot", "token": TOKEN}).json()
    repository = client.post("/repositories", json={"provider_id": provider["id"], "full_name": "acme/web",
                                                    "credential_id": credential["id"]})
    assert repository.status_code == 201, repository.text
    repo_id = repository.json()["id"]
    # the clone URL comes from the provider on sync
    synced = client.post(f"/repositories/{repo_id}/sync")
    assert synced.status_code == 200, synced.text
    hook = client.post(f"/repositories/{repo_id}/webhook")
    assert hook.status_code in (200, 201), hook.text
    sha = github.make_git_repo("acme/web", files={"app.txt": "hello from acme/web\n"})

    name = f"ci-{uuid.uuid4().hex[:6]}"
    pipeline = client.post("/pipelines", json={
        "name": name,
        "triggers": {"push": {"branches": ["main"]}},
        "steps": [
            {"id": "checkout", "type": "checkout", "with": {}},
            {"id": "read", "type": "run_tests", "with": {
                "command": 'echo "content=$(cat app.txt)" >> "$DEVOPS_OUTPUT"',
                "working_directory": "${{ steps.checkout.outputs.path }}"}},
            {"id": "comment", "type": "post_comment", "with": {
                "number": 1, "body": "Built ${{ trigger.sha }} on ${{ trigger.branch }}: ${{ steps.read.outputs.content }}"}},
        ],
    })
    assert pipeline.status_code == 201, pipeline.text
    linked = client.put(f"/repositories/{repo_id}/pipelines/{pipeline.json()['id']}")
    assert linked.status_code in (200, 201), linked.text

    # the provider signs with the secret we gave it, and posts to the URL we gave it
    [stored_hook] = github.hooks("acme/web").values()
    payload = json.loads((PAYLOADS / "github_push.json").read_text())
    payload["ref"] = "refs/heads/main"
    payload["after"] = sha
    payload["head_commit"]["id"] = sha
    payload["repository"]["full_name"] = "acme/web"
    body = json.dumps(payload).encode()
    response = httpx.post(stored_hook["config"]["url"], content=body, headers={
        "Content-Type": "application/json", "X-GitHub-Event": "push", "X-GitHub-Delivery": str(uuid.uuid4()),
        **sign("github", body, stored_hook["config"]["secret"])}, timeout=30)
    assert response.status_code == 202, response.text

    def the_run():
        runs = client.get("/pipeline_runs", params={"pipeline_id": pipeline.json()["id"]}).json()["data"]
        return runs[0] if runs else None

    run = wait_run(client, wait_for(the_run, message="run created")["id"], timeout=90)
    assert run["status"] == "success", run
    outputs = {s["step_id"]: s["outputs"] for s in run["steps"]}
    assert outputs["read"] == {"content": "hello from acme/web"}
    assert outputs["checkout"]["commit"] == sha and outputs["checkout"]["repository"] == "acme/web"

    [comment] = github.comments("acme/web", 1)
    assert comment["body"].startswith(f"Built {sha} on main: hello from acme/web")

    # the final status follows the run's own completion: wait for it rather than race it
    statuses = wait_for(lambda: (lambda found: found if len(found) >= 2 else None)(
        [s for s in github.statuses("acme/web") if s["sha"] == sha]), message="the final commit status")
    assert [s["state"] for s in statuses] == ["pending", "success"]
    assert {s["context"] for s in statuses} == {f"devops/{name}"}
    assert statuses[-1]["target_url"].endswith(f"/api/v1/devops/pipeline_runs/{run['id']}")

    # the token is nowhere a user can read: not in logs, outputs, the run or the delivery
    logs = client.get(f"/pipeline_runs/{run['id']}/logs").text
    events = client.get(f"/repositories/{repo_id}/webhook_events").text
    for text in (logs, json.dumps(run), events, json.dumps(outputs)):
        assert TOKEN not in text
        assert stored_hook["config"]["secret"] not in text

    # The run (with its commit-status activities) and the dispatch workflow replay deterministically;
    # RECORD_HISTORIES=1 keeps them for the recorded-history replay test.
    dispatch_id = f"webhook-event-{response.json()['event_id']}"
    histories = _histories_of(stack, [run["workflow_id"], dispatch_id])
    _replay(histories)
    if os.environ.get("RECORD_HISTORIES") == "1" and stack.backend == "sqlite":
        for name, history in zip(["pipeline-run-webhook-push", "webhook-dispatch"], histories, strict=True):
            (HISTORIES / f"{name}.json").write_text(history.to_json())
