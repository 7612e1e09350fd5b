"""HostSyncWorkflow: keeps one Docker host's read model in sync (``host-sync-<host id>``).

A loop of rounds: the ``sync_docker_host`` activity (containers, images, events since the cursor,
metrics), then a durable sleep for the host's interval that a signal can cut short. A host that
does not answer is a failed round recorded by the activity (5 in a row set status ``error``), never
a failed workflow; even an activity that keeps failing (the database is down) only ends the round.

- signal ``sync_now``: a round as soon as possible (also while paused);
- update ``sync_round``: the same, and answers the result of that round (``POST .../sync`` uses it);
- signals ``set_interval(seconds)``, ``pause``, ``resume``; query ``state``.

The history is kept short with continue-as-new after ``rounds_before_continue`` rounds or when
Temporal suggests it, carrying the interval and the pause over. With ``single_round`` the workflow
does one round and returns it: what ``POST .../sync`` starts for a host whose auto-sync is off.
The workflow ends by itself when its host is deleted (the API terminates it first anyway).
"""

from __future__ import annotations

from dataclasses import dataclass

from temporalio import workflow

from workflows.periodic_sync import ROUND_RETRY, ROUND_TIMEOUT, ROUNDS_BEFORE_CONTINUE, PeriodicSync

with workflow.unsafe.imports_passed_through():
    from activities.docker_hosts import DockerHostActivities, SyncHostInput, SyncHostResult


def host_sync_workflow_id(host_id: int) -> str:
    return f"host-sync-{host_id}"


@dataclass
class HostSyncInput:
    host_id: int
    account_id: int
    interval_seconds: int = 60
    paused: bool = False
    single_round: bool = False
    rounds_before_continue: int = ROUNDS_BEFORE_CONTINUE
    total_rounds: int = 0  # over every continue-as-new run


@dataclass
class HostSyncState:
    host_id: int
    interval_seconds: int
    paused: bool
    rounds: int  # in this run
    total_rounds: int
    last_round_at: str | None
    last_result: SyncHostResult | None


@workflow.defn
class HostSyncWorkflow(PeriodicSync):
    target = "host"

    @workflow.init
    def __init__(self, inp: HostSyncInput) -> None:
        super().__init__(inp)
        self._host_id = inp.host_id

    @workflow.update
    async def sync_round(self) -> SyncHostResult:
        """Ask for a round and answer its result (or a later one's, when rounds were queued)."""
        return await self._sync_round()

    @workflow.query
    def state(self) -> HostSyncState:
        return HostSyncState(host_id=self._host_id, **self._state_fields())

    @workflow.run
    async def run(self, inp: HostSyncInput) -> SyncHostResult | None:
        return await self._loop(inp)

    async def _sync_activity(self, inp: HostSyncInput) -> SyncHostResult:
        return await workflow.execute_activity_method(
            DockerHostActivities.sync_host, SyncHostInput(host_id=inp.host_id, account_id=inp.account_id),
            start_to_close_timeout=ROUND_TIMEOUT, retry_policy=ROUND_RETRY)

    def _failed_result(self, error: str) -> SyncHostResult:
        return SyncHostResult(ok=False, error=error)

    def _target_gone(self, result: SyncHostResult) -> bool:
        return result.host_gone

    def _target_id(self, inp: HostSyncInput) -> int:
        return inp.host_id
