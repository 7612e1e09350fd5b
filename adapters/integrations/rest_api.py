"""The ``rest_api`` executor: one templated HTTP request, its JSON answer mapped to outputs.

Configuration: ``method`` (default GET), ``url``, ``headers``, ``query``, ``body`` (a string, or
an object sent as JSON), ``outputs`` (``{output name: JSONPath}``, read with ``jsonpath.findall``)
and optionally ``success_status`` (the statuses that count as success; default any 2xx). Every
string in them is a template rendered by ``domain.templating.render`` (the sandboxed Jinja2) with
``inputs``, ``credentials`` (the instance's credential fields) and ``config`` (the configuration).
Outputs: ``status_code``, ``body`` and the mapped values.
"""

from __future__ import annotations

import json
from typing import Any

from adapters.integrations.base import ExecutorCall, ExecutorOutcome, IntegrationFailed
from adapters.integrations.http import check_url, mapped, send
from domain.errors import Invalid
from domain.templating import render

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD")
WHAT = "the REST API"


def _render(value: Any, variables: dict[str, Any], field: list[Any]) -> Any:
    if isinstance(value, str):
        try:
            return render(value, variables, field=field, max_bytes=1_000_000)
        except Invalid as exc:
            problem = exc.errors()[0] if exc.errors() else {}
            where = ".".join(str(part) for part in problem.get("loc", field))
            raise IntegrationFailed(f"configuration {where}: {problem.get('msg', 'cannot be rendered')}") from None
    if isinstance(value, dict):
        return {str(k): _render(v, variables, [*field, str(k)]) for k, v in value.items()}
    if isinstance(value, list):
        return [_render(v, variables, [*field, i]) for i, v in enumerate(value)]
    return value


def _strings(value: Any, what: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise IntegrationFailed(f"{what} must be a mapping of names to values")
    return {str(k): str(v) for k, v in value.items()}


class RestApiExecutor:
    async def start(self, call: ExecutorCall) -> ExecutorOutcome:
        config = call.configuration
        variables = {"inputs": call.inputs, "credentials": call.credentials, "config": config}
        method = str(_render(config.get("method") or "GET", variables, ["method"])).upper()
        if method not in METHODS:
            raise IntegrationFailed(f"method {method!r} is not one of {', '.join(METHODS)}")
        url = await check_url(call, _render(config.get("url"), variables, ["url"]), "the rest_api url")
        headers = _strings(_render(config.get("headers"), variables, ["headers"]), "headers")
        query = _strings(_render(config.get("query"), variables, ["query"]), "query")
        content = None
        body = config.get("body")
        if isinstance(body, str):
            content = _render(body, variables, ["body"]).encode()
        elif body is not None:
            content = json.dumps(_render(body, variables, ["body"]), separators=(",", ":")).encode()
            if not any(name.lower() == "content-type" for name in headers):
                headers["Content-Type"] = "application/json"
        accept = config.get("success_status")
        if accept is not None and (not isinstance(accept, list) or not all(isinstance(s, int) for s in accept)):
            raise IntegrationFailed("success_status must be a list of HTTP status codes")
        answer = await send(call, method, url, what=WHAT, headers=headers, content=content, params=query or None,
                            accept=frozenset(accept) if accept else None)
        outputs: dict[str, Any] = {"status_code": answer.status_code, "body": answer.body}
        outputs.update(mapped(config.get("outputs"), answer.body, "outputs"))
        return ExecutorOutcome(outputs=outputs, log=[f"{method} → {answer.status_code}"])

    async def poll(self, call: ExecutorCall, state: dict[str, Any]) -> ExecutorOutcome:
        raise IntegrationFailed("a rest_api execution has nothing to wait for")
