"""The CLI's HTTP client without a server: error answers in one line, SSE parsing, and what a
transport failure is called (httpx's MockTransport stands in for the API)."""

from __future__ import annotations

import httpx
import pytest

from cli.client import ApiClient, ApiError, ApiUnreachable, CliError, error_message, parse_sse
from cli.config import Config


def test_a_422_lists_each_field_and_its_message_on_one_line():
    body = {"detail": [{"loc": ["body", "steps", 0, "type"], "msg": "unknown step type", "type": "x"},
                       {"loc": ["query", "status"], "msg": "unknown status", "type": "enum"}]}
    assert error_message(422, body, "Unprocessable") == \
        "steps.0.type: unknown step type; status: unknown status (HTTP 422)"


def test_other_errors_show_the_detail_or_the_reason():
    assert error_message(409, {"detail": "run 1 already finished"}, "Conflict") == "run 1 already finished (HTTP 409)"
    assert error_message(502, None, "Bad Gateway") == "Bad Gateway (HTTP 502)"


def test_sse_messages_are_parsed_and_comments_skipped():
    lines = [": stream open", "", "id: 3.0", "event: log", 'data: {"line":"a"}', "",
             ": keep-alive", "", "event: end", "data: {}", ""]
    events = list(parse_sse(iter(lines)))
    assert [(e.event, e.data, e.id) for e in events] == [("log", '{"line":"a"}', "3.0"), ("end", "{}", None)]


def client_answering(handler) -> ApiClient:
    return ApiClient(Config(api_url="http://api.test", token="dvo_x"), transport=httpx.MockTransport(handler))


def test_requests_carry_the_bearer_token_under_the_api_prefix():
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"data": [], "count": 0})

    assert client_answering(handler).get("/pipelines", limit=5, skipped=None) == {"data": [], "count": 0}
    assert str(seen[0].url) == "http://api.test/api/v1/devops/pipelines?limit=5"
    assert seen[0].headers["Authorization"] == "Bearer dvo_x"


def test_error_answers_and_non_api_servers_raise_cli_errors():
    api = client_answering(lambda request: httpx.Response(401, json={"detail": "invalid or expired token"}))
    with pytest.raises(ApiError, match=r"invalid or expired token \(HTTP 401\)") as raised:
        api.get("/pipelines")
    assert raised.value.exit_code == 1
    html = client_answering(lambda request: httpx.Response(404, text="<html>nope</html>"))
    with pytest.raises(ApiError, match="is http://api.test the devops API"):
        html.get("/pipelines")
    not_json = client_answering(lambda request: httpx.Response(200, text="hello"))
    with pytest.raises(CliError, match="not JSON"):
        not_json.get("/pipelines")


def test_a_refused_connection_is_named_and_exits_2():
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("boom") from ConnectionRefusedError(111, "Connection refused")

    with pytest.raises(ApiUnreachable, match=r"cannot reach the API at http://api.test \(connection refused\)") as raised:
        client_answering(refuse).get("/pipelines")
    assert raised.value.exit_code == 2
