"""OAuth authorization-code flow for git providers: authorize → the fake provider's 302 → callback →
an encrypted ``auth_type='oauth'`` credential; single-use, expiring, account-bound states; the
provider's errors; refresh before use; OAuth fields on providers (write-only secret, 422s)."""

from __future__ import annotations

import hashlib
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from sqlalchemy import select, update

from adapters.git_providers.credentials import access_for_credential
from adapters.git_providers.oauth import web_url
from db.crypto import SecretBox
from db.models import GitProvider, GitProviderCredential, OAuthState
from tests.adapters.git_providers.fakes import FAKES, FakeProviderServer

CALLBACK_PATH = "/api/v1/devops/providers/oauth/callback"
LOGINS = {"github": "octocat", "gitlab": "root", "gitea": "gitea_admin", "bitbucket": "ada"}
AUTHORIZE_PATHS = {"github": "/login/oauth/authorize", "gitlab": "/oauth/authorize",
                   "gitea": "/login/oauth/authorize", "bitbucket": "/site/oauth2/authorize"}
WRONG_SECRET_ERRORS = {"github": "incorrect_client_credentials", "gitlab": "invalid_client",
                       "gitea": "unauthorized_client", "bitbucket": "invalid_client"}
PROVIDERS = list(FAKES)


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, FakeProviderServer]]:
    started = {name: cls().start() for name, cls in FAKES.items()}
    yield started
    for server in started.values():
        server.stop()


def oauth_provider(client: httpx.Client, fake: FakeProviderServer, provider_type: str, **extra) -> dict:
    body = {"name": f"{provider_type}-{uuid.uuid4().hex[:6]}", "provider_type": provider_type,
            "base_url": fake.base_url, "oauth_client_id": fake.OAUTH_CLIENT_ID,
            "oauth_client_secret": fake.OAUTH_CLIENT_SECRET, "oauth_scopes": ["repo", "read:user"], **extra}
    response = client.post("/providers", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def start(client: httpx.Client, provider_id: int, name: str = "oauth") -> str:
    """The provider's authorize URL, from the 302 our API answers."""
    response = client.get(f"/providers/{provider_id}/oauth/authorize", params={"credential_name": name},
                          follow_redirects=False)
    assert response.status_code == 302, response.text
    return response.headers["location"]


def approve(authorize_url: str) -> str:
    """What the user's browser does at the provider: the provider's 302 back to our callback."""
    response = httpx.get(authorize_url, follow_redirects=False)
    assert response.status_code == 302, response.text
    return response.headers["location"]


def callback(url: str, client: httpx.Client | None = None) -> httpx.Response:
    """The browser comes back without our bearer token (unless ``client`` carries one)."""
    return client.get(url) if client is not None else httpx.get(url, timeout=60)


def state_of(url: str) -> str:
    return parse_qs(urlsplit(url).query)["state"][0]


def credentials(stack, provider_id: int) -> list[GitProviderCredential]:
    with stack.sessions() as session:
        return list(session.scalars(select(GitProviderCredential)
                                    .where(GitProviderCredential.provider_id == provider_id)))


def box(stack) -> SecretBox:
    return SecretBox(stack.settings.secret_key)


# ---- the flow -------------------------------------------------------------------------------


@pytest.mark.parametrize("provider_type", PROVIDERS)
def test_the_full_flow_stores_an_encrypted_oauth_credential(stack, servers, provider_type):
    acct = stack.account()
    client = acct.client
    fake = servers[provider_type]
    provider = oauth_provider(client, fake, provider_type)

    authorize_url = start(client, provider["id"], name="me")
    parts = urlsplit(authorize_url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == fake.origin + AUTHORIZE_PATHS[provider_type]
    assert query["client_id"] == fake.OAUTH_CLIENT_ID and query["response_type"] == "code"
    assert query["redirect_uri"] == stack.url + CALLBACK_PATH
    assert len(query["state"]) >= 40
    if provider_type != "bitbucket":  # Bitbucket takes scopes from the consumer's settings
        assert query["scope"] == "repo read:user"

    back = approve(authorize_url)
    assert back.startswith(stack.url + CALLBACK_PATH + "?")
    response = callback(back)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["name"], body["auth_type"], body["provider_id"]) == ("me", "oauth", provider["id"])
    assert "token" not in body and "refresh_token" not in body

    [row] = credentials(stack, provider["id"])
    assert row.account_id == acct.id and row.auth_type == "oauth"
    access = box(stack).decrypt(bytes(row.encrypted_token))
    refresh = box(stack).decrypt(bytes(row.encrypted_refresh_token))
    assert access in fake.oauth_access_tokens and refresh in fake.oauth_refresh_tokens
    assert access.encode() not in bytes(row.encrypted_token)
    expected_expiry = datetime.now(UTC) + timedelta(seconds=fake.oauth_expires_in)
    assert abs((row.token_expires_at - expected_expiry).total_seconds()) < 60
    for text in (response.text, client.get(f"/providers/{provider['id']}/credentials").text,
                 client.get(f"/providers/{provider['id']}").text, client.get("/providers").text):
        assert access not in text and refresh not in text and fake.OAUTH_CLIENT_SECRET not in text

    with stack.sessions() as session:
        state = session.scalar(select(OAuthState).where(OAuthState.provider_id == provider["id"]))
        assert state.used_at is not None and state.user_id == acct.user_id and state.credential_name == "me"
        assert state.state_hash == hashlib.sha256(query["state"].encode()).hexdigest()


@pytest.mark.parametrize("provider_type", [
    "github",
    "gitlab",
    "gitea",
    "bitbucket",
])
def test_the_oauth_token_opens_the_providers_api_and_fills_the_username(stack, servers, provider_type):
    client = stack.account().client
    fake = servers[provider_type]
    provider = oauth_provider(client, fake, provider_type)
    response = callback(approve(start(client, provider["id"])))
    assert response.status_code == 200, response.text
    assert response.json()["username"] == LOGINS[provider_type]
    assert response.json()["last_test_ok"] is True and response.json()["last_test_error"] is None

    tested = client.post(f"/providers/{provider['id']}/test")
    assert tested.status_code == 200 and tested.json()["ok"] is True, tested.text


def test_authorize_answers_json_for_scripts(stack, servers):
    client = stack.account().client
    provider = oauth_provider(client, servers["gitea"], "gitea")
    response = client.get(f"/providers/{provider['id']}/oauth/authorize", headers={"Accept": "application/json"})
    assert response.status_code == 200, response.text
    assert response.json()["authorize_url"].startswith(servers["gitea"].origin + "/login/oauth/authorize?")
    assert callback(approve(response.json()["authorize_url"])).status_code == 200
    assert [c.name for c in credentials(stack, provider["id"])] == ["oauth"]  # the default name


def test_a_second_flow_replaces_the_credential_of_that_name(stack, servers):
    client = stack.account().client
    fake = servers["github"]
    provider = oauth_provider(client, fake, "github")
    first = callback(approve(start(client, provider["id"], name="bot"))).json()
    second = callback(approve(start(client, provider["id"], name="bot"))).json()
    assert first["id"] == second["id"]
    [row] = credentials(stack, provider["id"])
    assert box(stack).decrypt(bytes(row.encrypted_token)) in fake.oauth_access_tokens


# ---- states ---------------------------------------------------------------------------------


def test_a_forged_state_is_400_and_stores_nothing(stack, servers):
    client = stack.account().client
    fake = servers["github"]
    provider = oauth_provider(client, fake, "github")
    back = approve(start(client, provider["id"]))
    forged = back.replace(state_of(back), "forged-" + uuid.uuid4().hex)
    grants = len(fake.oauth_grants)
    response = callback(forged)
    assert response.status_code == 400 and "unknown OAuth state" in response.json()["detail"]
    assert callback(f"{stack.url}{CALLBACK_PATH}?code=x").status_code == 400  # no state at all
    assert credentials(stack, provider["id"]) == [] and len(fake.oauth_grants) == grants


def test_a_reused_state_is_400_and_leaves_one_credential(stack, servers):
    client = stack.account().client
    fake = servers["gitlab"]
    provider = oauth_provider(client, fake, "gitlab")
    back = approve(start(client, provider["id"]))
    assert callback(back).status_code == 200
    again = callback(back)
    assert again.status_code == 400 and "already used" in again.json()["detail"]
    assert len(credentials(stack, provider["id"])) == 1


def test_concurrent_callbacks_with_one_state_exchange_the_code_once(stack, servers):
    client = stack.account().client
    fake = servers["gitea"]
    provider = oauth_provider(client, fake, "gitea")
    back = approve(start(client, provider["id"]))
    grants = len(fake.oauth_grants)
    results: list[int] = []
    barrier = threading.Barrier(4)

    def hit() -> None:
        barrier.wait()
        results.append(callback(back).status_code)

    threads = [threading.Thread(target=hit) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(results) == [200, 400, 400, 400]
    assert fake.oauth_grants[grants:] == ["authorization_code"]
    assert len(credentials(stack, provider["id"])) == 1


def test_an_expired_state_is_400_and_stores_nothing(stack, servers):
    client = stack.account().client
    provider = oauth_provider(client, servers["bitbucket"], "bitbucket")
    back = approve(start(client, provider["id"]))
    with stack.sessions.begin() as session:
        session.execute(update(OAuthState).where(OAuthState.provider_id == provider["id"])
                        .values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    response = callback(back)
    assert response.status_code == 400 and "expired" in response.json()["detail"]
    assert credentials(stack, provider["id"]) == []


def test_a_state_always_binds_to_the_account_that_minted_it(stack, servers):
    owner = stack.account()
    other = stack.account()
    fake = servers["github"]
    provider = oauth_provider(owner.client, fake, "github")
    other_provider = oauth_provider(other.client, fake, "github")
    back = approve(start(owner.client, provider["id"]))
    response = callback(back, other.client)  # another account's bearer token changes nothing
    assert response.status_code == 200, response.text
    assert response.json()["provider_id"] == provider["id"]
    [row] = credentials(stack, provider["id"])
    assert row.account_id == owner.id
    assert credentials(stack, other_provider["id"]) == []
    assert other.client.get(f"/providers/{provider['id']}/credentials").status_code == 404


def test_the_providers_error_consumes_the_state_and_is_400(stack, servers):
    client = stack.account().client
    fake = servers["gitlab"]
    provider = oauth_provider(client, fake, "gitlab")
    fake.oauth_deny = True
    try:
        back = approve(start(client, provider["id"]))
    finally:
        fake.oauth_deny = False
    assert parse_qs(urlsplit(back).query)["error"] == ["access_denied"]
    response = callback(back)
    assert response.status_code == 400 and "error=access_denied" in response.json()["detail"]
    reuse = callback(f"{stack.url}{CALLBACK_PATH}?code=anything&state={state_of(back)}")
    assert reuse.status_code == 400 and "already used" in reuse.json()["detail"]
    assert credentials(stack, provider["id"]) == []


@pytest.mark.parametrize("provider_type", PROVIDERS)
def test_a_wrong_client_secret_is_400_with_the_providers_error(stack, servers, provider_type):
    client = stack.account().client
    fake = servers[provider_type]
    wrong = f"wrong-secret-{uuid.uuid4().hex}"
    provider = oauth_provider(client, fake, provider_type, oauth_client_secret=wrong)
    response = callback(approve(start(client, provider["id"])))
    assert response.status_code == 400, response.text
    assert f"({WRONG_SECRET_ERRORS[provider_type]})" in response.json()["detail"]
    assert wrong not in response.text
    assert credentials(stack, provider["id"]) == []


def test_a_refused_code_is_400(stack, servers):
    client = stack.account().client
    provider = oauth_provider(client, servers["github"], "github")
    back = approve(start(client, provider["id"]))
    code = parse_qs(urlsplit(back).query)["code"][0]
    response = callback(back.replace(code, "not-the-code"))
    assert response.status_code == 400 and "(bad_verification_code)" in response.json()["detail"]
    assert "not-the-code" not in response.text
    assert credentials(stack, provider["id"]) == []


def test_the_exchange_refuses_an_internal_token_endpoint_when_private_targets_are_off(stack, servers):
    client = stack.account().client
    fake = servers["gitea"]
    provider = oauth_provider(client, fake, "gitea")
    back = approve(start(client, provider["id"]))
    grants = len(fake.oauth_grants)
    stack.settings.notify_allow_private_targets = False  # the running API reads this very object
    try:
        response = callback(back)
    finally:
        stack.settings.notify_allow_private_targets = True
    assert response.status_code == 400, response.text
    assert "a loopback, private or link-local address; refused" in response.json()["detail"]
    assert len(fake.oauth_grants) == grants and credentials(stack, provider["id"]) == []


# ---- refresh --------------------------------------------------------------------------------


@pytest.mark.parametrize("provider_type", PROVIDERS)
def test_an_expiring_token_is_refreshed_before_use(stack, servers, provider_type):
    acct = stack.account()
    fake = servers[provider_type]
    provider = oauth_provider(acct.client, fake, provider_type)
    credential = callback(approve(start(acct.client, provider["id"]))).json()
    [row] = credentials(stack, provider["id"])
    old_access = box(stack).decrypt(bytes(row.encrypted_token))
    old_refresh = box(stack).decrypt(bytes(row.encrypted_refresh_token))

    # not yet due: no refresh
    with stack.sessions() as session:
        access = access_for_credential(session, stack.settings, acct.id, credential["id"])
        access.close()
        assert access.token == old_access
    grants = len(fake.oauth_grants)

    with stack.sessions.begin() as session:
        session.execute(update(GitProviderCredential).where(GitProviderCredential.id == credential["id"])
                        .values(token_expires_at=datetime.now(UTC) + timedelta(seconds=30)))
    with stack.sessions() as session:
        access = access_for_credential(session, stack.settings, acct.id, credential["id"])
        access.close()
        session.commit()
    assert fake.oauth_grants[grants:] == ["refresh_token"]
    assert access.token != old_access and access.token in fake.oauth_access_tokens
    assert old_refresh not in fake.oauth_refresh_tokens  # rotated

    [row] = credentials(stack, provider["id"])
    assert box(stack).decrypt(bytes(row.encrypted_token)) == access.token
    new_refresh = box(stack).decrypt(bytes(row.encrypted_refresh_token))
    assert new_refresh != old_refresh and new_refresh in fake.oauth_refresh_tokens
    assert row.token_expires_at > datetime.now(UTC) + timedelta(minutes=30)


def test_a_refused_refresh_is_an_auth_error_and_keeps_the_row(stack, servers):
    from adapters.git_providers import AuthError

    acct = stack.account()
    fake = servers["gitea"]
    provider = oauth_provider(acct.client, fake, "gitea")
    credential = callback(approve(start(acct.client, provider["id"]))).json()
    fake.oauth_refresh_tokens.clear()  # revoked at the provider
    with stack.sessions.begin() as session:
        session.execute(update(GitProviderCredential).where(GitProviderCredential.id == credential["id"])
                        .values(token_expires_at=datetime.now(UTC) - timedelta(hours=1)))
    with stack.sessions() as session, pytest.raises(AuthError) as raised:
        access_for_credential(session, stack.settings, acct.id, credential["id"])
    assert "invalid_grant" in str(raised.value) and "oauth-refresh" not in str(raised.value)
    assert len(credentials(stack, provider["id"])) == 1


# ---- provider OAuth fields -------------------------------------------------------------------


def test_the_client_secret_is_write_only_and_encrypted(stack, servers):
    client = stack.account().client
    secret = f"s3cret-{uuid.uuid4().hex}"
    created = client.post("/providers", json={
        "name": "ghe", "provider_type": "github", "base_url": "https://ghe.example.com/api/v3",
        "oauth_client_id": "Iv1.abc", "oauth_client_secret": secret, "oauth_scopes": ["repo"],
        "oauth_base_url": "https://login.example.com/"})
    assert created.status_code == 201, created.text
    body = created.json()
    assert (body["oauth_client_id"], body["oauth_configured"], body["oauth_scopes"], body["oauth_base_url"]) == (
        "Iv1.abc", True, ["repo"], "https://login.example.com")
    assert "oauth_client_secret" not in body and secret not in created.text
    for response in (client.get("/providers"), client.get(f"/providers/{body['id']}")):
        assert secret not in response.text
    with stack.sessions() as session:
        stored = bytes(session.get(GitProvider, body["id"]).encrypted_oauth_client_secret)
    assert secret.encode() not in stored and box(stack).decrypt(stored) == secret

    authorize = client.get(f"/providers/{body['id']}/oauth/authorize", headers={"Accept": "application/json"})
    assert authorize.json()["authorize_url"].startswith("https://login.example.com/login/oauth/authorize?")
    assert secret not in authorize.text

    cleared = client.patch(f"/providers/{body['id']}", json={"oauth_client_secret": None})
    assert cleared.status_code == 200 and cleared.json()["oauth_configured"] is False
    refused = client.get(f"/providers/{body['id']}/oauth/authorize")
    assert refused.status_code == 409 and "oauth_client_secret" in refused.json()["detail"]


def test_authorize_without_an_oauth_application_is_409_saying_what_to_set(stack):
    client = stack.account().client
    provider = client.post("/providers", json={"name": "gh", "provider_type": "github"}).json()
    response = client.get(f"/providers/{provider['id']}/oauth/authorize")
    assert response.status_code == 409
    assert "oauth_client_id and oauth_client_secret" in response.json()["detail"]
    assert provider["oauth_configured"] is False and provider["oauth_client_id"] is None


def test_authorize_is_404_for_another_account_and_403_for_a_viewer(stack, servers):
    owner = stack.account().client
    provider = oauth_provider(owner, servers["github"], "github")
    other = stack.account().client
    response = other.get(f"/providers/{provider['id']}/oauth/authorize")
    assert response.status_code == 404 and response.json()["detail"] == "provider not found"
    viewer = stack.account(role="viewer").client
    assert viewer.get(f"/providers/{provider['id']}/oauth/authorize").status_code == 403
    with stack.sessions() as session:
        assert session.scalar(select(OAuthState).where(OAuthState.provider_id == provider["id"])) is None


@pytest.mark.parametrize(("body", "loc"), [
    ({"oauth_base_url": "ftp://login.example.com"}, ["body", "oauth_base_url"]),
    ({"oauth_base_url": "login.example.com"}, ["body", "oauth_base_url"]),
    ({"oauth_scopes": "repo"}, ["body", "oauth_scopes"]),
    ({"oauth_scopes": ["repo user"]}, ["body", "oauth_scopes", 0]),
    ({"oauth_scopes": [""]}, ["body", "oauth_scopes", 0]),
    ({"oauth_client_id": ""}, ["body", "oauth_client_id"]),
    ({"oauth_client_secret": ""}, ["body", "oauth_client_secret"]),
], ids=["ftp_oauth_base_url", "no_scheme", "scopes_not_a_list", "scope_with_space", "empty_scope",
        "empty_client_id", "empty_secret"])
def test_bad_oauth_fields_are_422_naming_the_field(stack, body, loc):
    client = stack.account().client
    response = client.post("/providers", json={"name": "x", "provider_type": "github", **body})
    assert response.status_code == 422, response.text
    assert [e["loc"] for e in response.json()["detail"]] == [loc]
    assert client.get("/providers").json()["count"] == 0

    provider = client.post("/providers", json={"name": "y", "provider_type": "github"}).json()
    patched = client.patch(f"/providers/{provider['id']}", json=body)
    assert patched.status_code == 422 and [e["loc"] for e in patched.json()["detail"]] == [loc]
    assert client.get(f"/providers/{provider['id']}").json() == provider


def test_oauth_scopes_may_not_be_null_on_update(stack):
    client = stack.account().client
    provider = client.post("/providers", json={"name": "y", "provider_type": "gitlab"}).json()
    response = client.patch(f"/providers/{provider['id']}", json={"oauth_scopes": None})
    assert response.status_code == 422 and [e["loc"] for e in response.json()["detail"]] == [
        ["body", "oauth_scopes"]]


# ---- where the endpoints live (pure) --------------------------------------------------------


@pytest.mark.parametrize(("provider_type", "base_url", "oauth_base_url", "expected"), [
    ("github", None, None, "https://github.com"),
    ("github", "https://api.github.com", None, "https://github.com"),
    ("github", "https://ghe.example.com/api/v3", None, "https://ghe.example.com"),
    ("github", "https://ghe.example.com/api/v3", "https://sso.example.com/", "https://sso.example.com"),
    ("gitlab", None, None, "https://gitlab.com"),
    ("gitlab", "https://git.example.com/gitlab/api/v4", None, "https://git.example.com/gitlab"),
    ("gitea", "https://gitea.example.com/api/v1", None, "https://gitea.example.com"),
    ("gitea", "https://gitea.example.com", None, "https://gitea.example.com"),
    ("bitbucket", None, None, "https://bitbucket.org"),
    ("bitbucket", "https://api.bitbucket.org/2.0", None, "https://bitbucket.org"),
])
def test_the_web_origin_is_derived_from_the_base_url(provider_type, base_url, oauth_base_url, expected):
    assert web_url(provider_type, base_url, oauth_base_url) == expected
