"""Pipeline steps in containers (`executor: docker`) and the artifact steps, through real runs on
the real engine: the child ContainerExecutionWorkflow, the workspace at /workspace,
`$DEVOPS_OUTPUT`, secrets as whole env values (masked), failures, and artifacts between runs."""

from __future__ import annotations

import uuid

import pytest

from activities.containers import owner_label
from tests.docker_support import busybox_image, docker_or_skip
from tests.harness import wait_run
from tests.workflows.test_pipeline_run import steps_by_id


@pytest.fixture(scope="module")
def image() -> str:
    return busybox_image(docker_or_skip())


def pipeline(acct, steps, **extra) -> int:
    response = acct.client.post("/pipelines", json={"name": f"box-{uuid.uuid4().hex[:6]}", "steps": steps, **extra})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def run(acct, pipeline_id: int) -> dict:
    created = acct.client.post(f"/pipelines/{pipeline_id}/trigger", json={})
    assert created.status_code == 201, created.text
    return wait_run(acct.client, created.json()["id"], timeout=120)


def test_a_docker_step_sees_the_workspace_writes_outputs_and_gets_secrets_masked(stack, image):
    acct = stack.account()
    assert acct.client.put("/secrets", json={"name": "API_KEY", "value": "k3y-in-a-box"}).status_code in (200, 201)
    pid = pipeline(acct, [
        {"id": "prep", "type": "run_tests", "with": {"command": "mkdir -p src && echo from-shell > src/in.txt"}},
        {"id": "box", "type": "run_tests", "with": {
            "executor": "docker", "image": image, "working_directory": "src",
            "env": {"KEY": "${{ secrets.API_KEY }}", "GREETING": "hello"},
            "command": 'echo "seen=$(cat in.txt)" >> "$DEVOPS_OUTPUT"; echo "where=$(pwd)" >> "$DEVOPS_OUTPUT"; '
                       'echo "greeting=$GREETING" >> "$DEVOPS_OUTPUT"; echo "key is $KEY"; '
                       'echo "uid=$(id -u)" >> "$DEVOPS_OUTPUT"; echo made > made.txt'}},
        {"id": "after", "type": "run_tests", "with": {
            "command": 'echo "made=$(cat src/made.txt)" >> "$DEVOPS_OUTPUT"'}},
    ])
    final = run(acct, pid)
    assert final["status"] == "success", final
    steps = steps_by_id(final)
    box = steps["box"]["outputs"]
    assert box["seen"] == "from-shell" and box["where"] == "/workspace/src" and box["greeting"] == "hello"
    assert box["container_instance_id"]
    assert steps["after"]["outputs"] == {"made": "made"}  # the container wrote into the run's workspace
    logs = acct.client.get(f"/pipeline_runs/{final['id']}/logs", params={"format": "text"}).text
    assert "key is" in logs and "k3y-in-a-box" not in logs
    instance = acct.client.get(f"/containers/{box['container_instance_id']}").json()
    assert instance["status"] == "completed" and instance["run_id"] == final["id"]
    assert "k3y-in-a-box" not in str(instance)
    assert instance["spec"]["secret_env"] == {"KEY": "API_KEY"}


def test_a_failing_container_fails_the_step_with_its_exit_code(stack, image):
    acct = stack.account()
    pid = pipeline(acct, [
        {"id": "box", "type": "run_tests", "with": {"executor": "docker", "image": image, "command": "exit 3"}},
        {"id": "never", "type": "run_tests", "with": {"command": "true"}},
    ])
    final = run(acct, pid)
    assert final["status"] == "failure"
    steps = steps_by_id(final)
    assert steps["box"]["status"] == "failure" and "code 3" in steps["box"]["error"]
    assert steps["never"]["status"] == "skipped"


def test_a_secret_inside_a_longer_value_is_refused_in_a_container(stack, image):
    acct = stack.account()
    acct.client.put("/secrets", json={"name": "T", "value": "tok-123"})
    pid = pipeline(acct, [{"id": "box", "type": "run_tests", "with": {
        "executor": "docker", "image": image, "env": {"AUTH": "Bearer ${{ secrets.T }}"}, "command": "true"}}])
    final = run(acct, pid)
    assert final["status"] == "failure"
    assert "must be the whole value" in steps_by_id(final)["box"]["error"]


def test_executor_validation_is_a_422_naming_the_field(stack, image):
    acct = stack.account()
    cases = [
        ({"id": "a", "type": "notify", "with": {"url": "https://example.com", "executor": "docker", "image": image}},
         ["body", "steps", 0, "with", "executor"]),
        ({"id": "a", "type": "run_tests", "with": {"executor": "vm", "command": "true"}},
         ["body", "steps", 0, "with", "executor"]),
        ({"id": "a", "type": "run_tests", "with": {"executor": "docker", "command": "true"}},
         ["body", "steps", 0, "with", "image"]),
        ({"id": "a", "type": "upload_artifact", "with": {"path": "x"}}, ["body", "steps", 0, "with", "name"]),
    ]
    for step, loc in cases:
        response = acct.client.post("/pipelines", json={"name": "bad", "steps": [step]})
        assert response.status_code == 422, response.text
        assert loc in [d["loc"] for d in response.json()["detail"]], response.text


def test_artifacts_move_between_steps_and_runs(stack, image):
    acct = stack.account()
    producer = pipeline(acct, [
        {"id": "make", "type": "run_tests", "with": {
            "command": "mkdir -p dist/sub && echo one > dist/a.txt && echo two > dist/sub/b.txt"}},
        {"id": "up", "type": "upload_artifact", "with": {"name": "dist", "path": "dist"}},
        {"id": "down", "type": "download_artifact", "with": {"name": "dist", "path": "copy"}},
        {"id": "check", "type": "run_tests", "with": {
            "command": 'echo "b=$(cat copy/sub/b.txt)" >> "$DEVOPS_OUTPUT"'}},
    ])
    first = run(acct, producer)
    assert first["status"] == "success", first
    steps = steps_by_id(first)
    assert steps["up"]["outputs"]["name"] == "dist" and int(steps["up"]["outputs"]["entries"]) >= 3
    assert steps["check"]["outputs"] == {"b": "two"}

    consumer = pipeline(acct, [
        {"id": "down", "type": "download_artifact", "with": {"name": "dist", "run_id": first["id"]}},
        {"id": "read", "type": "run_tests", "with": {"command": 'echo "a=$(cat a.txt)" >> "$DEVOPS_OUTPUT"'}},
        {"id": "missing", "type": "download_artifact", "with": {"name": "nope", "run_id": first["id"]}},
    ])
    second = run(acct, consumer)
    steps = steps_by_id(second)
    assert steps["read"]["outputs"] == {"a": "one"}
    assert steps["missing"]["status"] == "failure" and "no artifact named 'nope'" in steps["missing"]["error"]

    # another account cannot reach this run's artifacts
    other = stack.account()
    thief = pipeline(other, [{"id": "down", "type": "download_artifact", "with": {"name": "dist",
                                                                                   "run_id": first["id"]}}])
    stolen = run(other, thief)
    assert stolen["status"] == "failure" and "no artifact named 'dist'" in steps_by_id(stolen)["down"]["error"]


def test_an_upload_refuses_a_symlink_out_of_the_workspace(stack):
    acct = stack.account()
    pid = pipeline(acct, [
        {"id": "make", "type": "run_tests", "with": {"command": "mkdir -p out && ln -s /etc/passwd out/pw"}},
        {"id": "up", "type": "upload_artifact", "with": {"name": "out", "path": "out"}},
    ])
    final = run(acct, pid)
    assert final["status"] == "failure"
    assert "symbolic link" in steps_by_id(final)["up"]["error"]


def test_cancelling_the_run_stops_and_removes_its_container(stack, image):
    from tests.harness import wait_for

    acct = stack.account()
    pid = pipeline(acct, [{"id": "box", "type": "run_tests", "with": {
        "executor": "docker", "image": image, "command": "echo started; sleep 120"}}])
    created = acct.client.post(f"/pipelines/{pid}/trigger", json={}).json()
    client = docker_or_skip()
    ours = [f"devops.run={created['id']}", f"devops.owner={owner_label(stack.settings)}"]

    def running():
        found = client.containers.list(filters={"label": ours})
        return found if found and found[0].status == "running" else None

    wait_for(running, timeout=60, message="the step's container to run")
    assert acct.client.post(f"/pipeline_runs/{created['id']}/cancel").status_code == 202
    final = wait_run(acct.client, created["id"], timeout=60)
    assert final["status"] == "cancelled"
    assert client.containers.list(all=True, filters={"label": ours}) == []
    instances = acct.client.get("/containers", params={"run_id": created["id"]}).json()["data"]
    assert [i["status"] for i in instances] == ["cancelled"]
