"""The ``webhook`` executor: POST the execution's inputs as JSON to the configured URL.

Configuration: ``url``, ``method`` (default POST), ``headers``, ``response_mapping``
(``{output name: JSONPath}`` over the JSON answer). The body is signed with HMAC-SHA256 under the
credential's ``signing_secret`` when it has one: ``X-Devops-Signature-256: sha256=<hex>``, as the
``notify`` step signs; ``X-Devops-Event: integration.execute`` and ``X-Devops-Delivery`` (the same
for every retry of an execution, so the receiver can drop duplicates) go with it.
Outputs: ``status_code``, ``body`` (JSON or text, capped) and the mapped values.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from adapters.integrations.base import ExecutorCall, ExecutorOutcome, IntegrationFailed
from adapters.integrations.http import check_url, mapped, send

WHAT = "the webhook"


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class WebhookExecutor:
    async def start(self, call: ExecutorCall) -> ExecutorOutcome:
        config = call.configuration
        url = await check_url(call, config.get("url"), "the webhook url")
        method = str(config.get("method") or "POST").upper()
        if method not in ("POST", "PUT", "PATCH"):
            raise IntegrationFailed(f"webhook method {method!r} is not supported (POST, PUT or PATCH)")
        extra = config.get("headers") or {}
        if not isinstance(extra, dict):
            raise IntegrationFailed("the webhook headers must be a mapping of names to values")
        body = json.dumps(call.inputs, separators=(",", ":"), sort_keys=True).encode()
        headers = {**{str(k): str(v) for k, v in extra.items()}, "Content-Type": "application/json",
                   "User-Agent": "devops-orchestrator", "X-Devops-Event": "integration.execute",
                   "X-Devops-Delivery": f"integration-execution-{call.execution_id}"}
        secret = call.credentials.get("signing_secret")
        if secret:
            headers["X-Devops-Signature-256"] = signature(secret, body)
        answer = await send(call, method, url, what=WHAT, headers=headers, content=body)
        outputs: dict[str, Any] = {"status_code": answer.status_code, "body": answer.body}
        outputs.update(mapped(config.get("response_mapping"), answer.body, "response_mapping"))
        return ExecutorOutcome(outputs=outputs, log=[f"{method} {url} → {answer.status_code}"])

    async def poll(self, call: ExecutorCall, state: dict[str, Any]) -> ExecutorOutcome:
        raise IntegrationFailed("a webhook execution has nothing to wait for")
