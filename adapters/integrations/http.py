"""What the HTTP executors (``webhook``, ``rest_api``) share: the outbound-URL rule, one request
with no redirects and a capped body, the mapping of the far side's answers to executor failures,
and JSONPath response mapping.

Answers: unreachable, 429 and 5xx are ``IntegrationRetryable`` (with ``Retry-After`` when sent);
3xx (redirects are never followed) and other 4xx are ``IntegrationFailed`` naming the status.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import jsonpath

from adapters.integrations.base import ExecutorCall, IntegrationFailed, IntegrationRetryable
from adapters.network_targets import url_problem

MAX_BODY_BYTES = 1_000_000
TIMEOUT_SECONDS = 30.0


@dataclass
class HttpAnswer:
    status_code: int
    body: Any  # parsed JSON, else text (capped)
    headers: dict[str, str]
    truncated: bool = False


async def check_url(call: ExecutorCall, url: Any, what: str) -> str:
    """``url`` if it is http(s) and (unless private targets are allowed) not an internal address."""
    if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).hostname:
        raise IntegrationFailed(f"{what} must be an http(s) URL")
    if not call.settings.private_targets_allowed:
        problem = await asyncio.to_thread(url_problem, url, what=what, timeout=5.0)
        if problem:
            raise IntegrationFailed(problem)
    return url


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "")
    try:
        return max(0.0, min(float(value), 600.0)) if value else None
    except ValueError:
        return None


async def send(call: ExecutorCall, method: str, url: str, *, what: str, headers: dict[str, str] | None = None,
               content: bytes | None = None, params: dict[str, str] | None = None,
               accept: frozenset[int] | None = None) -> HttpAnswer:
    """One request; the answer's body read up to ``MAX_BODY_BYTES``. ``accept``: the statuses
    that count as success (default: any 2xx)."""
    client = call.http or httpx.AsyncClient()
    try:
        async with client.stream(method, url, headers=headers, content=content, params=params,
                                 timeout=TIMEOUT_SECONDS, follow_redirects=False) as response:
            raw = bytearray()
            truncated = False
            async for chunk in response.aiter_bytes():
                raw.extend(chunk)
                if len(raw) > MAX_BODY_BYTES:
                    truncated = True
                    del raw[MAX_BODY_BYTES:]
                    break
    except httpx.HTTPError as exc:
        raise IntegrationRetryable(f"{what} unreachable ({type(exc).__name__})") from None
    finally:
        if call.http is None:
            await client.aclose()
    status = response.status_code
    if accept is not None and status in accept:
        return HttpAnswer(status, _parsed(bytes(raw), truncated), dict(response.headers), truncated)
    if status == 429 or status >= 500:
        raise IntegrationRetryable(f"{what} answered HTTP {status}", retry_after=_retry_after(response))
    if 300 <= status < 400:
        raise IntegrationFailed(f"{what} answered HTTP {status} (redirects are not followed)")
    if status >= 400:
        raise IntegrationFailed(f"{what} answered HTTP {status}: {_snippet(bytes(raw))}")
    if accept is not None:
        raise IntegrationFailed(f"{what} answered HTTP {status}, not one of {sorted(accept)}")
    return HttpAnswer(status, _parsed(bytes(raw), truncated), dict(response.headers), truncated)


def _parsed(raw: bytes, truncated: bool) -> Any:
    text = raw.decode("utf-8", errors="replace")
    if not truncated and text.strip():
        try:
            return json.loads(text)
        except ValueError:
            pass
    return text


def _snippet(raw: bytes, limit: int = 300) -> str:
    text = raw[:limit].decode("utf-8", errors="replace").strip()
    return text or "(empty body)"


def mapped(mapping: Any, document: Any, what: str) -> dict[str, Any]:
    """``{output name: JSONPath}`` applied to ``document``: one match gives the value, several a
    list, none ``None``."""
    if not mapping:
        return {}
    if not isinstance(mapping, dict):
        raise IntegrationFailed(f"{what} must map output names to JSONPath expressions")
    outputs: dict[str, Any] = {}
    for name, path in mapping.items():
        if not isinstance(path, str):
            raise IntegrationFailed(f"{what}.{name} must be a JSONPath string such as $.id")
        try:
            found = jsonpath.findall(path, document)
        except jsonpath.JSONPathError as exc:
            raise IntegrationFailed(f"{what}.{name}: {path!r} is not a valid JSONPath ({exc})") from None
        outputs[str(name)] = found[0] if len(found) == 1 else (found or None)
    return outputs
