"""RolloutWorkflow: one rollout of a Swarm service (``rollout-<deployment id>``), the seed's
``CanaryStrategy`` and ``BlueGreenStrategy`` plus Swarm's own rolling update.

The input is ids only; the strategy, its steps and the image are read from the
``SwarmDeployment`` row by an activity. Strategies:

- ``rolling``: one Swarm update of the stable service (explicit parallelism, delay,
  ``start-first``, ``failure_action: rollback``, a monitor window no shorter than the image's
  healthcheck needs), followed until Swarm reports completed (→ completed) or
  rollback_completed (→ rolled_back). A rollback to a stored revision is a rolling deployment
  whose revision is that one.
- ``canary``: Argo Rollouts' basic canary with no mesh. ``<service>-canary`` runs the new
  revision beside the stable service on its networks, with the stable's name as alias, and its
  replicas follow the step weight (``ceil(stable × w / (100 − w))``). Steps ``set_weight``,
  ``pause`` (``{}`` waits for promote, ``{duration}`` is a durable timer) and ``analysis``.
  A failed analysis or an abort removes the canary at once: stable was never touched. After the
  last step, promotion updates the stable service (start-first) and removes the canary.
- ``blue_green``: ``<service>-green`` at full size beside blue (the stable service), every task
  healthy, optional pre-promotion analysis, promotion on ``auto_promotion_seconds`` or promote,
  the alias and ``devops.router=active`` moved to green, optional post-promotion analysis (a
  failure switches back), blue scaled to zero after ``scale_down_delay_seconds``.

In a pipeline, a ``deploy`` step (``with: {cluster, service, image, strategy, steps ...}``) runs
this workflow as a child (``PipelineRunWorkflow._run_deploy``). An approval before the rollout
uses the existing gate: ``requires_approval: true`` (with ``approval: {recipients ...}``) on the
deploy step, or a ``code_factory_gate`` step before it. A canary step ``pause: {}`` inside a
pipeline waits for ``POST /swarm/deployments/{id}/promote``.

Control: Updates ``promote``, ``abort``, ``pause``, ``resume`` with validators that refuse (with
the reason) what the current state does not allow; query ``state``. Every step writes an event
and the deployment's read model through a local activity. All waits are durable timers or
conditions, and every activity is idempotent, so a restarted worker continues at the same step.
"""

import asyncio
import contextlib
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.rollouts import (
        FINAL_STATUSES,
        NON_RETRYABLE_TYPES,
        DeploymentRef,
        MeasureInput,
        Measurement,
        PrepareResult,
        RolloutActivities,
        RolloutEventInput,
        RolloutPlan,
        ServiceInput,
        SwitchTrafficInput,
        UpdateStableInput,
        UpdateStableResult,
        WaitHealthyInput,
        WaitHealthyResult,
        WaitUpdateInput,
        WaitUpdateResult,
        achieved_weight,
        canary_name,
        canary_replicas,
        green_name,
        parse_duration,
    )


def rollout_workflow_id(deployment_id: int) -> str:
    return f"rollout-{deployment_id}"


@dataclass
class RolloutInput:
    deployment_id: int
    account_id: int
    # A pipeline run waiting to approve the promotion: signalled (``rollout_waiting``) whenever the
    # rollout pauses for promote, it answers with the ``promote_signal`` / ``abort_signal`` below.
    notify_workflow_id: str | None = None


@dataclass
class RolloutControl:
    """An operator's request; ``full`` on promote skips the remaining canary steps."""

    full: bool = False
    reason: str = ""


@dataclass
class RolloutControlResult:
    action: str
    status: str
    message: str = ""


@dataclass
class RolloutOutcome:
    deployment_id: int
    status: str  # completed | aborted | failed | rolled_back
    revision: int | None = None
    error: str | None = None


DOCKER_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), backoff_coefficient=2.0,
                           maximum_interval=timedelta(seconds=10), maximum_attempts=5,
                           non_retryable_error_types=NON_RETRYABLE_TYPES)
# Following Swarm survives worker crashes: retried for as long as it takes.
FOLLOW_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=10),
                           maximum_attempts=0, non_retryable_error_types=NON_RETRYABLE_TYPES)
BOOKKEEPING_RETRY = RetryPolicy(initial_interval=timedelta(milliseconds=200), maximum_interval=timedelta(seconds=5),
                                non_retryable_error_types=NON_RETRYABLE_TYPES)
SHORT = timedelta(seconds=60)
HEARTBEAT = timedelta(seconds=10)
SWITCH_TIMEOUT = timedelta(minutes=3)  # the alias moves with a task update that is waited for
DEFAULT_PROGRESS_DEADLINE = 120.0


class RolloutFailed(Exception):
    """The rollout ends with ``status`` (failed or rolled_back) for ``reason``."""

    def __init__(self, status: str, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def _cause(err: ActivityError) -> str:
    cause = err.cause
    while isinstance(cause, ActivityError) and cause.cause is not None:
        cause = cause.cause
    if isinstance(cause, ApplicationError):
        return cause.message
    return str(getattr(cause, "message", None) or cause or err)


@workflow.defn
class RolloutWorkflow:
    @workflow.init
    def __init__(self, inp: RolloutInput) -> None:
        self._inp = inp
        self._plan: RolloutPlan | None = None
        self._prep: PrepareResult | None = None
        self._status = "pending"
        self._step: int | None = None
        self._phase = "starting"
        self._pause_kind: str | None = None  # step | user | inconclusive | promotion
        self._pause_until: str | None = None
        self._weight = 0
        self._replicas: dict[str, int] = {}
        self._analyses: list[dict[str, Any]] = []
        self._warnings: list[str] = []
        self._error: str | None = None
        self._promote = False
        self._promote_full = False
        self._abort = False
        self._abort_reason = ""
        self._user_paused = False
        self._seq = 0

    # ---- query and updates -----------------------------------------------------------------

    @workflow.query
    def state(self) -> dict[str, Any]:
        """The live state: status, step, weights, replicas, each analysis result, warnings."""
        plan = self._plan
        steps = (plan.config.get("steps") or []) if plan else []
        return {
            "status": self._status,
            "strategy": plan.strategy if plan else None,
            "phase": self._phase,
            "current_step": self._step,
            "step": steps[self._step] if self._step is not None and self._step < len(steps) else None,
            "steps": len(steps),
            "pause": {"kind": self._pause_kind, "until": self._pause_until} if self._status == "paused" else None,
            "weight": self._weight,
            "actual_weight": round(achieved_weight(self._replicas.get("stable", 0), self._replicas.get("canary", 0)),
                                   1) if plan and plan.strategy == "canary" else None,
            "replicas": dict(self._replicas),
            "analyses": list(self._analyses),
            "warnings": list(self._warnings),
            "revision": self._prep.revision_number if self._prep else None,
            "image": self._prep.image if self._prep else None,
            "error": self._error,
        }

    @workflow.update
    def promote(self, request: RolloutControl) -> RolloutControlResult:
        """Go on past the pause the rollout is in (``full``: past every remaining step)."""
        self._check("promote")
        self._promote = True
        self._promote_full = self._promote_full or request.full
        self._user_paused = False
        return RolloutControlResult("promote", self._status, "promotion requested")

    @promote.validator
    def _validate_promote(self, request: RolloutControl) -> None:
        self._check("promote")

    @workflow.signal
    def promote_signal(self, request: RolloutControl) -> None:
        """Promote from another workflow (a pipeline's approval gate), which cannot send an
        update; ignored (with an event) when promote is not valid any more."""
        try:
            self._check("promote")
        except ApplicationError as refused:
            self._warnings.append(f"a promote signal was ignored: {refused.message}")
            return
        self._promote = True
        self._promote_full = self._promote_full or request.full
        self._user_paused = False

    @workflow.signal
    def abort_signal(self, request: RolloutControl) -> None:
        """Abort from another workflow (a rejected approval); ignored once the rollout has ended."""
        try:
            self._check("abort")
        except ApplicationError as refused:
            self._warnings.append(f"an abort signal was ignored: {refused.message}")
            return
        self._abort = True
        self._abort_reason = request.reason.strip() or "aborted"

    @workflow.update
    def abort(self, request: RolloutControl) -> RolloutControlResult:
        """Stop the rollout; the new revision's service is removed, stable stays as it is."""
        self._check("abort")
        self._abort = True
        self._abort_reason = request.reason.strip() or "aborted by an operator"
        return RolloutControlResult("abort", self._status, "abort requested")

    @abort.validator
    def _validate_abort(self, request: RolloutControl) -> None:
        self._check("abort")

    @workflow.update
    def pause(self, request: RolloutControl) -> RolloutControlResult:
        """Hold the rollout before its next step until resume or promote."""
        self._check("pause")
        self._user_paused = True
        return RolloutControlResult("pause", self._status, "the rollout pauses before its next step")

    @pause.validator
    def _validate_pause(self, request: RolloutControl) -> None:
        self._check("pause")

    @workflow.update
    def resume(self, request: RolloutControl) -> RolloutControlResult:
        """Continue after a pause by an operator or an inconclusive analysis."""
        self._check("resume")
        self._user_paused = False
        if self._status == "paused" and self._pause_kind in ("user", "inconclusive"):
            self._promote = True
        return RolloutControlResult("resume", self._status, "resumed")

    @resume.validator
    def _validate_resume(self, request: RolloutControl) -> None:
        self._check("resume")

    def _check(self, action: str) -> None:
        """Refuse (ApplicationError, its type naming why) what the current state does not allow."""
        strategy = self._plan.strategy if self._plan else None
        status = self._status
        if status in FINAL_STATUSES:
            raise _refusal("RolloutFinished", f"the rollout has already ended ({status})")
        if self._abort:
            raise _refusal("RolloutAborting", "the rollout is being aborted")
        if self._plan is None or self._prep is None:
            raise _refusal("RolloutStarting", f"{action} is not possible yet: the rollout is starting")
        if strategy == "rolling":
            raise _refusal("RolloutNotControllable", f"{action} is not possible: a rolling update is run by Swarm "
                                                     "itself (it rolls back on failure); use a rollback instead")
        if action == "promote":
            if status != "paused":
                raise _refusal("RolloutNotPaused", f"promote is only possible while the rollout is paused; it is "
                                                   f"{status} ({self._phase})")
        elif action == "abort":
            if status == "promoting":
                raise _refusal("RolloutPromoting", "the rollout is already being promoted; abort is no longer "
                                                   "possible (roll back to the previous revision instead)")
        elif action == "pause":
            if status == "paused" or self._user_paused:
                raise _refusal("RolloutAlreadyPaused", "the rollout is already paused")
            if status != "progressing":
                raise _refusal("RolloutNotProgressing", f"pause is only possible while the rollout progresses; "
                                                        f"it is {status}")
        elif action == "resume" and not self._user_paused and not (
                status == "paused" and self._pause_kind in ("user", "inconclusive")):
            if status == "paused":
                raise _refusal("RolloutWaitsForPromote", f"the rollout waits at a {self._pause_kind} pause: "
                                                         "use promote to go on")
            raise _refusal("RolloutNotPaused", f"resume is only possible while the rollout is paused; it is {status}")

    # ---- the run ---------------------------------------------------------------------------

    @workflow.run
    async def run(self, inp: RolloutInput) -> RolloutOutcome:
        ref = DeploymentRef(inp.deployment_id, inp.account_id)
        self._plan = await workflow.execute_activity_method(
            RolloutActivities.load, ref, start_to_close_timeout=SHORT, retry_policy=BOOKKEEPING_RETRY)
        plan = self._plan
        if plan.status in FINAL_STATUSES:  # already ended: a re-run changes nothing
            self._status = plan.status
            return RolloutOutcome(inp.deployment_id, plan.status)
        try:
            self._prep = await workflow.execute_activity_method(
                RolloutActivities.prepare, ref, start_to_close_timeout=timedelta(minutes=2),
                retry_policy=DOCKER_RETRY, summary=f"record the revision of {plan.service}")
        except ActivityError as err:
            return await self._end("failed", _cause(err))
        prep = self._prep
        self._replicas["stable"] = prep.stable_replicas
        self._status = "progressing"
        await self._emit("rollout_started", {"strategy": plan.strategy, "revision": prep.revision_number,
                                             "image": prep.image, "image_digest": prep.image_digest},
                         revision_id=prep.revision_id)

        body = asyncio.create_task(self._strategy())
        cancelled = False
        try:
            await workflow.wait_condition(lambda: body.done() or self._abort)
        except asyncio.CancelledError:
            cancelled = True
        status, error = "completed", None
        if cancelled or (self._abort and not body.done()):
            body.cancel()
            with contextlib.suppress(asyncio.CancelledError, RolloutFailed, ActivityError):
                await body
            status, error = "aborted", "the rollout was cancelled" if cancelled else self._abort_reason
            await self._cleanup_new(status)
        else:
            try:
                status = await body
            except RolloutFailed as failure:
                status, error = failure.status, failure.reason
            except ActivityError as err:
                status, error = "failed", _cause(err)
                await self._cleanup_new(status)
        outcome = await self._end(status, error)
        if cancelled:
            raise asyncio.CancelledError()
        return outcome

    async def _strategy(self) -> str:
        strategy = self._require_plan().strategy
        if strategy == "rolling":
            return await self._rolling()
        if strategy == "canary":
            return await self._canary()
        return await self._blue_green()

    async def _end(self, status: str, error: str | None) -> RolloutOutcome:
        self._status = status
        self._error = error
        self._phase = "done"
        await self._emit(f"rollout_{status}", {"error": error} if error else {}, result=status, error=error,
                         finished=True)
        await workflow.wait_condition(workflow.all_handlers_finished)
        inp = self._require_input()
        return RolloutOutcome(inp.deployment_id, status, self._prep.revision_number if self._prep else None, error)

    # ---- rolling ----------------------------------------------------------------------------

    async def _rolling(self) -> str:
        options = self._require_plan().config.get("rolling") or {}
        self._phase = "updating"
        prep = self._require_prep()
        result = await self._update_stable(prep.revision_id, options)
        if result.state == "completed":
            return "completed"
        if result.state == "rollback_completed":
            raise RolloutFailed("rolled_back", f"Swarm rolled the update back: {result.message or 'tasks failed'}")
        raise RolloutFailed("failed", f"the update ended {result.state}: {result.message}")

    async def _update_stable(self, revision_id: int, options: dict[str, Any]) -> WaitUpdateResult:
        inp, plan, prep = self._require_input(), self._require_plan(), self._require_prep()
        monitor = max(float(parse_duration(options.get("monitor", 0))), prep.healthcheck_seconds, 2.0)
        request = UpdateStableInput(
            deployment_id=inp.deployment_id, account_id=inp.account_id, revision_id=revision_id,
            parallelism=int(options.get("parallelism", 1)), delay_seconds=float(parse_duration(options.get("delay", 0))),
            monitor_seconds=monitor, order="start-first", failure_action="rollback")
        await self._emit("stable_update_started", {"parallelism": request.parallelism, "delay": request.delay_seconds,
                                                   "monitor": monitor, "order": request.order,
                                                   "failure_action": request.failure_action})
        started: UpdateStableResult = await workflow.execute_activity_method(
            RolloutActivities.update_stable, request, start_to_close_timeout=SHORT, retry_policy=DOCKER_RETRY,
            summary=f"update {plan.service}")
        timeout = float(parse_duration(options.get("timeout", 600)))
        result: WaitUpdateResult = await workflow.execute_activity_method(
            RolloutActivities.wait_update,
            WaitUpdateInput(inp.deployment_id, inp.account_id, started.requested_at, timeout),
            start_to_close_timeout=timedelta(seconds=timeout + 60), heartbeat_timeout=HEARTBEAT,
            retry_policy=FOLLOW_RETRY, summary=f"follow the update of {plan.service}")
        await self._emit("stable_update_finished", {"state": result.state, "message": result.message},
                         result=result.state)
        return result

    # ---- canary -----------------------------------------------------------------------------

    async def _canary(self) -> str:
        plan, prep = self._require_plan(), self._require_prep()
        steps = plan.config.get("steps") or []
        canary = canary_name(plan.service)
        for index in range(len(steps)):
            if self._promote_full:
                break
            self._step = index
            await self._checkpoint()
            step = steps[index]
            kind = next(iter(step))
            await self._emit("step_started", {"step": index, "kind": kind, "spec": step}, current_step=index)
            if kind == "set_weight":
                await self._set_weight(int(step["set_weight"]), canary, prep.stable_replicas)
            elif kind == "pause":
                await self._pause_step(step.get("pause") or {})
            elif kind == "analysis":
                await self._analysis(index, step.get("analysis") or {}, canary)
            await self._emit("step_completed", {"step": index, "kind": kind}, current_step=index)
        self._step = len(steps)
        self._status, self._phase = "promoting", "promoting"
        await self._emit("promotion_started", {"revision": prep.revision_number})
        result = await self._update_stable(prep.revision_id, plan.config.get("rolling") or {})
        await self._remove(canary)
        self._replicas["canary"] = 0
        if result.state == "completed":
            self._replicas["stable"] = prep.stable_replicas
            return "completed"
        if result.state == "rollback_completed":
            raise RolloutFailed("rolled_back", f"Swarm rolled the stable update back: {result.message}")
        raise RolloutFailed("failed", f"the stable update ended {result.state}: {result.message}")

    async def _set_weight(self, weight: int, canary: str, stable: int) -> None:
        inp = self._require_input()
        replicas = canary_replicas(stable, weight)
        actual = achieved_weight(stable, replicas)
        self._phase = f"scaling canary to {replicas}"
        if abs(actual - weight) > 10:
            warning = (f"weight {weight}% is coarse with {stable} stable replicas: {replicas} canary replicas "
                       f"carry {actual:.0f}% of the tasks")
            self._warnings.append(warning)
            await self._emit("weight_warning", {"weight": weight, "actual": round(actual, 1), "message": warning},
                             result="warning")
        await workflow.execute_activity_method(
            RolloutActivities.ensure_service,
            ServiceInput(inp.deployment_id, inp.account_id, canary, replicas, "canary",
                         aliases=[self._require_plan().service]),
            start_to_close_timeout=SHORT, retry_policy=DOCKER_RETRY, summary=f"{canary} → {replicas}")
        self._weight, self._replicas["canary"] = weight, replicas
        await self._wait_healthy(canary, replicas)
        await self._emit("weight_set", {"weight": weight, "actual": round(actual, 1), "canary_replicas": replicas,
                                        "stable_replicas": stable})

    async def _wait_healthy(self, name: str, replicas: int) -> None:
        inp = self._require_input()
        deadline = float(parse_duration(self._require_plan().config.get("progress_deadline_seconds",
                                                                          DEFAULT_PROGRESS_DEADLINE)))
        self._phase = f"waiting for {replicas} healthy tasks of {name}"
        result: WaitHealthyResult = await workflow.execute_activity_method(
            RolloutActivities.wait_healthy, WaitHealthyInput(inp.deployment_id, inp.account_id, name, replicas, deadline),
            start_to_close_timeout=timedelta(seconds=deadline + 60), heartbeat_timeout=HEARTBEAT,
            retry_policy=FOLLOW_RETRY, summary=f"wait for {name} healthy")
        if not result.healthy:
            reason = f"{name} did not become healthy: {result.detail}"
            await self._emit("health_failed", {"service": name, "detail": result.detail}, result="failed")
            await self._cleanup_new("failed")
            raise RolloutFailed("failed", reason)
        await self._emit("healthy", {"service": name, "running": result.running})

    async def _pause_step(self, spec: dict[str, Any]) -> None:
        duration = spec.get("duration")
        seconds = float(parse_duration(duration)) if duration not in (None, "") else None
        await self._paused("step", seconds)

    async def _paused(self, kind: str, seconds: float | None) -> None:
        """Status paused until promote (or the timer); returns at once when already promoted."""
        self._promote = False
        self._status, self._pause_kind, self._phase = "paused", kind, f"paused ({kind})"
        self._pause_until = (workflow.now() + timedelta(seconds=seconds)).isoformat() if seconds is not None else None
        await self._emit("paused", {"kind": kind, "until": self._pause_until}, status="paused")
        inp = self._require_input()
        if seconds is None and inp.notify_workflow_id:  # a pipeline approves this promotion
            await workflow.get_external_workflow_handle(inp.notify_workflow_id).signal(
                "rollout_waiting", {"deployment_id": inp.deployment_id, "step": self._step, "kind": kind})
        with contextlib.suppress(TimeoutError):
            await workflow.wait_condition(lambda: self._promote, timeout=seconds)
        promoted = self._promote
        self._promote = False
        self._status, self._pause_kind, self._pause_until, self._phase = "progressing", None, None, "progressing"
        await self._emit("resumed", {"kind": kind, "by": "promote" if promoted else "timer"}, status="progressing")

    async def _checkpoint(self) -> None:
        """An operator's pause holds the rollout here, between steps."""
        if self._user_paused:
            await self._paused("user", None)
            self._user_paused = False

    async def _analysis(self, index: int, spec: dict[str, Any], target: str, *, phase: str = "canary") -> str:
        """Run every metric (durable timers between measurements); failed raises, inconclusive
        pauses until resume or promote."""
        inp = self._require_input()
        metrics = spec.get("metrics") or [{"name": "tasks", "provider": "tasks", **{
            k: v for k, v in spec.items() if k in ("interval", "count", "failure_limit", "inconclusive_limit")}}]
        if spec.get("http") and not spec.get("metrics"):
            metrics.append({"name": "http", "provider": "http", "http": spec["http"], **{
                k: v for k, v in spec.items() if k in ("interval", "count", "failure_limit", "inconclusive_limit")}})
        self._phase = f"analysis ({phase})"
        results = []
        for metric in metrics:
            name = str(metric.get("name") or metric.get("provider") or "tasks")
            interval = float(parse_duration(metric.get("interval", 1)))
            count = int(metric.get("count", 3))
            failure_limit = int(metric.get("failure_limit", 0))
            inconclusive_limit = int(metric.get("inconclusive_limit", 0))
            entry: dict[str, Any] = {"step": index, "phase": phase, "metric": name, "measurements": [],
                                     "result": "running"}
            self._analyses.append(entry)
            failures = errors = 0
            for n in range(count):
                if n:
                    await workflow.sleep(interval)
                measured: Measurement = await workflow.execute_activity_method(
                    RolloutActivities.measure,
                    MeasureInput(inp.deployment_id, inp.account_id, target, str(metric.get("provider", "tasks")),
                                 http=dict(metric.get("http") or {}),
                                 prometheus=dict(metric.get("prometheus") or {})),
                    start_to_close_timeout=SHORT, retry_policy=DOCKER_RETRY, summary=f"measure {name} of {target}")
                entry["measurements"].append({"value": measured.value, "detail": measured.detail})
                failures += measured.value == "fail"
                errors += measured.value == "error"
                if failures > failure_limit:
                    break
            result = ("failed" if failures > failure_limit else
                      "inconclusive" if errors > inconclusive_limit else "successful")
            entry["result"] = result
            results.append(result)
            await self._emit("analysis_metric", {"step": index, "phase": phase, "metric": name,
                                                 "measurements": entry["measurements"], "result": result},
                             result=result)
            if result == "failed":
                break
        overall = "failed" if "failed" in results else "inconclusive" if "inconclusive" in results else "successful"
        await self._emit("analysis_completed", {"step": index, "phase": phase, "result": overall}, result=overall)
        if overall == "failed":
            detail = next(m["detail"] for a in self._analyses[-len(results):] for m in a["measurements"]
                          if m["value"] == "fail")
            if phase != "post-promotion":
                await self._cleanup_new("failed")
            raise RolloutFailed("failed", f"analysis failed ({phase}): {detail}")
        if overall == "inconclusive":
            await self._paused("inconclusive", None)
        return overall

    # ---- blue/green ---------------------------------------------------------------------------

    async def _blue_green(self) -> str:
        inp, plan, prep = self._require_input(), self._require_plan(), self._require_prep()
        options = plan.config.get("blue_green") or {}
        green = green_name(plan.service)
        alias = str(options.get("alias") or f"{plan.service}-active")
        preview = str(options.get("preview_alias") or f"{plan.service}-preview")
        replicas = max(prep.stable_replicas, 1)
        self._step = 0
        self._phase = "starting green"
        await workflow.execute_activity_method(
            RolloutActivities.ensure_service,
            ServiceInput(inp.deployment_id, inp.account_id, green, replicas, "green", aliases=[preview]),
            start_to_close_timeout=SHORT, retry_policy=DOCKER_RETRY, summary=f"{green} → {replicas}")
        self._replicas["green"] = replicas
        await self._emit("green_created", {"service": green, "replicas": replicas, "preview_alias": preview})
        await self._wait_healthy(green, replicas)
        self._step = 1
        if options.get("pre_promotion_analysis"):
            await self._analysis(1, options["pre_promotion_analysis"], green, phase="pre-promotion")
        await self._checkpoint()
        self._step = 2
        auto = options.get("auto_promotion_seconds")
        if not self._promote_full:
            await self._paused("promotion", float(parse_duration(auto)) if auto not in (None, "") else None)
        self._status, self._phase = "promoting", "switching traffic"
        await workflow.execute_activity_method(
            RolloutActivities.switch_traffic, SwitchTrafficInput(inp.deployment_id, inp.account_id, "green", alias),
            start_to_close_timeout=SWITCH_TIMEOUT, retry_policy=DOCKER_RETRY, summary=f"{alias} → {green}")
        await self._emit("traffic_switched", {"to": green, "alias": alias}, status="promoting")
        self._step = 3
        if options.get("post_promotion_analysis"):
            try:
                await self._analysis(3, options["post_promotion_analysis"], green, phase="post-promotion")
            except RolloutFailed as failure:
                await workflow.execute_activity_method(
                    RolloutActivities.switch_traffic,
                    SwitchTrafficInput(inp.deployment_id, inp.account_id, "blue", alias),
                    start_to_close_timeout=SWITCH_TIMEOUT, retry_policy=DOCKER_RETRY,
                    summary=f"{alias} → {plan.service}")
                await self._emit("traffic_switched", {"to": plan.service, "alias": alias, "switch_back": True})
                await self._remove(green)
                self._replicas["green"] = 0
                raise RolloutFailed("rolled_back", f"switched back to {plan.service}: {failure.reason}") from None
        self._step = 4
        delay = float(parse_duration(options.get("scale_down_delay_seconds", 30)))
        self._phase = f"scaling blue down in {delay:g} s"
        if delay:
            await workflow.sleep(delay)
        await workflow.execute_activity_method(
            RolloutActivities.scale_service, ServiceInput(inp.deployment_id, inp.account_id, plan.service, 0),
            start_to_close_timeout=SHORT, retry_policy=DOCKER_RETRY, summary=f"{plan.service} → 0")
        self._replicas["stable"] = 0
        await self._emit("blue_scaled_down", {"service": plan.service})
        return "completed"

    # ---- helpers -------------------------------------------------------------------------------

    async def _cleanup_new(self, status: str) -> None:
        """Remove the new revision's service (canary, or green before the switch); stable untouched."""
        plan = self._plan
        if plan is None or plan.strategy == "rolling":
            return
        name = canary_name(plan.service) if plan.strategy == "canary" else green_name(plan.service)
        if await self._remove(name):
            await self._emit("new_revision_removed", {"service": name, "because": status})
        self._replicas["canary" if plan.strategy == "canary" else "green"] = 0

    async def _remove(self, name: str) -> bool:
        inp = self._require_input()
        return await workflow.execute_activity_method(
            RolloutActivities.remove_service, ServiceInput(inp.deployment_id, inp.account_id, name, 0),
            start_to_close_timeout=SHORT, retry_policy=DOCKER_RETRY, summary=f"remove {name}")

    async def _emit(self, event_type: str, payload: dict[str, Any], *, status: str | None = None,
                    result: str | None = None, current_step: int | None = None, error: str | None = None,
                    revision_id: int | None = None, finished: bool = False) -> None:
        inp = self._require_input()
        self._seq += 1
        await workflow.execute_local_activity_method(
            RolloutActivities.record,
            RolloutEventInput(deployment_id=inp.deployment_id, account_id=inp.account_id, key=str(self._seq),
                              event_type=event_type, payload=payload, result=result,
                              status=status or self._status, current_step=current_step, state=self.state(),
                              error=error, revision_id=revision_id, finished=finished),
            start_to_close_timeout=SHORT, retry_policy=BOOKKEEPING_RETRY)

    def _require_input(self) -> RolloutInput:
        return self._inp

    def _require_plan(self) -> RolloutPlan:
        assert self._plan is not None
        return self._plan

    def _require_prep(self) -> PrepareResult:
        assert self._prep is not None
        return self._prep


def _refusal(kind: str, message: str) -> ApplicationError:
    return ApplicationError(message, type=kind, non_retryable=True)
