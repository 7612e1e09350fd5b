"""Every row belongs to an account: another account's id answers 404 (never 403) on every
route that takes one, and the owner's objects are unchanged afterwards."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from db.crypto import SecretBox
from db.models import Secret
from tests.harness import wait_run

DOC = {"name": "owned", "inputs": {"v": {"type": "string", "default": "x"}},
       "steps": [{"id": "a", "type": "run_tests", "with": {"command": "echo hello"}}]}
OTHER_DOC = {"name": "intruder", "steps": [{"id": "b", "type": "run_tests", "with": {"command": "true"}}]}


@pytest.fixture
def owner(stack):
    """An account with a pipeline, one finished run and a secret."""
    acct = stack.account()
    client = acct.client
    pipeline = client.post("/pipelines", json=DOC).json()
    run = wait_run(client, client.post(f"/pipelines/{pipeline['id']}/trigger", json={}).json()["id"])
    assert run["status"] == "success"
    assert client.put("/secrets", json={"name": "OWNER_TOKEN", "value": "owner-value-123"}).status_code == 200
    return acct, client.get(f"/pipelines/{pipeline['id']}").json(), run


def snapshot(client, pipeline_id: int, run_id: int) -> dict[str, Any]:
    return {
        "pipeline": client.get(f"/pipelines/{pipeline_id}").json(),
        "export": client.get(f"/pipelines/{pipeline_id}/export").text,
        "pipelines": client.get("/pipelines").json(),
        "run": client.get(f"/pipeline_runs/{run_id}").json(),
        "runs": client.get("/pipeline_runs").json(),
        "logs": client.get(f"/pipeline_runs/{run_id}/logs").json(),
        "secrets": client.get("/secrets").json(),
    }


def routes(pid: int, rid: int) -> list[tuple[str, str, dict[str, Any] | None]]:
    return [
        ("GET", f"/pipelines/{pid}", None),
        ("PUT", f"/pipelines/{pid}", OTHER_DOC),
        ("PATCH", f"/pipelines/{pid}", {"is_active": False}),
        ("GET", f"/pipelines/{pid}/export", None),
        ("GET", f"/pipelines/{pid}/export?format=json", None),
        ("POST", f"/pipelines/{pid}/clone", None),
        ("POST", f"/pipelines/{pid}/trigger", {}),
        ("GET", f"/pipeline_runs/{rid}", None),
        ("GET", f"/pipeline_runs/{rid}?wait=1", None),
        ("POST", f"/pipeline_runs/{rid}/cancel", None),
        ("POST", f"/pipeline_runs/{rid}/retry", None),
        ("POST", f"/pipeline_runs/{rid}/retry?from_step=a", None),
        ("GET", f"/pipeline_runs/{rid}/logs", None),
        ("GET", f"/pipeline_runs/{rid}/logs?format=text", None),
        ("DELETE", "/secrets/OWNER_TOKEN", None),
        ("DELETE", f"/pipelines/{pid}", None),
    ]


def test_another_accounts_ids_answer_404_on_every_route_and_change_nothing(stack, owner):
    acct, pipeline, run = owner
    before = snapshot(acct.client, pipeline["id"], run["id"])
    intruder = stack.account().client
    for method, path, body in routes(pipeline["id"], run["id"]):
        response = intruder.request(method, path, json=body)
        assert response.status_code == 404, (method, path, response.status_code, response.text)
        detail = response.json()["detail"]
        assert detail in ("pipeline not found", "pipeline run not found", "secret not found"), detail
        assert "owned" not in response.text and "OWNER_TOKEN" not in response.text
    assert snapshot(acct.client, pipeline["id"], run["id"]) == before
    assert intruder.get("/pipelines").json()["count"] == 0
    assert intruder.get("/pipeline_runs").json()["count"] == 0


def test_a_viewer_of_another_account_also_gets_404_not_403(stack, owner):
    _acct, pipeline, run = owner
    viewer = stack.account(role="viewer").client
    missing = routes(999_999_999, 999_999_999)
    for (method, path, body), (_m, missing_path, _b) in zip(routes(pipeline["id"], run["id"]), missing, strict=True):
        response = viewer.request(method, path, json=body)
        if method == "GET":
            assert response.status_code == 404, (method, path, response.text)
        else:
            # writes are refused for the role before any lookup: the answer is the same as for
            # an id that exists nowhere, so it says nothing about the other account
            assert response.status_code == 403, (method, path, response.text)
            same = viewer.request(method, missing_path, json=body)
            assert (same.status_code, same.json()) == (403, response.json())


def test_runs_list_never_shows_another_accounts_runs(stack, owner):
    acct, pipeline, run = owner
    other = stack.account().client
    mine = other.post("/pipelines", json=OTHER_DOC).json()
    my_run = wait_run(other, other.post(f"/pipelines/{mine['id']}/trigger", json={}).json()["id"])

    assert [r["id"] for r in other.get("/pipeline_runs").json()["data"]] == [my_run["id"]]
    assert other.get("/pipeline_runs", params={"pipeline_id": pipeline["id"]}).json() == {
        "data": [], "count": 0, "next_cursor": None}
    assert other.get("/pipeline_runs", params={"cursor": run["id"] + 1000}).json()["count"] == 1
    assert [r["id"] for r in acct.client.get("/pipeline_runs").json()["data"]] == [run["id"]]
    assert [p["id"] for p in other.get("/pipelines").json()["data"]] == [mine["id"]]


def test_secrets_are_per_account(stack, owner):
    acct, _pipeline, _run = owner
    other = stack.account()
    assert other.client.get("/secrets").json() == {"data": [], "count": 0}
    assert other.client.put("/secrets", json={"name": "OWNER_TOKEN", "value": "other-value-456"}).status_code == 200
    assert other.client.delete("/secrets/OWNER_TOKEN").status_code == 204
    assert [s["name"] for s in acct.client.get("/secrets").json()["data"]] == ["OWNER_TOKEN"]
    with stack.sessions() as session:
        row = session.scalar(select(Secret).where(Secret.account_id == acct.id, Secret.name == "OWNER_TOKEN"))
    assert SecretBox(stack.settings.secret_key).decrypt(row.encrypted_value) == "owner-value-123"

    # a step of the other account cannot read the owner's secret either
    pipeline = other.client.post("/pipelines", json={"name": "steal", "steps": [
        {"id": "s", "type": "run_tests", "with": {"command": 'echo "$T"', "env": {"T": "${{ secrets.OWNER_TOKEN }}"}}},
    ]}).json()
    done = wait_run(other.client, other.client.post(f"/pipelines/{pipeline['id']}/trigger", json={}).json()["id"])
    assert done["status"] == "failure"
    assert "not defined in this account: OWNER_TOKEN" in done["steps"][0]["error"]
    assert "owner-value-123" not in other.client.get(f"/pipeline_runs/{done['id']}/logs").text
