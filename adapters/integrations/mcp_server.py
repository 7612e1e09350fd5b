"""The ``mcp_server`` executor: list an MCP server's tools or call one, with the official ``mcp``
SDK client, over stdio or streamable HTTP.

Configuration: ``transport`` (``stdio`` | ``streamable_http``), ``server`` (stdio: the name of an
operator-registered server in ``settings.mcp_stdio_servers``; users never give a command, it
would run on the worker's machine), ``url`` (streamable_http; http(s), internal hosts refused
unless private targets are allowed), ``tool`` (the default tool), ``timeout_seconds``.
Credential field ``token`` (optional): ``Authorization: Bearer`` for HTTP.
Inputs: ``action`` (``call_tool`` | ``list_tools``), ``tool``, ``arguments``.

A stdio server runs with a minimal environment (never the worker's: no ``DEVOPS_*``) and its
stderr is discarded. A server that cannot be reached, dies or disconnects mid-call, or does not
answer in time is ``IntegrationRetryable``; everything the server or the user got wrong is
``IntegrationFailed``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import anyio
import httpx2
import mcp_types as types

from adapters.integrations.base import ExecutorCall, ExecutorOutcome, IntegrationFailed, IntegrationRetryable
from adapters.integrations.http import check_url
from domain.json_schemas import problems

if TYPE_CHECKING:
    from mcp.client.session import ClientSession

# The SDK itself is imported where it is used: ``import mcp`` loads starlette (its server half),
# which the worker must not load at import time (tests/test_architecture.py).

TRANSPORTS = ("stdio", "streamable_http")
ACTIONS = ("call_tool", "list_tools")
DEFAULT_TIMEOUT_SECONDS = 60.0
MAX_TIMEOUT_SECONDS = 3600.0
HEARTBEAT_SECONDS = 2.0
# what a stdio server gets on top of the SDK's own minimal set (HOME, LOGNAME, PATH, SHELL, TERM, USER)
STDIO_ENV = {"LANG": "C.UTF-8", "PYTHONUNBUFFERED": "1"}


class _Unavailable(Exception):
    """The server could not be reached, went away or did not answer in time (→ retryable)."""


class McpServerExecutor:
    async def start(self, call: ExecutorCall) -> ExecutorOutcome:
        config = call.configuration
        action = call.inputs.get("action", "call_tool") or "call_tool"
        if action not in ACTIONS:
            raise IntegrationFailed(f"inputs.action must be one of {', '.join(ACTIONS)}, not {action!r}")
        arguments = call.inputs.get("arguments") or {}
        if not isinstance(arguments, dict):
            raise IntegrationFailed("inputs.arguments must be an object of the tool's arguments")
        tool = call.inputs.get("tool") or config.get("tool")
        if action == "call_tool" and (not isinstance(tool, str) or not tool):
            raise IntegrationFailed("no tool to call: give inputs.tool or the configuration's tool")
        timeout = _timeout(config)
        where, url = await _target(call)
        beating = asyncio.ensure_future(_heartbeat(call, action)) if call.heartbeat is not None else None
        statuses: list[int] = []
        try:
            with anyio.fail_after(timeout + 5):
                async with _session(call, url, timeout, statuses) as session:
                    outputs = await _act(session, action, tool, arguments)
        except Exception as exc:  # noqa: BLE001 - every failure is classified; cancellation passes through
            failure = _http_status_failure(statuses) or _classified(exc)
            if isinstance(failure, IntegrationFailed):
                raise failure from None
            raise IntegrationRetryable(f"MCP server {where}: {failure}") from None
        finally:
            if beating is not None:
                beating.cancel()
        return ExecutorOutcome(outputs=outputs, log=[f"mcp {action} {tool or ''} on {where}".rstrip()])

    async def poll(self, call: ExecutorCall, state: dict[str, Any]) -> ExecutorOutcome:
        raise IntegrationFailed("an mcp_server execution finishes in one call; there is nothing to poll")


def _timeout(config: dict[str, Any]) -> float:
    value = config.get("timeout_seconds", DEFAULT_TIMEOUT_SECONDS)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= MAX_TIMEOUT_SECONDS:
        raise IntegrationFailed(f"configuration.timeout_seconds must be a number of seconds in (0, "
                                f"{MAX_TIMEOUT_SECONDS:g}], not {value!r}")
    return float(value)


async def _target(call: ExecutorCall) -> tuple[str, str | None]:
    """The server's name for messages and, for HTTP, its checked URL."""
    transport = call.configuration.get("transport", "stdio")
    if transport == "stdio":
        return repr(_stdio_command(call)[0]), None
    if transport == "streamable_http":
        url = await check_url(call, call.configuration.get("url"), "configuration.url (the MCP server's URL)")
        return url, url
    raise IntegrationFailed(f"configuration.transport must be one of {', '.join(TRANSPORTS)}, not {transport!r}")


def _stdio_command(call: ExecutorCall) -> tuple[str, list[str]]:
    name = call.configuration.get("server")
    registered = call.settings.mcp_stdio_servers
    if not isinstance(name, str) or name not in registered:
        names = ", ".join(sorted(registered)) or "none: the operator sets DEVOPS_MCP_STDIO_SERVERS"
        raise IntegrationFailed(f"configuration.server {name!r} is not a registered MCP stdio server "
                                f"(registered: {names})")
    command = registered[name]
    if not command:
        raise IntegrationFailed(f"the registered MCP stdio server {name!r} has an empty command")
    return name, list(command)


@contextlib.asynccontextmanager
async def _session(call: ExecutorCall, url: str | None, timeout: float,
                   statuses: list[int]) -> AsyncIterator[ClientSession]:
    """An initialised session on the configured server (``statuses``: the HTTP error statuses seen)."""
    from mcp.client.session import ClientSession
    from mcp.client.stdio import StdioServerParameters, stdio_client
    from mcp.client.streamable_http import streamable_http_client

    async with contextlib.AsyncExitStack() as stack:
        if url is None:
            _, command = _stdio_command(call)
            params = StdioServerParameters(command=command[0], args=command[1:], env=dict(STDIO_ENV),
                                           cwd=tempfile.gettempdir())
            errlog = stack.enter_context(open(os.devnull, "w"))  # noqa: SIM115 - the server's stderr, discarded
            try:
                read, write = await stack.enter_async_context(stdio_client(params, errlog=errlog))
            except OSError as exc:
                raise _Unavailable(f"could not be started ({exc.strerror or type(exc).__name__})") from None
        else:
            headers = {}
            token = call.credentials.get("token")
            if token:
                headers["Authorization"] = f"Bearer {token}"
            async def note_status(response: httpx2.Response) -> None:
                if response.status_code >= 400:
                    statuses.append(response.status_code)

            client = await stack.enter_async_context(httpx2.AsyncClient(
                headers=headers, timeout=httpx2.Timeout(min(timeout, 30.0), read=timeout),
                event_hooks={"response": [note_status]}))
            read, write = await stack.enter_async_context(streamable_http_client(url, http_client=client))
        session = await stack.enter_async_context(ClientSession(read, write, read_timeout_seconds=timeout))
        await session.initialize()
        yield session


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def _http_status_failure(statuses: list[int]) -> Exception | None:
    """What an HTTP error status the server answered means (None: there was none)."""
    if not statuses:
        return None
    status = statuses[0]
    if status == 429 or status >= 500:
        return _Unavailable(f"answered HTTP {status}")
    if status in (401, 403):
        return IntegrationFailed(f"the MCP server answered HTTP {status}: check the credential's token")
    return IntegrationFailed(f"the MCP server answered HTTP {status}")


def _classified(exc: Exception) -> Exception:
    """The failure to report for what the session raised (anyio wraps it in exception groups):
    an ``IntegrationFailed`` (final) or another exception whose text says why it is transient."""
    from mcp.shared.exceptions import MCPError

    leaves = _leaves(exc)
    for leaf in leaves:
        if isinstance(leaf, IntegrationFailed):
            return leaf
    for leaf in leaves:
        if isinstance(leaf, MCPError):
            if leaf.code == types.CONNECTION_CLOSED:
                return _Unavailable("the connection closed before the answer (the server died or disconnected)")
            if leaf.code == types.REQUEST_TIMEOUT:
                return _Unavailable(f"did not answer in time ({leaf.message})")
            return IntegrationFailed(f"the MCP server answered an error ({leaf.code}): {leaf.message}")
    for leaf in leaves:
        if isinstance(leaf, _Unavailable):
            return leaf
        if isinstance(leaf, TimeoutError):
            return _Unavailable("did not answer in time")
        if isinstance(leaf, OSError | httpx2.HTTPError | anyio.BrokenResourceError | anyio.ClosedResourceError):
            return _Unavailable(f"unreachable or went away ({type(leaf).__name__})")
    return _Unavailable(f"failed ({type(leaves[0]).__name__})")


async def _heartbeat(call: ExecutorCall, action: str) -> None:
    while True:
        await anyio.sleep(HEARTBEAT_SECONDS)
        call.heartbeat(f"mcp {action}: waiting for the server")


async def _act(session: ClientSession, action: str, tool: Any, arguments: dict[str, Any]) -> dict[str, Any]:
    tools = await _all_tools(session)
    if action == "list_tools":
        return {"tools": [{"name": t.name, "description": t.description, "input_schema": t.input_schema}
                          for t in tools]}
    found = next((t for t in tools if t.name == tool), None)
    if found is None:
        names = ", ".join(sorted(t.name for t in tools)) or "none"
        raise IntegrationFailed(f"the MCP server has no tool {tool!r} (available: {names})")
    found_problems = problems(arguments, found.input_schema or {})
    if found_problems:
        listed = "; ".join(f"{where}: {message}" for where, message in found_problems)
        raise IntegrationFailed(f"arguments for tool {tool!r} do not match its input schema: {listed} "
                                f"(pointers within inputs.arguments)")
    result = await session.call_tool(tool, arguments)
    content = [item.model_dump(mode="json", by_alias=True, exclude_none=True) for item in result.content]
    text = "\n".join(item.text for item in result.content if isinstance(item, types.TextContent))
    if result.is_error:
        raise IntegrationFailed(f"tool {tool!r} returned an error: {text or '(no text)'}")
    return {"tool": tool, "text": text, "content": content, "structured": result.structured_content}


async def _all_tools(session: ClientSession, max_pages: int = 50) -> list[types.Tool]:
    tools: list[types.Tool] = []
    cursor = None
    for _ in range(max_pages):
        page = await session.list_tools(params=types.PaginatedRequestParams(cursor=cursor) if cursor else None)
        tools.extend(page.tools)
        cursor = page.next_cursor
        if not cursor:
            break
    return tools


__all__ = ["McpServerExecutor"]
