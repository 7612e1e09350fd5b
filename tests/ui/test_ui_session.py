"""The dashboard's sign-in: ``POST /ui/session`` turns an API token into an HttpOnly session
cookie plus a readable CSRF cookie; the API accepts the cookie when there is no Authorization
header, and a change made with it must carry ``X-CSRF-Token`` equal to the CSRF cookie. The
static shell comes with a CSP that allows this origin only."""

from __future__ import annotations

import re

import httpx
import pytest

SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
PIPELINE = {"name": "cookie-made", "steps": [{"id": "a", "type": "run_tests", "with": {"command": "true"}}]}


def browser_client(stack) -> httpx.Client:
    client = httpx.Client(base_url=stack.url, timeout=30)
    stack._clients.append(client)
    return client


def signed_in(stack, token: str) -> tuple[httpx.Client, str]:
    client = browser_client(stack)
    response = client.post("/ui/session", json={"token": token})
    assert response.status_code == 200, response.text
    return client, client.cookies["devops_csrf"]


def pipeline_names(acct) -> list[str]:
    return [p["name"] for p in acct.client.get("/pipelines").json()["data"]]


@SQLITE_ONLY
def test_a_wrong_token_signs_nobody_in(stack):
    client = browser_client(stack)
    for body in ({"token": "dvo_not-a-real-token"}, {"token": ""}):
        response = client.post("/ui/session", json=body)
        assert response.status_code == 401, response.text
        assert "set-cookie" not in response.headers
    assert client.post("/ui/session", json={"nope": 1}).status_code == 422
    assert not client.cookies
    assert client.get("/api/v1/devops/users/me").status_code == 401


@SQLITE_ONLY
def test_the_session_cookie_reads_and_changes_only_with_the_csrf_token(stack):
    acct = stack.account()
    client, csrf = signed_in(stack, acct.token)
    cookies = client.cookies
    # how the cookies were set: the token HttpOnly and SameSite=Strict; the CSRF value readable
    response = browser_client(stack).post("/ui/session", json={"token": acct.token})
    set_cookies = response.headers.get_list("set-cookie")
    session_cookie = next(c for c in set_cookies if c.startswith("devops_session="))
    csrf_cookie = next(c for c in set_cookies if c.startswith("devops_csrf="))
    assert re.search(r"(?i)httponly", session_cookie) and re.search(r"(?i)samesite=strict", session_cookie)
    assert not re.search(r"(?i)httponly", csrf_cookie) and re.search(r"(?i)samesite=strict", csrf_cookie)
    assert not re.search(r"(?i)secure", session_cookie)  # plain http here; https sets Secure
    assert cookies["devops_session"] == acct.token and len(csrf) >= 32

    me = client.get("/api/v1/devops/users/me")
    assert me.status_code == 200 and me.json()["id"] == acct.user_id

    # a change without the CSRF header, or with a wrong one: 403 and nothing happens
    for headers in ({}, {"X-CSRF-Token": "wrong"}, {"X-CSRF-Token": ""}):
        refused = client.post("/api/v1/devops/pipelines", json=PIPELINE, headers=headers)
        assert refused.status_code == 403, refused.text
        assert refused.json()["detail"] == "CSRF token missing or wrong"
    assert pipeline_names(acct) == []
    # the right one: it works
    made = client.post("/api/v1/devops/pipelines", json=PIPELINE, headers={"X-CSRF-Token": csrf})
    assert made.status_code == 201, made.text
    assert pipeline_names(acct) == ["cookie-made"]
    assert client.delete(f"/api/v1/devops/pipelines/{made.json()['id']}").status_code == 403
    assert pipeline_names(acct) == ["cookie-made"]

    # the bearer header is unchanged, and wins over the cookie (no CSRF needed with it)
    other = stack.account()
    theirs = other.client.post("/pipelines", json={**PIPELINE, "name": "theirs"})
    assert theirs.status_code == 201
    as_other = client.get("/api/v1/devops/users/me", headers={"Authorization": f"Bearer {other.token}"})
    assert as_other.json()["id"] == other.user_id
    # another account's pipeline through the cookie: 404, for reads and changes alike
    theirs_id = theirs.json()["id"]
    assert client.get(f"/api/v1/devops/pipelines/{theirs_id}").status_code == 404
    assert client.delete(f"/api/v1/devops/pipelines/{theirs_id}", headers={"X-CSRF-Token": csrf}).status_code == 404
    assert [p["name"] for p in other.client.get("/pipelines").json()["data"]] == ["theirs"]


@SQLITE_ONLY
def test_signing_out_clears_both_cookies(stack):
    acct = stack.account()
    client, _ = signed_in(stack, acct.token)
    response = client.delete("/ui/session")
    assert response.status_code == 204
    cleared = response.headers.get_list("set-cookie")
    assert {c.split("=", 1)[0] for c in cleared} == {"devops_session", "devops_csrf"}
    assert all(re.search(r'(?i)max-age=0|expires=thu, 01 jan 1970', c) for c in cleared)
    assert not client.cookies
    assert client.get("/api/v1/devops/users/me").status_code == 401
    # the form variant: a redirect to the dashboard, cookies cleared too
    client, _ = signed_in(stack, acct.token)
    response = client.post("/ui/session/logout")
    assert response.status_code == 303 and response.headers["location"] == "/ui/"
    assert not client.cookies


@SQLITE_ONLY
def test_revoking_the_token_ends_every_session_made_with_it(stack):
    acct = stack.account()
    made = acct.client.post("/tokens", json={"name": "browser"})
    assert made.status_code == 201, made.text
    token = made.json()
    laptop, laptop_csrf = signed_in(stack, token["token"])
    phone, _ = signed_in(stack, token["token"])
    for client in (laptop, phone):
        assert client.get("/api/v1/devops/users/me").status_code == 200
    assert acct.client.delete(f"/tokens/{token['id']}").status_code == 204
    for client in (laptop, phone):
        assert client.get("/api/v1/devops/users/me").status_code == 401
    refused = laptop.post("/api/v1/devops/pipelines", json=PIPELINE, headers={"X-CSRF-Token": laptop_csrf})
    assert refused.status_code == 401
    assert pipeline_names(acct) == []
    # and a revoked token cannot sign in again
    again = browser_client(stack).post("/ui/session", json={"token": token["token"]})
    assert again.status_code == 401 and "set-cookie" not in again.headers


@SQLITE_ONLY
def test_a_form_sign_in_redirects_and_another_origin_is_refused(stack):
    acct = stack.account()
    client = browser_client(stack)
    response = client.post("/ui/session", data={"token": acct.token})
    assert response.status_code == 303 and response.headers["location"] == "/ui/"
    assert client.get("/api/v1/devops/users/me").json()["id"] == acct.user_id
    foreign = browser_client(stack).post("/ui/session", json={"token": acct.token},
                                         headers={"Origin": "https://evil.example"})
    assert foreign.status_code == 403 and "set-cookie" not in foreign.headers
    same = browser_client(stack).post("/ui/session", json={"token": acct.token}, headers={"Origin": stack.url})
    assert same.status_code == 200


@SQLITE_ONLY
def test_the_shell_and_its_files_are_served_with_a_same_origin_csp(stack):
    client = browser_client(stack)
    for path in ("/ui", "/ui/"):
        page = client.get(path)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        csp = page.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "unsafe-inline" not in csp
        # no inline script: every <script> has a src
        assert all("src=" in tag for tag in re.findall(r"<script[^>]*>", page.text))
    for path, kind in (("/ui/static/js/core.js", "javascript"), ("/ui/static/js/app.js", "javascript"),
                       ("/ui/static/css/app.css", "text/css")):
        asset = client.get(path)
        assert asset.status_code == 200 and kind in asset.headers["content-type"], path
        assert "default-src 'self'" in asset.headers["content-security-policy"]
    assert client.get("/ui/static/../../settings.py").status_code == 404
    assert client.get("/ui/static/js/nothing.js").status_code == 404
    # no dashboard route in the API's schema
    assert not [p for p in client.get("/openapi.json").json()["paths"] if p.startswith("/ui")]
