"""The runs API over a real worker: trigger, list (filters, keyset pages), show with ``wait``,
logs, cancel and retry."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.harness import wait_for, wait_run


def shell_step(step_id: str, command: str, **fields: Any) -> dict[str, Any]:
    return {"id": step_id, "type": "run_tests", "with": {"command": command}, **fields}


def create(client: httpx.Client, name: str, steps: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
    response = client.post("/pipelines", json={"name": name, "steps": steps, **fields})
    assert response.status_code == 201, response.text
    return response.json()


def trigger(client: httpx.Client, pipeline_id: int, **body: Any) -> dict[str, Any]:
    response = client.post(f"/pipelines/{pipeline_id}/trigger", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def quick(client: httpx.Client, name: str = "quick") -> dict[str, Any]:
    return create(client, name, [shell_step("a", "true")])


def test_trigger_returns_the_run_with_its_workflow_id_and_temporal_ui_url(stack):
    client = stack.account().client
    pipeline = quick(client)
    run = trigger(client, pipeline["id"])
    assert run["workflow_id"] == f"run-{run['id']}"
    namespace = stack.settings.temporal_namespace
    assert run["temporal_ui_url"].endswith(f"/namespaces/{namespace}/workflows/run-{run['id']}")
    assert run["temporal_ui_url"].startswith("http")
    assert (run["pipeline_id"], run["run_number"], run["trigger_type"]) == (pipeline["id"], 1, "manual")
    assert run["status"] in ("pending", "running", "success")
    assert [(s["step_id"], s["position"]) for s in run["steps"]] == [("a", 0)]
    assert wait_run(client, run["id"])["status"] == "success"


def test_run_numbers_increment_per_pipeline(stack):
    client = stack.account().client
    first, second = quick(client, "first"), quick(client, "second")
    numbers = [(p["id"], trigger(client, p["id"])["run_number"]) for p in (first, second, first, first, second)]
    assert numbers == [(first["id"], 1), (second["id"], 1), (first["id"], 2), (first["id"], 3), (second["id"], 2)]
    after = client.get(f"/pipelines/{first['id']}").json()
    assert after["last_run_number"] == 3
    assert after["updated_at"] == first["updated_at"]  # a run does not change the definition


def test_show_with_wait_answers_when_the_run_has_finished(stack):
    client = stack.account().client
    pipeline = create(client, "outputs", [
        shell_step("produce", 'echo "greeting=hi" >> "$DEVOPS_OUTPUT"'),
        shell_step("consume", 'test "$G" = hi', **{"with": {"command": 'test "$G" = hi',
                                                              "env": {"G": "${{ steps.produce.outputs.greeting }}"}}}),
    ])
    run = trigger(client, pipeline["id"])
    shown = client.get(f"/pipeline_runs/{run['id']}", params={"wait": 30})
    assert shown.status_code == 200
    body = shown.json()
    assert body["status"] == "success"
    assert body["started_at"] is not None and body["finished_at"] is not None
    assert body["duration_seconds"] >= 0
    produce, consume = body["steps"]
    assert (produce["step_id"], produce["status"], produce["attempts"], produce["outputs"]) == (
        "produce", "success", 1, {"greeting": "hi"})
    assert (consume["step_id"], consume["status"], consume["error"]) == ("consume", "success", None)
    assert produce["history"][0]["attempt"] == 1


def test_show_with_wait_also_waits_for_a_queued_run(stack):
    client = stack.account().client
    pipeline = create(client, "serial", [shell_step("a", "sleep 1")], allow_concurrent=False)
    first, second = trigger(client, pipeline["id"]), trigger(client, pipeline["id"])
    assert second["status"] == "queued"
    body = client.get(f"/pipeline_runs/{second['id']}", params={"wait": 30}).json()
    assert body["status"] == "success"
    first = client.get(f"/pipeline_runs/{first['id']}").json()
    assert first["status"] == "success"
    assert datetime.fromisoformat(body["started_at"]) >= datetime.fromisoformat(first["finished_at"])


def test_show_reports_a_failed_step_with_its_error(stack):
    client = stack.account().client
    pipeline = create(client, "fails", [shell_step("bad", "exit 3"), shell_step("never", "true")])
    body = wait_run(client, trigger(client, pipeline["id"])["id"])
    assert body["status"] == "failure"
    bad, never = body["steps"]
    assert (bad["status"], bad["attempts"]) == ("failure", 1)
    assert "exited with code 3" in bad["error"]
    assert never["status"] in ("pending", "skipped", "cancelled")


def test_list_is_newest_first_and_filters_by_pipeline_status_and_trigger_type(stack):
    client = stack.account().client
    good = quick(client, "good")
    bad = create(client, "bad", [shell_step("a", "false")])
    r1 = trigger(client, good["id"])
    r2 = trigger(client, bad["id"])
    r3 = trigger(client, good["id"], trigger_type="workflow_dispatch")
    for run in (r1, r2, r3):
        wait_run(client, run["id"])

    def ids(**params: Any) -> list[int]:
        body = client.get("/pipeline_runs", params=params).json()
        assert body["count"] == len(body["data"])
        return [r["id"] for r in body["data"]]

    assert ids() == [r3["id"], r2["id"], r1["id"]]
    assert ids(pipeline_id=good["id"]) == [r3["id"], r1["id"]]
    assert ids(status="failure") == [r2["id"]]
    assert ids(status="success") == [r3["id"], r1["id"]]
    assert ids(trigger_type="workflow_dispatch") == [r3["id"]]
    assert ids(trigger_type="manual", pipeline_id=good["id"]) == [r1["id"]]
    assert ids(status="cancelled") == []
    listed = client.get("/pipeline_runs").json()["data"][0]
    assert listed["steps"] is None
    assert listed["temporal_ui_url"].endswith(f"/workflows/run-{r3['id']}")


def test_keyset_pages_cover_every_run_exactly_once(stack):
    client = stack.account().client
    pipeline = quick(client)
    created = [trigger(client, pipeline["id"])["id"] for _ in range(5)]
    seen: list[int] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor is not None:
            params["cursor"] = cursor
        body = client.get("/pipeline_runs", params=params).json()
        assert body["count"] == 5
        seen += [r["id"] for r in body["data"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert seen == sorted(created, reverse=True)
    exact = client.get("/pipeline_runs", params={"limit": 5}).json()
    assert (len(exact["data"]), exact["next_cursor"]) == (5, None)
    for run_id in created:
        wait_run(client, run_id)


@pytest.mark.parametrize(("params", "loc", "fragment"), [
    ({"status": "exploded"}, ["query", "status"], "unknown status 'exploded'; expected one of: pending"),
    ({"trigger_type": "telepathy"}, ["query", "trigger_type"], "unknown trigger type 'telepathy'"),
    ({"limit": 0}, ["query", "limit"], "greater than or equal to 1"),
    ({"cursor": "abc"}, ["query", "cursor"], "valid integer"),
], ids=["status", "trigger_type", "limit", "cursor"])
def test_invalid_list_filters_are_422_naming_the_parameter(stack, params, loc, fragment):
    response = stack.account().client.get("/pipeline_runs", params=params)
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == loc
    assert fragment in error["msg"]


def test_logs_return_the_printed_lines_as_json_and_text(stack):
    client = stack.account().client
    pipeline = create(client, "logs", [shell_step("first", "echo line one; echo line two"),
                                       shell_step("second", "echo done >&2")])
    run = wait_run(client, trigger(client, pipeline["id"])["id"])
    assert run["status"] == "success"

    body = client.get(f"/pipeline_runs/{run['id']}/logs").json()
    assert body["count"] == len(body["data"]) >= 2
    by_step: dict[str, list[str]] = {}
    for chunk in body["data"]:
        assert chunk["attempt"] == 1
        by_step.setdefault(chunk["step_id"], []).extend(chunk["content"].splitlines())
    assert by_step == {"first": ["line one", "line two"], "second": ["done"]}

    only_second = client.get(f"/pipeline_runs/{run['id']}/logs", params={"step_id": "second"}).json()
    assert {c["step_id"] for c in only_second["data"]} == {"second"}

    text = client.get(f"/pipeline_runs/{run['id']}/logs", params={"format": "text"})
    assert text.headers["content-type"].startswith("text/plain")
    assert text.text == "[first#1] line one\n[first#1] line two\n[second#1] done\n"

    bad = client.get(f"/pipeline_runs/{run['id']}/logs", params={"format": "xml"})
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["loc"] == ["query", "format"]


def test_cancel_of_a_finished_run_is_409(stack):
    client = stack.account().client
    run = wait_run(client, trigger(client, quick(client)["id"])["id"])
    response = client.post(f"/pipeline_runs/{run['id']}/cancel")
    assert response.status_code == 409
    assert response.json()["detail"] == f"run {run['id']} already finished with status success"
    assert client.get(f"/pipeline_runs/{run['id']}").json()["status"] == "success"


def test_cancel_of_a_running_run_stops_it(stack):
    client = stack.account().client
    pipeline = create(client, "long", [shell_step("wait", "echo started; sleep 60"), shell_step("after", "true")])
    run = trigger(client, pipeline["id"])
    wait_for(lambda: client.get(f"/pipeline_runs/{run['id']}/logs").json()["count"] > 0, timeout=30,
             message="the long step to start")
    retry = client.post(f"/pipeline_runs/{run['id']}/retry")
    assert retry.status_code == 409
    assert "still running" in retry.json()["detail"]
    response = client.post(f"/pipeline_runs/{run['id']}/cancel")
    assert response.status_code == 202, response.text
    finished = wait_run(client, run["id"], timeout=30)
    assert finished["status"] == "cancelled"
    assert [s["status"] for s in finished["steps"]] == ["cancelled", "cancelled"]


def test_retry_of_a_finished_run_creates_a_new_run_with_the_same_inputs(stack):
    client = stack.account().client
    pipeline = create(client, "inputs", [shell_step("a", 'echo "got=$V" >> "$DEVOPS_OUTPUT"',
                                                    **{"with": {"command": 'echo "got=$V" >> "$DEVOPS_OUTPUT"',
                                                                "env": {"V": "${{ inputs.value }}"}}})],
                      inputs={"value": {"type": "string", "default": "d"}})
    original = wait_run(client, trigger(client, pipeline["id"], inputs={"value": "given"},
                                        context={"why": "test"})["id"])
    response = client.post(f"/pipeline_runs/{original['id']}/retry")
    assert response.status_code == 201, response.text
    retried = response.json()
    assert retried["id"] != original["id"]
    assert (retried["retry_of_run_id"], retried["from_step"], retried["run_number"]) == (original["id"], None, 2)
    assert retried["inputs"] == original["inputs"] == {"value": "given"}
    assert retried["trigger_context"] == {"why": "test"}
    assert retried["workflow_id"] == f"run-{retried['id']}"
    done = wait_run(client, retried["id"])
    assert (done["status"], done["steps"][0]["outputs"]) == ("success", {"got": "given"})


def test_retry_from_a_step_reuses_the_earlier_steps(stack, tmp_path: Path):
    client = stack.account().client
    marker = tmp_path / "fixed"
    pipeline = create(client, "from-step", [
        shell_step("build", 'echo "artifact=a1" >> "$DEVOPS_OUTPUT"'),
        {"id": "verify", "type": "run_tests",
         "with": {"command": 'test -f "$MARKER" && echo "saw=$ART" >> "$DEVOPS_OUTPUT"',
                  "env": {"MARKER": str(marker), "ART": "${{ steps.build.outputs.artifact }}"}}},
    ])
    failed = wait_run(client, trigger(client, pipeline["id"])["id"])
    assert [s["status"] for s in failed["steps"]] == ["success", "failure"]
    marker.write_text("")
    response = client.post(f"/pipeline_runs/{failed['id']}/retry", params={"from_step": "verify"})
    assert response.status_code == 201, response.text
    assert (response.json()["retry_of_run_id"], response.json()["from_step"]) == (failed["id"], "verify")
    done = wait_run(client, response.json()["id"])
    assert done["status"] == "success"
    build, verify = done["steps"]
    assert (build["status"], build["outputs"], build["reused_from_run_id"]) == ("success", {"artifact": "a1"},
                                                                                failed["id"])
    assert verify["outputs"] == {"saw": "a1"}
    assert {c["step_id"] for c in client.get(f"/pipeline_runs/{done['id']}/logs").json()["data"]} <= {"verify"}


def test_retry_from_an_unknown_step_is_422_naming_from_step(stack):
    client = stack.account().client
    run = wait_run(client, trigger(client, quick(client)["id"])["id"])
    response = client.post(f"/pipeline_runs/{run['id']}/retry", params={"from_step": "nope"})
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["query", "from_step"]
    assert error["msg"] == f"run {run['id']} has no step 'nope'; steps: a"
    assert client.get("/pipeline_runs").json()["count"] == 1


def test_unknown_run_is_404_on_every_route(stack):
    client = stack.account().client
    for method, path in (("GET", "/pipeline_runs/999999999"), ("POST", "/pipeline_runs/999999999/cancel"),
                         ("POST", "/pipeline_runs/999999999/retry"), ("GET", "/pipeline_runs/999999999/logs")):
        response = client.request(method, path)
        assert response.status_code == 404, (method, path)
        assert response.json() == {"detail": "pipeline run not found"}


def test_cancel_of_a_queued_run_withdraws_it_and_leaves_the_running_one(stack):
    client = stack.account().client
    pipeline = create(client, "serial", [shell_step("a", "echo go; sleep 60")], allow_concurrent=False)
    running, queued = trigger(client, pipeline["id"]), trigger(client, pipeline["id"])
    assert queued["status"] == "queued"
    wait_for(lambda: client.get(f"/pipeline_runs/{running['id']}/logs").json()["count"] > 0,
             message="the first run to start")
    assert client.post(f"/pipeline_runs/{queued['id']}/cancel").status_code == 202
    assert wait_run(client, queued["id"], timeout=15)["status"] == "cancelled"
    assert client.get(f"/pipeline_runs/{running['id']}").json()["status"] == "running"
    assert client.post(f"/pipeline_runs/{running['id']}/cancel").status_code == 202
    assert wait_run(client, running["id"], timeout=15)["status"] == "cancelled"
    assert client.post(f"/pipeline_runs/{queued['id']}/cancel").status_code == 409


def test_trigger_context_is_visible_to_steps_but_cannot_change_the_trigger_type(stack):
    client = stack.account().client
    pipeline = create(client, "context", [{"id": "a", "type": "run_tests", "with": {
        "command": 'echo "type=$T" >> "$DEVOPS_OUTPUT"; echo "reason=$R" >> "$DEVOPS_OUTPUT"',
        "env": {"T": "${{ trigger.type }}", "R": "${{ trigger.reason }}"}}}])
    run = trigger(client, pipeline["id"], trigger_type="workflow_dispatch",
                  context={"type": "schedule", "reason": "nightly"})
    done = wait_run(client, run["id"])
    assert done["steps"][0]["outputs"] == {"type": "workflow_dispatch", "reason": "nightly"}
    assert done["trigger_type"] == "workflow_dispatch"


def test_pipeline_env_reaches_every_step(stack):
    client = stack.account().client
    pipeline = create(client, "env", [shell_step("a", 'echo "zone=$ZONE" >> "$DEVOPS_OUTPUT"'),
                                      shell_step("b", 'echo "who=$WHO" >> "$DEVOPS_OUTPUT"')],
                      env={"ZONE": "eu-west", "WHO": "${{ inputs.who }}"}, inputs={"who": {"default": "ops"}})
    done = wait_run(client, trigger(client, pipeline["id"])["id"])
    assert [s["outputs"] for s in done["steps"]] == [{"zone": "eu-west"}, {"who": "ops"}]


def test_a_run_terminated_in_temporal_is_reported_as_cancelled_by_list_and_show(stack):
    client = stack.account().client
    pipeline = create(client, "terminated", [shell_step("a", "echo go; sleep 30")])
    run = trigger(client, pipeline["id"])
    wait_for(lambda: client.get(f"/pipeline_runs/{run['id']}/logs").json()["count"] > 0, message="the step to start")
    stack.infra.run(stack.temporal.get_workflow_handle(run["workflow_id"]).terminate("by an operator"))
    listed = client.get("/pipeline_runs").json()["data"]
    assert [(r["status"], r["error"]) for r in listed] == [("cancelled", "run terminated in Temporal")]
    shown = client.get(f"/pipeline_runs/{run['id']}").json()
    assert (shown["status"], shown["error"]) == ("cancelled", "run terminated in Temporal")
    assert shown["finished_at"] is not None
    assert client.post(f"/pipeline_runs/{run['id']}/cancel").status_code == 409
