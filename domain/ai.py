"""AI configuration rules with no I/O: the providers, the ``claude_execute`` step's ``with``
fields, token budgets and cost estimates (their figures are what a failed step reports).

Budgets count tokens (input + output) of an AI config: per run (``run_token_budget``) and per
calendar month in UTC (``monthly_token_budget``); None means unlimited.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

PROVIDERS = ("anthropic", "openai_compatible")
MAX_TOKENS_LIMIT = 200_000
MAX_TOOLS = 64


@dataclass(frozen=True)
class ToolSpec:
    name: str
    description: str
    input_schema: dict[str, Any]


@dataclass(frozen=True)
class ExecuteRequest:
    """A ``claude_execute`` step's ``with``, checked (after ``${{ }}`` was resolved by the workflow)."""

    ai_config: str | None
    prompt_template: str | None
    template_version: int | None
    prompt: str | None
    variables: dict[str, Any]
    system: str | None
    max_tokens: int | None
    temperature: float | None
    stream: bool
    tools: list[ToolSpec] = field(default_factory=list)


def _optional_text(params: Mapping[str, Any], key: str, problems: list[str]) -> str | None:
    value = params.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        problems.append(f"`with.{key}` must be non-empty text")
        return None
    return value


def parse_execute_request(params: Mapping[str, Any]) -> ExecuteRequest:
    """``ValueError`` listing every problem of the step's ``with`` (the step fails with it)."""
    problems: list[str] = []
    config = _optional_text(params, "ai_config", problems)
    template = _optional_text(params, "prompt_template", problems)
    prompt = params.get("prompt")
    if prompt is not None and not isinstance(prompt, str):
        problems.append("`with.prompt` must be text (a Jinja2 template rendered with `with.variables`)")
        prompt = None
    if (template is None) == (prompt is None):
        problems.append("claude_execute needs exactly one of `with.prompt` (inline template text) and "
                        "`with.prompt_template` (the name of a prompt template)")
    version = params.get("template_version")
    if version is not None and (isinstance(version, bool) or not isinstance(version, int) or version < 1):
        problems.append("`with.template_version` must be a positive whole number")
        version = None
    variables = params.get("variables", {})
    if not isinstance(variables, dict):
        problems.append("`with.variables` must be an object (names to values)")
        variables = {}
    system = params.get("system")
    if system is not None and not isinstance(system, str):
        problems.append("`with.system` must be text")
        system = None
    max_tokens = params.get("max_tokens")
    if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int)
                                   or not 1 <= max_tokens <= MAX_TOKENS_LIMIT):
        problems.append(f"`with.max_tokens` must be a whole number from 1 to {MAX_TOKENS_LIMIT}")
        max_tokens = None
    temperature = params.get("temperature")
    if temperature is not None and (isinstance(temperature, bool) or not isinstance(temperature, int | float)
                                    or not 0 <= temperature <= 2):
        problems.append("`with.temperature` must be a number from 0 to 2")
        temperature = None
    stream = params.get("stream", False)
    if not isinstance(stream, bool):
        problems.append("`with.stream` must be true or false")
        stream = False
    tools = _tools(params.get("tools"), problems)
    if problems:
        raise ValueError("; ".join(problems))
    return ExecuteRequest(ai_config=config, prompt_template=template, template_version=version, prompt=prompt,
                          variables=dict(variables), system=system, max_tokens=max_tokens,
                          temperature=float(temperature) if temperature is not None else None, stream=stream,
                          tools=tools)


def _tools(value: Any, problems: list[str]) -> list[ToolSpec]:
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > MAX_TOOLS:
        problems.append(f"`with.tools` must be a list of at most {MAX_TOOLS} tools")
        return []
    tools = []
    for i, tool in enumerate(value):
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str) or not tool["name"].strip() \
                or not isinstance(tool.get("input_schema", {}), dict) \
                or not isinstance(tool.get("description", ""), str):
            problems.append(f"`with.tools[{i}]` must be {{name, description, input_schema}} (name text, "
                            "input_schema a JSON Schema object)")
            continue
        tools.append(ToolSpec(tool["name"], tool.get("description", ""),
                              tool.get("input_schema") or {"type": "object"}))
    return tools


def cost_estimate(input_tokens: int, output_tokens: int, input_per_mtok: float | None,
                  output_per_mtok: float | None) -> float | None:
    """USD for the tokens at the config's per-million prices; None when it names no price."""
    if input_per_mtok is None and output_per_mtok is None:
        return None
    cost = (input_tokens * (input_per_mtok or 0.0) + output_tokens * (output_per_mtok or 0.0)) / 1_000_000
    return round(cost, 8)


def month_start(now: datetime) -> datetime:
    """The first instant of ``now``'s calendar month in UTC."""
    now = now.astimezone(UTC) if now.tzinfo else now.replace(tzinfo=UTC)
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def budget_problem(config_name: str, *, run_used: int, run_budget: int | None, month_used: int,
                   month_budget: int | None, before_call: bool) -> str | None:
    """Why the config may not (before the call: ``used >= budget``) or did not stay within
    (after it: ``used > budget``) its budgets, with the figures; None when within."""
    def over(used: int, budget: int | None) -> bool:
        return budget is not None and (used >= budget if before_call else used > budget)

    if over(run_used, run_budget):
        return (f"run token budget exceeded: {run_used:,} of {run_budget:,} tokens used by ai config "
                f"'{config_name}' in this run")
    if over(month_used, month_budget):
        return (f"monthly token budget exceeded: {month_used:,} of {month_budget:,} tokens used by ai config "
                f"'{config_name}' this month (UTC)")
    return None
