"""Webhook deliveries → runs, over real HTTP against the running stack (SQLite and PostgreSQL):
signatures, deduplication (also concurrent), matching and branch filters, ``${{ trigger.* }}``,
and the fork policy (no secrets, trusted steps held for a maintainer)."""

from __future__ import annotations

import concurrent.futures
import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from db.crypto import SecretBox
from db.models import (
    GitProvider,
    GitProviderCredential,
    GitRepository,
    GitWebhookEvent,
    PipelineRepository,
    PipelineRun,
)
from domain.webhooks.events import normalize_all
from domain.webhooks.signatures import sign
from tests.adapters.git_providers.fakes import FAKES
from tests.harness import Account, Stack, wait_for, wait_run
from tests.workflows.test_durability import HISTORIES, _histories_of, _replay

PAYLOADS = Path(__file__).parent.parent / "domain" / "webhooks" / "payloads"

#: provider → (event header value, payload file, delivery header, event header)
PUSH = {
    "github": ("push", "github_push", "X-GitHub-Delivery", "X-GitHub-Event"),
    "gitlab": ("Push Hook", "gitlab_push_hook", "X-Gitlab-Event-UUID", "X-Gitlab-Event"),
    "gitea": ("push", "gitea_push", "X-Gitea-Delivery", "X-Gitea-Event"),
    "bitbucket": ("repo:push", "bitbucket_repo_push", "X-Request-UUID", "X-Event-Key"),
}
SIGNATURE_HEADER = {"github": "X-Hub-Signature-256", "gitlab": "X-Gitlab-Token", "gitea": "X-Gitea-Signature",
                    "bitbucket": "X-Hub-Signature"}


@dataclass
class Repo:
    id: int
    provider: str
    secret: str
    full_name: str


def payload_bytes(name: str) -> bytes:
    return (PAYLOADS / f"{name}.json").read_bytes()


# Commit statuses of the runs go to these local fakes of the providers' APIs: an unreachable
# provider made every run's status activity retry for ~15 s before the run could finish.
PROVIDER_URLS: dict[str, str] = {}


@pytest.fixture(scope="module", autouse=True)
def provider_fakes():
    servers = {name: fake().start() for name, fake in FAKES.items()}
    PROVIDER_URLS.update({name: server.base_url for name, server in servers.items()})
    yield servers
    PROVIDER_URLS.clear()
    for server in servers.values():
        server.stop()


def make_repository(stack: Stack, account: Account, provider: str, full_name: str = "acme/web",
                    **fields: Any) -> Repo:
    secret = f"whsec-{uuid.uuid4().hex}"
    box = SecretBox(stack.settings.secret_key, stack.settings.old_secret_keys)
    with stack.sessions.begin() as session:
        row = GitProvider(account_id=account.id, name=f"{provider}-{uuid.uuid4().hex[:6]}", provider_type=provider,
                          base_url=PROVIDER_URLS.get(provider, "http://127.0.0.1:9"))
        session.add(row)
        session.flush()
        credential = GitProviderCredential(account_id=account.id, provider_id=row.id, name="bot",
                                           encrypted_token=box.encrypt("unused-token"))
        session.add(credential)
        session.flush()
        repository = GitRepository(account_id=account.id, provider_id=row.id, credential_id=credential.id,
                                   full_name=full_name, encrypted_webhook_secret=box.encrypt(secret), **fields)
        session.add(repository)
        session.flush()
        repo_id = repository.id
    return Repo(repo_id, provider, secret, full_name)


def link(stack: Stack, account: Account, repo: Repo, pipeline_id: int) -> None:
    with stack.sessions.begin() as session:
        session.add(PipelineRepository(account_id=account.id, pipeline_id=pipeline_id, repository_id=repo.id))


def create_pipeline(account: Account, triggers: dict[str, Any], steps: list[dict[str, Any]] | None = None,
                    **extra: Any) -> dict[str, Any]:
    document = {"name": f"hooked-{uuid.uuid4().hex[:6]}", "triggers": triggers,
                "steps": steps or [{"id": "say", "type": "run_tests", "with": {
                    "command": 'echo "branch=$B" >> "$DEVOPS_OUTPUT"; echo "kind=$K" >> "$DEVOPS_OUTPUT"',
                    "env": {"B": "${{ trigger.branch }}", "K": "${{ trigger.kind }}"}}}],
                **extra}
    response = account.client.post("/pipelines", json=document)
    assert response.status_code == 201, response.text
    return response.json()


def deliver(stack: Stack, repo: Repo, body: bytes, *, event: str | None = None, delivery: str | None = None,
            headers: dict[str, str] | None = None, sign_with: str | None = None) -> httpx.Response:
    event_value, _file, delivery_header, event_header = PUSH[repo.provider]
    sent = {"Content-Type": "application/json", event_header: event or event_value,
            delivery_header: delivery or str(uuid.uuid4())}
    sent.update(sign(repo.provider, body, sign_with or repo.secret))
    sent.update(headers or {})
    return httpx.post(f"{stack.url}/api/v1/devops/webhooks/{repo.provider}/{repo.id}", content=body,
                      headers={k: v for k, v in sent.items() if v is not None}, timeout=30)


def runs_of(stack: Stack, pipeline_id: int) -> list[PipelineRun]:
    with stack.sessions() as session:
        return list(session.scalars(select(PipelineRun).where(PipelineRun.pipeline_id == pipeline_id)
                                    .order_by(PipelineRun.id)))


def events_of(stack: Stack, repo: Repo) -> list[GitWebhookEvent]:
    with stack.sessions() as session:
        return list(session.scalars(select(GitWebhookEvent).where(GitWebhookEvent.repository_id == repo.id)
                                    .order_by(GitWebhookEvent.id)))


def dispatched(stack: Stack, repo: Repo, count: int = 1) -> list[GitWebhookEvent]:
    return wait_for(lambda: (lambda rows: rows if len(rows) >= count and all(
        r.status in ("dispatched", "ignored") for r in rows) else None)(events_of(stack, repo)),
        message="webhook events dispatched")


# ---- push → run, every provider ---------------------------------------------------------

@pytest.mark.parametrize("provider", list(PUSH))
def test_signed_push_starts_the_linked_pipeline_with_the_event_as_trigger_context(stack: Stack, provider: str):
    account = stack.account()
    repo = make_repository(stack, account, provider)
    pipeline = create_pipeline(account, {"push": {}})
    unlinked = create_pipeline(account, {"push": {}})
    link(stack, account, repo, pipeline["id"])
    _, payload_file, _, _ = PUSH[provider]
    body = payload_bytes(payload_file)

    response = deliver(stack, repo, body, delivery=f"delivery-{provider}-1")
    assert response.status_code == 202, response.text
    answer = response.json()
    assert answer["status"] == "accepted" and answer["delivery_id"] == f"delivery-{provider}-1"
    assert answer["workflow_id"] == f"webhook-event-{answer['event_id']}"

    run_id = wait_for(lambda: (runs_of(stack, pipeline["id"]) or [None])[0], message="run created").id
    run = wait_run(account.client, run_id)
    assert run["status"] == "success", run
    assert run["trigger_type"] == "push"
    expected_branch = json.loads(body).get("ref", "refs/heads/main").removeprefix("refs/heads/") \
        if provider != "bitbucket" else json.loads(body)["push"]["changes"][0]["new"]["name"]
    assert run["steps"][0]["outputs"] == {"branch": expected_branch, "kind": "push"}
    assert runs_of(stack, unlinked["id"]) == []  # only linked pipelines are triggered

    [event] = dispatched(stack, repo)
    assert (event.provider, event.delivery_id, event.status) == (provider, f"delivery-{provider}-1", "dispatched")
    # one run per pushed ref (a Bitbucket push may carry several)
    refs = normalize_all(provider, PUSH[provider][0], json.loads(body))
    assert event.matched_pipeline_ids == [pipeline["id"]] and event.run_ids[0] == run_id
    assert len(event.run_ids) == len(refs) == len(event.events) and event.events[0]["kind"] == "push"
    # the stored headers never hold what proves a delivery
    assert SIGNATURE_HEADER[provider].lower() not in event.headers
    assert repo.secret not in json.dumps(event.headers)
    with stack.sessions() as session:
        stored = session.get(PipelineRun, run_id)
        assert stored.trigger_context["repository_id"] == repo.id
        assert stored.trigger_context["event_id"] == event.id
        assert session.get(GitRepository, repo.id).last_delivery_at is not None


# ---- signatures -----------------------------------------------------------------------------

def _forgeries(provider: str, body: bytes, secret: str) -> dict[str, tuple[bytes, dict[str, str | None]]]:
    good = sign(provider, body, secret)
    header, value = next(iter(good.items()))
    flipped = bytearray(body)
    flipped[len(flipped) // 2] ^= 0x01
    reserialised = json.dumps(json.loads(body), separators=(",", ":")).encode()
    assert reserialised != body
    cases: dict[str, tuple[bytes, dict[str, str | None]]] = {
        "missing signature header": (body, {header: None}),
        "signed with another secret": (body, sign(provider, body, "not-the-secret")),
    }
    if provider != "gitlab":  # GitLab's token proves the sender, not the bytes: it signs no body
        cases["flipped byte in the body"] = (bytes(flipped), good)
        cases["re-serialised JSON"] = (reserialised, good)
    if provider in ("github", "bitbucket"):
        cases["wrong prefix"] = (body, {header: "sha1=" + value.split("=", 1)[1]})
        cases["digest without prefix"] = (body, {header: value.split("=", 1)[1]})
    elif provider == "gitea":
        cases["wrong prefix"] = (body, {header: "sha256=" + value})
        cases["truncated digest"] = (body, {header: value[:-2]})
    else:
        cases["token with a trailing byte"] = (body, {header: value + "x"})
        cases["empty token"] = (body, {header: ""})
    return cases


@pytest.mark.parametrize("provider", list(PUSH))
def test_forged_deliveries_are_401_start_nothing_and_only_count(stack: Stack, provider: str):
    account = stack.account()
    repo = make_repository(stack, account, provider)
    pipeline = create_pipeline(account, {"push": {}})
    link(stack, account, repo, pipeline["id"])
    body = payload_bytes(PUSH[provider][1])
    cases = _forgeries(provider, body, repo.secret)
    for name, (sent_body, signature) in cases.items():
        event_value, _file, delivery_header, event_header = PUSH[provider]
        headers = {"Content-Type": "application/json", event_header: event_value, delivery_header: str(uuid.uuid4())}
        headers.update({k: v for k, v in signature.items() if v is not None})
        response = httpx.post(f"{stack.url}/api/v1/devops/webhooks/{provider}/{repo.id}", content=sent_body,
                              headers=headers, timeout=30)
        assert response.status_code == 401, (name, response.text)
        assert response.json()["detail"] == "the delivery could not be verified", name  # no hint which check
    assert events_of(stack, repo) == []
    assert runs_of(stack, pipeline["id"]) == []
    with stack.sessions() as session:
        assert session.get(GitRepository, repo.id).webhook_rejected_count == len(cases)


def test_unknown_repository_wrong_provider_and_unknown_provider(stack: Stack):
    account = stack.account()
    repo = make_repository(stack, account, "github")
    body = payload_bytes("github_push")
    headers = {"X-GitHub-Event": "push", "X-GitHub-Delivery": "x", **sign("github", body, repo.secret)}
    assert httpx.post(f"{stack.url}/api/v1/devops/webhooks/github/999999", content=body,
                      headers=headers).status_code == 401
    # the right secret sent to the path of another provider type does not verify either
    assert httpx.post(f"{stack.url}/api/v1/devops/webhooks/gitea/{repo.id}", content=body,
                      headers=headers).status_code == 401
    response = httpx.post(f"{stack.url}/api/v1/devops/webhooks/svn/{repo.id}", content=body, headers=headers)
    assert response.status_code == 404 and "unknown provider 'svn'" in response.text
    assert events_of(stack, repo) == []


def test_a_repository_without_a_webhook_secret_verifies_nothing(stack: Stack):
    account = stack.account()
    repo = make_repository(stack, account, "github")
    with stack.sessions.begin() as session:
        session.get(GitRepository, repo.id).encrypted_webhook_secret = None
    assert deliver(stack, repo, payload_bytes("github_push")).status_code == 401


def test_verified_but_unreadable_bodies_are_4xx_and_store_nothing(stack: Stack):
    account = stack.account()
    repo = make_repository(stack, account, "github")
    response = deliver(stack, repo, b"{not json")
    assert response.status_code == 400 and "not JSON" in response.text
    broken = json.loads(payload_bytes("github_push"))
    del broken["repository"]
    response = deliver(stack, repo, json.dumps(broken).encode())
    assert response.status_code == 422 and "repository" in response.text
    assert events_of(stack, repo) == []


# ---- deduplication ----------------------------------------------------------------------------

def test_the_same_delivery_ten_times_concurrently_starts_one_run(stack: Stack):
    account = stack.account()
    repo = make_repository(stack, account, "github")
    pipeline = create_pipeline(account, {"push": {}})
    link(stack, account, repo, pipeline["id"])
    body = payload_bytes("github_push")
    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        answers = list(pool.map(lambda _: deliver(stack, repo, body, delivery="same-delivery"), range(10)))
    codes = sorted(a.status_code for a in answers)
    assert codes == [200] * 9 + [202], [a.text for a in answers]
    event_ids = {a.json()["event_id"] for a in answers}
    assert len(event_ids) == 1
    assert all(a.json()["status"] == "duplicate" for a in answers if a.status_code == 200)
    [event] = dispatched(stack, repo)
    wait_run(account.client, event.run_ids[0])
    # and later redeliveries too
    assert deliver(stack, repo, body, delivery="same-delivery").json()["status"] == "duplicate"
    assert len(runs_of(stack, pipeline["id"])) == 1
    assert len(events_of(stack, repo)) == 1


def test_a_new_delivery_id_with_the_same_body_is_a_new_event(stack: Stack):
    account = stack.account()
    repo = make_repository(stack, account, "github")
    pipeline = create_pipeline(account, {"push": {}})
    link(stack, account, repo, pipeline["id"])
    body = payload_bytes("github_push")
    assert deliver(stack, repo, body, delivery="one").status_code == 202
    assert deliver(stack, repo, body, delivery="two").status_code == 202
    dispatched(stack, repo, 2)
    assert len(runs_of(stack, pipeline["id"])) == 2


# ---- matching -----------------------------------------------------------------------------------

def test_ping_is_stored_as_ignored_and_starts_nothing(stack: Stack):
    account = stack.account()
    repo = make_repository(stack, account, "github")
    pipeline = create_pipeline(account, {"push": {}})
    link(stack, account, repo, pipeline["id"])
    response = deliver(stack, repo, payload_bytes("github_ping"), event="ping")
    assert response.status_code == 200 and response.json()["status"] == "ignored"
    [event] = events_of(stack, repo)
    assert event.status == "ignored" and event.event_name == "ping"
    assert runs_of(stack, pipeline["id"]) == []


def test_only_pipelines_whose_triggers_match_run(stack: Stack):
    account = stack.account()
    repo = make_repository(stack, account, "github")
    on_main = create_pipeline(account, {"push": {"branches": ["main"], "paths": ["docs/**"]}})
    on_release = create_pipeline(account, {"push": {"branches": ["release/*"]}})
    on_pr = create_pipeline(account, {"pull_request": {}})
    ignored_paths = create_pipeline(account, {"push": {"paths_ignore": ["**/*.md", "config/**"]}})
    for p in (on_main, on_release, on_pr, ignored_paths):
        link(stack, account, repo, p["id"])
    assert deliver(stack, repo, payload_bytes("github_push")).status_code == 202
    [event] = dispatched(stack, repo)
    assert event.matched_pipeline_ids == [on_main["id"]]
    assert [len(runs_of(stack, p["id"])) for p in (on_main, on_release, on_pr, ignored_paths)] == [1, 0, 0, 0]


@pytest.mark.parametrize(("filter_type", "pattern", "runs"), [
    ("exact", "main", 1), ("exact", "develop", 0), ("wildcard", "ma*", 1), ("wildcard", "release/*", 0),
    ("regex", "ma.n", 1), ("regex", "mai", 0),  # a regex must match the whole branch name
])
def test_the_repository_branch_filter_applies_before_matching(stack: Stack, filter_type: str, pattern: str,
                                                              runs: int):
    account = stack.account()
    repo = make_repository(stack, account, "github", branch_filter_type=filter_type, branch_filter=pattern)
    pipeline = create_pipeline(account, {"push": {}})
    link(stack, account, repo, pipeline["id"])
    assert deliver(stack, repo, payload_bytes("github_push")).status_code == 202
    [event] = dispatched(stack, repo)
    assert len(runs_of(stack, pipeline["id"])) == runs
    if not runs:
        assert "outside the repository's branch filter" in (event.error or "")


def test_comment_command_prefix_and_required_inputs(stack: Stack):
    account = stack.account()
    repo = make_repository(stack, account, "github")
    deploy = create_pipeline(account, {"issue_comment": {"command_prefix": "/deploy"}},
                             steps=[{"id": "c", "type": "run_tests", "with": {
                                 "command": 'echo "body=$C" >> "$DEVOPS_OUTPUT"',
                                 "env": {"C": "${{ trigger.comment_body }}"}}}])
    needs_input = create_pipeline(account, {"issue_comment": {}},
                                  inputs={"target": {"type": "string", "required": True}})
    link(stack, account, repo, deploy["id"])
    link(stack, account, repo, needs_input["id"])
    payload = json.loads(payload_bytes("github_issue_comment_created"))
    payload["comment"]["body"] = "/deploy staging"
    response = deliver(stack, repo, json.dumps(payload).encode(), event="issue_comment")
    assert response.status_code == 202, response.text
    [event] = dispatched(stack, repo)
    assert event.matched_pipeline_ids == [deploy["id"]]
    assert "cannot start" in event.error and "target" in event.error
    run = wait_run(account.client, event.run_ids[0])
    assert run["status"] == "success" and run["trigger_type"] == "issue_comment"
    assert run["steps"][0]["outputs"] == {"body": "/deploy staging"}


def test_another_accounts_pipeline_is_never_triggered_through_a_link_row(stack: Stack):
    mine, theirs = stack.account(), stack.account()
    repo = make_repository(stack, mine, "github")
    their_pipeline = create_pipeline(theirs, {"push": {}})
    # a link row naming another account's pipeline (not creatable through the API) is ignored
    with stack.sessions.begin() as session:
        session.add(PipelineRepository(account_id=mine.id, pipeline_id=their_pipeline["id"], repository_id=repo.id))
    assert deliver(stack, repo, payload_bytes("github_push")).status_code == 202
    dispatched(stack, repo)
    assert runs_of(stack, their_pipeline["id"]) == []


# ---- fork policy --------------------------------------------------------------------------------

def _fork_pr(stack: Stack, repo: Repo, delivery: str) -> httpx.Response:
    payload = json.loads(payload_bytes("github_pull_request_opened"))
    assert payload["pull_request"]["head"]["repo"]["fork"] is True
    return deliver(stack, repo, json.dumps(payload).encode(), event="pull_request", delivery=delivery)


def _fork_pipeline(account: Account) -> dict[str, Any]:
    created = account.client.put("/secrets", json={"name": "DEPLOY_KEY", "value": "s3cr3t-deploy-key"})
    assert created.status_code in (200, 201), created.text
    return create_pipeline(account, {"pull_request": {}}, steps=[
        {"id": "test", "type": "run_tests", "with": {
            "command": 'echo "key=[$KEY]" >> "$DEVOPS_OUTPUT"; echo "fork=$F" >> "$DEVOPS_OUTPUT"',
            "env": {"KEY": "${{ secrets.DEPLOY_KEY }}", "F": "${{ trigger.from_fork }}"}}},
        {"id": "ship", "type": "run_tests", "requires_trust": True,
         "with": {"command": 'echo "shipped=yes" >> "$DEVOPS_OUTPUT"'}},
    ])


def test_a_fork_pull_request_sees_no_secrets_and_a_trusted_step_waits_for_a_maintainer(stack: Stack):
    account = stack.account()
    repo = make_repository(stack, account, "github")
    pipeline = _fork_pipeline(account)
    assert pipeline["steps"][1]["requires_trust"] is True
    link(stack, account, repo, pipeline["id"])
    assert _fork_pr(stack, repo, "fork-1").status_code == 202
    [event] = dispatched(stack, repo)
    run_id = event.run_ids[0]

    def held():
        run = account.client.get(f"/pipeline_runs/{run_id}").json()
        return run if any(s["step_id"] == "ship" and s["status"] == "waiting_approval" for s in run["steps"]) else None

    run = wait_for(held, message="trusted step held")
    test_step = next(s for s in run["steps"] if s["step_id"] == "test")
    assert test_step["outputs"] == {"key": "[]", "fork": "true"}  # the secret reads as empty
    assert run["trigger_type"] == "pull_request"
    # a maintainer (account admin) approves: the held step runs
    decided = account.client.post(f"/pipeline_runs/{run_id}/steps/ship/approve", json={})
    assert decided.status_code in (200, 201), decided.text
    run = wait_run(account.client, run_id)
    assert run["status"] == "success"
    ship = next(s for s in run["steps"] if s["step_id"] == "ship")
    assert ship["status"] == "success" and ship["outputs"] == {"shipped": "yes"}
    [history] = _histories_of(stack, [run["workflow_id"]])
    _replay([history])
    if os.environ.get("RECORD_HISTORIES") == "1" and stack.backend == "sqlite":
        (HISTORIES / "pipeline-run-fork-trust-gate.json").write_text(history.to_json())


def test_a_trusted_step_rejected_by_the_maintainer_is_skipped_not_failed(stack: Stack):
    account = stack.account()
    repo = make_repository(stack, account, "github")
    pipeline = _fork_pipeline(account)
    link(stack, account, repo, pipeline["id"])
    assert _fork_pr(stack, repo, "fork-2").status_code == 202
    [event] = dispatched(stack, repo)
    run_id = event.run_ids[0]
    wait_for(lambda: any(s["step_id"] == "ship" and s["status"] == "waiting_approval"
                         for s in account.client.get(f"/pipeline_runs/{run_id}").json()["steps"]),
             message="trusted step held")
    rejected = account.client.post(f"/pipeline_runs/{run_id}/steps/ship/reject", json={"comment": "not from forks"})
    assert rejected.status_code == 200, rejected.text
    run = wait_run(account.client, run_id)
    assert run["status"] == "success"
    ship = next(s for s in run["steps"] if s["step_id"] == "ship")
    assert ship["status"] == "skipped" and ship["outputs"] == {}
    assert "fork" in ship["error"] and "not from forks" in ship["error"]


def test_a_same_repository_pull_request_sees_secrets_and_runs_trusted_steps(stack: Stack):
    account = stack.account()
    repo = make_repository(stack, account, "github")
    pipeline = _fork_pipeline(account)
    link(stack, account, repo, pipeline["id"])
    payload = json.loads(payload_bytes("github_pull_request_opened"))
    payload["pull_request"]["head"]["repo"] = payload["pull_request"]["base"]["repo"]
    assert deliver(stack, repo, json.dumps(payload).encode(), event="pull_request").status_code == 202
    [event] = dispatched(stack, repo)
    run = wait_run(account.client, event.run_ids[0])
    assert run["status"] == "success"
    outputs = {s["step_id"]: s["outputs"] for s in run["steps"]}
    assert outputs["test"]["fork"] == "false"
    assert outputs["test"]["key"] != "[]"  # the real secret reached the step (masked in outputs)
    assert outputs["ship"] == {"shipped": "yes"}


def test_event_count_is_per_repository(stack: Stack):
    account = stack.account()
    a, b = make_repository(stack, account, "github"), make_repository(stack, account, "gitea", "acme/other")
    body = payload_bytes("github_push")
    assert deliver(stack, a, body, delivery="d").status_code in (200, 202)
    # the same delivery id on another repository is another delivery
    assert deliver(stack, b, payload_bytes("gitea_push"), delivery="d").status_code in (200, 202)
    with stack.sessions() as session:
        assert session.scalar(select(func.count()).select_from(GitWebhookEvent)
                              .where(GitWebhookEvent.repository_id.in_((a.id, b.id)))) == 2
