"""A real MCP server built with the ``mcp`` SDK, for the ``mcp_server`` executor's tests.

``python tests/integrations/mcp_test_server.py stdio`` serves over stdio;
``python tests/integrations/mcp_test_server.py http <port>`` serves streamable HTTP on
127.0.0.1:<port> at ``/mcp`` (bearer token checked when ``MCP_TEST_TOKEN`` is set).
Tools: ``add``, ``echo``, ``fail`` (an error result), ``die`` (the process exits mid-call),
``env_keys`` (the names of the server's environment variables), ``structured`` (structured content).
"""

from __future__ import annotations

import os
import sys

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

server = MCPServer("devops-test-tools")


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@server.tool()
def echo(text: str) -> str:
    """Return the text unchanged."""
    return text


@server.tool()
def fail() -> str:
    """Always fails with an error result."""
    raise ToolError("the tool failed on purpose")


@server.tool()
def die() -> str:
    """The server process exits in the middle of the call."""
    sys.stderr.write("dying on purpose: SECRET-STDERR-LINE\n")
    sys.stderr.flush()
    os._exit(3)


@server.tool()
def env_keys() -> list[str]:
    """The names of this server process's environment variables."""
    return sorted(os.environ)


@server.tool()
def structured(name: str) -> dict[str, str]:
    """Structured content: a greeting object."""
    return {"greeting": f"hello {name}"}


def main() -> None:
    sys.stderr.write("mcp test server starting: SECRET-STDERR-LINE\n")
    if sys.argv[1:2] == ["http"]:
        import uvicorn
        from starlette.middleware.base import BaseHTTPMiddleware
        from starlette.responses import JSONResponse

        app = server.streamable_http_app()
        token = os.environ.get("MCP_TEST_TOKEN")

        async def check_token(request, call_next):  # type: ignore[no-untyped-def]
            if token and request.headers.get("authorization") != f"Bearer {token}":
                return JSONResponse({"error": "unauthorized"}, status_code=401)
            return await call_next(request)

        app.add_middleware(BaseHTTPMiddleware, dispatch=check_token)
        uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
    else:
        server.run("stdio")


if __name__ == "__main__":
    main()
