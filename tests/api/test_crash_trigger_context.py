"""Webhook trigger context (issue 11 item 7), over real HTTP against the running stack and the fake
providers: Bitbucket's 12-character pull request hashes become full SHAs (through the provider API,
before the run and its commit statuses), a provider outage delays the dispatch instead of losing
it, an unknown hash is noted on the event; pull request ``synchronize`` runs see ``trigger.before``
/ ``trigger.after``; merged pull request runs see ``trigger.merge_commit_sha`` and run on it."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select

from adapters.git_providers import ProviderDown, ProviderError, client_for
from db.crypto import SecretBox
from db.models import GitProvider, GitProviderCredential, GitRepository, GitWebhookEvent
from tests.adapters.git_providers.fakes import FAKES, TOKEN, FakeProviderServer, sha
from tests.api.test_webhooks import Repo, create_pipeline, deliver, link, payload_bytes, runs_of
from tests.harness import Stack, wait_for, wait_run

FEATURE = sha("feature-1")  # the fake acme/web's feature branch head (pull request #1's source)
MAIN = sha("main-3")  # its main branch head: the merge commit of the merged pull requests below


@pytest.fixture(scope="module")
def fakes() -> Iterator[dict[str, FakeProviderServer]]:
    servers = {name: cls().start() for name, cls in FAKES.items()}
    yield servers
    for server in servers.values():
        server.stop()


def provider_repository(stack: Stack, account_id: int, fake: FakeProviderServer, provider: str) -> Repo:
    """acme/web at the fake ``provider`` with a working credential and a known webhook secret."""
    fake.reset()
    secret = f"whsec-{uuid.uuid4().hex}"
    box = SecretBox(stack.settings.secret_key, stack.settings.old_secret_keys)
    with stack.sessions.begin() as session:
        row = GitProvider(account_id=account_id, name=f"{provider}-{uuid.uuid4().hex[:6]}", provider_type=provider,
                          base_url=fake.base_url)
        session.add(row)
        session.flush()
        credential = GitProviderCredential(account_id=account_id, provider_id=row.id, name="bot",
                                           encrypted_token=box.encrypt(TOKEN))
        session.add(credential)
        session.flush()
        repository = GitRepository(account_id=account_id, provider_id=row.id, credential_id=credential.id,
                                   full_name="acme/web", encrypted_webhook_secret=box.encrypt(secret))
        session.add(repository)
        session.flush()
        return Repo(repository.id, provider, secret, "acme/web")


COMMIT_FIELDS = ("sha", "before", "after", "head_sha", "merge_commit_sha")


def context_pipeline(stack: Stack, account: Any, repo: Repo, types: list[str]) -> dict[str, Any]:
    """A pipeline whose step writes the commit fields of ``${{ trigger.* }}`` to its outputs."""
    command = "; ".join(f'echo "{name}=${name.upper()}" >> "$DEVOPS_OUTPUT"' for name in COMMIT_FIELDS)
    pipeline = create_pipeline(account, {"pull_request": {"types": types}}, steps=[
        {"id": "show", "type": "run_tests", "with": {
            "command": command, "env": {name.upper(): f"${{{{ trigger.{name} }}}}" for name in COMMIT_FIELDS}}}])
    link(stack, account, repo, pipeline["id"])
    return pipeline


def event_of(stack: Stack, repo: Repo) -> GitWebhookEvent | None:
    with stack.sessions() as session:
        return session.scalars(select(GitWebhookEvent).where(GitWebhookEvent.repository_id == repo.id)).first()


def finished_run(stack: Stack, account: Any, pipeline_id: int, timeout: float = 90) -> dict[str, Any]:
    [row] = wait_for(lambda: runs_of(stack, pipeline_id), timeout=timeout, message="the run")
    run = wait_run(account.client, row.id, timeout=90)
    assert run["status"] == "success", run
    return run


def shown(run: dict[str, Any]) -> dict[str, Any]:
    return {s["step_id"]: s["outputs"] for s in run["steps"]}["show"]


def bitbucket_pr(head: str, merge: str | None = None) -> bytes:
    name = "bitbucket_pullrequest_fulfilled" if merge else "bitbucket_pullrequest_created"
    payload = json.loads(payload_bytes(name))
    payload["repository"]["full_name"] = "acme/web"
    pr = payload["pullrequest"]
    pr["source"]["repository"]["full_name"] = pr["destination"]["repository"]["full_name"] = "acme/web"
    pr["source"]["branch"]["name"], pr["destination"]["branch"]["name"] = "feature", "main"
    pr["source"]["commit"]["hash"] = head
    if merge:
        pr["merge_commit"]["hash"] = merge
    return json.dumps(payload).encode()


# ---- the provider clients' commit lookup ------------------------------------------------------

@pytest.mark.parametrize("provider", list(FAKES))
def test_every_client_resolves_an_abbreviated_sha_to_the_full_one(fakes, provider: str):
    fake = fakes[provider]
    fake.reset()
    client = client_for(provider, fake.base_url, TOKEN)
    try:
        commit = client.get_commit("acme/web", FEATURE[:12])
        assert (commit.sha, commit.message) == (FEATURE, "Feature work")
        with pytest.raises(ProviderError) as unknown:  # GitHub: 422, the others: 404 (NotFound)
            client.get_commit("acme/web", "abcdef012345")
        assert not unknown.value.retryable
        fake.outage = 503
        with pytest.raises(ProviderDown):
            client.get_commit("acme/web", FEATURE[:12])
    finally:
        fake.outage = None
        client.close()


# ---- Bitbucket: short hashes expanded before the run ------------------------------------------

@pytest.mark.parametrize(("event", "merged"), [("pullrequest:created", False), ("pullrequest:fulfilled", True)])
def test_bitbucket_pull_request_runs_and_commit_statuses_use_the_full_sha(stack: Stack, fakes, event: str,
                                                                         merged: bool):
    bitbucket = fakes["bitbucket"]
    account = stack.account()
    repo = provider_repository(stack, account.id, bitbucket, "bitbucket")
    pipeline = context_pipeline(stack, account, repo, ["merged"] if merged else ["opened"])

    body = bitbucket_pr(FEATURE[:12], MAIN[:12] if merged else None)
    assert deliver(stack, repo, body, event=event).status_code == 202
    run = finished_run(stack, account, pipeline["id"])

    landed = MAIN if merged else FEATURE
    context = run["trigger_context"]
    assert (context["sha"], context["head_sha"], context["after"]) == (landed, FEATURE, FEATURE)
    assert context["merge_commit_sha"] == (MAIN if merged else None)
    assert shown(run)["sha"] == landed and shown(run)["head_sha"] == FEATURE
    # the commit statuses were posted on the full SHA, not the short one
    # (the final status follows the run's own completion: wait for it rather than race it)
    statuses = wait_for(lambda: (lambda found: found if len(found) >= 2 else None)(
        list(bitbucket.statuses("acme/web"))), message="the final commit status")
    assert [(s["sha"], s["state"]) for s in statuses] == [(landed, "INPROGRESS"), (landed, "SUCCESSFUL")]
    # and the stored event shows what its run got, with nothing to report
    stored = event_of(stack, repo)
    assert stored is not None and stored.events[0]["sha"] == landed and stored.error is None


def test_a_short_hash_the_provider_does_not_know_still_dispatches_and_the_event_says_why(stack: Stack, fakes):
    bitbucket = fakes["bitbucket"]
    account = stack.account()
    repo = provider_repository(stack, account.id, bitbucket, "bitbucket")
    pipeline = context_pipeline(stack, account, repo, ["opened"])

    assert deliver(stack, repo, bitbucket_pr("abcdef012345"), event="pullrequest:created").status_code == 202
    run = finished_run(stack, account, pipeline["id"])
    assert run["trigger_context"]["sha"] == "abcdef012345"
    stored = event_of(stack, repo)
    assert stored is not None and stored.status == "dispatched" and stored.run_ids == [run["id"]]
    assert "abcdef012345 was not expanded to its full SHA" in (stored.error or "")
    assert "404" in (stored.error or "") and TOKEN not in (stored.error or "")


def test_a_provider_outage_delays_the_dispatch_until_the_full_sha_is_known(stack: Stack, fakes):
    bitbucket = fakes["bitbucket"]
    account = stack.account()
    repo = provider_repository(stack, account.id, bitbucket, "bitbucket")
    pipeline = context_pipeline(stack, account, repo, ["opened"])
    bitbucket.outage = 503
    lookup = ("GET", f"/2.0/repositories/acme/web/commit/{FEATURE[:12]}")
    try:
        assert deliver(stack, repo, bitbucket_pr(FEATURE[:12]), event="pullrequest:created").status_code == 202
        # Temporal retries the dispatch: several lookups, and no run with the short hash meanwhile
        wait_for(lambda: bitbucket.requests.count(lookup) >= 3, timeout=30, message="retried lookups")
        time.sleep(0.5)
        assert runs_of(stack, pipeline["id"]) == []
        stored = event_of(stack, repo)
        assert stored is not None and stored.status == "received"
    finally:
        bitbucket.outage = None
    run = finished_run(stack, account, pipeline["id"], timeout=60)
    assert run["trigger_context"]["sha"] == FEATURE
    assert {s["sha"] for s in bitbucket.statuses("acme/web")} == {FEATURE}


# ---- before / after of pull request synchronize ---------------------------------------------

BEFORE, AFTER = sha("pushed-before"), sha("pushed-after")


def synchronize_delivery(provider: str) -> tuple[str, bytes]:
    """A documented ``synchronize`` payload of ``provider`` for acme/web: head BEFORE → AFTER."""
    if provider == "gitlab":
        payload = json.loads(payload_bytes("gitlab_merge_request_hook"))
        payload["project"]["path_with_namespace"] = "acme/web"
        payload["object_attributes"] |= {"action": "update", "oldrev": BEFORE, "target_branch": "main",
                                         "source_project_id": 1, "target_project_id": 1}
        payload["object_attributes"]["last_commit"]["id"] = AFTER
        return "Merge Request Hook", json.dumps(payload).encode()
    name = "github_pull_request_opened" if provider == "github" else "gitea_pull_request"
    payload = json.loads(payload_bytes(name))
    payload |= {"action": "synchronize" if provider == "github" else "synchronized", "before": BEFORE,
                "after": AFTER}
    payload["repository"]["full_name"] = "acme/web"
    pr = payload["pull_request"]
    pr["head"]["sha"], pr["base"]["ref"] = AFTER, "main"
    pr["head"]["repo"] = pr["base"]["repo"] = {**pr["base"]["repo"], "full_name": "acme/web"}
    return "pull_request", json.dumps(payload).encode()


@pytest.mark.parametrize("provider", ["github", "gitlab", "gitea"])
def test_a_synchronize_run_sees_before_and_after(stack: Stack, fakes, provider: str):
    account = stack.account()
    repo = provider_repository(stack, account.id, fakes[provider], provider)
    pipeline = context_pipeline(stack, account, repo, ["synchronize"])
    event, body = synchronize_delivery(provider)
    assert deliver(stack, repo, body, event=event).status_code == 202
    run = finished_run(stack, account, pipeline["id"])
    assert {k: shown(run)[k] for k in ("before", "after", "sha")} == {"before": BEFORE, "after": AFTER, "sha": AFTER}
    assert (run["trigger_context"]["before"], run["trigger_context"]["after"]) == (BEFORE, AFTER)


# ---- merged pull requests -------------------------------------------------------------------

def merged_delivery(provider: str) -> tuple[str, bytes]:
    if provider == "gitlab":
        payload = json.loads(payload_bytes("gitlab_merge_request_hook"))
        payload["project"]["path_with_namespace"] = "acme/web"
        payload["object_attributes"] |= {"action": "merge", "state": "merged", "oldrev": None, "target_branch": "main",
                                         "merge_commit_sha": MAIN}
        payload["object_attributes"]["last_commit"]["id"] = FEATURE
        return "Merge Request Hook", json.dumps(payload).encode()
    payload = json.loads(payload_bytes("github_pull_request_closed"))
    payload["repository"]["full_name"] = "acme/web"
    pr = payload["pull_request"]
    pr |= {"merge_commit_sha": MAIN}
    pr["head"]["sha"], pr["base"]["ref"] = FEATURE, "main"
    pr["head"]["repo"] = pr["base"]["repo"] = {**pr["base"]["repo"], "full_name": "acme/web"}
    return "pull_request", json.dumps(payload).encode()


@pytest.mark.parametrize("provider", ["github", "gitlab"])
def test_a_merged_pull_request_run_has_the_merge_commit_and_reports_on_it(stack: Stack, fakes, provider: str):
    fake = fakes[provider]
    account = stack.account()
    repo = provider_repository(stack, account.id, fake, provider)
    pipeline = context_pipeline(stack, account, repo, ["merged"])
    event, body = merged_delivery(provider)
    assert deliver(stack, repo, body, event=event).status_code == 202
    run = finished_run(stack, account, pipeline["id"])
    assert {k: shown(run)[k] for k in ("merge_commit_sha", "sha", "head_sha")} == {
        "merge_commit_sha": MAIN, "sha": MAIN, "head_sha": FEATURE}
    assert {s["sha"] for s in fake.statuses("acme/web")} == {MAIN}
