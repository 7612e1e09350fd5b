"""The one Temporal client of the API process, connected lazily and shared by all requests.

Routes and services reach Temporal through :class:`TemporalGateway` instead of the raw client:
the connection, the task queue and "a workflow that is not there" are decided here once.

* ``start``/``handle``/``describe``/``signal``/``update``/``query``/``cancel``/``terminate`` are
  coroutines. ``signal``, ``cancel`` and ``terminate`` answer False when the workflow does not
  exist (nothing to do); the others let Temporal's ``RPCError`` through for the caller to word.
* Plain ``def`` routes run in a worker thread while the client belongs to the event loop:
  ``gateway.call(gateway.signal, workflow_id, ...)`` (or any coroutine function) runs it there
  and returns its result.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from anyio import from_thread
from temporalio.client import Client, WorkflowExecutionDescription, WorkflowHandle
from temporalio.service import RPCError, RPCStatusCode

from settings import Settings

T = TypeVar("T")


def is_not_found(exc: BaseException) -> bool:
    """Temporal's answer for a workflow (or schedule) id it does not know."""
    return isinstance(exc, RPCError) and exc.status == RPCStatusCode.NOT_FOUND


class TemporalGateway:
    def __init__(self, settings: Settings, client: Client | None = None) -> None:
        self._settings = settings
        self._client = client
        self._lock = asyncio.Lock()

    async def client(self) -> Client:
        if self._client is None:
            async with self._lock:
                if self._client is None:
                    self._client = await Client.connect(
                        self._settings.temporal_address, namespace=self._settings.temporal_namespace
                    )
        return self._client

    async def healthy(self, timeout: float = 3) -> bool:
        """Whether the service answers its health check within ``timeout`` seconds (each of
        connecting and asking)."""
        try:
            client = await asyncio.wait_for(self.client(), timeout)
            return await asyncio.wait_for(client.service_client.check_health(), timeout)
        except Exception:  # noqa: BLE001 - any failure means "unreachable" here
            return False

    def ui_url(self, workflow_id: str) -> str:
        base = self._settings.resolved_temporal_ui_url
        return f"{base}/namespaces/{self._settings.temporal_namespace}/workflows/{workflow_id}"

    # ---- from plain-def routes (worker threads) -----------------------------------------------------

    @staticmethod
    def call(function: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        """Run the coroutine function on the event loop from a worker thread and wait for it."""
        return from_thread.run(functools.partial(function, *args, **kwargs))

    # ---- workflows --------------------------------------------------------------------------------

    async def start(self, workflow_run: Any, arg: Any = None, *, id: str,  # noqa: A002 - Temporal's own name
                    **options: Any) -> WorkflowHandle[Any, Any]:
        """Start ``workflow_run`` on the service's task queue (unless ``task_queue=`` says otherwise);
        the other keyword options are ``Client.start_workflow``'s."""
        options.setdefault("task_queue", self._settings.task_queue)
        client = await self.client()
        if arg is None:
            return await client.start_workflow(workflow_run, id=id, **options)
        return await client.start_workflow(workflow_run, arg, id=id, **options)

    async def handle(self, workflow_id: str, run_id: str | None = None) -> WorkflowHandle[Any, Any]:
        return (await self.client()).get_workflow_handle(workflow_id, run_id=run_id)

    async def describe(self, workflow_id: str) -> WorkflowExecutionDescription:
        return await (await self.handle(workflow_id)).describe()

    async def update(self, workflow_id: str, update: Any, *args: Any) -> Any:
        """Execute a workflow update and return its result."""
        handle = await self.handle(workflow_id)
        if len(args) > 1:
            return await handle.execute_update(update, args=list(args))
        return await handle.execute_update(update, *args)

    async def query(self, workflow_id: str, query: Any, *args: Any) -> Any:
        return await (await self.handle(workflow_id)).query(query, *args)

    async def signal(self, workflow_id: str, signal: Any, *args: Any) -> bool:
        """Send a signal; False when the workflow does not exist."""
        handle = await self.handle(workflow_id)
        try:
            if len(args) > 1:
                await handle.signal(signal, args=list(args))
            else:
                await handle.signal(signal, *args)
        except RPCError as exc:
            if is_not_found(exc):
                return False
            raise
        return True

    async def cancel(self, workflow_id: str) -> bool:
        """Request cancellation; False when the workflow does not exist."""
        try:
            await (await self.handle(workflow_id)).cancel()
        except RPCError as exc:
            if is_not_found(exc):
                return False
            raise
        return True

    async def terminate(self, workflow_id: str, reason: str) -> bool:
        """Terminate at once; False when the workflow does not exist."""
        try:
            await (await self.handle(workflow_id)).terminate(reason=reason)
        except RPCError as exc:
            if is_not_found(exc):
                return False
            raise
        return True
