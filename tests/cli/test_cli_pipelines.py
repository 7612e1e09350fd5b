"""``devops pipelines`` against the live stack: import a YAML file, list, export, and
``trigger --wait``, whose exit code is the run's outcome."""

from __future__ import annotations

import json

from typer.testing import Result


def pipeline_yaml(name: str, command: str) -> str:
    return (f"name: {name}\nsteps:\n  - id: build\n    type: run_tests\n    with:\n"
            f"      command: {json.dumps(command)}\n")


def test_import_list_and_trigger_wait_exit_with_the_run_outcome(stack, devops, tmp_path):
    acct = stack.account()

    def cli(*args: str) -> Result:
        return devops(stack.url, acct.token, *args)

    good = tmp_path / "good.yaml"
    good.write_text(pipeline_yaml("cli-good", "echo built; echo 'result=ok' >> \"$DEVOPS_OUTPUT\""))
    imported = cli("pipelines", "import", str(good), "--json")
    assert imported.exit_code == 0, imported.output
    good_id = json.loads(imported.stdout)["id"]
    bad = tmp_path / "bad.yaml"
    bad.write_text(pipeline_yaml("cli-bad", "echo about to fail; exit 3"))
    assert cli("pipelines", "import", str(bad)).exit_code == 0

    listed = cli("pipelines", "list")
    assert listed.exit_code == 0 and "cli-good" in listed.stdout and "cli-bad" in listed.stdout
    as_json = json.loads(cli("pipelines", "list", "--json").stdout)
    assert as_json["count"] == 2 and {p["slug"] for p in as_json["data"]} == {"cli-good", "cli-bad"}
    bad_id = next(p["id"] for p in as_json["data"] if p["slug"] == "cli-bad")
    exported = cli("pipelines", "export", str(good_id))
    assert exported.exit_code == 0 and "echo built" in exported.stdout

    succeeded = cli("pipelines", "trigger", str(good_id), "--wait", "--timeout", "60")
    assert succeeded.exit_code == 0, succeeded.output
    assert "success" in succeeded.stdout and "build: success" in succeeded.stderr  # plain progress lines

    failed = cli("pipelines", "trigger", str(bad_id), "--wait", "--timeout", "60")
    assert failed.exit_code == 1, failed.output
    assert "step build failed:" in failed.stdout and "3" in failed.stdout.split("step build failed:")[1]

    run = json.loads(cli("pipelines", "trigger", str(good_id), "--wait", "--json").stdout)  # only JSON on stdout
    assert run["status"] == "success" and run["steps"][0]["outputs"] == {"result": "ok"}
    runs = json.loads(cli("runs", "list", "--pipeline", str(good_id), "--json").stdout)
    assert runs["count"] == 2 and {r["status"] for r in runs["data"]} == {"success"}
    shown = cli("runs", "show", str(run["id"]))
    assert shown.exit_code == 0 and "result=ok" in shown.stdout


def test_names_and_expressions_with_brackets_are_printed_literally(stack, devops, tmp_path):
    """API text is data, not rich markup: ``[/x]`` must neither crash nor vanish."""
    acct = stack.account()
    document = tmp_path / "brackets.yaml"
    document.write_text("name: 'build [red]x[/red] [/oops]'\ndescription: '[bold]not bold[/bold]'\n"
                        "steps:\n  - id: build\n    type: run_tests\n    if: \"${{ inputs.flags[0] == 'a' }}\"\n"
                        "    with: {command: 'true'}\ninputs:\n  flags: {type: string, default: a}\n")
    imported = devops(stack.url, acct.token, "pipelines", "import", str(document), "--json")
    assert imported.exit_code == 0, imported.output
    pipeline_id = json.loads(imported.stdout)["id"]
    listed = devops(stack.url, acct.token, "pipelines", "list")
    assert listed.exit_code == 0, listed.output
    assert "[red]x[/red]" in listed.stdout.replace("\n", "") or "[red]x" in listed.stdout, listed.stdout
    shown = devops(stack.url, acct.token, "pipelines", "show", str(pipeline_id))
    assert shown.exit_code == 0, shown.output
    assert "[/oops]" in shown.stdout and "[bold]not bold[/bold]" in shown.stdout, shown.stdout
    assert "flags[0]" in shown.stdout, shown.stdout
