"""PipelineQueueWorkflow: runs of a pipeline with ``allow_concurrent: false``, one at a time.

One queue workflow per pipeline (``pipeline-queue-<pipeline id>``) receives runs with
signal-with-start in the order they were triggered and starts each as the child workflow
``run-<run id>`` when the previous one has ended. A queued run can be withdrawn with the
``cancel_queued`` update. When idle the queue finishes; the next trigger starts it again.
"""


from dataclasses import dataclass, field
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ChildWorkflowError
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from activities.bookkeeping import EventRecord, RecordRunProgressInput, RunBookkeeping, RunUpdate
    from workflows.pipeline_run import PipelineRunInput, PipelineRunWorkflow, run_search_attributes

IDLE_TIMEOUT = timedelta(minutes=5)
RUNS_BEFORE_CONTINUE_AS_NEW = 200


@dataclass
class PipelineQueueInput:
    pipeline_id: int
    pending: list[PipelineRunInput] = field(default_factory=list)


def queue_workflow_id(pipeline_id: int) -> str:
    return f"pipeline-queue-{pipeline_id}"


def run_workflow_id(run_id: int) -> str:
    return f"run-{run_id}"


@workflow.defn
class PipelineQueueWorkflow:
    @workflow.init
    def __init__(self, inp: PipelineQueueInput) -> None:
        # Runs handed over by a continue-as-new first; enqueue signals arriving with the start
        # are appended after them.
        self._pending: list[PipelineRunInput] = list(inp.pending)
        self._running: int | None = None
        self._started: set[int] = set()  # runs this execution has started (the enqueue dedupe)

    @workflow.signal
    def enqueue(self, run: PipelineRunInput) -> None:
        # A run is enqueued again when the API's start outbox re-sends one whose first enqueue it
        # could not record (services.run_outbox): one that already ran here must not run twice. Patched:
        # histories from before never enqueued a finished run again, so they replay unchanged.
        if run.run_id in self._started and workflow.patched("queue-dedupe-started-runs"):
            return
        if all(p.run_id != run.run_id for p in self._pending) and self._running != run.run_id:
            self._pending.append(run)

    @workflow.update
    async def cancel_queued(self, run_id: int) -> bool:
        """Withdraw a run that has not started; False if it is not waiting here (any more)."""
        for index, run in enumerate(self._pending):
            if run.run_id == run_id:
                del self._pending[index]
                now = workflow.now().isoformat()
                await workflow.execute_local_activity_method(
                    RunBookkeeping.record_run_progress,
                    RecordRunProgressInput(
                        run_id=run.run_id, account_id=run.account_id, pipeline_id=run.pipeline_id,
                        run=RunUpdate(status="cancelled", error="run cancelled while queued", finished_at=now),
                        events=[EventRecord(key="queue-cancelled", event_type="run_completed",
                                            payload={"run_id": run.run_id, "status": "cancelled"}, at=now)],
                    ),
                    start_to_close_timeout=timedelta(seconds=30),
                )
                return True
        return False

    @workflow.query
    def queued_run_ids(self) -> list[int]:
        return [p.run_id for p in self._pending]

    @workflow.run
    async def run(self, inp: PipelineQueueInput) -> None:
        started = 0
        while True:
            has_work = await self._wait_for_work()
            if not has_work:
                await workflow.wait_condition(workflow.all_handlers_finished)
                if not self._pending:
                    return
                continue
            run = self._pending.pop(0)
            self._running = run.run_id
            self._started.add(run.run_id)
            try:
                await workflow.execute_child_workflow(
                    PipelineRunWorkflow.run,
                    run,
                    id=run_workflow_id(run.run_id),
                    parent_close_policy=ParentClosePolicy.ABANDON,
                    search_attributes=run_search_attributes(run, "running"),
                    static_summary=f"{run.pipeline_name} #{run.run_number}",
                )
            except ChildWorkflowError:
                pass  # the run recorded its own failure or cancellation
            self._running = None
            started += 1
            if started >= RUNS_BEFORE_CONTINUE_AS_NEW or workflow.info().is_continue_as_new_suggested():
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(PipelineQueueInput(pipeline_id=inp.pipeline_id, pending=self._pending))

    async def _wait_for_work(self) -> bool:
        try:
            await workflow.wait_condition(lambda: bool(self._pending), timeout=IDLE_TIMEOUT)
        except TimeoutError:
            return False
        return True
