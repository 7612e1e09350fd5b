"""ContainerExecutionWorkflow: one container execution (``container-<instance id>``).

Contract shared by the API (which creates the ``ContainerInstance`` row and starts this workflow)
and the pipeline steps that run in containers (which start it as a child). The workflow loads
everything else from the row inside its activities; no secret or token ever travels in its input.
"""

from dataclasses import dataclass

from temporalio import workflow


def container_workflow_id(instance_id: int) -> str:
    return f"container-{instance_id}"


@dataclass
class ContainerExecutionInput:
    instance_id: int
    account_id: int


@dataclass
class ContainerExecutionOutcome:
    status: str  # completed | failed | cancelled | timeout
    exit_code: int | None = None
    error: str | None = None


@workflow.defn
class ContainerExecutionWorkflow:
    @workflow.run
    async def run(self, inp: ContainerExecutionInput) -> ContainerExecutionOutcome:
        raise NotImplementedError("being built (issue 5)")
