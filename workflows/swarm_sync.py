"""SwarmSyncWorkflow: keeps one Swarm cluster's read model in sync (``swarm-sync-<cluster id>``).

The same shape as ``HostSyncWorkflow``: a loop of rounds (the ``sync_swarm_cluster`` activity:
nodes, services, stacks, events since the cursor), then a durable sleep for the cluster's interval
that a signal can cut short. A manager that does not answer is a failed round recorded by the
activity (5 in a row set status ``error``), never a failed workflow.

- signal ``sync_now``: a round as soon as possible (also while paused);
- update ``sync_round``: the same, and answers the result of that round (``POST .../sync`` uses it);
- signals ``set_interval(seconds)``, ``pause``, ``resume``; query ``state``.

Continue-as-new after ``rounds_before_continue`` rounds or when Temporal suggests it, carrying the
interval and the pause over. With ``single_round`` the workflow does one round and returns it
(``POST .../sync`` of a cluster whose auto-sync is off). It ends by itself when its cluster is deleted.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.swarm import SwarmActivities, SyncClusterInput, SyncClusterResult

ROUND_TIMEOUT = timedelta(minutes=3)
ROUND_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=10),
                          maximum_attempts=3)
ROUNDS_BEFORE_CONTINUE = 200


def swarm_sync_workflow_id(cluster_id: int) -> str:
    return f"swarm-sync-{cluster_id}"


@dataclass
class SwarmSyncInput:
    cluster_id: int
    account_id: int
    interval_seconds: int = 60
    paused: bool = False
    single_round: bool = False
    rounds_before_continue: int = ROUNDS_BEFORE_CONTINUE
    total_rounds: int = 0  # over every continue-as-new run


@dataclass
class SwarmSyncState:
    cluster_id: int
    interval_seconds: int
    paused: bool
    rounds: int  # in this run
    total_rounds: int
    last_round_at: str | None
    last_result: SyncClusterResult | None


@workflow.defn
class SwarmSyncWorkflow:
    @workflow.init
    def __init__(self, inp: SwarmSyncInput) -> None:
        self._cluster_id = inp.cluster_id
        self._interval = inp.interval_seconds
        self._paused = inp.paused
        self._total = inp.total_rounds
        self._started = 0  # rounds started in this run
        self._completed = 0
        self._requested = 0  # the highest round number asked for by sync_now / sync_round
        self._changed = False  # a signal changed the interval or the pause: recompute the sleep
        self._last_round_at: str | None = None
        self._last_round_time: datetime | None = None
        self._last_result: SyncClusterResult | None = None

    # ---- signals, update, query ------------------------------------------------------------------

    def _ask_for_round(self) -> int:
        wanted = self._started + 1  # a round that starts after this request
        self._requested = max(self._requested, wanted)
        return wanted

    @workflow.signal
    def sync_now(self) -> None:
        self._ask_for_round()

    @workflow.update
    async def sync_round(self) -> SyncClusterResult:
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

    @workflow.query
    def state(self) -> SwarmSyncState:
        return SwarmSyncState(cluster_id=self._cluster_id, interval_seconds=self._interval, paused=self._paused,
                             rounds=self._completed, total_rounds=self._total, last_round_at=self._last_round_at,
                             last_result=self._last_result)

    # ---- the loop --------------------------------------------------------------------------------

    def _round_pending(self) -> bool:
        return self._requested > self._started

    @workflow.run
    async def run(self, inp: SwarmSyncInput) -> SyncClusterResult | None:
        while True:
            if self._round_pending() or not self._paused or inp.single_round:
                result = await self._round(inp)
                if inp.single_round or result.cluster_gone:
                    return result
            if not self._round_pending() and (self._completed >= inp.rounds_before_continue
                                              or workflow.info().is_continue_as_new_suggested()):
                # An update waiting for a round must get it first, and every handler must be done.
                await workflow.wait_condition(lambda: workflow.all_handlers_finished() or self._round_pending())
                if not self._round_pending():
                    workflow.continue_as_new(SwarmSyncInput(
                        cluster_id=inp.cluster_id, account_id=inp.account_id, interval_seconds=self._interval,
                        paused=self._paused, rounds_before_continue=inp.rounds_before_continue,
                        total_rounds=self._total))
            await self._sleep()

    async def _round(self, inp: SwarmSyncInput) -> SyncClusterResult:
        self._started += 1
        self._last_round_time = workflow.now()
        try:
            result = await workflow.execute_activity_method(
                SwarmActivities.sync_cluster, SyncClusterInput(cluster_id=inp.cluster_id, account_id=inp.account_id),
                start_to_close_timeout=ROUND_TIMEOUT, retry_policy=ROUND_RETRY)
        except ActivityError as err:
            # Not the cluster (the activity records those as failed rounds): our own side failed
            # (database down). The round is lost; the next one is at the usual time.
            cause = err.cause
            result = SyncClusterResult(ok=False, error=f"the sync round failed: {cause.message if cause else err}")
            workflow.logger.warning("cluster %s: sync round failed: %s", inp.cluster_id, result.error)
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
