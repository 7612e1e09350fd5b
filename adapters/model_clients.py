"""Model APIs behind one call: the Anthropic Messages API through the official ``anthropic`` SDK,
and OpenAI-compatible Chat Completions servers through the ``openai`` SDK.

The SDKs' own retries are off (``max_retries=0``): the step's activity retries, so Temporal's
history shows each try and a ``retry-after`` is honoured as the next retry's delay. Every failure
is a :class:`ModelCallFailed` saying whether a retry may help (429, 408, 5xx/529, no connection)
and carrying the provider's own message. The API key and base URL come from the caller (an
AiConfig, decrypted in the activity); nothing is read from the environment.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anthropic
import openai

ANTHROPIC_DEFAULT_URL = "https://api.anthropic.com"
RETRYABLE_STATUSES = frozenset({408, 409, 429})


@dataclass(frozen=True)
class ModelCall:
    provider: str  # anthropic | openai_compatible
    model: str
    api_key: str | None
    base_url: str | None
    prompt: str
    system: str | None
    max_tokens: int
    temperature: float | None
    timeout_seconds: float
    stream: bool = False
    tools: list[dict[str, Any]] = field(default_factory=list)  # [{name, description, input_schema}]


@dataclass
class ModelReply:
    text: str
    input_tokens: int
    output_tokens: int
    model: str
    stop_reason: str | None
    tool_calls: list[dict[str, Any]]
    latency_ms: int = 0


class ModelCallFailed(Exception):
    """The provider refused or could not be reached. ``status`` is its HTTP status (None: no
    answer); ``retryable``: a later try may succeed; ``retry_after``: seconds it asked to wait."""

    def __init__(self, message: str, *, status: int | None, retryable: bool, retry_after: float | None = None,
                 latency_ms: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.retryable = retryable
        self.retry_after = retry_after
        self.latency_ms = latency_ms


def retry_after_seconds(headers: Any) -> float | None:
    """``retry-after-ms`` or ``retry-after`` (seconds) of an answer, when given as a number."""
    if headers is None:
        return None
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        raw = headers.get(name)
        if raw is None:
            continue
        try:
            value = float(raw) * scale
        except ValueError:
            continue
        if value >= 0:
            return value
    return None


def _provider_message(body: Any, fallback: str) -> str:
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            kind = inner.get("type")
            return f"{kind}: {inner['message']}" if isinstance(kind, str) and kind else inner["message"]
    return fallback


def _status_failure(status: int, body: Any, headers: Any, fallback: str, started: float) -> ModelCallFailed:
    retryable = status in RETRYABLE_STATUSES or status >= 500
    if isinstance(body, dict) and isinstance(body.get("error"), dict) \
            and body["error"].get("type") in ("overloaded_error", "api_error"):
        retryable = True  # an error event inside a stream arrives with the stream's 200
    return ModelCallFailed(f"HTTP {status}: {_provider_message(body, fallback)}", status=status, retryable=retryable,
                           retry_after=retry_after_seconds(headers), latency_ms=_ms(started))


def _ms(started: float) -> int:
    return int((time.perf_counter() - started) * 1000)


async def call_model(call: ModelCall, on_event: Callable[[], None] = lambda: None) -> ModelReply:
    """One model call; ``on_event`` is called for each streamed event (the caller heartbeats)."""
    started = time.perf_counter()
    try:
        if call.provider == "anthropic":
            reply = await _anthropic(call, on_event)
        elif call.provider == "openai_compatible":
            reply = await _openai(call, on_event)
        else:
            raise ModelCallFailed(f"unknown provider {call.provider!r}", status=None, retryable=False)
    except (anthropic.APIStatusError, openai.APIStatusError) as exc:
        raise _status_failure(exc.status_code, exc.body, exc.response.headers, exc.message, started) from None
    except (anthropic.APIConnectionError, openai.APIConnectionError) as exc:
        what = "timed out" if isinstance(exc, anthropic.APITimeoutError | openai.APITimeoutError) \
            else "could not be reached"
        raise ModelCallFailed(f"the model API {what} ({type(exc).__name__})", status=None, retryable=True,
                              latency_ms=_ms(started)) from None
    except (anthropic.APIError, openai.APIError) as exc:  # an answer the SDK could not read
        raise ModelCallFailed(f"the model API answered something unreadable: {exc}", status=None,
                              retryable=True, latency_ms=_ms(started)) from None
    reply.latency_ms = _ms(started)
    return reply


async def _anthropic(call: ModelCall, on_event: Callable[[], None]) -> ModelReply:
    client = anthropic.AsyncAnthropic(api_key=call.api_key or "", base_url=call.base_url or ANTHROPIC_DEFAULT_URL,
                                      max_retries=0, timeout=call.timeout_seconds)
    kwargs: dict[str, Any] = {"model": call.model, "max_tokens": call.max_tokens,
                              "messages": [{"role": "user", "content": call.prompt}]}
    if call.system:
        kwargs["system"] = call.system
    if call.temperature is not None:
        kwargs["temperature"] = call.temperature
    if call.tools:
        kwargs["tools"] = [{"name": t["name"], "description": t.get("description", ""),
                            "input_schema": t.get("input_schema") or {"type": "object"}} for t in call.tools]
    async with client:
        if call.stream:
            async with client.messages.stream(**kwargs) as stream:
                async for _event in stream:
                    on_event()
                message = await stream.get_final_message()
        else:
            message = await client.messages.create(**kwargs)
    text = "".join(block.text for block in message.content if block.type == "text")
    tools = [{"id": block.id, "name": block.name, "input": block.input}
             for block in message.content if block.type == "tool_use"]
    return ModelReply(text=text, input_tokens=message.usage.input_tokens, output_tokens=message.usage.output_tokens,
                      model=message.model, stop_reason=message.stop_reason, tool_calls=tools)


async def _openai(call: ModelCall, on_event: Callable[[], None]) -> ModelReply:
    client = openai.AsyncOpenAI(api_key=call.api_key or "none", base_url=call.base_url, max_retries=0,
                                timeout=call.timeout_seconds)
    messages = ([{"role": "system", "content": call.system}] if call.system else []) + \
        [{"role": "user", "content": call.prompt}]
    kwargs: dict[str, Any] = {"model": call.model, "messages": messages, "max_tokens": call.max_tokens}
    if call.temperature is not None:
        kwargs["temperature"] = call.temperature
    if call.tools:
        kwargs["tools"] = [{"type": "function", "function": {
            "name": t["name"], "description": t.get("description", ""),
            "parameters": t.get("input_schema") or {"type": "object"}}} for t in call.tools]
    async with client:
        completion = await client.chat.completions.create(**kwargs)
    on_event()
    choice = completion.choices[0] if completion.choices else None
    message = choice.message if choice else None
    calls = []
    for tool_call in (message.tool_calls or []) if message else []:
        function = getattr(tool_call, "function", None)
        if function is None:
            continue
        try:
            arguments = json.loads(function.arguments or "{}")
        except json.JSONDecodeError:
            arguments = {"_raw": function.arguments}
        calls.append({"id": tool_call.id, "name": function.name, "input": arguments})
    usage = completion.usage
    return ModelReply(text=(message.content or "") if message else "",
                      input_tokens=usage.prompt_tokens if usage else 0,
                      output_tokens=usage.completion_tokens if usage else 0, model=completion.model or call.model,
                      stop_reason=choice.finish_reason if choice else None, tool_calls=calls)
