"""PipelineRunWorkflow end to end: API → Temporal dev server → worker → database, on both backends."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

from tests.harness import wait_for, wait_run


def create_pipeline(acct, **doc) -> int:
    doc.setdefault("name", f"p-{uuid.uuid4().hex[:8]}")
    response = acct.client.post("/pipelines", json=doc)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def trigger(acct, pipeline_id: int, **inputs) -> dict:
    response = acct.client.post(f"/pipelines/{pipeline_id}/trigger", json={"inputs": inputs})
    assert response.status_code == 201, response.text
    return response.json()


def sh(step_id: str, command: str, **extra) -> dict:
    step = {"id": step_id, "type": "run_tests", "with": {"command": command}}
    if "env" in extra:
        step["with"]["env"] = extra.pop("env")
    step.update(extra)
    return step


def steps_by_id(run: dict) -> dict[str, dict]:
    return {s["step_id"]: s for s in run["steps"]}


def test_outputs_flow_between_steps_and_the_run_succeeds(stack):
    acct = stack.account()
    pid = create_pipeline(
        acct,
        inputs={"greeting": {"type": "string", "default": "hello"}, "times": {"type": "number", "default": 2}},
        steps=[
            sh("hello", 'echo "result=$GREETING" >> "$DEVOPS_OUTPUT"; echo "said $GREETING"',
               env={"GREETING": "${{ inputs.greeting }}"}),
            sh("multi", 'printf "notes<<EOF\\nline one\\nline two\\nEOF\\n" >> "$DEVOPS_OUTPUT"'),
            sh("check", 'test "$R" = "hello world x2"; echo "ok=$R" >> "$DEVOPS_OUTPUT"',
               env={"R": "${{ format('{0} world x{1}', steps.hello.outputs.result, inputs.times) }}"}),
        ],
    )
    run = wait_run(acct.client, trigger(acct, pid)["id"])
    assert run["status"] == "success", run
    steps = steps_by_id(run)
    assert steps["hello"]["outputs"] == {"result": "hello"}
    assert steps["multi"]["outputs"] == {"notes": "line one\nline two"}
    assert steps["check"]["outputs"] == {"ok": "hello world x2"}
    assert run["outputs"]["check"] == {"ok": "hello world x2"}
    assert all(s["attempts"] == 1 and s["started_at"] and s["finished_at"] for s in run["steps"])
    logs = acct.client.get(f"/pipeline_runs/{run['id']}/logs", params={"format": "text"}).text
    assert "[hello#1] said hello" in logs


def test_if_false_skips_the_step_and_the_run_still_succeeds(stack):
    acct = stack.account()
    pid = create_pipeline(
        acct,
        inputs={"deploy": {"type": "boolean", "default": False}},
        steps=[
            sh("build", 'echo "sha=abc" >> "$DEVOPS_OUTPUT"'),
            sh("deploy", "echo deploying", **{"if": "${{ inputs.deploy }}"}),
            sh("after", "true", **{"if": "${{ steps.deploy.status == 'skipped' && steps.build.outputs.sha == 'ABC' }}"}),
        ],
    )
    run = wait_run(acct.client, trigger(acct, pid)["id"])
    assert run["status"] == "success", run
    steps = steps_by_id(run)
    assert steps["deploy"]["status"] == "skipped"
    # GitHub semantics: string comparison ignores case, so 'abc' == 'ABC'
    assert steps["after"]["status"] == "success"


def test_a_failed_step_fails_the_run_skips_the_rest_but_runs_failure_handlers(stack):
    acct = stack.account()
    pid = create_pipeline(
        acct,
        steps=[
            sh("tests", 'echo "failed=3" >> "$DEVOPS_OUTPUT"; echo boom; exit 3'),
            sh("deploy", "echo should-not-run"),
            sh("report", 'echo "saw=$N" >> "$DEVOPS_OUTPUT"', env={"N": "${{ steps.tests.outputs.failed }}"},
               **{"if": "${{ failure() }}"}),
            sh("cleanup", "true", **{"if": "${{ always() }}"}),
        ],
    )
    run = wait_run(acct.client, trigger(acct, pid)["id"])
    assert run["status"] == "failure"
    assert run["error"] == "step 'tests' failed: command exited with code 3"
    steps = steps_by_id(run)
    assert steps["tests"]["status"] == "failure"
    assert steps["tests"]["outputs"] == {"failed": "3"}
    assert steps["deploy"]["status"] == "skipped"
    assert steps["report"]["status"] == "success" and steps["report"]["outputs"] == {"saw": "3"}
    assert steps["cleanup"]["status"] == "success"


def test_continue_on_error_keeps_the_run_green_and_exposes_the_outcome(stack):
    acct = stack.account()
    pid = create_pipeline(
        acct,
        steps=[
            sh("lint", "exit 1", continue_on_error=True),
            sh("next", 'echo "lint=$O/$C" >> "$DEVOPS_OUTPUT"',
               env={"O": "${{ steps.lint.outcome }}", "C": "${{ steps.lint.conclusion }}"}),
        ],
    )
    run = wait_run(acct.client, trigger(acct, pid)["id"])
    assert run["status"] == "success", run
    steps = steps_by_id(run)
    assert steps["lint"]["status"] == "failure"
    assert steps["next"]["outputs"] == {"lint": "failure/success"}


def test_step_retry_runs_a_second_attempt_recorded_as_its_own_row(stack, tmp_path):
    acct = stack.account()
    marker = tmp_path / f"flaky-{uuid.uuid4().hex}"
    pid = create_pipeline(
        acct,
        steps=[sh("flaky", f'if [ -e {marker} ]; then echo "attempt=2" >> "$DEVOPS_OUTPUT"; '
                           f'else touch {marker}; echo first-try-fails; exit 1; fi',
                  retry={"max_attempts": 2})],
    )
    run = wait_run(acct.client, trigger(acct, pid)["id"])
    assert run["status"] == "success", run
    flaky = steps_by_id(run)["flaky"]
    assert flaky["attempts"] == 2
    assert [(a["attempt"], a["status"]) for a in flaky["history"]] == [(1, "failure"), (2, "success")]
    assert flaky["history"][0]["error"] == "command exited with code 1"
    assert flaky["outputs"] == {"attempt": "2"}


def test_retry_from_the_failed_step_reuses_earlier_outputs_without_rerunning_them(stack, tmp_path):
    acct = stack.account()
    counter = tmp_path / "build-count"
    gate = tmp_path / "gate"
    pid = create_pipeline(
        acct,
        steps=[
            sh("build", f'echo x >> {counter}; echo "artifact=build-$(wc -l < {counter} | tr -d " ")" >> "$DEVOPS_OUTPUT"'),
            sh("deploy", f'test -e {gate}; echo "deployed=$A" >> "$DEVOPS_OUTPUT"',
               env={"A": "${{ steps.build.outputs.artifact }}"}),
        ],
    )
    first = wait_run(acct.client, trigger(acct, pid)["id"])
    assert first["status"] == "failure"
    gate.touch()
    response = acct.client.post(f"/pipeline_runs/{first['id']}/retry", params={"from_step": "deploy"})
    assert response.status_code == 201, response.text
    second = wait_run(acct.client, response.json()["id"])
    assert second["status"] == "success", second
    assert second["retry_of_run_id"] == first["id"] and second["from_step"] == "deploy"
    steps = steps_by_id(second)
    assert steps["build"]["reused_from_run_id"] == first["id"]
    assert steps["deploy"]["outputs"] == {"deployed": "build-1"}
    assert counter.read_text().count("x") == 1  # build did not run again


def test_cancel_stops_the_running_step_kills_its_process_and_cancels_the_rest(stack, tmp_path):
    acct = stack.account()
    pidfile = tmp_path / "pid"
    pid = create_pipeline(
        acct,
        steps=[sh("long", f"sleep 300 & echo $! > {pidfile}; wait"), sh("never", "true")],
    )
    run = trigger(acct, pid)
    wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), message="the step to start")
    sleeper = int(pidfile.read_text())
    started = time.monotonic()
    response = acct.client.post(f"/pipeline_runs/{run['id']}/cancel")
    assert response.status_code == 202, response.text
    final = wait_run(acct.client, run["id"], timeout=30)
    assert final["status"] == "cancelled", final
    assert time.monotonic() - started < 15
    steps = steps_by_id(final)
    assert steps["long"]["status"] == "cancelled"
    assert steps["never"]["status"] == "cancelled"
    wait_for(lambda: not _alive(sleeper), timeout=10, message="the step's process to be gone")
    assert acct.client.post(f"/pipeline_runs/{run['id']}/cancel").status_code == 409


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    return not (status.exists() and "zombie" in status.read_text())


def test_allow_concurrent_false_runs_queue_and_start_in_order(stack, tmp_path):
    acct = stack.account()
    journal = tmp_path / "journal"
    pid = create_pipeline(
        acct, allow_concurrent=False,
        inputs={"n": {"type": "number"}},
        steps=[sh("work", f'echo "start $N" >> {journal}; sleep 0.6; echo "end $N" >> {journal}',
                  env={"N": "${{ inputs.n }}"})],
    )
    runs = [trigger(acct, pid, n=i) for i in (1, 2, 3)]
    assert [r["status"] for r in runs] == ["queued", "queued", "queued"]
    wait_for(lambda: journal.exists() and "start 1" in journal.read_text(), message="run 1 to start")
    listed = {r["id"]: r["status"] for r in acct.client.get("/pipeline_runs", params={"pipeline_id": pid}).json()["data"]}
    assert listed[runs[1]["id"]] == "queued" and listed[runs[2]["id"]] == "queued"
    finals = [wait_run(acct.client, r["id"]) for r in runs]
    assert [f["status"] for f in finals] == ["success"] * 3
    assert journal.read_text().split("\n")[:-1] == ["start 1", "end 1", "start 2", "end 2", "start 3", "end 3"]
    assert finals[0]["finished_at"] <= finals[1]["started_at"] and finals[1]["finished_at"] <= finals[2]["started_at"]


def test_a_queued_run_can_be_cancelled_before_it_starts(stack, tmp_path):
    acct = stack.account()
    journal = tmp_path / "journal"
    pid = create_pipeline(
        acct, allow_concurrent=False, inputs={"n": {"type": "number"}},
        steps=[sh("work", f'echo "run $N" >> {journal}; sleep 1', env={"N": "${{ inputs.n }}"})],
    )
    first, second = trigger(acct, pid, n=1), trigger(acct, pid, n=2)
    wait_for(lambda: journal.exists(), message="run 1 to start")
    assert acct.client.post(f"/pipeline_runs/{second['id']}/cancel").status_code == 202
    assert wait_run(acct.client, second["id"], timeout=10)["status"] == "cancelled"
    assert wait_run(acct.client, first["id"])["status"] == "success"
    assert journal.read_text() == "run 1\n"


def test_expression_values_never_run_as_shell(stack, tmp_path):
    acct = stack.account()
    pwned = tmp_path / f"pwned-{uuid.uuid4().hex}"
    pwned2 = tmp_path / f"pwned2-{uuid.uuid4().hex}"
    payloads = [f"$(touch {pwned})", f'"; touch {pwned2}; #', f"`touch {pwned}`", f"x' && touch {pwned2} '"]
    pid = create_pipeline(
        acct, inputs={"title": {"type": "string"}},
        steps=[
            sh("echo", 'printf "%s" "$TITLE" > "$DEVOPS_WORKSPACE/title"; echo "title<<END" >> "$DEVOPS_OUTPUT"; '
                       'cat "$DEVOPS_WORKSPACE/title" >> "$DEVOPS_OUTPUT"; echo >> "$DEVOPS_OUTPUT"; echo END >> "$DEVOPS_OUTPUT"',
               env={"TITLE": "${{ inputs.title }}"}),
            sh("again", 'echo "$T" > /dev/null', env={"T": "${{ steps.echo.outputs.title }}"}),
        ],
    )
    for payload in payloads:
        run = wait_run(acct.client, trigger(acct, pid, title=payload)["id"])
        assert run["status"] == "success", run
        assert steps_by_id(run)["echo"]["outputs"]["title"] == payload
    assert not pwned.exists() and not pwned2.exists()


def test_claude_execute_is_available_and_checks_its_with(stack):
    # issue 14: the type used to fail as "not available yet"; now it runs its activity, which
    # refuses a `with` naming no prompt (the full step is tested in tests/ai/)
    acct = stack.account()
    pid = create_pipeline(acct, steps=[{"id": "ship", "type": "claude_execute", "with": {}}])
    run = wait_run(acct.client, trigger(acct, pid)["id"])
    assert run["status"] == "failure"
    error = steps_by_id(run)["ship"]["error"]
    assert "not available" not in error and "exactly one of `with.prompt`" in error


def test_custom_steps_run_registered_handlers(stack):
    acct = stack.account()
    pid = create_pipeline(
        acct,
        steps=[
            {"id": "meta", "type": "custom", "with": {"handler": "noop", "outputs": {"version": "1.2.3"}}},
            sh("files", "mkdir -p out && echo hi > out/a.txt"),
            {"id": "sum", "type": "custom", "with": {"handler": "checksum", "paths": ["out/*.txt"]}},
            {"id": "missing", "type": "custom", "with": {"handler": "nope"}},
        ],
    )
    run = wait_run(acct.client, trigger(acct, pid)["id"])
    steps = steps_by_id(run)
    assert steps["meta"]["outputs"] == {"version": "1.2.3"}
    assert steps["sum"]["outputs"]["files"] == 1 and len(steps["sum"]["outputs"]["sha256"]) == 64
    assert steps["missing"]["status"] == "failure"
    assert "no custom handler named 'nope'" in steps["missing"]["error"]
