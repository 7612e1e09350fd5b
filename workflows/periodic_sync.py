"""The loop shared by HostSyncWorkflow and SwarmSyncWorkflow: rounds of one sync activity with a
durable sleep for an interval between them.

A target that does not answer is a failed round recorded by the activity itself, never a failed
workflow; even an activity that keeps failing (our database is down) only loses that round.

- signal ``sync_now``: a round as soon as possible (also while paused);
- update ``sync_round`` (declared by each workflow, for its result type): the same, answering the
  result of that round;
- signals ``set_interval(seconds)``, ``pause``, ``resume``; query ``state`` (per workflow).

The history is kept short with continue-as-new after ``rounds_before_continue`` rounds or when
Temporal suggests it, carrying the interval, the pause and the round count over. With
``single_round`` the workflow does one round and returns it. A subclass says which activity, how
to build its input and a failed result, and whether a result means the target is gone.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

ROUND_TIMEOUT = timedelta(minutes=3)
ROUND_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=10),
                          maximum_attempts=3)
ROUNDS_BEFORE_CONTINUE = 200


class PeriodicSync:
    """Not a workflow by itself: subclasses add ``@workflow.defn``, ``run``, ``sync_round`` and
    ``state`` (one-line delegations, so each keeps its own types)."""

    target = "target"  # for log lines: host, cluster

    def __init__(self, inp: Any) -> None:
        self._interval: int = inp.interval_seconds
        self._paused: bool = inp.paused
        self._total: int = inp.total_rounds
        self._started = 0  # rounds started in this run
        self._completed = 0
        self._requested = 0  # the highest round number asked for by sync_now / sync_round
        self._changed = False  # a signal changed the interval or the pause: recompute the sleep
        self._last_round_at: str | None = None
        self._last_round_time: datetime | None = None
        self._last_result: Any = None

    # ---- what a subclass provides -----------------------------------------------------------

    async def _sync_activity(self, inp: Any) -> Any:
        raise NotImplementedError

    def _failed_result(self, error: str) -> Any:
        raise NotImplementedError

    def _target_gone(self, result: Any) -> bool:
        raise NotImplementedError

    def _target_id(self, inp: Any) -> int:
        raise NotImplementedError

    # ---- signals, and the bodies of the update and the query -----------------------------------

    def _ask_for_round(self) -> int:
        wanted = self._started + 1  # a round that starts after this request
        self._requested = max(self._requested, wanted)
        return wanted

    @workflow.signal
    def sync_now(self) -> None:
        self._ask_for_round()

    async def _sync_round(self) -> Any:
        """Ask for a round and answer its result (or a later one's, when rounds were queued)."""
        wanted = self._ask_for_round()
        await workflow.wait_condition(lambda: self._completed >= wanted)
        assert self._last_result is not None
        return self._last_result

    @workflow.signal
    def set_interval(self, seconds: int) -> None:
        if seconds > 0:
            self._interval = seconds
            self._changed = True

    @workflow.signal
    def pause(self) -> None:
        self._paused = True
        self._changed = True

    @workflow.signal
    def resume(self) -> None:
        self._paused = False
        self._changed = True

    def _state_fields(self) -> dict[str, Any]:
        return {"interval_seconds": self._interval, "paused": self._paused, "rounds": self._completed,
                "total_rounds": self._total, "last_round_at": self._last_round_at,
                "last_result": self._last_result}

    # ---- the loop --------------------------------------------------------------------------------

    def _round_pending(self) -> bool:
        return self._requested > self._started

    async def _loop(self, inp: Any) -> Any:
        while True:
            if self._round_pending() or not self._paused or inp.single_round:
                result = await self._round(inp)
                if inp.single_round or self._target_gone(result):
                    return result
            if not self._round_pending() and (self._completed >= inp.rounds_before_continue
                                              or workflow.info().is_continue_as_new_suggested()):
                # An update waiting for a round must get it first, and every handler must be done.
                await workflow.wait_condition(lambda: workflow.all_handlers_finished() or self._round_pending())
                if not self._round_pending():
                    workflow.continue_as_new(dataclasses.replace(
                        inp, interval_seconds=self._interval, paused=self._paused, single_round=False,
                        total_rounds=self._total))
            await self._sleep()

    async def _round(self, inp: Any) -> Any:
        self._started += 1
        self._last_round_time = workflow.now()
        try:
            result = await self._sync_activity(inp)
        except ActivityError as err:
            # Not the target (the activity records those as failed rounds): our own side failed
            # (database down). The round is lost; the next one is at the usual time.
            cause = err.cause
            result = self._failed_result(f"the sync round failed: {cause.message if cause else err}")
            workflow.logger.warning("%s %s: sync round failed: %s", self.target, self._target_id(inp), result.error)
        self._completed = self._started
        self._total += 1
        self._last_round_at = workflow.now().isoformat()
        self._last_result = result
        return result

    async def _sleep(self) -> None:
        """Until the interval since the last round is over, a round is asked for, or, while
        paused, until resumed; an interval change re-measures from the last round."""
        while not self._round_pending():
            self._changed = False
            wake = lambda: self._changed or self._round_pending()  # noqa: E731
            if self._paused:
                await workflow.wait_condition(wake)
                continue
            due = (self._last_round_time or workflow.now()) + timedelta(seconds=self._interval)
            remaining = (due - workflow.now()).total_seconds()
            if remaining <= 0:
                return
            try:
                await workflow.wait_condition(wake, timeout=remaining)
            except TimeoutError:
                return
