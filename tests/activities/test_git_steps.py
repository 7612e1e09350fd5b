"""The git step types (create_branch, create_pr, post_comment), set_commit_status and the private
checkout, run for real against the fake GitHub, GitLab, Gitea and Bitbucket servers (REST over HTTP,
and git smart HTTP behind the credential's token), with a real database."""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.git_steps import (
    GitStepActivities,
    SetCommitStatusInput,
    comment_marker,
)
from activities.steps import STEP_FAILED, StepResult
from adapters.git_providers import base as provider_base
from adapters.git_providers.github import GitHubClient
from db.crypto import SecretBox
from db.models import GitProvider, GitProviderCredential, GitRepository, StepLogChunk
from settings import Settings
from tests.activities.conftest import TEST_SECRET_KEY, log_text, make_run_rows, step_input
from tests.adapters.git_providers.fakes import FAKES, TOKEN, FakeProviderServer, sha
from tests.harness import wait_run

ALL = ["github", "gitlab", "gitea", "bitbucket"]
WRONG_TOKEN = "wrong-token-7f3a9c"

# ---- fixtures and helpers ------------------------------------------------------------------


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, FakeProviderServer]]:
    started = {name: cls().start() for name, cls in FAKES.items()}
    yield started
    for server in started.values():
        server.stop()


@pytest.fixture
def fakes(servers: dict[str, FakeProviderServer]) -> dict[str, FakeProviderServer]:
    for server in servers.values():
        server.reset()
    return servers


@pytest.fixture
def git_steps(settings: Settings, sqlite_sessions: sessionmaker[Session]) -> GitStepActivities:
    return GitStepActivities(settings, sqlite_sessions)


def add_repository(sessions: sessionmaker[Session], account_id: int, fake: FakeProviderServer,
                   provider_type: str, full_name: str = "acme/web", token: str = TOKEN) -> int:
    """A provider, a credential holding ``token`` (encrypted) and the GitRepository of ``full_name``."""
    with sessions.begin() as session:
        provider = GitProvider(account_id=account_id, name=f"{provider_type}-{uuid.uuid4().hex[:6]}",
                               provider_type=provider_type, base_url=fake.base_url)
        session.add(provider)
        session.flush()
        credential = GitProviderCredential(account_id=account_id, provider_id=provider.id, name="bot",
                                           encrypted_token=SecretBox(TEST_SECRET_KEY).encrypt(token))
        session.add(credential)
        session.flush()
        repository = GitRepository(account_id=account_id, provider_id=provider.id, credential_id=credential.id,
                                   full_name=full_name, default_branch=fake.repos[full_name].default_branch,
                                   clone_url=f"{fake.origin}/{full_name}.git", html_url=f"{fake.origin}/{full_name}")
        session.add(repository)
        session.flush()
        return repository.id


async def run(fn: Any, inp: Any) -> Any:
    return await ActivityEnvironment().run(fn, inp)


async def step_failure(fn: Any, inp: Any) -> ApplicationError:
    with pytest.raises(ApplicationError) as info:
        await run(fn, inp)
    assert info.value.type == STEP_FAILED, info.value
    assert info.value.non_retryable
    return info.value


def secret_forms(token: str, user: str = "x-access-token") -> list[str]:
    return [token, base64.b64encode(token.encode()).decode(),
            base64.b64encode(f"{user}:{token}".encode()).decode()]


# ---- post_comment --------------------------------------------------------------------------


@pytest.mark.parametrize("provider", ALL)
async def test_post_comment_on_the_triggering_pr_then_again_updates_the_same_comment(
        git_steps, rows, sqlite_sessions, fakes, provider):
    fake = fakes[provider]
    repo_id = add_repository(sqlite_sessions, rows.account_id, fake, provider)
    first: StepResult = await run(git_steps.post_comment, step_input(
        rows, {"body": "Build started"}, step_id="comment", trigger_repository_id=repo_id, trigger_number=1))
    assert first.outputs["created"] is True
    assert first.outputs["comment_id"] and first.outputs["url"].startswith(fake.origin)
    again: StepResult = await run(git_steps.post_comment, step_input(
        rows, {"body": "Build passed"}, step_id="comment", trigger_repository_id=repo_id, trigger_number=1))
    assert again.outputs == {**first.outputs, "created": False}
    comments = fake.comments("acme/web", 1)
    assert len(comments) == 1
    assert comments[0]["body"].startswith("Build passed")
    assert f"<!-- {comment_marker(rows.run_id, 'comment')} -->" in comments[0]["body"]
    assert "updated comment" in log_text(sqlite_sessions, rows.run_id, "comment")


async def test_post_comment_with_repository_id_and_number_and_a_second_step_adds_its_own(
        git_steps, rows, sqlite_sessions, fakes):
    fake = fakes["github"]
    repo_id = add_repository(sqlite_sessions, rows.account_id, fake, "github")
    for step_id in ("one", "two"):
        result = await run(git_steps.post_comment, step_input(
            rows, {"body": f"from {step_id}", "repository_id": repo_id, "number": 2}, step_id=step_id))
        assert result.outputs["created"] is True
    assert [c["body"].split("\n")[0] for c in fake.comments("acme/web", 2)] == ["from one", "from two"]


async def test_post_comment_without_a_number_fails_clearly(git_steps, rows, sqlite_sessions, fakes):
    repo_id = add_repository(sqlite_sessions, rows.account_id, fakes["github"], "github")
    err = await step_failure(git_steps.post_comment, step_input(rows, {"body": "hi", "repository_id": repo_id}))
    assert "post_comment needs `with.number`" in err.message


# ---- create_branch -------------------------------------------------------------------------


@pytest.mark.parametrize("provider", ALL)
async def test_create_branch_from_the_default_branch_then_again_is_not_created_twice(
        git_steps, rows, sqlite_sessions, fakes, provider):
    fake = fakes[provider]
    repo_id = add_repository(sqlite_sessions, rows.account_id, fake, provider)
    main = fake.repos["acme/web"].branches["main"]
    inp = step_input(rows, {"name": "devops/fix-1", "repository_id": repo_id})
    first = await run(git_steps.create_branch, inp)
    assert first.outputs == {"branch": "devops/fix-1", "sha": main, "created": True}
    again = await run(git_steps.create_branch, inp)
    assert again.outputs == {"branch": "devops/fix-1", "sha": main, "created": False}
    assert fake.repos["acme/web"].branches["devops/fix-1"] == main


@pytest.mark.parametrize("provider", ["github", "gitlab"])
async def test_create_branch_defaults_to_the_triggering_commit_and_takes_a_branch_as_from(
        git_steps, rows, sqlite_sessions, fakes, provider):
    fake = fakes[provider]
    repo_id = add_repository(sqlite_sessions, rows.account_id, fake, provider)
    develop = fake.repos["acme/web"].branches["develop"]
    triggered = await run(git_steps.create_branch, step_input(
        rows, {"name": "from-trigger"}, trigger_repository_id=repo_id, trigger_sha=develop))
    assert triggered.outputs["sha"] == develop
    feature = fake.repos["acme/web"].branches["feature"]
    from_branch = await run(git_steps.create_branch, step_input(
        rows, {"name": "from-feature", "from": "feature"}, trigger_repository_id=repo_id, trigger_sha=develop))
    assert from_branch.outputs == {"branch": "from-feature", "sha": feature, "created": True}


async def test_create_branch_existing_at_another_commit_fails_naming_both(git_steps, rows, sqlite_sessions, fakes):
    fake = fakes["github"]
    repo_id = add_repository(sqlite_sessions, rows.account_id, fake, "github")
    err = await step_failure(git_steps.create_branch, step_input(
        rows, {"name": "feature", "from": "main", "repository_id": repo_id}))
    assert "branch 'feature' already exists in acme/web" in err.message
    assert fake.repos["acme/web"].branches["feature"] in err.message


async def test_create_branch_unknown_from_fails_clearly(git_steps, rows, sqlite_sessions, fakes):
    repo_id = add_repository(sqlite_sessions, rows.account_id, fakes["gitlab"], "gitlab")
    err = await step_failure(git_steps.create_branch, step_input(
        rows, {"name": "x", "from": "no-such-branch", "repository_id": repo_id}))
    assert "`with.from` 'no-such-branch' is neither a branch of acme/web nor a commit SHA" in err.message


# ---- create_pr -----------------------------------------------------------------------------


@pytest.mark.parametrize("provider", ALL)
async def test_create_pr_then_again_returns_the_same_open_pull_request(
        git_steps, rows, sqlite_sessions, fakes, provider):
    fake = fakes[provider]
    repo_id = add_repository(sqlite_sessions, rows.account_id, fake, provider)
    inp = step_input(rows, {"title": "Automated fix", "head": "develop", "body": "Made by a pipeline",
                            "repository_id": repo_id})
    first = await run(git_steps.create_pr, inp)
    assert first.outputs["created"] is True and first.outputs["url"].startswith(fake.origin)
    again = await run(git_steps.create_pr, inp)
    assert again.outputs == {**first.outputs, "created": False}
    opened = [p for p in fake.repos["acme/web"].pulls if p["head"] == "develop" and p["state"] == "open"]
    assert len(opened) == 1 and opened[0]["base"] == "main" and opened[0]["title"] == "Automated fix"


async def test_create_pr_finds_an_already_open_pull_request(git_steps, rows, sqlite_sessions, fakes):
    repo_id = add_repository(sqlite_sessions, rows.account_id, fakes["gitlab"], "gitlab")
    result = await run(git_steps.create_pr, step_input(
        rows, {"title": "Again", "head": "feature", "base": "main"}, trigger_repository_id=repo_id))
    assert result.outputs["number"] == 1 and result.outputs["created"] is False


async def test_create_pr_needs_a_title(git_steps, rows, sqlite_sessions, fakes):
    repo_id = add_repository(sqlite_sessions, rows.account_id, fakes["github"], "github")
    err = await step_failure(git_steps.create_pr, step_input(rows, {"head": "x", "repository_id": repo_id}))
    assert "create_pr needs `with.title`" in err.message


async def test_create_pr_on_a_provider_without_pull_requests_fails_clearly(
        git_steps, rows, sqlite_sessions, fakes, monkeypatch):
    monkeypatch.setitem(provider_base.CAPABILITIES, "bitbucket", frozenset({"repos", "branches"}))
    repo_id = add_repository(sqlite_sessions, rows.account_id, fakes["bitbucket"], "bitbucket")
    err = await step_failure(git_steps.create_pr, step_input(
        rows, {"title": "t", "head": "develop", "repository_id": repo_id}))
    assert "bitbucket does not support 'pull_requests'" in err.message


# ---- repository resolution and provider errors ---------------------------------------------


@pytest.mark.parametrize(("step_type", "params"), [
    ("create_pr", {"title": "t", "head": "h"}),
    ("create_branch", {"name": "b"}),
    ("post_comment", {"body": "b"}),
])
async def test_a_git_step_without_a_repository_fails_naming_what_is_missing(git_steps, rows, step_type, params):
    err = await step_failure(getattr(git_steps, step_type), step_input(rows, params))
    assert err.message == f"{step_type} needs `with.repository_id` or a run triggered by a repository webhook"


async def test_a_repository_of_another_account_does_not_exist(git_steps, rows, sqlite_sessions, fakes):
    other = make_run_rows(sqlite_sessions)
    repo_id = add_repository(sqlite_sessions, other.account_id, fakes["github"], "github")
    err = await step_failure(git_steps.post_comment, step_input(
        rows, {"body": "b", "number": 1, "repository_id": repo_id}))
    assert err.message == f"post_comment: repository {repo_id} does not exist"


@pytest.mark.parametrize("provider", ["github", "gitlab"])
async def test_a_rejected_token_fails_the_step_clearly_without_the_token(
        git_steps, rows, sqlite_sessions, fakes, provider):
    repo_id = add_repository(sqlite_sessions, rows.account_id, fakes[provider], provider, token=WRONG_TOKEN)
    err = await step_failure(git_steps.post_comment, step_input(
        rows, {"body": "b", "number": 1, "repository_id": repo_id}))
    assert "post_comment on acme/web failed" in err.message
    assert "401" in err.message and "rejected the repository's credential" in err.message
    text = err.message + log_text(sqlite_sessions, rows.run_id)
    assert not any(form in text for form in secret_forms(WRONG_TOKEN))


@pytest.mark.parametrize("provider", ["github", "gitlab", "bitbucket"])
async def test_a_rate_limit_is_raised_for_temporal_to_retry_not_a_step_failure(
        git_steps, rows, sqlite_sessions, fakes, provider):
    fake = fakes[provider]
    repo_id = add_repository(sqlite_sessions, rows.account_id, fake, provider)
    fake.rate_limited = True
    with pytest.raises(ApplicationError) as info:
        await run(git_steps.create_branch, step_input(rows, {"name": "x", "repository_id": repo_id}))
    assert info.value.type == "RateLimited" and not info.value.non_retryable
    assert info.value.next_retry_delay is not None and info.value.next_retry_delay.total_seconds() > 0


async def test_an_outage_is_raised_for_temporal_to_retry(git_steps, rows, sqlite_sessions, fakes):
    fake = fakes["gitea"]
    repo_id = add_repository(sqlite_sessions, rows.account_id, fake, "gitea")
    fake.outage = 503
    with pytest.raises(ApplicationError) as info:
        await run(git_steps.create_pr, step_input(rows, {"title": "t", "head": "h", "repository_id": repo_id}))
    assert info.value.type == "ProviderDown" and not info.value.non_retryable


async def test_a_slow_provider_call_keeps_heartbeating(git_steps, rows, sqlite_sessions, fakes, monkeypatch):
    repo_id = add_repository(sqlite_sessions, rows.account_id, fakes["github"], "github")
    original = GitHubClient.list_branches

    def slow(self: GitHubClient, repo: str) -> Any:
        time.sleep(2.5)
        return original(self, repo)

    monkeypatch.setattr(GitHubClient, "list_branches", slow)
    env = ActivityEnvironment()
    beats: list[Any] = []
    env.on_heartbeat = lambda *details: beats.append(details)
    result = await env.run(git_steps.create_branch, step_input(rows, {"name": "slow", "repository_id": repo_id}))
    assert result.outputs["created"] is True
    assert len(beats) >= 2


# ---- set_commit_status ---------------------------------------------------------------------


@pytest.mark.parametrize("provider", ALL)
async def test_set_commit_status_on_each_provider(git_steps, rows, sqlite_sessions, fakes, provider):
    fake = fakes[provider]
    repo_id = add_repository(sqlite_sessions, rows.account_id, fake, provider)
    commit = fake.repos["acme/web"].branches["main"]
    result = await run(git_steps.set_commit_status, SetCommitStatusInput(
        account_id=rows.account_id, repository_id=repo_id, sha=commit, state="pending",
        description="Run #1 started", target_url="http://devops.example/runs/1", pipeline_name="build"))
    assert result.set is True and result.error is None
    [status] = fake.statuses("acme/web")
    assert status["sha"] == commit
    assert "devops/build" in (status.get("context"), status.get("name"), status.get("key"))


async def test_set_commit_status_permanent_failure_is_reported_not_raised(git_steps, rows, sqlite_sessions, fakes):
    repo_id = add_repository(sqlite_sessions, rows.account_id, fakes["github"], "github", token=WRONG_TOKEN)
    result = await run(git_steps.set_commit_status, SetCommitStatusInput(
        account_id=rows.account_id, repository_id=repo_id, sha=sha("x"), state="success"))
    assert result.set is False and "401" in result.error and WRONG_TOKEN not in result.error
    missing = await run(git_steps.set_commit_status, SetCommitStatusInput(
        account_id=rows.account_id, repository_id=999_999, sha=sha("x"), state="success"))
    assert missing.set is False and "does not exist" in missing.error


async def test_set_commit_status_rate_limit_is_retried(git_steps, rows, sqlite_sessions, fakes):
    fake = fakes["gitlab"]
    repo_id = add_repository(sqlite_sessions, rows.account_id, fake, "gitlab")
    fake.rate_limited = True
    with pytest.raises(ApplicationError) as info:
        await run(git_steps.set_commit_status, SetCommitStatusInput(
            account_id=rows.account_id, repository_id=repo_id, sha=sha("x"), state="failure"))
    assert info.value.type == "RateLimited" and not info.value.non_retryable


# ---- private checkout ----------------------------------------------------------------------


def all_logs(sessions: sessionmaker[Session], run_id: int) -> str:
    with sessions() as session:
        return "\n".join(session.scalars(select(StepLogChunk.content).where(StepLogChunk.run_id == run_id)))


def assert_token_nowhere(token: str, user: str, *texts: str) -> None:
    for text in texts:
        for form in secret_forms(token, user):
            assert form not in text


@pytest.mark.parametrize(("provider", "user"), [("github", "x-access-token"), ("gitlab", "oauth2"),
                                                ("bitbucket", "x-token-auth")])
async def test_private_checkout_clones_with_the_credential_and_leaves_the_token_nowhere(
        git_steps, rows, sqlite_sessions, settings, fakes, provider, user):
    fake = fakes[provider]
    commit = fake.make_git_repo("acme/web", {"README.md": f"private {provider}\n"})
    repo_id = add_repository(sqlite_sessions, rows.account_id, fake, provider)
    result = await run(git_steps.checkout, step_input(rows, {"repository_id": repo_id, "path": "src"}))
    assert result.outputs == {"commit": commit, "path": "src", "branch": "main", "repository": "acme/web"}
    src = settings.resolved_workspace_dir / f"run-{rows.run_id}" / "src"
    assert (src / "README.md").read_text() == f"private {provider}\n"
    config = (src / ".git" / "config").read_text()
    assert f"{fake.origin}/acme/web.git" in config
    assert_token_nowhere(TOKEN, user, config, repr(result.outputs), all_logs(sqlite_sessions, rows.run_id))


async def test_private_checkout_defaults_to_the_triggering_repository_and_commit(
        git_steps, rows, sqlite_sessions, settings, fakes):
    fake = fakes["gitea"]
    first = fake.make_git_repo("acme/web", {"a.txt": "one\n"})
    fake.make_git_repo("acme/web", {"a.txt": "two\n"})  # main moves on; the trigger's commit stays
    repo_id = add_repository(sqlite_sessions, rows.account_id, fake, "gitea")
    result = await run(git_steps.checkout, step_input(
        rows, {"depth": 0}, trigger_repository_id=repo_id, trigger_sha=first))
    assert result.outputs["commit"] == first and "branch" not in result.outputs
    workspace = settings.resolved_workspace_dir / f"run-{rows.run_id}"
    assert (workspace / "a.txt").read_text() == "one\n"


@pytest.mark.parametrize("provider", ["github", "gitlab"])
async def test_private_checkout_with_a_wrong_token_fails_clearly_without_the_token(
        git_steps, rows, sqlite_sessions, settings, fakes, provider):
    fake = fakes[provider]
    fake.make_git_repo("acme/web")
    repo_id = add_repository(sqlite_sessions, rows.account_id, fake, provider, token=WRONG_TOKEN)
    err = await step_failure(git_steps.checkout, step_input(rows, {"repository_id": repo_id}))
    assert err.message.startswith("git fetch failed")
    assert "the repository acme/web was fetched with the token of credential 'bot'" in err.message
    user = "oauth2" if provider == "gitlab" else "x-access-token"
    config = Path(settings.resolved_workspace_dir / f"run-{rows.run_id}" / ".git" / "config").read_text()
    assert_token_nowhere(WRONG_TOKEN, user, err.message, config, all_logs(sqlite_sessions, rows.run_id))


async def test_private_checkout_refuses_both_a_url_and_a_repository_id(git_steps, rows, sqlite_sessions, fakes):
    repo_id = add_repository(sqlite_sessions, rows.account_id, fakes["github"], "github")
    err = await step_failure(git_steps.checkout, step_input(
        rows, {"repository_id": repo_id, "repository": "https://example.test/x.git"}))
    assert "not both" in err.message


async def test_checkout_without_any_repository_names_the_options(git_steps, rows):
    err = await step_failure(git_steps.checkout, step_input(rows, {}))
    assert "`with.repository_id`" in err.message and "`with.repository`" in err.message


# ---- end to end through a pipeline run ------------------------------------------------------


def test_a_pipeline_run_creates_a_branch_and_comments_through_the_provider(stack, servers):
    fake = servers["github"]
    fake.reset()
    account = stack.account()
    client = account.client
    provider = client.post("/providers", json={"name": f"gh-{uuid.uuid4().hex[:6]}", "provider_type": "github",
                                               "base_url": fake.base_url})
    assert provider.status_code == 201, provider.text
    credential = client.post(f"/providers/{provider.json()['id']}/credentials", json={"name": "bot", "token": TOKEN})
    assert credential.status_code == 201, credential.text
    with stack.sessions.begin() as session:
        repository = GitRepository(account_id=account.id, provider_id=provider.json()["id"],
                                   credential_id=credential.json()["id"], full_name="acme/web",
                                   default_branch="main", clone_url=f"{fake.origin}/acme/web.git")
        session.add(repository)
        session.flush()
        repo_id = repository.id
    branch_name = f"devops/{uuid.uuid4().hex[:6]}"
    steps = [
        {"id": "branch", "type": "create_branch", "with": {"repository_id": repo_id, "name": branch_name}},
        {"id": "comment", "type": "post_comment",
         "with": {"repository_id": repo_id, "number": 1,
                  "body": "Branch ${{ steps.branch.outputs.branch }} at ${{ steps.branch.outputs.sha }}"}},
    ]
    refused = client.post("/pipelines", json={"name": "bad", "steps": [
        {"id": "pr", "type": "create_pr", "with": {"repository_id": repo_id, "head": "x"}}]})
    assert refused.status_code == 422
    assert refused.json()["detail"][0]["loc"] == ["body", "steps", 0, "with", "title"]
    pipeline = client.post("/pipelines", json={"name": f"git-{uuid.uuid4().hex[:6]}", "steps": steps})
    assert pipeline.status_code == 201, pipeline.text
    run_body = client.post(f"/pipelines/{pipeline.json()['id']}/trigger", json={}).json()
    done = wait_run(client, run_body["id"], timeout=90)
    assert done["status"] == "success", done
    main = fake.repos["acme/web"].branches["main"]
    outputs = {s["step_id"]: s["outputs"] for s in done["steps"]}
    assert outputs["branch"] == {"branch": branch_name, "sha": main, "created": True}
    assert outputs["comment"]["created"] is True
    assert fake.repos["acme/web"].branches[branch_name] == main
    [comment] = fake.comments("acme/web", 1)
    assert comment["body"].startswith(f"Branch {branch_name} at {main}")
    assert f"devops-run-{run_body['id']}-step-comment" in comment["body"]


def test_an_internal_provider_base_url_is_refused_unless_private_targets_are_allowed(stack):
    """Workers connect to the provider for any member who can run a git step or a sync."""
    from adapters.git_providers.credentials import TargetRefused, access_for_credential
    from db.crypto import SecretBox
    from db.models import GitProvider, GitProviderCredential

    account = stack.account()
    box = SecretBox(stack.settings.secret_key, stack.settings.old_secret_keys)
    with stack.sessions.begin() as session:
        provider = GitProvider(account_id=account.id, name="internal", provider_type="gitea",
                               base_url="http://127.0.0.1:9/api/v1")
        session.add(provider)
        session.flush()
        credential = GitProviderCredential(account_id=account.id, provider_id=provider.id, name="bot",
                                           encrypted_token=box.encrypt(TOKEN))
        session.add(credential)
        session.flush()
        credential_id = credential.id
    strict = stack.settings.model_copy(update={"notify_allow_private_targets": False})
    with stack.sessions() as session:
        with pytest.raises(TargetRefused, match="127.0.0.1, a loopback, private or link-local address"):
            access_for_credential(session, strict, account.id, credential_id)
        access_for_credential(session, stack.settings, account.id, credential_id).close()  # allowed in tests
