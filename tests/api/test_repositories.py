"""Repositories: sync through RepositorySyncWorkflow, our webhook through RepositoryWebhookWorkflow
(against the four fake providers over real HTTP, with the worker running), branch filters, pipeline
links, statistics, stored deliveries, and account isolation."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from activities.repositories import provider_errors
from adapters.git_providers import RateLimited, client_for
from adapters.git_providers.base import AuthError
from db.crypto import SecretBox
from db.models import GitProviderCredential, GitRepository, GitWebhookEvent, Pipeline, PipelineRun
from tests.adapters.git_providers.fakes import FAKES, TOKEN, FakeProviderServer

PROVIDERS = list(FAKES)


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, FakeProviderServer]]:
    started = {name: cls().start() for name, cls in FAKES.items()}
    yield started
    for server in started.values():
        server.stop()


@pytest.fixture
def fakes(servers: dict[str, FakeProviderServer]) -> dict[str, FakeProviderServer]:
    """The fake providers with their seed state (acme/web, acme/legacy) and no hooks."""
    for server in servers.values():
        server.reset()
    return servers


def connect(client, server: FakeProviderServer, kind: str, token: str = TOKEN) -> tuple[dict, dict]:
    provider = client.post("/providers", json={"name": f"{kind}-{uuid.uuid4().hex[:6]}", "provider_type": kind,
                                               "base_url": server.base_url})
    assert provider.status_code == 201, provider.text
    credential = client.post(f"/providers/{provider.json()['id']}/credentials", json={"name": "bot", "token": token})
    assert credential.status_code == 201, credential.text
    return provider.json(), credential.json()


def sync(client, credential_id: int) -> dict:
    response = client.post("/repositories/sync", json={"credential_id": credential_id})
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "completed"
    return response.json()


def by_name(client, **params: Any) -> dict[str, dict]:
    listed = client.get("/repositories", params=params)
    assert listed.status_code == 200, listed.text
    return {r["full_name"]: r for r in listed.json()["data"]}


def stored(stack, repository_id: int) -> GitRepository:
    with stack.sessions() as session:
        row = session.get(GitRepository, repository_id)
        assert row is not None
        session.expunge(row)
        return row


def hook_target(kind: str, hook: dict) -> tuple[str, str]:
    """(url, secret) of a hook as the fake stored it."""
    if kind in ("github", "gitea"):
        return hook["config"]["url"], hook["config"]["secret"]
    if kind == "gitlab":
        return hook["url"], hook["token"]
    return hook["url"], hook["secret"]


def decrypt(stack, secret: bytes | None) -> str:
    assert secret is not None
    return SecretBox(stack.settings.secret_key, stack.settings.old_secret_keys).decrypt(secret)


# ---- sync -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", PROVIDERS)
def test_sync_upserts_the_listed_repositories_then_writes_nothing_then_marks_removed(stack, fakes, kind):
    client = stack.account().client
    server = fakes[kind]
    provider, credential = connect(client, server, kind)
    expected = {r.full_name: r for r in client_for(kind, server.base_url, TOKEN).list_repositories()}

    first = sync(client, credential["id"])
    assert (first["created"], first["updated"], first["unchanged"], first["removed"]) == (2, 0, 0, 0)
    assert first["workflow_id"] == f"repository-sync-{credential['id']}"
    repos = by_name(client)
    assert set(repos) == {"acme/web", "acme/legacy"}
    for name, repo in repos.items():
        want = expected[name]
        assert repo["provider_id"] == provider["id"] and repo["provider_type"] == kind
        assert repo["credential_id"] == credential["id"]
        assert (repo["default_branch"], repo["language"], sorted(repo["topics"])) == (
            want.default_branch, want.language, sorted(want.topics))
        assert repo["visibility"] == ("private" if want.private else "public")
        assert (repo["is_fork"], repo["is_archived"]) == (want.fork, want.archived)
        assert (repo["clone_url"], repo["html_url"]) == (want.clone_url, want.html_url)
        assert repo["last_synced_at"] is not None and repo["removed"] is False and repo["removed_at"] is None
        assert repo["webhook"] == {"configured": False, "id": None, "url": None, "events": [], "configured_at": None,
                                   "rejected_deliveries": 0, "last_delivery_at": None}
    assert repos["acme/web"]["visibility"] == "private" and repos["acme/web"]["default_branch"] == "main"
    assert repos["acme/legacy"]["visibility"] == "public" and repos["acme/legacy"]["default_branch"] == "master"
    if kind == "github":
        assert repos["acme/web"]["language"] == "Python" and repos["acme/web"]["topics"] == ["ci", "web"]
        assert repos["acme/legacy"]["is_archived"] is True and repos["acme/legacy"]["is_fork"] is True

    second = sync(client, credential["id"])
    assert (second["created"], second["updated"], second["unchanged"], second["removed"]) == (0, 0, 2, 0)
    again = by_name(client)
    for name in repos:  # nothing rewritten
        assert again[name]["updated_at"] == repos[name]["updated_at"]
        assert again[name]["last_synced_at"] == repos[name]["last_synced_at"]

    legacy = server.repos.pop("acme/legacy")
    third = sync(client, credential["id"])
    assert (third["created"], third["updated"], third["unchanged"], third["removed"]) == (0, 0, 1, 1)
    assert set(by_name(client)) == {"acme/web"}
    with_removed = by_name(client, include_removed=True)
    assert with_removed["acme/legacy"]["removed"] is True and with_removed["acme/legacy"]["removed_at"] is not None

    server.repos["acme/legacy"] = legacy  # listed again: back, not removed
    fourth = sync(client, credential["id"])
    assert (fourth["created"], fourth["updated"], fourth["unchanged"], fourth["removed"]) == (0, 1, 1, 0)
    assert by_name(client)["acme/legacy"]["removed"] is False


def test_sync_a_repository_syncs_its_credential_and_a_changed_repository_is_updated(stack, fakes):
    client = stack.account().client
    _, credential = connect(client, fakes["github"], "github")
    sync(client, credential["id"])
    web = by_name(client)["acme/web"]
    fakes["github"].repos["acme/web"].default_branch = "trunk"
    response = client.post(f"/repositories/{web['id']}/sync")
    assert response.status_code == 200, response.text
    assert (response.json()["updated"], response.json()["unchanged"]) == (1, 1)
    after = client.get(f"/repositories/{web['id']}").json()
    assert after["default_branch"] == "trunk" and after["updated_at"] > web["updated_at"]


def test_a_refused_token_answers_502_with_a_clear_message_and_never_the_token(stack, fakes):
    client = stack.account().client
    token = f"ghp_wrong_{uuid.uuid4().hex}"
    _, credential = connect(client, fakes["github"], "github", token=token)
    response = client.post("/repositories/sync", json={"credential_id": credential["id"]})
    assert response.status_code == 502, response.text
    assert "refused the credential (HTTP 401)" in response.json()["detail"]
    assert token not in response.text
    assert client.get("/repositories").json() == {"data": [], "count": 0}


def test_a_provider_outage_is_retried_by_temporal_and_a_long_sync_answers_202(stack, fakes, monkeypatch):
    from api.routes import repositories as routes

    client = stack.account().client
    _, credential = connect(client, fakes["gitea"], "gitea")
    monkeypatch.setattr(routes, "WAIT_SECONDS", 1.0)  # the API runs in this process
    fakes["gitea"].outage = 503
    response = client.post("/repositories/sync", json={"credential_id": credential["id"]})
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "running" and response.json()["created"] is None
    assert response.json()["workflow_id"] == f"repository-sync-{credential['id']}"
    fakes["gitea"].outage = None

    handle = stack.temporal.get_workflow_handle(response.json()["workflow_id"])
    result = stack.infra.run(handle.result(), timeout=60)  # the same workflow, after a retry
    assert (result["created"], result["removed"]) == (2, 0)
    assert set(by_name(client)) == {"acme/web", "acme/legacy"}


def test_sync_of_an_unknown_credential_is_422_naming_credential_id(stack):
    client = stack.account().client
    response = client.post("/repositories/sync", json={"credential_id": 999999})
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["body", "credential_id"]


def test_provider_failures_become_application_errors_retryable_only_for_limits_and_outages():
    from temporalio.exceptions import ApplicationError

    with pytest.raises(ApplicationError) as limited, provider_errors("listing", token="sekrit"):
        raise RateLimited("slow down sekrit", provider="github", status=429, retry_after=30)
    assert limited.value.type == "RateLimited" and limited.value.non_retryable is False
    assert limited.value.next_retry_delay == timedelta(seconds=30)
    with pytest.raises(ApplicationError) as refused, provider_errors("listing", token="sekrit"):
        raise AuthError("Bad credentials for sekrit", provider="github", status=401)
    assert refused.value.type == "AuthError" and refused.value.non_retryable is True
    assert "sekrit" not in refused.value.message and "HTTP 401" in refused.value.message


# ---- webhooks -------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", PROVIDERS)
def test_webhook_is_created_repaired_and_deleted_with_an_encrypted_secret(stack, fakes, kind):
    client = stack.account().client
    server = fakes[kind]
    _, credential = connect(client, server, kind)
    sync(client, credential["id"])
    repo = by_name(client)["acme/web"]
    expected_url = f"{stack.settings.public_api_url}/api/v1/devops/webhooks/{kind}/{repo['id']}"

    created = client.post(f"/repositories/{repo['id']}/webhook")
    assert created.status_code == 200, created.text
    view = created.json()
    assert view["configured"] is True and view["url"] == expected_url and view["configured_at"]
    assert "push" in view["events"] and "pull_request" in view["events"]
    hooks = server.hooks("acme/web")
    assert list(hooks) == [view["id"]]
    url, secret = hook_target(kind, hooks[view["id"]])
    row = stored(stack, repo["id"])
    assert url == expected_url and row.webhook_id == view["id"]
    assert secret.encode() not in row.encrypted_webhook_secret  # encrypted at rest
    assert decrypt(stack, row.encrypted_webhook_secret) == secret
    assert secret not in created.text and "secret" not in created.text
    assert client.get(f"/repositories/{repo['id']}").json()["webhook"] == view

    repaired = client.post(f"/repositories/{repo['id']}/webhook")  # exists: updated, fresh secret
    assert repaired.status_code == 200, repaired.text
    assert repaired.json()["id"] == view["id"] and list(server.hooks("acme/web")) == [view["id"]]
    _, new_secret = hook_target(kind, server.hooks("acme/web")[view["id"]])
    assert new_secret != secret
    assert decrypt(stack, stored(stack, repo["id"]).encrypted_webhook_secret) == new_secret

    server.hooks("acme/web").clear()  # someone deleted it at the provider: repair creates a new one
    recreated = client.post(f"/repositories/{repo['id']}/webhook")
    assert recreated.status_code == 200, recreated.text
    assert recreated.json()["id"] != view["id"] and list(server.hooks("acme/web")) == [recreated.json()["id"]]
    _, third_secret = hook_target(kind, server.hooks("acme/web")[recreated.json()["id"]])
    assert decrypt(stack, stored(stack, repo["id"]).encrypted_webhook_secret) == third_secret

    assert client.delete(f"/repositories/{repo['id']}/webhook").status_code == 204
    assert server.hooks("acme/web") == {}
    row = stored(stack, repo["id"])
    assert (row.webhook_id, row.encrypted_webhook_secret, row.webhook_events, row.webhook_configured_at) == (
        None, None, [], None)
    assert client.get(f"/repositories/{repo['id']}").json()["webhook"]["configured"] is False
    assert client.delete(f"/repositories/{repo['id']}/webhook").status_code == 204  # nothing left: still fine


def test_deleting_a_webhook_already_gone_at_the_provider_succeeds(stack, fakes):
    client = stack.account().client
    _, credential = connect(client, fakes["gitea"], "gitea")
    sync(client, credential["id"])
    repo = by_name(client)["acme/web"]
    assert client.post(f"/repositories/{repo['id']}/webhook").status_code == 200
    fakes["gitea"].hooks("acme/web").clear()
    assert client.delete(f"/repositories/{repo['id']}/webhook").status_code == 204
    assert stored(stack, repo["id"]).webhook_id is None


def test_an_archived_repository_gets_no_webhook(stack, fakes):
    client = stack.account().client
    _, credential = connect(client, fakes["github"], "github")
    sync(client, credential["id"])
    legacy = by_name(client)["acme/legacy"]
    response = client.post(f"/repositories/{legacy['id']}/webhook")
    assert response.status_code == 409, response.text
    assert "archived repositories get no webhook" in response.json()["detail"]
    assert fakes["github"].hooks("acme/legacy") == {}
    assert stored(stack, legacy["id"]).webhook_id is None


def test_deleting_a_repository_removes_our_webhook_at_the_provider(stack, fakes):
    client = stack.account().client
    _, credential = connect(client, fakes["gitlab"], "gitlab")
    sync(client, credential["id"])
    repo = by_name(client)["acme/web"]
    assert client.post(f"/repositories/{repo['id']}/webhook").status_code == 200
    assert client.delete(f"/repositories/{repo['id']}").status_code == 204
    assert fakes["gitlab"].hooks("acme/web") == {}
    assert client.get(f"/repositories/{repo['id']}").status_code == 404


def test_deleting_a_repository_whose_webhook_cannot_be_removed_needs_force(stack, fakes):
    client = stack.account().client
    _, credential = connect(client, fakes["bitbucket"], "bitbucket")
    sync(client, credential["id"])
    repo = by_name(client)["acme/web"]
    assert client.post(f"/repositories/{repo['id']}/webhook").status_code == 200
    wrong = f"revoked-{uuid.uuid4().hex}"
    with stack.sessions.begin() as session:  # the token was revoked at the provider meanwhile
        row = session.get(GitProviderCredential, credential["id"])
        row.encrypted_token = SecretBox(stack.settings.secret_key).encrypt(wrong)

    refused = client.delete(f"/repositories/{repo['id']}")
    assert refused.status_code == 502, refused.text
    assert "refused the credential" in refused.json()["detail"] and wrong not in refused.text
    assert client.get(f"/repositories/{repo['id']}").status_code == 200  # nothing deleted
    assert client.delete(f"/repositories/{repo['id']}", params={"force": True}).status_code == 204
    assert client.get(f"/repositories/{repo['id']}").status_code == 404


def test_a_webhook_needs_a_credential(stack):
    client = stack.account().client
    provider = client.post("/providers", json={"name": "gh", "provider_type": "github"}).json()
    repo = client.post("/repositories", json={"provider_id": provider["id"], "full_name": "acme/web"}).json()
    for response in (client.post(f"/repositories/{repo['id']}/webhook"), client.post(f"/repositories/{repo['id']}/sync")):
        assert response.status_code == 409, response.text
        assert "has no credential to reach its provider" in response.json()["detail"]


# ---- registration, filters, branch filters ----------------------------------------------------------


def test_register_list_filter_and_delete(stack):
    client = stack.account().client
    github = client.post("/providers", json={"name": "gh", "provider_type": "github"}).json()
    gitlab = client.post("/providers", json={"name": "gl", "provider_type": "gitlab"}).json()
    first = client.post("/repositories", json={"provider_id": github["id"], "full_name": "acme/api"})
    assert first.status_code == 201, first.text
    assert first.json()["credential_id"] is None and first.json()["last_synced_at"] is None
    second = client.post("/repositories", json={"provider_id": gitlab["id"], "full_name": "group/sub/tool"})
    assert second.status_code == 201, second.text
    duplicate = client.post("/repositories", json={"provider_id": github["id"], "full_name": "acme/api"})
    assert duplicate.status_code == 409, duplicate.text

    assert [r["full_name"] for r in client.get("/repositories").json()["data"]] == ["group/sub/tool", "acme/api"]
    assert [r["full_name"] for r in client.get("/repositories", params={"q": "API"}).json()["data"]] == ["acme/api"]
    assert client.get("/repositories", params={"q": "%"}).json()["count"] == 0
    assert [r["id"] for r in client.get("/repositories", params={"provider_id": gitlab["id"]}).json()["data"]] == [
        second.json()["id"]]

    assert client.delete(f"/repositories/{first.json()['id']}").status_code == 204
    assert client.get(f"/repositories/{first.json()['id']}").status_code == 404
    assert client.get("/repositories").json()["count"] == 1


@pytest.mark.parametrize(("body", "loc"), [
    ({"provider_id": 999999, "full_name": "acme/web"}, ["body", "provider_id"]),
    ({"full_name": "acme/web"}, ["body", "provider_id"]),
    ({"provider_id": 0, "full_name": "no-slash"}, ["body", "full_name"]),
], ids=["unknown_provider", "missing_provider", "bad_full_name"])
def test_invalid_registration_is_422_naming_the_field(stack, body, loc):
    client = stack.account().client
    response = client.post("/repositories", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == loc
    assert client.get("/repositories").json()["count"] == 0


def test_branch_filters_are_validated_and_a_bad_regex_is_422_naming_branch_filter(stack):
    client = stack.account().client
    provider = client.post("/providers", json={"name": "gh", "provider_type": "github"}).json()
    repo = client.post("/repositories", json={"provider_id": provider["id"], "full_name": "acme/web"}).json()
    path = f"/repositories/{repo['id']}"

    bad = client.patch(path, json={"branch_filter_type": "regex", "branch_filter": "release/(["})
    assert bad.status_code == 422, bad.text
    assert bad.json()["detail"][0]["loc"] == ["body", "branch_filter"]
    assert "invalid regex" in bad.json()["detail"][0]["msg"]
    missing = client.patch(path, json={"branch_filter_type": "exact"})
    assert missing.status_code == 422 and missing.json()["detail"][0]["loc"] == ["body", "branch_filter"]
    unknown = client.patch(path, json={"branch_filter_type": "glob", "branch_filter": "x"})
    assert unknown.status_code == 422 and unknown.json()["detail"][0]["loc"] == ["body", "branch_filter_type"]
    assert client.get(path).json()["branch_filter_type"] == "none"  # nothing changed

    good = client.patch(path, json={"branch_filter_type": "regex", "branch_filter": "^(main|release/.+)$"})
    assert good.status_code == 200, good.text
    assert (good.json()["branch_filter_type"], good.json()["branch_filter"]) == ("regex", "^(main|release/.+)$")
    wildcard = client.patch(path, json={"branch_filter_type": "wildcard", "branch_filter": "release/*"})
    assert wildcard.json()["branch_filter"] == "release/*"
    cleared = client.patch(path, json={"branch_filter_type": "none"})
    assert (cleared.json()["branch_filter_type"], cleared.json()["branch_filter"]) == ("none", None)


def test_a_repository_credential_must_belong_to_its_provider(stack):
    client = stack.account().client
    github = client.post("/providers", json={"name": "gh", "provider_type": "github"}).json()
    gitlab = client.post("/providers", json={"name": "gl", "provider_type": "gitlab"}).json()
    own = client.post(f"/providers/{github['id']}/credentials", json={"name": "a", "token": "t"}).json()
    foreign = client.post(f"/providers/{gitlab['id']}/credentials", json={"name": "b", "token": "t"}).json()
    repo = client.post("/repositories", json={"provider_id": github["id"], "full_name": "acme/web"}).json()
    wrong = client.patch(f"/repositories/{repo['id']}", json={"credential_id": foreign["id"]})
    assert wrong.status_code == 422 and wrong.json()["detail"][0]["loc"] == ["body", "credential_id"]
    right = client.patch(f"/repositories/{repo['id']}", json={"credential_id": own["id"]})
    assert right.status_code == 200 and right.json()["credential_id"] == own["id"]
    created = client.post("/repositories", json={"provider_id": github["id"], "full_name": "acme/x",
                                                 "credential_id": foreign["id"]})
    assert created.status_code == 422 and created.json()["detail"][0]["loc"] == ["body", "credential_id"]


# ---- links, statistics, deliveries --------------------------------------------------------------------


def make_pipeline(stack, account_id: int, name: str) -> int:
    with stack.sessions.begin() as session:
        pipeline = Pipeline(account_id=account_id, name=name, slug=f"{name}-{uuid.uuid4().hex[:6]}")
        session.add(pipeline)
        session.flush()
        return pipeline.id


def add_runs(stack, account_id: int, pipeline_id: int, statuses: list[str], start: datetime) -> None:
    with stack.sessions.begin() as session:
        for number, run_status in enumerate(statuses, 1):
            session.add(PipelineRun(account_id=account_id, pipeline_id=pipeline_id, run_number=number,
                                    status=run_status, created_at=start + timedelta(minutes=number)))


def test_pipeline_links_and_statistics(stack):
    account = stack.account()
    client = account.client
    provider = client.post("/providers", json={"name": "gh", "provider_type": "github"}).json()
    repo = client.post("/repositories", json={"provider_id": provider["id"], "full_name": "acme/web"}).json()
    build, deploy, unlinked = (make_pipeline(stack, account.id, n) for n in ("build", "deploy", "other"))
    start = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    add_runs(stack, account.id, build, ["success", "success", "failure", "running"], start)
    add_runs(stack, account.id, deploy, ["success", "cancelled"], start + timedelta(hours=1))
    add_runs(stack, account.id, unlinked, ["failure"] * 3, start + timedelta(days=1))

    empty = client.get(f"/repositories/{repo['id']}/stats").json()
    assert (empty["total_runs"], empty["success_rate"], empty["last_run_at"], empty["by_status"]) == (0, None, None, {})

    first = client.put(f"/repositories/{repo['id']}/pipelines/{build}")
    assert first.status_code == 201, first.text
    assert first.json()["pipeline_id"] == build and first.json()["pipeline_name"] == "build"
    assert client.put(f"/repositories/{repo['id']}/pipelines/{build}").status_code == 200  # idempotent
    assert client.put(f"/repositories/{repo['id']}/pipelines/{deploy}").status_code == 201
    links = client.get(f"/repositories/{repo['id']}/pipelines").json()
    assert links["count"] == 2 and [link["pipeline_id"] for link in links["data"]] == [build, deploy]

    stats = client.get(f"/repositories/{repo['id']}/stats").json()
    assert stats["pipelines"] == 2 and stats["total_runs"] == 6
    assert stats["by_status"] == {"cancelled": 1, "failure": 1, "running": 1, "success": 3}
    assert stats["success_rate"] == 0.75
    assert datetime.fromisoformat(stats["last_run_at"]) == start + timedelta(hours=1, minutes=2)

    assert client.delete(f"/repositories/{repo['id']}/pipelines/{deploy}").status_code == 204
    assert client.delete(f"/repositories/{repo['id']}/pipelines/{deploy}").status_code == 404
    assert client.get(f"/repositories/{repo['id']}/stats").json()["total_runs"] == 4

    other = stack.account()
    foreign = make_pipeline(stack, other.id, "theirs")
    response = client.put(f"/repositories/{repo['id']}/pipelines/{foreign}")
    assert response.status_code == 404 and response.json()["detail"] == "pipeline not found"


def test_webhook_events_are_listed_without_payload_and_shown_with_it(stack):
    account = stack.account()
    client = account.client
    provider = client.post("/providers", json={"name": "gh", "provider_type": "github"}).json()
    repo = client.post("/repositories", json={"provider_id": provider["id"], "full_name": "acme/web"}).json()
    with stack.sessions.begin() as session:
        for n, event_status in enumerate(["dispatched", "ignored"]):
            session.add(GitWebhookEvent(account_id=account.id, repository_id=repo["id"], provider="github",
                                        delivery_id=f"d-{n}", event_name="push", status=event_status,
                                        headers={"x-github-event": "push"}, payload={"ref": "refs/heads/main"},
                                        matched_pipeline_ids=[1] if n == 0 else [], run_ids=[7] if n == 0 else []))
    listed = client.get(f"/repositories/{repo['id']}/webhook_events")
    assert listed.status_code == 200, listed.text
    assert listed.json()["count"] == 2
    newest, oldest = listed.json()["data"]
    assert (newest["delivery_id"], oldest["delivery_id"]) == ("d-1", "d-0")
    assert oldest["matched_pipeline_ids"] == [1] and oldest["run_ids"] == [7] and oldest["status"] == "dispatched"
    assert "payload" not in oldest and "headers" not in oldest
    assert client.get(f"/repositories/{repo['id']}/webhook_events", params={"status": "ignored"}).json()["count"] == 1
    detail = client.get(f"/repositories/{repo['id']}/webhook_events/{oldest['id']}")
    assert detail.status_code == 200, detail.text
    assert detail.json()["payload"] == {"ref": "refs/heads/main"} and detail.json()["headers"]["x-github-event"] == "push"
    assert client.get(f"/repositories/{repo['id']}/webhook_events/999999").status_code == 404


# ---- accounts and roles ---------------------------------------------------------------------------------


def test_another_accounts_repository_answers_404_on_every_route(stack):
    owner = stack.account()
    provider = owner.client.post("/providers", json={"name": "gh", "provider_type": "github"}).json()
    repo = owner.client.post("/repositories", json={"provider_id": provider["id"], "full_name": "acme/web"}).json()
    with stack.sessions.begin() as session:
        event = GitWebhookEvent(account_id=owner.id, repository_id=repo["id"], provider="github", delivery_id="d")
        session.add(event)
        session.flush()
        event_id = event.id
    other = stack.account()
    their_pipeline = make_pipeline(stack, other.id, "theirs")
    path = f"/repositories/{repo['id']}"
    for method, url, body in [
        ("GET", path, None), ("PATCH", path, {"branch_filter_type": "none"}), ("DELETE", path, None),
        ("POST", f"{path}/sync", None), ("POST", f"{path}/webhook", None), ("DELETE", f"{path}/webhook", None),
        ("GET", f"{path}/stats", None), ("GET", f"{path}/pipelines", None),
        ("PUT", f"{path}/pipelines/{their_pipeline}", None), ("DELETE", f"{path}/pipelines/{their_pipeline}", None),
        ("GET", f"{path}/webhook_events", None), ("GET", f"{path}/webhook_events/{event_id}", None),
    ]:
        response = other.client.request(method, url, json=body)
        assert response.status_code == 404, (method, url, response.text)
        assert response.json()["detail"] == "repository not found"
    assert other.client.get("/repositories").json() == {"data": [], "count": 0}
    assert other.client.post("/repositories", json={"provider_id": provider["id"], "full_name": "x/y"}).status_code == 422
    assert owner.client.get(path).json() == repo


def test_a_viewer_reads_but_cannot_change_repositories(stack):
    viewer = stack.account(role="viewer").client
    assert viewer.get("/repositories").status_code == 200
    for method, url, body in [
        ("POST", "/repositories", {"provider_id": 1, "full_name": "a/b"}), ("POST", "/repositories/sync",
                                                                             {"credential_id": 1}),
        ("PATCH", "/repositories/1", {}), ("DELETE", "/repositories/1", None), ("POST", "/repositories/1/sync", None),
        ("POST", "/repositories/1/webhook", None), ("DELETE", "/repositories/1/webhook", None),
        ("PUT", "/repositories/1/pipelines/1", None), ("DELETE", "/repositories/1/pipelines/1", None),
    ]:
        response = viewer.request(method, url, json=body)
        assert response.status_code == 403, (method, url, response.text)


def test_sync_rows_belong_to_the_account_only(stack, fakes):
    first = stack.account().client
    _, credential = connect(first, fakes["gitea"], "gitea")
    sync(first, credential["id"])
    second = stack.account().client
    assert second.get("/repositories").json()["count"] == 0
    response = second.post("/repositories/sync", json={"credential_id": credential["id"]})
    assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["body", "credential_id"]
    with stack.sessions() as session:
        owners = set(session.scalars(select(GitRepository.account_id).where(
            GitRepository.credential_id == credential["id"])))
    assert len(owners) == 1
