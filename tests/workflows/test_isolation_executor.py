"""Issue 10 §1: outside development the shell executor is off. `run_tests`/`custom` steps then
default to `executor: docker`, a document asking for `executor: shell` is refused at save (422
naming the field and the operator's switch), a docker step needs an image (its own, a template
or DEVOPS_DEFAULT_STEP_IMAGE), and a container never runs as uid 0 because the worker is root.
A run's workspace goes when the retention is 0. Real runs on the real stack and engine."""

from __future__ import annotations

import os
import uuid

import pytest
from pydantic import ValidationError

from domain.pipeline_document import ExecutorRules, validate_document
from settings import Settings
from tests.docker_support import busybox_image, docker_or_skip
from tests.harness import wait_for, wait_run
from tests.workflows.test_pipeline_run import steps_by_id

PRODUCTION_KEY = "a-real-production-secret-key-0123456789"


@pytest.fixture(scope="module")
def image() -> str:
    return busybox_image(docker_or_skip())


@pytest.fixture
def shell_off(stack, monkeypatch):
    """The stack as a production install without DEVOPS_SHELL_EXECUTOR: the API and the
    in-process worker share this settings object."""
    monkeypatch.setattr(stack.settings, "shell_executor", False)
    assert not stack.settings.shell_executor_enabled
    return stack


def doc(*steps: dict) -> dict:
    return {"name": f"iso-{uuid.uuid4().hex[:6]}", "steps": list(steps)}


def locs(exc: ValidationError) -> list[tuple]:
    return [tuple(e["loc"]) for e in exc.errors()]


# ---- the save-time rule (pure: the caller passes the installation's rules) -------------------


def test_production_settings_turn_the_shell_executor_off_unless_the_operator_enables_it():
    production = ExecutorRules.from_settings(Settings(environment="production", secret_key=PRODUCTION_KEY))
    assert (production.shell_allowed, production.default_image) == (False, "")
    enabled = ExecutorRules.from_settings(Settings(environment="production", secret_key=PRODUCTION_KEY,
                                                   shell_executor=True, default_step_image="local/busybox:latest"))
    assert (enabled.shell_allowed, enabled.default_image) == (True, "local/busybox:latest")
    assert ExecutorRules.from_settings(Settings(environment="development")).shell_allowed


def test_executor_shell_is_refused_naming_the_field_and_the_operator_switch():
    off = ExecutorRules(shell_allowed=False, default_image="local/busybox:latest")
    for step_type, extra in (("run_tests", {"command": "true"}), ("custom", {"handler": "noop"})):
        with pytest.raises(ValidationError) as info:
            validate_document(doc({"id": "a", "type": step_type, "with": {"executor": "shell", **extra}}), off)
        assert locs(info.value) == [("steps", 0, "with", "executor")]
        assert "DEVOPS_SHELL_EXECUTOR=true" in info.value.errors()[0]["msg"]
    # with the shell executor on, the same documents are fine
    validate_document(doc({"id": "a", "type": "run_tests", "with": {"executor": "shell", "command": "true"}}),
                      ExecutorRules(shell_allowed=True))


def test_a_step_that_defaults_to_docker_needs_an_image_from_somewhere():
    step = {"id": "a", "type": "run_tests", "with": {"command": "true"}}
    with pytest.raises(ValidationError) as info:
        validate_document(doc(step), ExecutorRules(shell_allowed=False))
    assert locs(info.value) == [("steps", 0, "with", "image")]
    assert "DEVOPS_DEFAULT_STEP_IMAGE" in info.value.errors()[0]["msg"]
    validate_document(doc(step), ExecutorRules(shell_allowed=False, default_image="local/busybox:latest"))
    validate_document(doc({**step, "with": {"command": "true", "image": "local/busybox:latest"}}),
                      ExecutorRules(shell_allowed=False))
    validate_document(doc({**step, "with": {"command": "true", "template": "ci"}}), ExecutorRules(shell_allowed=False))
    # a custom step naming a registered handler runs the operator's code, not a command: no image
    validate_document(doc({"id": "c", "type": "custom", "with": {"handler": "noop"}}), ExecutorRules(False))
    # other step types are not shell steps
    validate_document(doc({"id": "n", "type": "notify", "with": {"url": "https://example.com"}}),
                      ExecutorRules(False))


# ---- through the API ------------------------------------------------------------------------


SHELL_YAML = """\
name: {name}
steps:
  - id: build
    type: run_tests
    with:
      executor: shell
      command: cat /etc/hostname
"""


def test_saving_executor_shell_is_a_422_on_every_route_that_saves_a_document(shell_off, image):
    acct = shell_off.account()
    client = acct.client
    shell_step = {"id": "build", "type": "run_tests", "with": {"executor": "shell", "command": "id"}}
    field = ["body", "steps", 0, "with", "executor"]

    response = client.post("/pipelines/import", content=SHELL_YAML.format(name="imported"),
                           headers={"Content-Type": "application/yaml"})
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert [d["loc"] for d in detail] == [field]
    assert "DEVOPS_SHELL_EXECUTOR=true" in detail[0]["msg"]

    assert client.post("/pipelines", json=doc(shell_step)).status_code == 422
    no_image = client.post("/pipelines", json=doc({"id": "b", "type": "run_tests", "with": {"command": "id"}}))
    assert no_image.status_code == 422
    assert [d["loc"] for d in no_image.json()["detail"]] == [["body", "steps", 0, "with", "image"]]

    good = client.post("/pipelines", json=doc({"id": "b", "type": "run_tests",
                                               "with": {"command": "id", "image": image}}))
    assert good.status_code == 201, good.text
    pipeline_id = good.json()["id"]
    replaced = client.put(f"/pipelines/{pipeline_id}", json=doc(shell_step))
    assert replaced.status_code == 422 and [d["loc"] for d in replaced.json()["detail"]] == [field]
    patched = client.patch(f"/pipelines/{pipeline_id}", json={"steps": [shell_step]})
    assert patched.status_code == 422 and [d["loc"] for d in patched.json()["detail"]] == [field]
    assert client.get(f"/pipelines/{pipeline_id}").json()["steps"][0]["with"] == {"command": "id", "image": image}

    template = client.post("/pipeline_templates", json={
        "name": f"t-{uuid.uuid4().hex[:6]}", "initial_version": {"version": "1.0.0", "document": doc(shell_step)}})
    assert template.status_code == 422, template.text
    assert ["body", "initial_version", "document", "steps", 0, "with", "executor"] in [
        d["loc"] for d in template.json()["detail"]]


def test_a_step_without_executor_runs_in_a_container_as_a_non_root_uid(shell_off, image, monkeypatch):
    acct = shell_off.account()
    monkeypatch.setattr(shell_off.settings, "default_step_image", image)
    probe = 'echo "uid=$(id -u)" >> "$DEVOPS_OUTPUT"; echo "inside=$(cat /proc/1/cmdline | tr -d "\\0")" >> ' \
            '"$DEVOPS_OUTPUT"; echo made > made.txt'
    created = acct.client.post("/pipelines", json=doc(
        {"id": "own", "type": "run_tests", "with": {"image": image, "command": probe}},
        {"id": "default", "type": "run_tests", "with": {"command": 'echo "made=$(cat made.txt)" >> "$DEVOPS_OUTPUT"'}},
        {"id": "handler", "type": "custom", "with": {"handler": "noop", "outputs": {"ok": "yes"}}},
    ))
    assert created.status_code == 201, created.text
    run = acct.client.post(f"/pipelines/{created.json()['id']}/trigger", json={})
    assert run.status_code == 201, run.text
    final = wait_run(acct.client, run.json()["id"], timeout=120)
    assert final["status"] == "success", final
    steps = steps_by_id(final)
    own, default = steps["own"]["outputs"], steps["default"]["outputs"]
    assert own["container_instance_id"] and default["container_instance_id"], "both ran in containers"
    assert own["inside"].startswith("sh"), "PID 1 is the step's shell: a container, not the host"
    assert own["uid"] != "0"
    if os.geteuid() == 0:
        assert own["uid"] == str(shell_off.settings.step_uid_base + acct.id)
    assert default["made"] == "made", "the defaulted step got the default image and the same workspace"
    assert steps["handler"]["outputs"] == {"ok": "yes"}, "a registered handler still runs in the worker"


def test_an_explicit_docker_step_does_not_run_as_root_because_the_worker_is(stack, image):
    acct = stack.account()
    created = acct.client.post("/pipelines", json=doc({"id": "box", "type": "run_tests", "with": {
        "executor": "docker", "image": image, "command": 'echo "uid=$(id -u)" >> "$DEVOPS_OUTPUT"'}}))
    assert created.status_code == 201, created.text
    run = acct.client.post(f"/pipelines/{created.json()['id']}/trigger", json={})
    final = wait_run(acct.client, run.json()["id"], timeout=120)
    assert final["status"] == "success", final
    assert steps_by_id(final)["box"]["outputs"]["uid"] != "0"


def test_with_retention_zero_the_run_removes_its_workspace_when_it_ends(stack, monkeypatch):
    monkeypatch.setattr(stack.settings, "workspace_retention_hours", 0.0)
    acct = stack.account()
    created = acct.client.post("/pipelines", json=doc(
        {"id": "a", "type": "run_tests", "with": {"command": "echo data > file.txt"}}))
    run = acct.client.post(f"/pipelines/{created.json()['id']}/trigger", json={})
    run_id = run.json()["id"]
    final = wait_run(acct.client, run_id)
    assert final["status"] == "success", final
    workspace = stack.settings.resolved_workspace_dir / f"run-{run_id}"
    wait_for(lambda: not workspace.exists(), timeout=20, message="the workspace to be removed")
