"""PipelineRunWorkflow: one durable run of a pipeline (the seed's ExecutionService).

The run's pipeline document is a snapshot in the workflow input, so a run is unaffected by
later edits and replays identically. Steps run in order; each is one activity chosen by
step type. User-level retries are a loop here (each attempt is its own StepExecution row);
infrastructure failures such as a worker dying mid-step are retried by Temporal within the
same attempt. Progress reaches the database through a batched local activity: one call as a
step starts (carrying what the previous step did) and one at the end.
"""


import asyncio
import contextlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Required, TypedDict

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeKey, SearchAttributePair, TypedSearchAttributes
from temporalio.exceptions import ActivityError, ApplicationError, ChildWorkflowError
from temporalio.exceptions import CancelledError as TemporalCancelledError
from temporalio.exceptions import TimeoutError as TemporalTimeoutError
from temporalio.workflow import ActivityCancellationType

with workflow.unsafe.imports_passed_through():
    from activities.approvals import (
        ApprovalActivities,
        OpenApprovalGateInput,
        OpenApprovalGateResult,
        RecordApprovalDecisionInput,
    )
    from activities.bookkeeping import (
        EventRecord,
        RecordRunProgressInput,
        RunBookkeeping,
        RunUpdate,
        StepUpdate,
    )
    from activities.container_steps import (
        ContainerStepActivities,
        ContainerStepCollectInput,
        ContainerStepPlan,
    )
    from activities.git_steps import GitStepActivities, SetCommitStatusInput
    from activities.rollouts import DeployStepPlan, RolloutActivities
    from activities.step_contract import STEP_FAILED, StepInput, StepResult, secret_placeholder
    from activities.step_registry import step_activity
    from activities.steps import StepActivities
    from domain import expressions
    from domain.step_types import StepRunner, StepSpec, StepType, defaults_to_container, step_type
    from workflows.a2a_callback import start_run_callback
    from workflows.container_execution import ContainerExecutionInput, ContainerExecutionWorkflow
    from workflows.integration_step import run_integration_step
    from workflows.rollout import RolloutControl, RolloutInput, RolloutOutcome, RolloutWorkflow

ACCOUNT_ID = SearchAttributeKey.for_int("AccountId")
PIPELINE_ID = SearchAttributeKey.for_int("PipelineId")
TRIGGER_TYPE = SearchAttributeKey.for_keyword("TriggerType")
RUN_STATUS = SearchAttributeKey.for_keyword("RunStatus")


def effective_executor(type_name: str, params: dict[str, Any], default_executor: str) -> str:
    """A step's executor: its own `with.executor`, else the installation's default for the types
    that can run in a container (docker when the shell executor is off) — except a `custom` step
    naming a registered handler, which runs the operator's code in the worker. The save-time twin
    is ``domain.pipeline_document.default_executor``; both decide by ``defaults_to_container``."""
    executor = params.get("executor")
    if executor:
        return str(executor)
    if not defaults_to_container(type_name, params):
        return "shell"
    return default_executor


# A commit status is a courtesy to the provider's UI: a few tries, never holding the run up for long.
COMMIT_STATUS_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=20),
                                  maximum_attempts=5)
COMMIT_STATUS_TIMEOUT = timedelta(seconds=30)
BOOKKEEPING_TIMEOUT = timedelta(seconds=30)
BOOKKEEPING_RETRY = RetryPolicy(initial_interval=timedelta(milliseconds=200), maximum_interval=timedelta(seconds=5))
# Issue 11 item 3: a step whose activity times out while the run is being cancelled is cancelled.
PATCH_STOPPED_WHILE_WORKER_DOWN = "11-step-stopped-while-worker-down"
# Issue 14: claude_execute became available (before, its step failed without an activity).
PATCH_CLAUDE_EXECUTE = "14-claude-execute"
# Infrastructure retries only: a user-visible failure is StepFailed and never retried here.
STEP_ACTIVITY_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=0,
    non_retryable_error_types=[STEP_FAILED],
)


class ReusedStep(TypedDict, total=False):
    """A step's outcome in an earlier run, reused as is by a retry from a later step."""

    status: Required[str]
    outputs: dict[str, Any]
    run_id: int  # the run the outcome comes from


@dataclass
class PipelineRunInput:
    run_id: int
    account_id: int
    pipeline_id: int
    pipeline_name: str
    run_number: int
    trigger_type: str
    steps: list[StepSpec]
    inputs: dict[str, Any] = field(default_factory=dict)
    trigger: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    timeout_seconds: float = 3600.0
    activity_task_queue: str | None = None
    step_heartbeat_timeout_seconds: float = 30.0
    default_step_timeout_minutes: int = 60
    # step id -> its outcome in an earlier run: the steps a retry from a step reuses
    reused_steps: dict[str, ReusedStep] = field(default_factory=dict)
    triggered_by: str | None = None  # the email of the user who started the run, if any
    # A run from a fork's pull request: it sees no secrets, and steps with requires_trust wait
    # for a maintainer's approval (and are skipped without it).
    untrusted: bool = False
    # Where a commit status links to (the run in the API); None: no commit status is set.
    status_target_url: str | None = None
    # The executor of run_tests/custom steps that name none ("docker" when the installation has
    # the shell executor off), and the image such a docker step gets when it names none. The
    # defaults are what runs started before these fields did, so their histories replay.
    default_executor: str = "shell"
    default_step_image: str = ""
    # workspace_retention_hours is 0: the run removes its workspace when it ends.
    remove_workspace_at_end: bool = False
    # issue 14: > 0 when the run has a callback URL: its end starts A2ACallbackWorkflow
    # (workflows/a2a_callback.py) with this many delivery attempts
    a2a_callback_attempts: int = 0


@dataclass
class ApprovalDecisionRequest:
    """A reviewer's decision on the approval gate of ``step_id``: by token (a link from the
    recipient's notification) or by a signed-in user (``decided_by`` is their email)."""

    step_id: str
    decision: str  # approve | reject
    comment: str = ""
    token_hash: str | None = None
    decided_by: str = ""
    user_id: int | None = None


@dataclass
class ApprovalDecisionResult:
    outcome: str  # approved | rejected | pending (more approvals are needed)
    approvals: int
    required: int
    decided_by: str


@dataclass
class ApprovalGate:
    step_id: str
    attempt: int
    tickets: dict[str, str]  # token hash -> recipient email
    recipients: list[str]
    required: int
    require_comment: bool
    allow_self_approval: bool
    expires_at: str
    used: list[str] = field(default_factory=list)
    approvers: list[str] = field(default_factory=list)
    outcome: str | None = None  # approved | rejected | timeout
    decided_by: str | None = None
    reason: str | None = None


@dataclass
class PipelineRunOutcome:
    status: str
    error: str | None = None
    outputs: dict[str, Any] = field(default_factory=dict)


def run_search_attributes(inp: PipelineRunInput, status: str) -> TypedSearchAttributes:
    """What the Temporal UI filters runs by."""
    return TypedSearchAttributes([
        SearchAttributePair(ACCOUNT_ID, inp.account_id),
        SearchAttributePair(PIPELINE_ID, inp.pipeline_id),
        SearchAttributePair(TRIGGER_TYPE, inp.trigger_type),
        SearchAttributePair(RUN_STATUS, status),
    ])


@workflow.defn
class PipelineRunWorkflow:
    @workflow.init
    def __init__(self, inp: PipelineRunInput) -> None:
        # The input is known before any handler runs: a decision or query arriving with the
        # start sees the run's triggered_by and steps.
        self._inp = inp
        self._status = "pending"
        self._states: dict[str, dict[str, Any]] = {}
        self._failed = False
        self._error: str | None = None
        self._current: tuple[StepSpec, int, int] | None = None
        self._pending_steps: dict[tuple[str, int], StepUpdate] = {}
        self._pending_events: list[EventRecord] = []
        self._pending_run: RunUpdate | None = None
        self._event_seq = 0
        self._secret_prefix = ""
        self._gate: ApprovalGate | None = None
        self._used_tokens: set[str] = set()
        self._opened_attempts: set[tuple[str, int]] = set()  # (step, attempt) rows written with started_at
        self._deadline = 0.0
        self._clock_paused_at: float | None = None
        self._rollouts_waiting: list[dict[str, Any]] = []
        self._stopping = False  # the run was cancelled or ran out of time: the step loop is being stopped

    @workflow.query
    def progress(self) -> dict[str, Any]:
        """Live state: run status, the step running now, and every step's state so far."""
        current = self._current
        return {
            "status": self._status,
            "current_step": current[0]["id"] if current else None,
            "current_attempt": current[2] if current else None,
            "steps": self._states,
            "error": self._error,
            "approval": self._gate_view(),
        }

    def _gate_view(self) -> dict[str, Any] | None:
        gate = self._gate
        if gate is None:
            return None
        return {"step_id": gate.step_id, "recipients": gate.recipients, "expires_at": gate.expires_at,
                "required": gate.required, "approvals": len(gate.approvers), "approvers": gate.approvers}

    # ---- approval decisions (Update) --------------------------------------------------------

    @workflow.update
    async def decide_approval(self, request: ApprovalDecisionRequest) -> ApprovalDecisionResult:
        """Approve or reject the gate the run is waiting at. Refused (before anything is
        recorded) by the validator for a wrong, used or expired token, a non-recipient, a
        missing required comment, self-approval, or a run that is not waiting."""
        # Checked again here: updates arriving together are all validated before any handler runs.
        recipient = self._check_decision(request)
        gate = self._gate
        assert gate is not None
        if request.token_hash:
            gate.used.append(request.token_hash)
            self._used_tokens.add(request.token_hash)
        if request.decision == "approve":
            decision = "approved"
            gate.approvers.append(recipient)
            if len(gate.approvers) >= gate.required:
                gate.outcome, gate.decided_by = "approved", ", ".join(gate.approvers)
        else:
            decision = "rejected"
            gate.outcome, gate.decided_by = "rejected", recipient
            gate.reason = request.comment.strip() or "no reason given"
        inp = self._require_input()
        self._event_seq += 1
        await workflow.execute_local_activity_method(
            ApprovalActivities.record_decision,
            RecordApprovalDecisionInput(
                run_id=inp.run_id, account_id=inp.account_id, pipeline_id=inp.pipeline_id, step_id=gate.step_id,
                attempt=gate.attempt, decision=decision, decided_by=recipient, comment=request.comment,
                at=self._now(), event_key=f"wf-{self._event_seq}", user_id=request.user_id,
                token_hash=request.token_hash,
            ),
            start_to_close_timeout=BOOKKEEPING_TIMEOUT,
            retry_policy=BOOKKEEPING_RETRY,
        )
        return ApprovalDecisionResult(outcome=gate.outcome or "pending", approvals=len(gate.approvers),
                                      required=gate.required, decided_by=recipient)

    @decide_approval.validator
    def _validate_decision(self, request: ApprovalDecisionRequest) -> None:
        self._check_decision(request)

    def _check_decision(self, request: ApprovalDecisionRequest) -> str:
        """The recipient deciding, or an ApplicationError whose type says what is wrong."""
        gate = self._gate
        if request.token_hash is not None and request.token_hash in self._used_tokens:
            raise _refusal("ApprovalTokenUsed", "this approval link has already been used")
        if gate is None or gate.step_id != request.step_id or gate.outcome is not None:
            raise _refusal("ApprovalNotWaiting", f"this run is not waiting for an approval of step '{request.step_id}'")
        if request.decision not in ("approve", "reject"):
            raise _refusal("ApprovalInvalidDecision", "decision must be approve or reject")
        if request.token_hash is not None:
            recipient = gate.tickets.get(request.token_hash)
            if recipient is None:
                raise _refusal("ApprovalTokenInvalid", "this approval link is not valid for this approval")
        else:
            recipient = request.decided_by
            if recipient.lower() not in {r.lower() for r in gate.recipients}:
                raise _refusal("ApprovalNotRecipient", "you are not a recipient of this approval request")
        if workflow.now() >= datetime.fromisoformat(gate.expires_at):
            raise _refusal("ApprovalTokenExpired", "this approval request has expired")
        if recipient.lower() in {a.lower() for a in gate.approvers}:
            raise _refusal("ApprovalAlreadyDecided", f"{recipient} has already approved this step")
        if gate.require_comment and not request.comment.strip():
            raise _refusal("ApprovalCommentRequired", "a comment is required for this approval")
        triggered_by = self._require_input().triggered_by
        if not gate.allow_self_approval and triggered_by and recipient.lower() == triggered_by.lower():
            raise _refusal("ApprovalSelfApproval", "you started this run; someone else must approve it")
        return recipient

    @workflow.run
    async def run(self, inp: PipelineRunInput) -> PipelineRunOutcome:
        self._secret_prefix = f"__DEVOPS_SECRET_{workflow.uuid4().hex}_"
        self._status = "running"  # the starter already set the RunStatus search attribute
        self._update_run(RunUpdate(status="running", started_at=self._now()))
        self._event("run_updated", {"status": "running"})
        self._restore_reused_steps()
        pending_status = self._start_commit_status("pending", f"run #{inp.run_number} is running")

        timed_out = cancelled = False
        try:
            timed_out = await self._run_steps_within_timeout()
        except asyncio.CancelledError:
            cancelled = True

        if cancelled:
            status, error = "cancelled", "run cancelled"
        elif timed_out:
            status, error = "failure", f"run timed out after {_duration_text(inp.timeout_seconds)}"
        elif self._failed:
            status, error = "failure", self._error
        else:
            status, error = "success", None
        self._close_unfinished_steps(status, error, interrupted=cancelled or timed_out)
        outputs = {sid: state.get("outputs", {}) for sid, state in self._states.items() if state.get("outputs")}
        self._set_status(status)
        self._update_run(RunUpdate(status=status, error=error, outputs=outputs, finished_at=self._now()))
        self._event("run_completed", {"status": status, "error": error})
        await self._flush()
        await self._settle_commit_status(pending_status, status, error)
        if inp.a2a_callback_attempts:
            await start_run_callback(inp.run_id, inp.account_id, inp.a2a_callback_attempts)
        if inp.remove_workspace_at_end:
            await self._remove_workspace()
        await workflow.wait_condition(workflow.all_handlers_finished)

        if cancelled:
            raise asyncio.CancelledError()
        if status == "failure":
            raise ApplicationError(error or "run failed", type="PipelineRunFailed", non_retryable=True)
        return PipelineRunOutcome(status=status, error=error, outputs=outputs)

    # ---- commit statuses (runs from a push or pull request webhook) -----------------------

    def _start_commit_status(self, state: str, description: str) -> workflow.ActivityHandle[Any] | None:
        inp = self._require_input()
        repository_id, sha = inp.trigger.get("repository_id"), inp.trigger.get("sha")
        if not inp.status_target_url or repository_id is None or not sha:
            return None
        return workflow.start_activity_method(
            GitStepActivities.set_commit_status,
            SetCommitStatusInput(account_id=inp.account_id, repository_id=int(repository_id), sha=str(sha),
                                 state=state, context=f"devops/{inp.pipeline_name}", description=description[:140],
                                 target_url=inp.status_target_url, pipeline_name=inp.pipeline_name),
            start_to_close_timeout=COMMIT_STATUS_TIMEOUT,
            retry_policy=COMMIT_STATUS_RETRY,
            summary=f"commit status {state}",
        )

    async def _settle_commit_status(self, pending: workflow.ActivityHandle[Any] | None, status: str,
                                    error: str | None) -> None:
        """The final status, after the pending one has landed (a late pending must not win)."""
        if pending is None:
            return
        with contextlib.suppress(ActivityError, asyncio.CancelledError):
            await pending
        number = self._require_input().run_number
        state, description = {
            "success": ("success", f"run #{number} succeeded"),
            "cancelled": ("error", f"run #{number} was cancelled"),
        }.get(status, ("failure", f"run #{number} failed: {error or 'see the run'}"))
        final = self._start_commit_status(state, description)
        if final is not None:
            with contextlib.suppress(ActivityError, asyncio.CancelledError):
                await final

    async def _remove_workspace(self) -> None:
        """Retention 0: remove the workspace where the steps ran (their task queue). Best effort:
        the workers' periodic sweep removes it later if this cannot."""
        inp = self._require_input()
        with contextlib.suppress(ActivityError, asyncio.CancelledError):
            await workflow.execute_activity_method(
                StepActivities.remove_workspace, inp.run_id, task_queue=inp.activity_task_queue,
                start_to_close_timeout=timedelta(minutes=2), schedule_to_close_timeout=timedelta(minutes=5),
                retry_policy=RetryPolicy(maximum_attempts=3), summary="remove the run's workspace",
            )

    # ---- the step loop -----------------------------------------------------------------

    async def _run_steps_within_timeout(self) -> bool:
        """Run the steps; True if the run's time budget ran out first. The budget bounds
        execution: the clock stops while an approval gate waits for reviewers."""
        inp = self._require_input()
        self._deadline = workflow.time() + inp.timeout_seconds
        steps = asyncio.create_task(self._run_steps())
        try:
            while not steps.done():
                if self._clock_paused_at is not None:
                    await workflow.wait_condition(lambda: steps.done() or self._clock_paused_at is None)
                    continue
                remaining = self._deadline - workflow.time()
                if remaining <= 0:
                    break
                with contextlib.suppress(TimeoutError):
                    await workflow.wait_condition(lambda: steps.done() or self._clock_paused_at is not None,
                                                  timeout=remaining)
            else:
                await steps
                return False
        except asyncio.CancelledError:
            self._stopping = True
            steps.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await steps
            raise
        self._stopping = True
        steps.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await steps
        return True

    async def _run_steps(self) -> None:
        inp = self._require_input()
        for position, step in enumerate(inp.steps):
            sid = step["id"]
            if self._states.get(sid, {}).get("reused"):
                continue
            job_status = "failure" if self._failed else "success"
            try:
                condition = step.get("if")
                should_run = (
                    expressions.evaluate_condition(condition, self._context(step), job_status=job_status)
                    if condition else job_status == "success"
                )
            except expressions.ExpressionError as exc:
                self._finish_step(step, position, 1, "failure", error=f"`if` could not be evaluated: {exc.message}")
                continue
            if not should_run:
                self._finish_step(step, position, 1, "skipped")
                continue
            kind = step_type(step["type"])
            if kind is not None and kind.name == "claude_execute" and not workflow.patched(PATCH_CLAUDE_EXECUTE):
                kind = None  # a history from before issue 14, when the type was not available yet
            if kind is None or not kind.available:
                self._finish_step(step, position, 1, "failure",
                                  error=f"step type '{step['type']}' is not available yet in this release")
                continue
            if kind.runner == StepRunner.GATE:
                await self._code_factory_gate(step, position)
                continue
            # A rollout changes a live service: in a run from a fork it always waits for a maintainer.
            needs_trust = inp.untrusted and (step.get("requires_trust") or kind.runner == StepRunner.ROLLOUT)
            if needs_trust and not await self._trust_gate(step, position):
                continue
            if step.get("requires_approval"):
                gate = await self._approval_gate(step, position, 1)
                if gate.outcome != "approved":
                    self._finish_step(step, position, 1, "failure", error=_gate_failure(gate, step))
                    continue
            await self._run_step(step, position, kind)

    async def _code_factory_gate(self, step: StepSpec, position: int) -> None:
        """Pass on its own when ``with.condition`` holds over earlier steps' outputs; otherwise
        become an approval gate."""
        condition = (step.get("with") or {}).get("condition")
        passed = False
        if isinstance(condition, str) and condition.strip():
            source = condition.strip()
            if expressions.has_templates(source):
                templates = expressions.find_templates(source)
                source = templates[0][2] if len(templates) == 1 else source
            try:
                passed = expressions.is_truthy(expressions.evaluate(source, self._context(step)))
            except expressions.ExpressionError as exc:
                self._finish_step(step, position, 1, "failure",
                                  error=f"the gate's condition could not be evaluated: {exc.message}")
                return
        if passed:
            self._finish_step(step, position, 1, "success", outputs={"gate": "passed", "approved_by": ""})
            return
        gate = await self._approval_gate(step, position, 1)
        if gate.outcome == "approved":
            self._finish_step(step, position, 1, "success",
                              outputs={"gate": "approved", "approved_by": gate.decided_by or ""})
        else:
            self._finish_step(step, position, 1, "failure", error=_gate_failure(gate, step))

    async def _trust_gate(self, step: StepSpec, position: int) -> bool:
        """In a run from a fork: hold a step that needs trust until a maintainer (an account
        admin, unless the step's approval names others) approves; without it, skip the step."""
        spec = dict(step.get("approval") or {})
        spec.setdefault("recipients", ["role:admin"])
        spec["min_approvals"] = 1
        held: StepSpec = {**step, "approval": spec}
        self._event("step_held", {"step_id": step["id"], "reason": "run from a fork's pull request; "
                                  "this step needs a maintainer's approval"})
        gate = await self._approval_gate(held, position, 1)
        if gate.outcome == "approved":
            return True
        why = (f"rejected by {gate.decided_by}: {gate.reason}" if gate.outcome == "rejected"
               else "no maintainer approved it in time")
        self._finish_step(step, position, 1, "skipped",
                          error=f"held because the run comes from a fork's pull request; {why}")
        return False

    async def _approval_gate(self, step: StepSpec, position: int, attempt: int) -> ApprovalGate:
        """Open the gate (tokens minted and delivered by an activity), wait for enough
        approvals, a rejection, or the durable expiry timer."""
        inp = self._require_input()
        spec = step.get("approval") or {}
        timeout_minutes = int(spec.get("timeout_minutes", 1440))
        expires_at = (workflow.now() + timedelta(minutes=timeout_minutes)).isoformat()
        name = step.get("name") or step["id"]
        self._current = (step, position, attempt)
        opened: OpenApprovalGateResult = await workflow.execute_activity_method(
            ApprovalActivities.open_gate,
            OpenApprovalGateInput(
                run_id=inp.run_id, account_id=inp.account_id, pipeline_id=inp.pipeline_id,
                pipeline_name=inp.pipeline_name, run_number=inp.run_number, step_id=step["id"], step_name=name,
                attempt=attempt, recipients=list(spec.get("recipients") or ["role:admin"]), expires_at=expires_at,
            ),
            start_to_close_timeout=timedelta(minutes=2),
            retry_policy=RetryPolicy(maximum_attempts=5),
            summary=f"approval gate of {name}",
        )
        gate = ApprovalGate(
            step_id=step["id"], attempt=attempt, tickets={t.token_hash: t.recipient for t in opened.tickets},
            recipients=[t.recipient for t in opened.tickets], required=int(spec.get("min_approvals", 1)),
            require_comment=bool(spec.get("require_comment", False)),
            allow_self_approval=bool(spec.get("allow_self_approval", False)), expires_at=expires_at,
        )
        self._gate = gate
        self._states[step["id"]] = {"status": "waiting_approval", "attempt": attempt, "outputs": {}}
        self._pending_steps[(step["id"], attempt)] = StepUpdate(
            step_id=step["id"], position=position, attempt=attempt, status="waiting_approval", name=name,
            step_type=step["type"], started_at=self._now(),
        )
        self._opened_attempts.add((step["id"], attempt))
        self._event("approval_requested", {
            "step_id": step["id"], "attempt": attempt, "recipients": gate.recipients, "required": gate.required,
            "expires_at": expires_at, "undeliverable": opened.unresolved,
        })
        await self._flush()
        self._clock_paused_at = workflow.time()
        try:
            await workflow.wait_condition(lambda: gate.outcome is not None, timeout=timeout_minutes * 60)
        except TimeoutError:
            gate.outcome = "timeout"
        # Not reached when cancelled: the step stays current and is closed as cancelled.
        self._deadline += workflow.time() - self._clock_paused_at
        self._clock_paused_at = None
        self._gate = None
        self._current = None
        return gate

    async def _run_step(self, step: StepSpec, position: int, kind: StepType) -> None:
        inp = self._require_input()
        retry = step.get("retry") or {}
        max_attempts = int(retry.get("max_attempts", 1))
        delay = float(retry.get("delay_seconds", 0))
        timeout = timedelta(minutes=int(step.get("timeout_minutes") or inp.default_step_timeout_minutes))
        activity_method = step_activity(kind.name)  # None for a rollout: a child workflow
        for attempt in range(1, max_attempts + 1):
            started_at = self._now()
            try:
                context = self._context(step)
                params = expressions.render_value(step.get("with") or {}, context)
                executor = effective_executor(step["type"], params, inp.default_executor)
                if executor == "docker" and not params.get("image") and params.get("template") is None \
                        and inp.default_step_image and "executor" not in params:
                    params = {**params, "image": inp.default_step_image}
                env = {k: expressions.to_display_string(expressions.render(v, context)) for k, v in inp.env.items()}
            except expressions.ExpressionError as exc:
                self._finish_step(step, position, attempt, "failure",
                                  error=f"an expression in `with` could not be evaluated: {exc.message}")
                return
            self._states[step["id"]] = {"status": "running", "attempt": attempt, "outputs": {}}
            self._pending_steps[(step["id"], attempt)] = StepUpdate(
                step_id=step["id"], position=position, attempt=attempt, status="running",
                name=step.get("name") or step["id"], step_type=step["type"], started_at=started_at,
            )
            self._opened_attempts.add((step["id"], attempt))
            self._event("step_started", {"step_id": step["id"], "attempt": attempt})
            await self._flush()
            self._current = (step, position, attempt)
            step_input = StepInput(
                run_id=inp.run_id, account_id=inp.account_id, pipeline_id=inp.pipeline_id,
                step_id=step["id"], step_name=step.get("name") or step["id"], attempt=attempt,
                params=params, env=env, secret_names=self._secret_names(step),
                secret_placeholder_prefix=self._secret_prefix, run_number=inp.run_number,
                trigger_repository_id=inp.trigger.get("repository_id"),
                trigger_number=inp.trigger.get("number"), trigger_sha=inp.trigger.get("sha"),
            )
            try:
                if kind.runner == StepRunner.ROLLOUT:
                    outputs, error = await self._run_deploy(step, attempt, step_input, timeout, position)
                    self._current = None
                    self._finish_step(step, position, attempt, "failure" if error else "success", error=error,
                                      outputs=outputs)
                    return
                if kind.runner == StepRunner.INTEGRATION:  # issue 14: patched inside, only this type gets here
                    outputs, error = await run_integration_step(step_input, attempt, timeout)
                    self._current = None
                    self._finish_step(step, position, attempt, "failure" if error else "success", error=error,
                                      outputs=outputs)
                    return
                if executor == "docker" and kind.container_capable:
                    result = await self._run_in_container(step, attempt, step_input, timeout)
                    self._current = None
                    self._finish_step(step, position, attempt, "success", outputs=result.outputs)
                    return
                result: StepResult = await workflow.execute_activity_method(
                    activity_method,
                    step_input,
                    task_queue=inp.activity_task_queue,
                    start_to_close_timeout=timeout,
                    schedule_to_close_timeout=timeout,
                    heartbeat_timeout=timedelta(seconds=inp.step_heartbeat_timeout_seconds),
                    retry_policy=STEP_ACTIVITY_RETRY,
                    cancellation_type=ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
                    activity_id=f"{step['id']}-attempt-{attempt}",
                    summary=f"{step.get('name') or step['id']} ({step['type']}, attempt {attempt})",
                )
            except ActivityError as err:
                if isinstance(err.cause, TemporalCancelledError):
                    raise asyncio.CancelledError() from None
                if self._stopping and isinstance(err.cause, TemporalTimeoutError) \
                        and workflow.patched(PATCH_STOPPED_WHILE_WORKER_DOWN):
                    # Cancelled (or out of time) while the step's worker was gone: nobody could
                    # confirm the cancel, so Temporal ends the activity with its heartbeat
                    # timeout. The step was stopped, not timed out: close it like any cancel.
                    raise asyncio.CancelledError() from None
                error, outputs = self._describe_failure(err, timeout)
                self._current = None
                if attempt < max_attempts:
                    self._record_attempt(step, position, attempt, "failure", error, outputs)
                    if delay:
                        await workflow.sleep(delay)
                    continue
                self._finish_step(step, position, attempt, "failure", error=error, outputs=outputs)
                return
            self._current = None
            self._finish_step(step, position, attempt, "success", outputs=result.outputs)
            return

    async def _run_in_container(self, step: StepSpec, attempt: int, step_input: StepInput,
                                timeout: timedelta) -> StepResult:
        """``executor: docker``: the instance row (activity), the child ContainerExecutionWorkflow,
        then the step's result from how the container ended (activity). Failures surface as the
        activities' StepFailed, like a shell step's."""
        inp = self._require_input()
        name = step.get("name") or step["id"]
        plan: ContainerStepPlan = await workflow.execute_activity_method(
            ContainerStepActivities.prepare, step_input,
            task_queue=inp.activity_task_queue, start_to_close_timeout=timedelta(minutes=2),
            retry_policy=STEP_ACTIVITY_RETRY, activity_id=f"{step['id']}-attempt-{attempt}-container",
            summary=f"{name} (container for attempt {attempt})",
        )
        with contextlib.suppress(ChildWorkflowError):  # how it ended is on the instance: collect reads it
            await workflow.execute_child_workflow(
                ContainerExecutionWorkflow.run, ContainerExecutionInput(instance_id=plan.instance_id,
                                                                        account_id=inp.account_id),
                id=plan.workflow_id, task_queue=workflow.info().task_queue,
                execution_timeout=timeout + timedelta(minutes=5),
                static_summary=f"{name} #{inp.run_number} attempt {attempt}",
            )
        return await workflow.execute_activity_method(
            ContainerStepActivities.collect, ContainerStepCollectInput(step=step_input, instance_id=plan.instance_id),
            task_queue=inp.activity_task_queue, start_to_close_timeout=timedelta(minutes=2),
            retry_policy=STEP_ACTIVITY_RETRY, activity_id=f"{step['id']}-attempt-{attempt}-result",
            summary=f"{name} (result of attempt {attempt})",
        )

    @workflow.signal
    def rollout_waiting(self, info: dict[str, Any]) -> None:
        """A child rollout (``approve_promotion``) paused for promote: the approval gate opens."""
        self._rollouts_waiting.append(info)

    async def _approve_promotions(self, child: workflow.ChildWorkflowHandle[Any, Any], finished: asyncio.Future[Any],
                                  step: StepSpec, position: int, attempt: int) -> None:
        """While the rollout runs, each pause it makes for promote is an approval gate of this step
        (recipients, approvals, comment and timeout from the step's ``approval``): approved →
        promote, rejected or expired → abort. Returns when the rollout has ended."""
        while True:
            await workflow.wait_condition(lambda: finished.done() or bool(self._rollouts_waiting))
            if finished.done():
                return
            self._rollouts_waiting.pop(0)
            gate = await self._approval_gate(step, position, attempt)
            self._current = (step, position, attempt)
            self._states[step["id"]] = {"status": "running", "attempt": attempt, "outputs": {}}
            self._pending_steps[(step["id"], attempt)] = StepUpdate(
                step_id=step["id"], position=position, attempt=attempt, status="running",
                name=step.get("name") or step["id"], step_type=step["type"], started_at=None,
            )
            await self._flush()
            if gate.outcome == "approved":
                await child.signal(RolloutWorkflow.promote_signal, RolloutControl(reason=f"approved by {gate.decided_by}"))
            else:
                await child.signal(RolloutWorkflow.abort_signal, RolloutControl(reason=_gate_failure(gate, step)))

    async def _run_deploy(self, step: StepSpec, attempt: int, step_input: StepInput,
                          timeout: timedelta, position: int = 0) -> tuple[dict[str, Any], str | None]:
        """``deploy``: the SwarmDeployment (activity, once per attempt), then RolloutWorkflow as a
        child; outputs ``deployment_id``, ``revision``, ``outcome``, and an error unless completed."""
        inp = self._require_input()
        name = step.get("name") or step["id"]
        plan: DeployStepPlan = await workflow.execute_activity_method(
            RolloutActivities.create_for_step, step_input, start_to_close_timeout=timedelta(minutes=2),
            retry_policy=STEP_ACTIVITY_RETRY, activity_id=f"{step['id']}-attempt-{attempt}-deployment",
            summary=f"{name} (deployment for attempt {attempt})",
        )
        approve_promotion = bool((step.get("with") or {}).get("approve_promotion"))
        try:
            child = await workflow.start_child_workflow(
                RolloutWorkflow.run,
                RolloutInput(deployment_id=plan.deployment_id, account_id=inp.account_id,
                             notify_workflow_id=workflow.info().workflow_id if approve_promotion else None),
                id=plan.workflow_id, task_queue=workflow.info().task_queue,
                execution_timeout=timeout + timedelta(minutes=5),
                static_summary=f"{name} #{inp.run_number} attempt {attempt}",
            )
            finished = asyncio.ensure_future(_result_of(child))
            if approve_promotion:
                await self._approve_promotions(child, finished, step, position, attempt)
            outcome: RolloutOutcome = await finished
        except ChildWorkflowError as err:
            outputs = {"deployment_id": plan.deployment_id, "revision": "", "outcome": "failed"}
            return outputs, f"the rollout failed: {err.cause.message if err.cause else err}"
        outputs = {"deployment_id": plan.deployment_id, "revision": outcome.revision or "", "outcome": outcome.status}
        if outcome.status != "completed":
            return outputs, f"the rollout ended {outcome.status}: {outcome.error or 'see the deployment'}"
        return outputs, None

    @staticmethod
    def _describe_failure(err: ActivityError, timeout: timedelta) -> tuple[str, dict[str, Any]]:
        cause = err.cause
        if isinstance(cause, ApplicationError):
            details = cause.details[0] if cause.details and isinstance(cause.details[0], dict) else {}
            return cause.message, details
        if isinstance(cause, TemporalTimeoutError):
            return f"step timed out after {int(timeout.total_seconds() // 60)} minutes", {}
        return str(cause.message if cause is not None and hasattr(cause, "message") else err), {}

    # ---- state and bookkeeping -----------------------------------------------------------

    def _finish_step(self, step: StepSpec, position: int, attempt: int, status: str,
                     error: str | None = None, outputs: dict[str, Any] | None = None) -> None:
        self._record_attempt(step, position, attempt, status, error, outputs)
        state: dict[str, Any] = {"status": status, "attempt": attempt, "outputs": outputs or {}}
        if error:
            state["error"] = error
        if status == "failure" and step.get("continue_on_error"):
            state["continue_on_error"] = True
        elif status == "failure" and not self._failed:
            self._failed = True
            self._error = f"step '{step['id']}' failed: {error}"
        self._states[step["id"]] = state

    def _record_attempt(self, step: StepSpec, position: int, attempt: int, status: str,
                        error: str | None, outputs: dict[str, Any] | None) -> None:
        now = self._now()
        key = (step["id"], attempt)
        update = self._pending_steps.get(key) or StepUpdate(
            step_id=step["id"], position=position, attempt=attempt, status=status,
            name=step.get("name") or step["id"], step_type=step["type"],
            # None keeps the start time already stored for this attempt
            started_at=None if status == "skipped" or key in self._opened_attempts else now,
        )
        update.status = status
        update.error = error
        update.outputs = outputs or {}
        update.finished_at = now
        self._pending_steps[key] = update
        self._event("step_completed", {"step_id": step["id"], "attempt": attempt, "status": status, "error": error})

    def _restore_reused_steps(self) -> None:
        inp = self._require_input()
        for position, step in enumerate(inp.steps):
            reused = inp.reused_steps.get(step["id"])
            if reused is None:
                continue
            self._states[step["id"]] = {"status": reused["status"], "attempt": 1,
                                        "outputs": reused.get("outputs") or {}, "reused": True}
            self._pending_steps[(step["id"], 1)] = StepUpdate(
                step_id=step["id"], position=position, attempt=1, status=reused["status"],
                name=step.get("name") or step["id"], step_type=step["type"], outputs=reused.get("outputs") or {},
                reused_from_run_id=reused.get("run_id"),
            )

    def _close_unfinished_steps(self, run_status: str, error: str | None, *, interrupted: bool) -> None:
        """The step interrupted by cancel or timeout, and the steps never reached."""
        inp = self._require_input()
        if self._current is not None:
            step, position, attempt = self._current
            status = "cancelled" if run_status == "cancelled" else "failure"
            self._finish_step(step, position, attempt, status, error=error)
            self._current = None
        if interrupted:
            for position, step in enumerate(inp.steps):
                if step["id"] not in self._states:
                    self._finish_step(step, position, 1, "cancelled")

    def _update_run(self, update: RunUpdate) -> None:
        pending = self._pending_run or RunUpdate()
        for name in ("status", "error", "outputs", "started_at", "finished_at"):
            value = getattr(update, name)
            if value is not None:
                setattr(pending, name, value)
        self._pending_run = pending

    def _event(self, event_type: str, payload: dict[str, Any]) -> None:
        inp = self._require_input()
        self._event_seq += 1
        self._pending_events.append(EventRecord(
            key=f"wf-{self._event_seq}", event_type=event_type,
            payload={"run_id": inp.run_id, "pipeline_id": inp.pipeline_id, "run_number": inp.run_number, **payload},
            at=self._now(),
        ))

    async def _flush(self) -> None:
        if not (self._pending_steps or self._pending_events or self._pending_run):
            return
        inp = self._require_input()
        await workflow.execute_local_activity_method(
            RunBookkeeping.record_run_progress,
            RecordRunProgressInput(
                run_id=inp.run_id, account_id=inp.account_id, pipeline_id=inp.pipeline_id,
                run=self._pending_run, steps=list(self._pending_steps.values()), events=self._pending_events,
            ),
            start_to_close_timeout=BOOKKEEPING_TIMEOUT,
            retry_policy=BOOKKEEPING_RETRY,
        )
        self._pending_steps = {}
        self._pending_events = []
        self._pending_run = None

    def _set_status(self, status: str) -> None:
        self._status = status
        workflow.upsert_search_attributes([RUN_STATUS.value_set(status)])

    # ---- expression context ------------------------------------------------------------

    def _context(self, step: StepSpec) -> dict[str, Any]:
        inp = self._require_input()
        steps: dict[str, Any] = {}
        for sid, state in self._states.items():
            status = state["status"]
            conclusion = "success" if state.get("continue_on_error") else status
            steps[sid] = {"outputs": state.get("outputs", {}), "status": status, "outcome": status,
                          "conclusion": conclusion}
        return {
            "inputs": inp.inputs,
            "steps": steps,
            "trigger": inp.trigger,
            "run": {"id": inp.run_id, "number": inp.run_number, "pipeline_id": inp.pipeline_id,
                    "pipeline": inp.pipeline_name, "trigger_type": inp.trigger_type,
                    "workflow_id": workflow.info().workflow_id},
            "pipeline": {"id": inp.pipeline_id, "name": inp.pipeline_name},
            "env": inp.env,
            "secrets": {name: secret_placeholder(self._secret_prefix, name) for name in self._secret_names(step)},
        }

    def _secret_names(self, step: StepSpec) -> list[str]:
        """Secrets a step references, in its `with` or the pipeline env (none in a run from a
        fork: there every secret reads as an empty string, as on GitHub Actions)."""
        if self._require_input().untrusted:
            return []
        names: set[str] = set()
        for text in _strings([step.get("with") or {}, self._require_input().env]):
            if "${{" not in text:
                continue
            for _start, _end, source in expressions.find_templates(text):
                for ref in expressions.references(source):
                    if ref[0] == "secrets" and len(ref) > 1:
                        names.add(ref[1])
        return sorted(names)

    def _now(self) -> str:
        return workflow.now().isoformat()

    def _require_input(self) -> PipelineRunInput:
        return self._inp


async def _result_of(child: workflow.ChildWorkflowHandle[Any, Any]) -> Any:
    return await child


def _refusal(kind: str, message: str) -> ApplicationError:
    return ApplicationError(message, type=kind, non_retryable=True)


def _gate_failure(gate: ApprovalGate, step: StepSpec) -> str:
    if gate.outcome == "rejected":
        return f"rejected by {gate.decided_by}: {gate.reason}"
    minutes = int((step.get("approval") or {}).get("timeout_minutes", 1440))
    return f"approval timed out after {minutes} minutes"


def _duration_text(seconds: float) -> str:
    if seconds >= 60 and seconds % 60 == 0:
        minutes = int(seconds // 60)
        return f"{minutes} minute{'s' if minutes != 1 else ''}"
    return f"{seconds:g} seconds"


def _strings(value: Any):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
