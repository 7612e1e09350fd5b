"""``Idempotency-Key`` on creates (issue 11 item 2): a client that saw a connection error sends the
same request again and gets the first run, container or deployment, never a second one. Bursts of
the same key, replays, a different request under a used key, another account's identical key, a
first request that failed validation, and a request whose connection dropped before the answer.
On SQLite and PostgreSQL; the deployment test shares the single-node swarm with the rollout tests.
"""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import func, select, update

from db.models import ContainerInstance, IdempotencyKey, PipelineRun, SwarmDeployment
from tests.harness import wait_run
from tests.workflows.test_pipeline_run import create_pipeline, sh
from tests.workflows.test_rollouts import (  # noqa: F401 - fixtures used by the deployment test
    add_cluster,
    docker_client,
    images,
    network,
    swarm,
    wait_status,
)

KEY = "Idempotency-Key"
REPLAYED = "Idempotent-Replayed"
IMAGE = "devops-test/busybox:latest"  # syntax only: the containers below stay queued


def fresh_key() -> str:
    return f"key-{uuid.uuid4().hex}"


def burst(stack, acct, path: str, payload: dict, key: str, n: int = 10) -> list[httpx.Response]:
    """``n`` identical requests released together, each on its own connection."""
    barrier = threading.Barrier(n)
    answers: list[httpx.Response] = []
    lock = threading.Lock()

    def send() -> None:
        with httpx.Client(base_url=f"{stack.url}/api/v1/devops", timeout=120,
                          headers={"Authorization": f"Bearer {acct.token}", KEY: key}) as client:
            barrier.wait()
            response = client.post(path, json=payload)
        with lock:
            answers.append(response)

    threads = [threading.Thread(target=send) for _ in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(180)
    assert len(answers) == n
    return answers


def key_loc(response: httpx.Response) -> list:
    assert response.status_code == 422, response.text
    return response.json()["detail"][0]["loc"]


def count(stack, model, **where) -> int:
    with stack.sessions() as session:
        query = select(func.count()).select_from(model)
        for name, value in where.items():
            query = query.where(getattr(model, name) == value)
        return session.scalar(query)


def test_trigger_with_a_key_creates_one_run_however_often_and_concurrently_it_is_sent(stack):
    acct = stack.account()
    pid = create_pipeline(acct, inputs={"times": {"type": "number", "default": 1}},
                          steps=[sh("once", 'echo "n=$T" >> "$DEVOPS_OUTPUT"', env={"T": "${{ inputs.times }}"})])
    path = f"/pipelines/{pid}/trigger"
    key = fresh_key()

    answers = burst(stack, acct, path, {"inputs": {"times": 3}}, key)
    assert [a.status_code for a in answers] == [201] * 10, [a.text for a in answers]
    run_ids = {a.json()["id"] for a in answers}
    assert len(run_ids) == 1
    run_id = run_ids.pop()
    assert sorted(a.headers.get(REPLAYED) for a in answers if a.headers.get(REPLAYED)) == ["true"] * 9
    assert acct.client.get("/pipeline_runs", params={"pipeline_id": pid}).json()["count"] == 1
    assert count(stack, PipelineRun, pipeline_id=pid) == 1
    assert count(stack, IdempotencyKey, account_id=acct.id) == 1

    done = wait_run(acct.client, run_id)
    assert done["status"] == "success" and done["steps"][0]["attempts"] == 1
    again = acct.client.post(path, json={"inputs": {"times": 3}}, headers={KEY: key})
    assert again.status_code == 201 and again.headers[REPLAYED] == "true"
    assert again.json()["id"] == run_id and again.json()["status"] == "success"  # the run as it is now
    # the same request spelled differently is the same request
    spelled = acct.client.post(path, content=b'{ "inputs" : {"times": 3} }',
                               headers={KEY: key, "Content-Type": "application/json"})
    assert spelled.status_code == 201 and spelled.json()["id"] == run_id

    # the key with another request: 422 naming the header, nothing created
    assert key_loc(acct.client.post(path, json={"inputs": {"times": 4}}, headers={KEY: key})) == ["header", KEY]
    assert "different request" in acct.client.post(path, json={}, headers={KEY: key}).json()["detail"][0]["msg"]
    # bad keys: 422 naming the header
    for bad in ("", "x" * 256, "tab\tinside"):
        assert key_loc(acct.client.post(path, json={}, headers={KEY: bad})) == ["header", KEY], repr(bad)
    # a first request that failed validation stores nothing: fixed, the same key creates the run
    fixed_key = fresh_key()
    refused = acct.client.post(path, json={"inputs": {"times": "many"}}, headers={KEY: fixed_key})
    assert refused.status_code == 422 and refused.json()["detail"][0]["loc"][0] == "body"
    fixed = acct.client.post(path, json={"inputs": {"times": 2}}, headers={KEY: fixed_key})
    assert fixed.status_code == 201 and REPLAYED not in fixed.headers and fixed.json()["id"] != run_id
    # without a key every trigger is a new run, as before
    plain = acct.client.post(path, json={"inputs": {"times": 3}})
    assert plain.status_code == 201 and plain.json()["id"] not in (run_id, fixed.json()["id"])
    assert count(stack, PipelineRun, pipeline_id=pid) == 3

    # after 24 h the key is free again: an expired row is neither replayed nor compared
    with stack.sessions.begin() as session:
        session.execute(update(IdempotencyKey).where(IdempotencyKey.account_id == acct.id, IdempotencyKey.key == key)
                        .values(expires_at=datetime.now(UTC) - timedelta(minutes=1)))
    renewed = acct.client.post(path, json={"inputs": {"times": 4}}, headers={KEY: key})
    assert renewed.status_code == 201 and REPLAYED not in renewed.headers and renewed.json()["id"] != run_id
    assert acct.client.post(path, json={"inputs": {"times": 4}}, headers={KEY: key}).json()["id"] == \
        renewed.json()["id"]
    assert count(stack, PipelineRun, pipeline_id=pid) == 4 and count(stack, IdempotencyKey, account_id=acct.id) == 2

    # another account's identical key is its own
    other = stack.account()
    other_pid = create_pipeline(other, steps=[sh("once", "true")])
    mine = other.client.post(f"/pipelines/{other_pid}/trigger", json={}, headers={KEY: key})
    assert mine.status_code == 201 and REPLAYED not in mine.headers and mine.json()["pipeline_id"] == other_pid
    assert other.client.post(path, json={"inputs": {"times": 3}}, headers={KEY: key}).status_code == 404
    for run in (fixed.json(), plain.json(), renewed.json(), mine.json()):
        wait_run(acct.client if run is not mine.json() else other.client, run["id"])


def test_a_client_that_lost_the_connection_gets_the_first_run_and_only_one_executes(stack):
    acct = stack.account()
    pid = create_pipeline(acct, steps=[sh("once", "sleep 1; echo done=yes >> \"$DEVOPS_OUTPUT\"")])
    path = f"/pipelines/{pid}/trigger"
    key = fresh_key()
    with httpx.Client(base_url=f"{stack.url}/api/v1/devops", headers={"Authorization": f"Bearer {acct.token}"},
                      timeout=httpx.Timeout(30, read=0.001)) as impatient, pytest.raises(httpx.ReadTimeout):
        impatient.post(path, json={}, headers={KEY: key})  # dropped before the answer
    retried = acct.client.post(path, json={}, headers={KEY: key})
    assert retried.status_code == 201, retried.text
    run_id = retried.json()["id"]
    done = wait_run(acct.client, run_id)
    assert done["status"] == "success" and done["steps"][0]["attempts"] == 1
    assert done["steps"][0]["outputs"] == {"done": "yes"}
    assert count(stack, PipelineRun, pipeline_id=pid) == 1
    assert acct.client.get("/pipeline_runs", params={"pipeline_id": pid}).json()["count"] == 1
    replay = acct.client.post(path, json={}, headers={KEY: key})
    assert replay.headers[REPLAYED] == "true" and replay.json()["id"] == run_id

    # the retry route takes a key too: one new run however often it is sent
    retry_key = fresh_key()
    retries = burst(stack, acct, f"/pipeline_runs/{run_id}/retry", {}, retry_key, n=4)
    assert [r.status_code for r in retries] == [201] * 4, [r.text for r in retries]
    assert len({r.json()["id"] for r in retries}) == 1 and retries[0].json()["retry_of_run_id"] == run_id
    assert key_loc(acct.client.post(f"/pipeline_runs/{run_id}/retry", params={"from_step": "once"},
                                    headers={KEY: retry_key})) == ["header", KEY]
    wait_run(acct.client, retries[0].json()["id"])
    assert count(stack, PipelineRun, pipeline_id=pid) == 2


def test_container_launch_with_a_key_creates_one_instance(stack):
    acct = stack.account()
    acct.client.put("/container_quotas", json={"max_concurrent": 0})  # everything stays queued: no engine
    key = fresh_key()
    payload = {"image": IMAGE, "command": ["sleep", "30"]}
    # 429 (over quota, not queued) stores nothing: the same key then works for the fixed request
    assert acct.client.post("/containers", json=payload, headers={KEY: key}).status_code == 429
    payload["queue"] = True
    answers = burst(stack, acct, "/containers", payload, key, n=6)
    assert [a.status_code for a in answers] == [201] * 6, [a.text for a in answers]
    ids = {a.json()["id"] for a in answers}
    assert len(ids) == 1 and sum(a.headers.get(REPLAYED) == "true" for a in answers) == 5
    instance_id = ids.pop()
    assert acct.client.get("/containers").json()["count"] == 1
    assert count(stack, ContainerInstance, account_id=acct.id) == 1
    again = acct.client.post("/containers", json=payload, headers={KEY: key})
    assert again.status_code == 201 and again.headers[REPLAYED] == "true" and again.json()["id"] == instance_id
    assert key_loc(acct.client.post("/containers", json={**payload, "command": ["true"]},
                                    headers={KEY: key})) == ["header", KEY]

    other = stack.account()
    other.client.put("/container_quotas", json={"max_concurrent": 0})
    theirs = other.client.post("/containers", json=payload, headers={KEY: key})
    assert theirs.status_code == 201 and REPLAYED not in theirs.headers and theirs.json()["id"] != instance_id
    assert count(stack, ContainerInstance, account_id=acct.id) == 1
    for client, ident in ((acct.client, instance_id), (other.client, theirs.json()["id"])):
        assert client.post(f"/containers/{ident}/cancel").status_code == 202
    # a replay after the end answers the instance as it is now
    assert acct.client.post("/containers", json=payload, headers={KEY: key}).json()["status"] == "cancelled"


@pytest.mark.xdist_group("swarm")
def test_deployment_create_with_a_key_creates_one_rollout(stack, request):
    cluster_services, built = request.getfixturevalue("swarm"), request.getfixturevalue("images")
    acct = stack.account()
    cluster = add_cluster(stack, acct)
    service = cluster_services.service(built["v1"], replicas=1, account=acct.id)
    key = fresh_key()
    payload = {"cluster_id": cluster, "service": service, "image": built["v2"], "strategy": "canary",
               "steps": [{"set_weight": 50}, {"pause": {}}]}
    answers = burst(stack, acct, "/swarm/deployments", payload, key, n=5)
    # without the key, the four others would be 409 "still running"
    assert [a.status_code for a in answers] == [201] * 5, [a.text for a in answers]
    ids = {a.json()["id"] for a in answers}
    assert len(ids) == 1 and sum(a.headers.get(REPLAYED) == "true" for a in answers) == 4
    deployment_id = ids.pop()
    assert count(stack, SwarmDeployment, account_id=acct.id) == 1
    wait_status(acct, deployment_id, {"paused"})
    again = acct.client.post("/swarm/deployments", json=payload, headers={KEY: key})
    assert again.status_code == 201 and again.headers[REPLAYED] == "true"
    assert again.json()["id"] == deployment_id and again.json()["status"] == "paused"
    assert key_loc(acct.client.post("/swarm/deployments", json={**payload, "strategy": "rolling", "steps": None},
                                    headers={KEY: key})) == ["header", KEY]
    assert acct.client.post("/swarm/deployments", json=payload).status_code == 409  # no key: a new one, refused
    assert acct.client.post(f"/swarm/deployments/{deployment_id}/abort").status_code == 200
    wait_status(acct, deployment_id, {"aborted"})
    assert count(stack, SwarmDeployment, account_id=acct.id) == 1
