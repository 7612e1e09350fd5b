"""The four git provider clients against fake provider servers over real HTTP: every operation of
the interface, and the mapping of each provider's failures into one error hierarchy."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from adapters.git_providers import (
    AuthError,
    Conflict,
    GitProviderClient,
    NotFound,
    ProviderDown,
    RateLimited,
    UnsupportedOperation,
    client_for,
)
from tests.adapters.git_providers.fakes import FAKES, RETRY_AFTER, TOKEN, FakeProviderServer, sha

PROVIDERS = list(FAKES)
MARKER = "devops:run-7:step-notify"


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, FakeProviderServer]]:
    started = {name: cls().start() for name, cls in FAKES.items()}
    yield started
    for server in started.values():
        server.stop()


@pytest.fixture(params=PROVIDERS)
def provider(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def fake(servers: dict[str, FakeProviderServer], provider: str) -> FakeProviderServer:
    server = servers[provider]
    server.reset()
    return server


@pytest.fixture
def client(fake: FakeProviderServer, provider: str) -> Iterator[GitProviderClient]:
    c = client_for(provider, fake.base_url, TOKEN)
    yield c
    c.close()


def test_current_user_reports_login_and_scopes(client: GitProviderClient, provider: str) -> None:
    user = client.current_user()
    expected = {
        "github": ("octocat", "The Octocat", ("repo", "admin:repo_hook", "read:user")),
        "gitlab": ("root", "Administrator", ("api", "read_user")),
        "gitea": ("gitea_admin", "Gitea Admin", ()),
        "bitbucket": ("ada", "Ada Lovelace", ("repository:write", "pullrequest:write", "webhook", "account")),
    }[provider]
    assert (user.login, user.name, user.scopes) == expected


def test_list_repositories_carries_every_field(
    client: GitProviderClient, fake: FakeProviderServer, provider: str
) -> None:
    repos = {r.full_name: r for r in client.list_repositories()}
    assert set(repos) == {"acme/web", "acme/legacy"}
    web, legacy = repos["acme/web"], repos["acme/legacy"]
    assert web.default_branch == "main"
    assert (web.language or "").lower() == "python"
    assert web.private and not web.fork
    assert web.clone_url == f"{fake.origin}/acme/web.git"
    assert web.html_url == f"{fake.origin}/acme/web"
    assert legacy.fork and not legacy.private and legacy.language is None
    if provider == "bitbucket":  # Bitbucket has neither topics nor an archived flag
        assert web.topics == () and not legacy.archived
    else:
        assert web.topics == ("ci", "web") and legacy.archived and not web.archived


def test_list_branches(client: GitProviderClient) -> None:
    branches = {b.name: b.sha for b in client.list_branches("acme/web")}
    assert branches == {"main": sha("main-3"), "develop": sha("main-2"), "feature": sha("feature-1")}


def test_list_commits_newest_first_up_to_limit(client: GitProviderClient) -> None:
    commits = client.list_commits("acme/web", "main", limit=2)
    assert [c.sha for c in commits] == [sha("main-3"), sha("main-2")]
    assert commits[0].message == "Commit 3"
    assert commits[0].author_name == "Ada Lovelace"
    assert commits[0].authored_at is not None and commits[0].authored_at.isoformat() == "2026-01-03T10:00:00+00:00"
    assert commits[0].url


def test_list_pull_requests_by_state(client: GitProviderClient) -> None:
    open_prs = client.list_pull_requests("acme/web", "open")
    assert [(p.number, p.state, p.head, p.base, p.title) for p in open_prs] == [
        (1, "open", "feature", "main", "Add feature")]
    assert {(p.number, p.state) for p in client.list_pull_requests("acme/web", "all")} == {
        (1, "open"), (4, "merged")}


def test_list_issues_excludes_pull_requests(client: GitProviderClient) -> None:
    assert [(i.number, i.title, i.state) for i in client.list_issues("acme/web", "open")] == [(2, "Bug", "open")]
    assert [i.number for i in client.list_issues("acme/web", "closed")] == [3]


def test_each_listing_is_one_request(client: GitProviderClient, fake: FakeProviderServer) -> None:
    """No per-item follow-up fetches (PyGithub completes lazy objects when an attribute is absent)."""
    client.list_branches("acme/web")
    client.list_commits("acme/web", "main", limit=5)
    client.list_pull_requests("acme/web", "all")
    client.list_issues("acme/web", "all")
    assert len(fake.requests) == 4, fake.requests


@pytest.mark.parametrize("provider", ["gitea", "bitbucket"])
def test_listings_follow_pagination(client: GitProviderClient, fake: FakeProviderServer) -> None:
    """Gitea pages by page/limit (50 here), Bitbucket by `next` links (pagelen 100)."""
    fake.repos["acme/web"].branches.update({f"topic-{i:03}": sha(f"t{i}") for i in range(120)})
    names = [b.name for b in client.list_branches("acme/web")]
    assert len(names) == 123 and len(set(names)) == 123
    assert len(fake.requests) > 1


def test_create_branch_then_duplicate_is_conflict(client: GitProviderClient, fake: FakeProviderServer) -> None:
    branch = client.create_branch("acme/web", "release-1", sha("main-2"))
    assert (branch.name, branch.sha) == ("release-1", sha("main-2"))
    assert fake.repos["acme/web"].branches["release-1"] == sha("main-2")
    with pytest.raises(Conflict):
        client.create_branch("acme/web", "release-1", sha("main-3"))


def test_create_pull_request(client: GitProviderClient, fake: FakeProviderServer) -> None:
    pr = client.create_pull_request("acme/web", "Bump", head="develop", base="main", body="Automated")
    assert pr.state == "open" and pr.number >= 100 and pr.url.startswith(fake.origin)
    assert (pr.head, pr.base, pr.title) == ("develop", "main", "Bump")
    stored = fake.repos["acme/web"].pulls[-1]
    assert (stored["head"], stored["base"], stored["body"]) == ("develop", "main", "Automated")


def test_duplicate_pull_request_is_conflict(client: GitProviderClient, provider: str) -> None:
    if provider == "bitbucket":
        pytest.skip("Bitbucket Cloud documents no duplicate-pull-request answer; nothing to map")
    with pytest.raises(Conflict):
        client.create_pull_request("acme/web", "Again", head="feature", base="main")


def test_post_or_update_comment_keeps_one_comment_per_marker(
    client: GitProviderClient, fake: FakeProviderServer
) -> None:
    first = client.post_or_update_comment("acme/web", 1, "Build running", MARKER)
    second = client.post_or_update_comment("acme/web", 1, "Build passed", MARKER)
    other = client.post_or_update_comment("acme/web", 1, "Deploy done", "devops:run-7:step-deploy")
    assert first.created and not second.created and other.created
    assert first.id == second.id != other.id
    assert first.url
    bodies = [c["body"] for c in fake.comments("acme/web", 1)]
    assert len(bodies) == 2
    assert bodies[0].startswith("Build passed") and f"<!-- {MARKER} -->" in bodies[0]


def test_set_commit_status(client: GitProviderClient, fake: FakeProviderServer, provider: str) -> None:
    client.set_commit_status("acme/web", sha("main-3"), "failure", "devops/ci", "2 tests failed",
                             "http://ci.example/runs/7")
    client.set_commit_status("acme/web", sha("main-3"), "pending", "devops/lint")
    failed, pending = fake.statuses("acme/web")
    assert failed["sha"] == sha("main-3")
    state_key, name_key, url_key = {
        "github": ("state", "context", "target_url"),
        "gitlab": ("status", "name", "target_url"),
        "gitea": ("status", "context", "target_url"),
        "bitbucket": ("state", "key", "url"),
    }[provider]
    failure_word = {"github": "failure", "gitlab": "failed", "gitea": "failure", "bitbucket": "FAILED"}[provider]
    assert (failed[state_key], failed[name_key], failed[url_key]) == (
        failure_word, "devops/ci", "http://ci.example/runs/7")
    assert failed["description"] == "2 tests failed"
    assert pending[name_key] == "devops/lint"
    if provider == "bitbucket":  # no target given: the status links the commit itself
        assert pending[url_key] == f"{fake.origin}/acme/web/commits/{sha('main-3')}"


def _stored_secret_and_url(provider: str, hook: dict) -> tuple[str, str]:
    if provider in ("github", "gitea"):
        return hook["config"]["secret"], hook["config"]["url"]
    if provider == "gitlab":
        return hook["token"], hook["url"]
    return hook["secret"], hook["url"]


def test_webhook_create_update_delete(client: GitProviderClient, fake: FakeProviderServer, provider: str) -> None:
    hook = client.create_webhook("acme/web", "http://devops.example/hooks/1", "s3cret", ["push", "pull_request"])
    stored = fake.hooks("acme/web")[hook.id]
    assert _stored_secret_and_url(provider, stored) == ("s3cret", "http://devops.example/hooks/1")
    if provider == "gitlab":
        assert stored["push_events"] and stored["merge_requests_events"] and not stored["issues_events"]
    elif provider == "bitbucket":
        assert "repo:push" in stored["events"] and "pullrequest:created" in stored["events"]
    else:
        assert set(stored["events"]) == {"push", "pull_request"}

    updated = client.update_webhook("acme/web", hook.id, "http://devops.example/hooks/2", "n3w", ["push"])
    assert updated.id == hook.id
    assert _stored_secret_and_url(provider, fake.hooks("acme/web")[hook.id]) == (
        "n3w", "http://devops.example/hooks/2")

    client.delete_webhook("acme/web", hook.id)
    assert fake.hooks("acme/web") == {}
    with pytest.raises(NotFound):
        client.delete_webhook("acme/web", hook.id)


def test_wrong_token_is_auth_error(fake: FakeProviderServer, provider: str) -> None:
    client = client_for(provider, fake.base_url, "wrong-token")
    with pytest.raises(AuthError) as caught:
        client.list_repositories()
    assert caught.value.status == 401 and not caught.value.retryable


def test_missing_repository_is_not_found(client: GitProviderClient) -> None:
    with pytest.raises(NotFound) as caught:
        client.list_branches("acme/missing")
    assert caught.value.status == 404 and not caught.value.retryable


def test_rate_limit_is_rate_limited_with_retry_after_and_no_library_retry(
    client: GitProviderClient, fake: FakeProviderServer
) -> None:
    fake.rate_limited = True
    with pytest.raises(RateLimited) as caught:
        client.list_branches("acme/web")
    assert caught.value.retryable
    assert caught.value.retry_after is not None and RETRY_AFTER - 2 <= caught.value.retry_after <= RETRY_AFTER
    # The libraries' own sleeping retries are off: Temporal's retry policy decides.
    assert len(fake.requests) == 1


def test_server_error_is_provider_down(client: GitProviderClient, fake: FakeProviderServer) -> None:
    fake.outage = 503
    with pytest.raises(ProviderDown) as caught:
        client.list_issues("acme/web")
    assert caught.value.status == 503 and caught.value.retryable
    assert len(fake.requests) == 1


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_provider_is_provider_down(fake: FakeProviderServer, provider: str) -> None:
    client = client_for(provider, f"http://127.0.0.1:{_closed_port()}{fake.prefix}", TOKEN)
    with pytest.raises(ProviderDown):
        client.current_user()


def test_capabilities_follow_the_seed_matrix(client: GitProviderClient, provider: str) -> None:
    caps = client.capabilities
    assert {"repos", "branches", "commits", "issues", "webhooks"} <= caps
    assert ("merge_requests" in caps) == (provider == "gitlab")
    assert ("pull_requests" in caps) == (provider != "gitlab")
    assert ("pipelines" in caps) == (provider == "bitbucket")
    assert ("devops" in caps) == (provider != "bitbucket")
    if provider == "gitea":
        client.require("act_runner")
    else:
        with pytest.raises(UnsupportedOperation, match=f"{provider} does not support 'act_runner'"):
            client.require("act_runner")


def test_bitbucket_release_webhooks_are_unsupported(servers: dict[str, FakeProviderServer]) -> None:
    fake = servers["bitbucket"]
    fake.reset()
    client = client_for("bitbucket", fake.base_url, TOKEN)
    with pytest.raises(UnsupportedOperation, match="release"):
        client.create_webhook("acme/web", "http://devops.example/hooks/1", "s", ["push", "release"])
    assert fake.requests == []


def test_unknown_provider_type_is_unsupported() -> None:
    with pytest.raises(UnsupportedOperation, match="unknown provider type 'svn'"):
        client_for("svn", None, TOKEN)
