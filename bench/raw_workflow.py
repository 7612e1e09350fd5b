"""The baseline of bench/orchestration.py: a plain temporalio workflow of 3 no-op activities.

Kept in its own module with no third-party imports so the workflow sandbox loads it as is.
Run as a worker: ``python bench/raw_workflow.py <temporal address>``.
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass
from datetime import timedelta

from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.worker import Worker

RAW_QUEUE = "bench-raw"


@dataclass
class NoopInput:
    index: int


@activity.defn
async def raw_noop(inp: NoopInput) -> int:
    return inp.index


@workflow.defn
class RawThreeActivities:
    @workflow.run
    async def run(self) -> int:
        total = 0
        for i in range(3):
            total += await workflow.execute_activity(raw_noop, NoopInput(i), start_to_close_timeout=timedelta(seconds=30))
        return total


async def serve(address: str) -> None:
    client = await Client.connect(address)
    await Worker(client, task_queue=RAW_QUEUE, workflows=[RawThreeActivities], activities=[raw_noop]).run()


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1]))
