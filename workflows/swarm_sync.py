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

from temporalio import workflow

from workflows.periodic_sync import ROUND_RETRY, ROUND_TIMEOUT, ROUNDS_BEFORE_CONTINUE, PeriodicSync

with workflow.unsafe.imports_passed_through():
    from activities.swarm import SwarmActivities, SyncClusterInput, SyncClusterResult


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
class SwarmSyncWorkflow(PeriodicSync):
    target = "cluster"

    @workflow.init
    def __init__(self, inp: SwarmSyncInput) -> None:
        super().__init__(inp)
        self._cluster_id = inp.cluster_id

    @workflow.update
    async def sync_round(self) -> SyncClusterResult:
        """Ask for a round and answer its result (or a later one's, when rounds were queued)."""
        return await self._sync_round()

    @workflow.query
    def state(self) -> SwarmSyncState:
        return SwarmSyncState(cluster_id=self._cluster_id, **self._state_fields())

    @workflow.run
    async def run(self, inp: SwarmSyncInput) -> SyncClusterResult | None:
        return await self._loop(inp)

    async def _sync_activity(self, inp: SwarmSyncInput) -> SyncClusterResult:
        return await workflow.execute_activity_method(
            SwarmActivities.sync_cluster, SyncClusterInput(cluster_id=inp.cluster_id, account_id=inp.account_id),
            start_to_close_timeout=ROUND_TIMEOUT, retry_policy=ROUND_RETRY)

    def _failed_result(self, error: str) -> SyncClusterResult:
        return SyncClusterResult(ok=False, error=error)

    def _target_gone(self, result: SyncClusterResult) -> bool:
        return result.cluster_gone

    def _target_id(self, inp: SwarmSyncInput) -> int:
        return inp.cluster_id
