"""mcp_server integrations end to end: API → IntegrationExecutionWorkflow on real Temporal → the
worker's executor → a real MCP server built with the SDK (stdio child and streamable HTTP)."""

from __future__ import annotations

from tests.integrations.helpers import create_credential, create_template, execute, install, wait_execution
from tests.integrations.test_mcp_executor import TOKEN, http_server


def finished(client, started: dict) -> dict:
    return started if started["status"] in ("success", "failure") else wait_execution(client, started["id"])


def test_an_mcp_stdio_instance_calls_a_tool(stack):
    client = stack.account().client
    template = create_template(client, "mcp_server", default_configuration={"transport": "stdio",
                                                                            "server": "test-tools"})
    instance = install(client, template["id"], {"tool": "add"})
    done = finished(client, execute(client, instance["id"], {"arguments": {"a": 20, "b": 22}}))
    assert done["status"] == "success", done
    assert done["output"]["text"] == "42" and done["output"]["structured"] == {"result": 42}
    listed = finished(client, execute(client, instance["id"], {"action": "list_tools"}))
    assert "echo" in {tool["name"] for tool in listed["output"]["tools"]}


def test_an_mcp_http_instance_uses_the_token_and_keeps_it_out_of_history(stack):
    proc, url = http_server()
    try:
        client = stack.account().client
        template = create_template(client, "mcp_server", credential_requirements=[{"name": "token"}])
        credential = create_credential(client, {"token": TOKEN})
        instance = install(client, template["id"], {"transport": "streamable_http", "url": url}, credential["id"])
        done = finished(client, execute(client, instance["id"], {"tool": "echo", "arguments": {"text": "hi"}}))
        assert done["status"] == "success", done
        assert done["output"]["text"] == "hi"
        history = stack.infra.run(stack.temporal.get_workflow_handle(done["workflow_id"]).fetch_history())
        assert TOKEN not in history.to_json()
    finally:
        proc.kill()
        proc.wait(10)


def test_an_mcp_server_dying_mid_call_is_retried_then_fails_with_the_reason(stack):
    client = stack.account().client
    template = create_template(client, "mcp_server")
    instance = install(client, template["id"], {"transport": "stdio", "server": "test-tools", "tool": "die"})
    done = finished(client, execute(client, instance["id"], {}))
    assert done["status"] == "failure", done
    assert "connection closed before the answer" in done["error"]
    assert done["attempts"] > 1
    assert "SECRET-STDERR-LINE" not in str(done)


def test_a_schema_invalid_tool_call_fails_at_once_with_the_pointer(stack):
    client = stack.account().client
    template = create_template(client, "mcp_server")
    instance = install(client, template["id"], {"transport": "stdio", "server": "test-tools"})
    done = finished(client, execute(client, instance["id"], {"tool": "add", "arguments": {"a": "x", "b": 1}}))
    assert done["status"] == "failure" and "/a: 'x' is not of type 'integer'" in done["error"]
    assert done["attempts"] == 1
