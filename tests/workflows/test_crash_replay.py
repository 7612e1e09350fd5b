"""Replay coverage (issue 11 item 8): every history under ``tests/workflows/histories/`` replays
against the current workflow code inside Temporal's sandbox, and every workflow type and main
path has a recorded history.

Every workflow is sandboxed by definition (a worker may still run them unsandboxed with
``DEVOPS_WORKFLOW_SANDBOX=false``); here they always replay in the sandbox: it turns a clock,
random or I/O call in workflow code into a failure instead of a silent non-determinism that only
shows when a deploy replays a run in flight.

The histories are real: ``tests/workflows/record_histories.py`` (``RECORD_HISTORIES=1``, by hand,
never in CI) drives each path on the real stack and writes them. A workflow change that breaks
one of them would break the executions in flight at a deploy: put it under ``workflow.patched``
(README, "Changing a workflow safely") instead of re-recording.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from temporalio import workflow
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

from worker import WORKFLOWS

HISTORIES = Path(__file__).parent / "histories"

# Every main path that must keep replaying: file stem -> workflow type.
REQUIRED = {
    "pipeline-run-success-retry-skip": "PipelineRunWorkflow",
    "pipeline-run-failure": "PipelineRunWorkflow",
    "pipeline-run-cancelled": "PipelineRunWorkflow",
    "pipeline-run-fork-trust-gate": "PipelineRunWorkflow",
    "pipeline-run-webhook-push": "PipelineRunWorkflow",
    "pipeline-run-timeout": "PipelineRunWorkflow",
    "pipeline-run-docker-step": "PipelineRunWorkflow",
    "pipeline-run-deploy-step-approved": "PipelineRunWorkflow",
    "pipeline-queue-two-runs-one-withdrawn": "PipelineQueueWorkflow",
    "scheduled-trigger-run-success": "ScheduledTriggerWorkflow",
    "scheduled-trigger-skipped": "ScheduledTriggerWorkflow",
    "webhook-dispatch": "WebhookDispatchWorkflow",
    "repository-sync-completed": "RepositorySyncWorkflow",
    "repository-webhook-configure": "RepositoryWebhookWorkflow",
    "repository-webhook-delete": "RepositoryWebhookWorkflow",
    "container-execution-completed": "ContainerExecutionWorkflow",
    "container-execution-timeout": "ContainerExecutionWorkflow",
    "container-execution-cancelled": "ContainerExecutionWorkflow",
    "container-execution-pipeline-step": "ContainerExecutionWorkflow",
    "host-sync-first-run-continued-as-new": "HostSyncWorkflow",
    "host-sync-after-continue-as-new": "HostSyncWorkflow",
    "host-sync-single-round": "HostSyncWorkflow",
    "swarm-sync-first-run-continued-as-new": "SwarmSyncWorkflow",
    "swarm-sync-after-continue-as-new": "SwarmSyncWorkflow",
    "swarm-sync-single-round": "SwarmSyncWorkflow",
    "rollout-canary-completed": "RolloutWorkflow",
    "rollout-blue-green-completed": "RolloutWorkflow",
    "rollout-canary-aborted": "RolloutWorkflow",
    "rollout-canary-pipeline-child": "RolloutWorkflow",
    "pipeline-run-claude-execute": "PipelineRunWorkflow",
    "pipeline-run-integration-step": "PipelineRunWorkflow",
    "integration-execution-retried-success": "IntegrationExecutionWorkflow",
    "integration-execution-failure": "IntegrationExecutionWorkflow",
    "integration-execution-cancelled": "IntegrationExecutionWorkflow",
    "integration-execution-pipeline-step": "IntegrationExecutionWorkflow",
    "pipeline-run-a2a-callback": "PipelineRunWorkflow",
    "a2a-callback-retried-delivered": "A2ACallbackWorkflow",
    "container-execution-a2a-callback": "ContainerExecutionWorkflow",
    "a2a-callback-container-delivered": "A2ACallbackWorkflow",
}


class _TrackingSandboxRunner(SandboxedWorkflowRunner):
    """The default sandbox, noting which executions it ran (the proof the sandbox was on)."""

    ran: list[tuple[str, str]] = []  # noqa: RUF012 - one replay at a time in this module

    def create_instance(self, det):  # noqa: ANN001, ANN201 - the SDK's WorkflowRunner hook
        _TrackingSandboxRunner.ran.append((det.info.workflow_id, det.defn.name))
        return super().create_instance(det)


def sandboxed_replayer() -> Replayer:
    """Every workflow type in the sandbox (the runner for a definition with ``sandboxed=False``,
    should one appear, is the sandboxed one too)."""
    runner = _TrackingSandboxRunner()
    return Replayer(workflows=WORKFLOWS, workflow_runner=runner, unsandboxed_workflow_runner=runner)


def replay_sandboxed(histories: list[WorkflowHistory]) -> None:
    """Replay ``histories`` in the sandbox; raises on the first non-determinism or failure."""

    async def replay() -> None:
        replayer = sandboxed_replayer()
        for history in histories:
            await replayer.replay_workflow(history, raise_on_replay_failure=True)

    asyncio.run(replay())


def load(path: Path) -> WorkflowHistory:
    return WorkflowHistory.from_json(path.stem, json.loads(path.read_text()))


def workflow_type(path: Path) -> str:
    first = json.loads(path.read_text())["events"][0]
    return first["workflowExecutionStartedEventAttributes"]["workflowType"]["name"]


@pytest.mark.parametrize("path", sorted(HISTORIES.glob("*.json")), ids=lambda p: p.stem)
def test_a_recorded_history_replays_in_the_sandbox(path):
    _TrackingSandboxRunner.ran.clear()
    replay_sandboxed([load(path)])
    assert (path.stem, workflow_type(path)) in _TrackingSandboxRunner.ran  # it really ran sandboxed


def test_every_workflow_type_and_main_path_has_a_recorded_history():
    recorded = {path.stem: workflow_type(path) for path in HISTORIES.glob("*.json")}
    missing = {stem: kind for stem, kind in REQUIRED.items() if recorded.get(stem) != kind}
    assert not missing, f"histories missing or of another type (RECORD_HISTORIES=1, record_histories.py): {missing}"
    assert {defn.__name__ for defn in WORKFLOWS} <= set(recorded.values())


def test_every_workflow_is_sandboxed_by_definition():
    unsandboxed = [defn.__name__ for defn in WORKFLOWS if not workflow._Definition.must_from_class(defn).sandboxed]
    assert not unsandboxed, f"workflows defined with sandboxed=False: {unsandboxed}"


def test_the_replay_catches_a_changed_command_sequence():
    """The guard itself: a history whose activity no longer matches the code's fails to replay."""
    path = HISTORIES / "container-execution-completed.json"
    document = json.loads(path.read_text())
    scheduled = next(e for e in document["events"] if e["eventType"] == "EVENT_TYPE_ACTIVITY_TASK_SCHEDULED")
    scheduled["activityTaskScheduledEventAttributes"]["activityType"]["name"] = "an_activity_the_code_never_calls"
    changed = WorkflowHistory.from_json(path.stem, document)

    async def replay():
        return await sandboxed_replayer().replay_workflow(changed, raise_on_replay_failure=False)

    result = asyncio.run(replay())
    assert result.replay_failure is not None
    assert "nondetermin" in str(result.replay_failure).lower()
