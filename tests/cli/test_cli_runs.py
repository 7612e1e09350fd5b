"""``devops runs`` against the live stack: ``logs --follow`` prints each line as it is written
and ends with the run (exit code = its outcome); ``--timeout`` exits 4; cancelling exits 3."""

from __future__ import annotations

import json

from typer.testing import Result

from tests.harness import wait_for, wait_run
from tests.workflows.test_pipeline_run import create_pipeline, sh, trigger


def test_logs_follow_prints_each_line_as_written_and_ends_with_the_run(stack, devops):
    acct = stack.account()
    pid = create_pipeline(acct, steps=[
        sh("count", "for i in 1 2 3 4 5; do echo \"line $i\"; sleep 0.3; done; printf '\\033[31mred\\033[0m\\n'"),
        sh("after", "echo done"),
    ])
    run = trigger(acct, pid)
    assert acct.client.get(f"/pipeline_runs/{run['id']}").json()["status"] not in ("success", "failure")

    followed = devops(stack.url, acct.token, "runs", "logs", str(run["id"]), "--follow")
    assert followed.exit_code == 0, followed.output
    lines = followed.stdout.splitlines()
    assert [line for line in lines if line.startswith("[count#1] line")] == [f"[count#1] line {i}" for i in range(1, 6)]
    assert "[count#1] red" in lines and "\x1b" not in followed.stdout  # ANSI stripped off a terminal
    assert "[after#1] done" in lines and lines.index("[count#1] line 5") < lines.index("[after#1] done")
    assert f"run {run['id']} ended: success" in followed.stderr
    assert wait_run(acct.client, run["id"])["status"] == "success"

    # after the end: the stream replays the whole log and ends at once; --color keeps ANSI
    coloured = devops(stack.url, acct.token, "runs", "logs", str(run["id"]), "--follow", "--color", "--step", "count")
    assert coloured.exit_code == 0 and "\x1b[31mred\x1b[0m" in coloured.stdout and "done" not in coloured.stdout
    events = [json.loads(line) for line in
              devops(stack.url, acct.token, "runs", "logs", str(run["id"]), "--follow", "--json").stdout.splitlines()]
    assert events[-1] == {"event": "end", "data": {"run_id": run["id"], "status": "success", "error": None}}
    assert [e["data"]["line"] for e in events if e["event"] == "log"][:2] == ["line 1", "line 2"]


def test_a_timeout_exits_4_and_a_cancelled_run_exits_3(stack, devops):
    acct = stack.account()
    pid = create_pipeline(acct, steps=[sh("slow", "echo started; sleep 60")])

    def cli(*args: str) -> Result:
        return devops(stack.url, acct.token, *args)

    timed_out = cli("pipelines", "trigger", str(pid), "--wait", "--timeout", "1")
    assert timed_out.exit_code == 4, timed_out.output
    assert "timed out after 1s" in timed_out.stderr
    run_id = json.loads(cli("runs", "list", "--json").stdout)["data"][0]["id"]
    wait_for(lambda: "started" in acct.client.get(f"/pipeline_runs/{run_id}/logs", params={"format": "text"}).text,
             message="the step to start")
    assert cli("runs", "cancel", str(run_id)).exit_code == 0
    followed = cli("runs", "logs", str(run_id), "--follow")
    assert followed.exit_code == 3, followed.output
    assert "[slow#1] started" in followed.stdout and "ended: cancelled" in followed.stderr
