"""Git providers and credentials: CRUD, 422s naming the field, write-only tokens encrypted at rest,
and the test connection against the four fake provider servers over real HTTP."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import select

from db.crypto import SecretBox
from db.models import GitProvider, GitProviderCredential
from tests.adapters.git_providers.fakes import FAKES, TOKEN, FakeProviderServer

EXPECTED_USERS = {
    "github": ("octocat", "The Octocat", ["repo", "admin:repo_hook", "read:user"]),
    "gitlab": ("root", "Administrator", ["api", "read_user"]),
    "gitea": ("gitea_admin", "Gitea Admin", []),
    "bitbucket": ("ada", "Ada Lovelace", ["repository:write", "pullrequest:write", "webhook", "account"]),
}


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, FakeProviderServer]]:
    started = {name: cls().start() for name, cls in FAKES.items()}
    yield started
    for server in started.values():
        server.stop()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def create_provider(client, provider_type: str = "github", base_url: str | None = None, **extra) -> dict:
    body = {"name": extra.pop("name", f"{provider_type}-{uuid.uuid4().hex[:6]}"), "provider_type": provider_type,
            **({"base_url": base_url} if base_url else {}), **extra}
    response = client.post("/providers", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def add_credential(client, provider_id: int, token: str, name: str = "bot") -> dict:
    response = client.post(f"/providers/{provider_id}/credentials", json={"name": name, "token": token})
    assert response.status_code == 201, response.text
    return response.json()


def stored_credential(stack, credential_id: int) -> GitProviderCredential:
    with stack.sessions() as session:
        return session.scalar(select(GitProviderCredential).where(GitProviderCredential.id == credential_id))


# ---- providers ----------------------------------------------------------------------------


def test_providers_are_created_listed_shown_updated_and_deleted(stack):
    client = stack.account().client
    github = create_provider(client, "github", name="public github")
    gitea = create_provider(client, "gitea", "https://gitea.example.com/", name="our gitea")
    assert github["base_url"] is None and github["is_active"] is True
    assert github["capabilities"] == sorted(
        ["repos", "branches", "commits", "pull_requests", "issues", "webhooks", "devops"])
    assert gitea["base_url"] == "https://gitea.example.com"  # trailing slash dropped
    assert "act_runner" in gitea["capabilities"]
    gitlab = create_provider(client, "gitlab", name="gitlab")
    assert "merge_requests" in gitlab["capabilities"] and "pull_requests" not in gitlab["capabilities"]
    bitbucket = create_provider(client, "bitbucket", name="bitbucket")
    assert "pipelines" in bitbucket["capabilities"] and "devops" not in bitbucket["capabilities"]

    listed = client.get("/providers").json()
    assert listed["count"] == 4
    assert [p["name"] for p in listed["data"]] == ["bitbucket", "gitlab", "our gitea", "public github"]
    assert client.get(f"/providers/{gitea['id']}").json() == gitea

    patched = client.patch(f"/providers/{github['id']}", json={"is_active": False, "name": "ghe",
                                                                "base_url": "https://ghe.example.com/api/v3"})
    assert patched.status_code == 200, patched.text
    assert (patched.json()["name"], patched.json()["is_active"], patched.json()["base_url"]) == (
        "ghe", False, "https://ghe.example.com/api/v3")
    back = client.patch(f"/providers/{github['id']}", json={"base_url": None})
    assert back.json()["base_url"] is None and back.json()["name"] == "ghe"

    assert client.post("/providers", json={"name": "ghe", "provider_type": "github"}).status_code == 409
    assert client.patch(f"/providers/{gitlab['id']}", json={"name": "ghe"}).status_code == 409

    add_credential(client, gitea["id"], "tok-" + uuid.uuid4().hex)
    assert client.delete(f"/providers/{gitea['id']}").status_code == 204
    assert client.get(f"/providers/{gitea['id']}").status_code == 404
    assert client.delete(f"/providers/{gitea['id']}").status_code == 404
    with stack.sessions() as session:
        assert session.scalar(select(GitProviderCredential).where(
            GitProviderCredential.provider_id == gitea["id"])) is None
        assert session.get(GitProvider, gitea["id"]) is None
    assert client.get("/providers").json()["count"] == 3


@pytest.mark.parametrize(("body", "loc"), [
    ({"name": "x", "provider_type": "sourcehut"}, ["body", "provider_type"]),
    ({"name": "x", "provider_type": "gitea"}, ["body", "base_url"]),
    ({"name": "x", "provider_type": "gitlab", "base_url": "ftp://gitlab.example.com"}, ["body", "base_url"]),
    ({"name": "x", "provider_type": "gitlab", "base_url": "gitlab.example.com"}, ["body", "base_url"]),
    ({"name": "", "provider_type": "github"}, ["body", "name"]),
    ({"name": "x", "provider_type": "github", "token": "t"}, ["body", "token"]),
], ids=["unknown_type", "gitea_without_base_url", "ftp_base_url", "no_scheme", "empty_name", "unknown_field"])
def test_invalid_provider_is_422_naming_the_field_and_stores_nothing(stack, body, loc):
    client = stack.account().client
    response = client.post("/providers", json=body)
    assert response.status_code == 422, response.text
    assert [e["loc"] for e in response.json()["detail"]] == [loc]
    assert client.get("/providers").json() == {"data": [], "count": 0}


@pytest.mark.parametrize(("body", "loc"), [
    ({"base_url": None}, ["body", "base_url"]),  # gitea needs one
    ({"base_url": "file:///etc/passwd"}, ["body", "base_url"]),
    ({"name": None}, ["body", "name"]),
    ({"provider_type": "github"}, ["body", "provider_type"]),  # the type is fixed
], ids=["gitea_base_url_null", "file_url", "null_name", "type_change"])
def test_invalid_update_is_422_naming_the_field(stack, body, loc):
    client = stack.account().client
    gitea = create_provider(client, "gitea", "https://gitea.example.com")
    response = client.patch(f"/providers/{gitea['id']}", json=body)
    assert response.status_code == 422, response.text
    assert [e["loc"] for e in response.json()["detail"]] == [loc]
    assert client.get(f"/providers/{gitea['id']}").json() == gitea


# ---- credentials --------------------------------------------------------------------------


def test_a_token_is_write_only_and_encrypted_at_rest(stack):
    acct = stack.account()
    client = acct.client
    token = f"ghp_{uuid.uuid4().hex}"
    provider = create_provider(client, "github")
    created = client.post(f"/providers/{provider['id']}/credentials", json={"name": "ci-bot", "token": token})
    assert created.status_code == 201, created.text
    assert token not in created.text
    assert created.json()["name"] == "ci-bot" and created.json()["auth_type"] == "token"
    assert "token" not in created.json() and "encrypted_token" not in created.json()
    assert created.json()["last_test_ok"] is None and created.json()["scopes"] == []

    listed = client.get(f"/providers/{provider['id']}/credentials")
    assert listed.json()["count"] == 1 and listed.json()["data"] == [created.json()]
    for response in (listed, client.get("/providers"), client.get(f"/providers/{provider['id']}")):
        assert token not in response.text

    row = stored_credential(stack, created.json()["id"])
    stored = bytes(row.encrypted_token)
    assert token.encode() not in stored
    assert row.account_id == acct.id
    assert SecretBox(stack.settings.secret_key).decrypt(stored) == token

    duplicate = client.post(f"/providers/{provider['id']}/credentials", json={"name": "ci-bot", "token": "x"})
    assert duplicate.status_code == 409
    bad = client.post(f"/providers/{provider['id']}/credentials", json={"name": "empty", "token": ""})
    assert bad.status_code == 422 and [e["loc"] for e in bad.json()["detail"]] == [["body", "token"]]
    assert token not in bad.text

    gone = f"/providers/{provider['id']}/credentials/{created.json()['id']}"
    assert client.delete(gone).status_code == 204
    assert client.delete(gone).status_code == 404
    assert client.get(f"/providers/{provider['id']}/credentials").json() == {"data": [], "count": 0}


# ---- test connection ----------------------------------------------------------------------


@pytest.mark.parametrize("provider_type", list(FAKES))
def test_connection_reports_who_the_token_belongs_to(stack, servers, provider_type):
    client = stack.account().client
    fake = servers[provider_type]
    provider = create_provider(client, provider_type, fake.base_url)
    credential = add_credential(client, provider["id"], TOKEN)
    response = client.post(f"/providers/{provider['id']}/test")
    assert response.status_code == 200, response.text
    login, name, scopes = EXPECTED_USERS[provider_type]
    assert response.json() == {"ok": True, "credential_id": credential["id"], "login": login, "name": name,
                               "scopes": scopes, "error": None}
    assert TOKEN not in response.text

    recorded = client.get(f"/providers/{provider['id']}/credentials").json()["data"][0]
    assert (recorded["last_test_ok"], recorded["username"], recorded["scopes"]) == (True, login, scopes)
    assert recorded["last_tested_at"] is not None and recorded["last_test_error"] is None


def test_a_wrong_token_answers_ok_false_with_the_401_and_never_the_token(stack, servers):
    client = stack.account().client
    provider = create_provider(client, "github", servers["github"].base_url)
    good = add_credential(client, provider["id"], TOKEN, name="good")
    wrong_token = f"ghp_wrong_{uuid.uuid4().hex}"
    wrong = add_credential(client, provider["id"], wrong_token, name="wrong")

    response = client.post(f"/providers/{provider['id']}/test", json={"credential_id": wrong["id"]})
    assert response.status_code == 200, response.text
    assert response.json()["ok"] is False and response.json()["credential_id"] == wrong["id"]
    assert response.json()["error"] == "the provider refused the credential (401)"
    assert wrong_token not in response.text

    credentials = client.get(f"/providers/{provider['id']}/credentials")
    assert wrong_token not in credentials.text
    by_id = {c["id"]: c for c in credentials.json()["data"]}
    assert by_id[wrong["id"]]["last_test_ok"] is False
    assert by_id[wrong["id"]]["last_test_error"] == "the provider refused the credential (401)"
    assert by_id[good["id"]]["last_test_ok"] is None  # only the named credential was tested

    # without credential_id: the provider's first credential
    assert client.post(f"/providers/{provider['id']}/test").json()["credential_id"] == good["id"]


@pytest.mark.parametrize("provider_type", ["github", "gitea"])
def test_an_unreachable_provider_answers_could_not_be_reached(stack, servers, provider_type):
    client = stack.account().client
    base_url = f"http://127.0.0.1:{closed_port()}{servers[provider_type].prefix}"
    provider = create_provider(client, provider_type, base_url)
    token = f"tok-{uuid.uuid4().hex}"
    add_credential(client, provider["id"], token)
    response = client.post(f"/providers/{provider['id']}/test")
    assert response.status_code == 200, response.text
    assert response.json()["ok"] is False
    assert response.json()["error"] == "the provider could not be reached"
    assert token not in response.text


def test_test_connection_needs_a_credential_of_that_provider(stack):
    client = stack.account().client
    provider = create_provider(client, "github")
    other = create_provider(client, "gitlab")
    credential = add_credential(client, other["id"], "tok")
    assert client.post(f"/providers/{provider['id']}/test").status_code == 409
    response = client.post(f"/providers/{provider['id']}/test", json={"credential_id": credential["id"]})
    assert response.status_code == 404 and response.json() == {"detail": "credential not found"}


# ---- accounts and roles --------------------------------------------------------------------


def test_another_accounts_provider_answers_404_on_every_route(stack):
    owner = stack.account().client
    provider = create_provider(owner, "github")
    credential = add_credential(owner, provider["id"], "tok")
    other = stack.account().client
    path = f"/providers/{provider['id']}"
    for method, url, body in [
        ("GET", path, None), ("PATCH", path, {"is_active": False}), ("DELETE", path, None),
        ("GET", f"{path}/credentials", None), ("POST", f"{path}/credentials", {"name": "x", "token": "y"}),
        ("DELETE", f"{path}/credentials/{credential['id']}", None), ("POST", f"{path}/test", None),
    ]:
        response = other.request(method, url, json=body)
        assert response.status_code == 404, (method, url, response.text)
        assert response.json()["detail"] == "provider not found"
    assert other.get("/providers").json() == {"data": [], "count": 0}
    assert owner.get(path).json() == provider
    assert owner.get(f"{path}/credentials").json()["count"] == 1


def test_a_viewer_reads_but_cannot_change_providers(stack):
    viewer = stack.account(role="viewer").client
    assert viewer.get("/providers").status_code == 200
    for method, url, body in [
        ("POST", "/providers", {"name": "x", "provider_type": "github"}), ("PATCH", "/providers/1", {}),
        ("DELETE", "/providers/1", None), ("POST", "/providers/1/credentials", {"name": "x", "token": "y"}),
        ("DELETE", "/providers/1/credentials/1", None), ("POST", "/providers/1/test", None),
    ]:
        response = viewer.request(method, url, json=body)
        assert response.status_code == 403, (method, url, response.text)


def test_internal_base_urls_are_refused_unless_allowed():
    # the stack allows private targets (the fakes listen on 127.0.0.1); this is the check behind the switch
    from api.routes.providers import _private_address

    for url in ("http://127.0.0.1:3000", "https://10.1.2.3/api/v3", "http://169.254.169.254", "http://[::1]:80"):
        refusal = asyncio.run(_private_address(url))
        assert refusal is not None and "DEVOPS_NOTIFY_ALLOW_PRIVATE_TARGETS=true" in refusal, url
    assert asyncio.run(_private_address("https://8.8.8.8/api")) is None


def test_the_test_connection_refuses_an_internal_base_url_when_private_targets_are_off(stack, servers):
    client = stack.account().client
    provider = create_provider(client, "gitea", servers["gitea"].base_url)
    add_credential(client, provider["id"], TOKEN)
    servers["gitea"].reset()
    stack.settings.notify_allow_private_targets = False  # the running API reads this very object
    try:
        response = client.post(f"/providers/{provider['id']}/test")
    finally:
        stack.settings.notify_allow_private_targets = True
    assert response.status_code == 200, response.text
    assert response.json()["ok"] is False
    assert "127.0.0.1, a loopback, private or link-local address; refused" in response.json()["error"]
    assert not servers["gitea"].requests  # nothing was sent
