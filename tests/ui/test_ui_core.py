"""The dashboard in a real browser against the running stack: sign in, import a pipeline,
trigger it with typed inputs, watch its coloured log stream to the end, decide approval gates as
a second user (also on a phone-sized screen), and see a 422 named by field next to the form.
SQLite only: what is tested is the browser side, which does not depend on the database."""

from __future__ import annotations

import re
import uuid

import pytest

from tests.harness import wait_for, wait_run
from tests.ui.conftest import add_user, shot, sign_in
from tests.workflows.test_approvals import gated_pipeline, waiting
from tests.workflows.test_pipeline_run import trigger

pytestmark = [pytest.mark.parametrize("database_url", ["sqlite"], indirect=True), pytest.mark.xdist_group("ui")]

COLOURS = """\
name: ui-colours-{suffix}
description: prints coloured lines
inputs:
  count: {{type: number, default: 2}}
  flavour: {{type: choice, options: [plain, fancy], default: plain}}
  loud: {{type: boolean, default: false}}
  who: {{type: string, default: world}}
steps:
  - id: colours
    type: run_tests
    with:
      command: 'printf "\\033[1;32mgreen %s\\033[0m for $WHO\\n" one two; echo "count=$COUNT" >> "$DEVOPS_OUTPUT"'
      env: {{COUNT: "${{{{ inputs.count }}}}", WHO: "${{{{ inputs.who }}}}"}}
  - id: after
    type: run_tests
    with:
      command: 'echo "flavour=$FLAVOUR loud=$LOUD"'
      env: {{FLAVOUR: "${{{{ inputs.flavour }}}}", LOUD: "${{{{ inputs.loud }}}}"}}
"""


def hash_id(page, prefix: str) -> int:
    page.wait_for_url(re.compile(rf".*#/{prefix}/\d+$"))
    return int(page.url.rsplit("/", 1)[1])


def test_sign_in_import_trigger_and_watch_the_coloured_log_to_the_end(stack, new_page):
    acct = stack.account()
    page = new_page(viewport={"width": 1280, "height": 900})
    page.goto(f"{stack.url}/ui/")
    page.get_by_label("API token").fill("dvo_wrong")
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("alert").filter(has_text="missing or invalid API token").wait_for()
    sign_in(page, stack.url, acct.token)

    page.get_by_label("Pipeline document (YAML or JSON)").fill(COLOURS.format(suffix=uuid.uuid4().hex[:6]))
    page.get_by_role("button", name="Import").click()
    pipeline_id = hash_id(page, "pipelines")
    assert acct.client.get(f"/pipelines/{pipeline_id}").json()["description"] == "prints coloured lines"
    page.get_by_role("heading", name="Definition").wait_for()
    assert "ui-colours-" in page.get_by_label("Pipeline document (YAML)").input_value()
    shot(page, "pipeline-page")

    # typed inputs, from the pipeline's declarations
    page.get_by_label("count", exact=True).fill("3")
    page.get_by_label("flavour", exact=True).select_option("fancy")
    page.get_by_label("loud", exact=True).check()
    page.get_by_label("who", exact=True).fill("ui")
    page.get_by_role("button", name="Trigger run").click()
    run_id = hash_id(page, "runs")

    coloured = page.locator("#run-log span.ansi-fg-32", has_text="green two")
    coloured.wait_for()
    assert "ansi-bold" in coloured.get_attribute("class")
    assert "\x1b" not in page.locator("#run-log").inner_text()
    assert "green one for ui" in page.locator("#run-log").inner_text()
    page.locator("#log-state", has_text="finished").wait_for()
    page.locator("#run-status", has_text="success").wait_for()
    page.locator('[data-step="after"] .badge', has_text="success").wait_for()
    assert "flavour=fancy loud=true" in page.locator("#run-log").inner_text()
    run = wait_run(acct.client, run_id)
    assert run["status"] == "success"
    assert run["inputs"] == {"count": 3, "flavour": "fancy", "loud": True, "who": "ui"}
    link = page.get_by_role("link", name="Open in Temporal UI")
    assert link.get_attribute("href") == run["temporal_ui_url"] and run["workflow_id"] in run["temporal_ui_url"]
    page.locator('[data-step="colours"]').get_by_text("count").wait_for()
    shot(page, "run-page", docs=True)

    # the runs list shows it, filtered by status
    page.goto(f"{stack.url}/ui/#/runs?status=success")
    page.get_by_role("link", name=f"#{run['run_number']}").wait_for()
    assert "null" not in page.locator("#runs-list").inner_text()
    shot(page, "runs-list")
    # live: a run started elsewhere shows up, and finishes, without a reload
    page.goto(f"{stack.url}/ui/#/runs")
    page.locator(".live", has_text="live").wait_for()
    second = trigger(acct, pipeline_id)
    row = page.locator("#runs-list tr", has=page.get_by_role("link", name=f"#{second['run_number']}", exact=True))
    row.locator(".badge", has_text="success").wait_for()
    page.get_by_role("button", name="Sign out").click()
    page.get_by_label("API token").wait_for()
    assert not [c for c in page.context.cookies() if c["name"] == "devops_session"]


def test_an_import_error_is_shown_next_to_the_form_naming_the_field(stack, new_page):
    acct = stack.account()
    document = "name: broken\nsteps:\n  - id: a\n    type: no_such_step\n    with: {command: 'true'}\n"
    answer = acct.client.post("/pipelines/import", content=document, headers={"Content-Type": "application/yaml"})
    assert answer.status_code == 422
    problem = answer.json()["detail"][0]
    where = ".".join(str(part) for part in problem["loc"][1:])  # without the leading "body"
    page = new_page(viewport={"width": 1100, "height": 900})
    sign_in(page, stack.url, acct.token)
    page.get_by_label("Pipeline document (YAML or JSON)").fill(document)
    page.get_by_role("button", name="Import").click()
    shown = page.locator(f'#import-errors li[data-loc="{where}"]')
    shown.wait_for()
    assert where in shown.inner_text() and problem["msg"][:30] in shown.inner_text()
    assert page.get_by_label("Pipeline document (YAML or JSON)").input_value() == document  # nothing lost
    assert acct.client.get("/pipelines").json()["count"] == 0
    shot(page, "import-error")

    # the pipeline page's YAML editor: saved with PUT as YAML, a 422 shown by field, nothing changed
    page.get_by_label("Pipeline document (YAML or JSON)").fill(document.replace("no_such_step", "run_tests"))
    page.get_by_role("button", name="Import").click()
    pipeline_id = hash_id(page, "pipelines")
    editor = page.get_by_label("Pipeline document (YAML)", exact=True)
    yaml = editor.input_value()
    assert "type: run_tests" in yaml
    editor.fill(yaml.replace("type: run_tests", "type: no_such_step"))
    page.get_by_role("button", name="Save").click()
    page.locator(f'#edit-errors li[data-loc="{where}"]').wait_for()
    assert acct.client.get(f"/pipelines/{pipeline_id}").json()["steps"][0]["type"] == "run_tests"
    editor.fill(yaml.replace("name: broken", "name: mended"))
    page.get_by_role("button", name="Save").click()
    page.get_by_role("heading", name="mended").wait_for()
    assert acct.client.get(f"/pipelines/{pipeline_id}").json()["name"] == "mended"


def test_ansi_codes_become_styled_spans_and_text_stays_text(stack, new_page):
    page = new_page()
    page.goto(f"{stack.url}/ui/")
    page.get_by_label("API token").wait_for()
    rendered = page.evaluate("""async () => {
        const { renderAnsi } = await import("/ui/static/js/ansi.js");
        const box = document.createElement("pre");
        box.append(...renderAnsi("a\x1b[31mred\x1b[0m \x1b[1;38;5;208m<b>x</b>\x1b[22;39m \x1b]0;title\x07\x1b[Kend"));
        return { html: box.innerHTML, text: box.textContent,
                 spans: [...box.querySelectorAll("span")].map((s) => [s.className, s.style.color, s.textContent]) };
    }""")
    assert rendered["text"] == "ared <b>x</b> end"
    assert rendered["spans"] == [["ansi-fg-31", "", "red"], ["ansi-bold", "rgb(255, 135, 0)", "<b>x</b>"]]
    assert "<b>" not in rendered["html"] and "&lt;b&gt;" in rendered["html"]


def test_an_approver_approves_a_gate_with_a_comment_and_the_run_finishes(stack, new_page):
    acct = stack.account()
    _email, token, approver = add_user(stack, acct, "approver")
    run = trigger(acct, gated_pipeline(acct, ["role:approver"]))
    waiting(acct, run["id"], "deploy")

    page = new_page(viewport={"width": 1100, "height": 800})
    sign_in(page, stack.url, token)
    page.get_by_role("link", name="Approvals").click()
    gate = page.locator(f'article.approval[data-run="{run["id"]}"]')
    gate.wait_for()
    gate.get_by_label("Comment").fill("ship it")
    shot(page, "approval-page", docs=True)
    # by keyboard: from the comment, Tab reaches Approve, Enter presses it
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Approve"
    page.keyboard.press("Enter")
    page.get_by_role("status").filter(has_text="Approved").wait_for()
    finished = wait_run(acct.client, run["id"])
    assert finished["status"] == "success"
    assert [(d["decision"], d["comment"]) for d in finished["approvals"]] == [("approved", "ship it")]
    page.get_by_text("Nothing waits on you.").wait_for()
    page.goto(f"{stack.url}/ui/#/runs/{run['id']}")
    page.locator("#run-status", has_text="success").wait_for()
    page.get_by_text("“ship it”").wait_for()
    # its steps print nothing: the log says so instead of staying a blank box
    page.locator("#run-log .log-empty", has_text="No log lines were written.").wait_for()
    assert approver.get("/approvals").json()["count"] == 0


def test_an_approver_rejects_on_a_phone_sized_screen(stack, new_page):
    acct = stack.account()
    _email, token, _client = add_user(stack, acct, "approver")
    run = trigger(acct, gated_pipeline(acct, ["role:approver"], require_comment=True))
    waiting(acct, run["id"], "deploy")

    page = new_page(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True, device_scale_factor=2)
    sign_in(page, stack.url, token)
    page.goto(f"{stack.url}/ui/#/approvals")
    gate = page.locator(f'article.approval[data-run="{run["id"]}"]')
    gate.wait_for()
    # a phone: nothing wider than the screen, the buttons big enough to tap
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    reject = gate.get_by_role("button", name="Reject")
    box = reject.bounding_box()
    assert box and box["height"] >= 44 and box["x"] + box["width"] <= 390
    reject.tap()  # without the required comment: refused, said next to the form
    gate.get_by_role("alert").wait_for()
    assert acct.client.get(f"/pipeline_runs/{run['id']}").json()["status"] == "running"
    gate.get_by_label("Comment").fill("not today")
    shot(page, "approval-phone")
    gate.get_by_role("button", name="Reject").tap()
    page.get_by_role("status").filter(has_text="Rejected").wait_for()
    finished = wait_run(acct.client, run["id"])
    assert finished["status"] == "failure"
    assert [(d["decision"], d["comment"]) for d in finished["approvals"]] == [("rejected", "not today")]
    wait_for(lambda: page.get_by_text("Nothing waits on you.").is_visible(), message="the gate to leave the list")
