"""Rollout arithmetic and the pure check of a rollout's strategy options (canary, blue-green,
rolling), shared by the ``/swarm/deployments`` API, the ``deploy`` step's save-time validation
and the rollout workflow.

:func:`rollout_problems` returns every problem as ``(location, message)``; the location is
relative to the object holding ``strategy`` / ``steps`` / ``blue_green`` / ``rolling``, so the
API prefixes ``body`` and a pipeline document prefixes ``steps.<n>.with``.
"""

from __future__ import annotations

import math
from typing import Any


def canary_name(service: str) -> str:
    return f"{service}-canary"


def green_name(service: str) -> str:
    return f"{service}-green"


def canary_replicas(stable: int, weight: int) -> int:
    """Argo Rollouts' basic canary: the canary's share of all replicas approximates the weight."""
    if weight <= 0:
        return 0
    if weight >= 100:
        return max(stable, 1)
    return max(1, math.ceil(stable * weight / (100 - weight)))


def achieved_weight(stable: int, canary: int) -> float:
    total = stable + canary
    return 100.0 * canary / total if total else 0.0


def parse_duration(value: Any) -> float:
    """Seconds from ``5``, ``"5"``, ``"5s"``, ``"2m"``, ``"1h"``; ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or text like 30s, 5m, 1h")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    if isinstance(value, str):
        text = value.strip().lower()
        units = {"s": 1, "m": 60, "h": 3600}
        factor = 1
        if text and text[-1] in units:
            factor, text = units[text[-1]], text[:-1]
        try:
            seconds = float(text) * factor
        except ValueError:
            raise ValueError(f"{value!r} is not a duration (use seconds or 30s, 5m, 1h)") from None
        if seconds < 0:
            raise ValueError("a duration cannot be negative")
        return seconds
    raise ValueError("a duration is a number of seconds or text like 30s, 5m, 1h")



STRATEGIES = ("rolling", "canary", "blue_green")
CANARY_STEP_KINDS = ("set_weight", "pause", "analysis")
METRIC_PROVIDERS = ("tasks", "http", "prometheus")
ANALYSIS_FIELDS = frozenset({"interval", "count", "failure_limit", "inconclusive_limit", "metrics", "http"})
BLUE_GREEN_FIELDS = frozenset({"auto_promotion_seconds", "scale_down_delay_seconds", "alias", "preview_alias",
                               "pre_promotion_analysis", "post_promotion_analysis"})
ROLLING_FIELDS = frozenset({"parallelism", "delay", "monitor", "timeout"})

Problem = tuple[tuple[Any, ...], str]


def rollout_problems(strategy: Any, steps: Any, blue_green: Any, rolling: Any) -> list[Problem]:
    """Everything wrong with a rollout's strategy options (empty when it can run)."""
    problems: list[Problem] = []
    if strategy not in STRATEGIES:
        problems.append((("strategy",), f"unknown strategy {strategy!r}: use one of {', '.join(STRATEGIES)}"))
        return problems
    if strategy == "canary":
        problems += _canary_problems(steps)
    elif steps:
        problems.append((("steps",), f"steps belong to the canary strategy, not {strategy}"))
    if blue_green is not None:
        if strategy != "blue_green":
            problems.append((("blue_green",), f"blue_green options need strategy blue_green, not {strategy}"))
        else:
            problems += _blue_green_problems(blue_green)
    if rolling is not None:
        problems += _rolling_problems(rolling)
    return problems


def _duration_problem(loc: tuple[Any, ...], value: Any) -> list[Problem]:
    try:
        parse_duration(value)
    except ValueError as exc:
        return [(loc, str(exc))]
    return []


def _int_problem(loc: tuple[Any, ...], value: Any, low: int, high: int | None = None) -> list[Problem]:
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        bound = f"{low}..{high}" if high is not None else f"at least {low}"
        return [(loc, f"must be a whole number, {bound}")]
    return []


def _canary_problems(steps: Any) -> list[Problem]:
    if not isinstance(steps, list) or not steps:
        return [(("steps",), "a canary needs steps, e.g. [set_weight: 20, pause: (empty), ...]")]
    problems: list[Problem] = []
    last_weight = 0
    for index, step in enumerate(steps):
        loc = ("steps", index)
        if not isinstance(step, dict) or len(step) != 1 or next(iter(step)) not in CANARY_STEP_KINDS:
            problems.append((loc, f"a step is one of {', '.join(CANARY_STEP_KINDS)} (one key per step)"))
            continue
        kind, value = next(iter(step.items()))
        if kind == "set_weight":
            bad = _int_problem((*loc, "set_weight"), value, 1, 100)
            if bad:
                problems += bad
            elif value <= last_weight:
                problems.append(((*loc, "set_weight"), f"weights must increase: {value} follows {last_weight}"))
            else:
                last_weight = value
        elif kind == "pause":
            if value is None:
                continue
            if not isinstance(value, dict) or set(value) - {"duration"}:
                problems.append(((*loc, "pause"), "a pause is empty (wait for promote) or has a duration (30s, 5m)"))
            elif value.get("duration") not in (None, ""):
                problems += _duration_problem((*loc, "pause", "duration"), value["duration"])
        else:
            problems += analysis_problems((*loc, "analysis"), value)
    return problems


def analysis_problems(loc: tuple[Any, ...], spec: Any) -> list[Problem]:
    if not isinstance(spec, dict):
        return [(loc, "an analysis is an object with interval, count, failure_limit, and http or metrics")]
    problems: list[Problem] = []
    for name in sorted(set(spec) - ANALYSIS_FIELDS):
        problems.append(((*loc, name), f"unknown analysis field (known: {', '.join(sorted(ANALYSIS_FIELDS))})"))
    problems += _metric_problems(loc, spec, allow_provider=False)
    if spec.get("http") is not None:
        problems += _http_problems((*loc, "http"), spec["http"])
    metrics = spec.get("metrics")
    if metrics is not None:
        if not isinstance(metrics, list) or not metrics:
            problems.append(((*loc, "metrics"), "metrics is a non-empty list"))
        else:
            for index, metric in enumerate(metrics):
                mloc = (*loc, "metrics", index)
                if not isinstance(metric, dict):
                    problems.append((mloc, "a metric is an object with name, provider, interval, count, failure_limit"))
                    continue
                problems += _metric_problems(mloc, metric, allow_provider=True)
    return problems


def _metric_problems(loc: tuple[Any, ...], metric: dict[str, Any], *, allow_provider: bool) -> list[Problem]:
    problems: list[Problem] = []
    if "interval" in metric:
        problems += _duration_problem((*loc, "interval"), metric["interval"])
    if "count" in metric:
        problems += _int_problem((*loc, "count"), metric["count"], 1, 1000)
    for name in ("failure_limit", "inconclusive_limit"):
        if name in metric:
            problems += _int_problem((*loc, name), metric[name], 0)
    if allow_provider:
        provider = metric.get("provider", "tasks")
        if provider not in METRIC_PROVIDERS:
            problems.append(((*loc, "provider"), f"unknown provider {provider!r}: use {', '.join(METRIC_PROVIDERS)}"))
        if provider == "http":
            problems += _http_problems((*loc, "http"), metric.get("http"))
        if provider == "prometheus":
            problems += _prometheus_problems((*loc, "prometheus"), metric.get("prometheus"))
    return problems


def _prometheus_problems(loc: tuple[Any, ...], spec: Any) -> list[Problem]:
    """``{query, min?, max?}``: an instant query whose value must lie in the range (Flagger's
    thresholdRange); the Prometheus URL is the operator's (DEVOPS_PROMETHEUS_URL), not the request's."""
    if not isinstance(spec, dict):
        return [(loc, "a prometheus metric is an object with query and min and/or max")]
    problems: list[Problem] = []
    for name in sorted(set(spec) - {"query", "min", "max"}):
        problems.append(((*loc, name), "unknown field (known: query, min, max)"))
    if not isinstance(spec.get("query"), str) or not spec["query"].strip():
        problems.append(((*loc, "query"), "a PromQL query is required"))
    bounds = {name: spec.get(name) for name in ("min", "max") if spec.get(name) is not None}
    if not bounds:
        problems.append(((*loc, "min"), "give min and/or max: the range the query's value must stay in"))
    for name, value in bounds.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            problems.append(((*loc, name), "must be a number"))
    if len(bounds) == 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bounds.values()) \
            and bounds["min"] > bounds["max"]:
        problems.append(((*loc, "min"), "min is greater than max"))
    return problems


def _http_problems(loc: tuple[Any, ...], http: Any) -> list[Problem]:
    if not isinstance(http, dict):
        return [(loc, "an http probe is an object with port, path and expect")]
    problems: list[Problem] = []
    if "port" in http:
        problems += _int_problem((*loc, "port"), http["port"], 1, 65535)
    if "path" in http and not isinstance(http["path"], str):
        problems.append(((*loc, "path"), "must be text"))
    return problems


def _blue_green_problems(options: Any) -> list[Problem]:
    if not isinstance(options, dict):
        return [(("blue_green",), "blue_green options are an object")]
    problems: list[Problem] = []
    for name in sorted(set(options) - BLUE_GREEN_FIELDS):
        problems.append((("blue_green", name), f"unknown option (known: {', '.join(sorted(BLUE_GREEN_FIELDS))})"))
    for name in ("auto_promotion_seconds", "scale_down_delay_seconds"):
        if options.get(name) is not None:
            problems += _duration_problem(("blue_green", name), options[name])
    for name in ("pre_promotion_analysis", "post_promotion_analysis"):
        if options.get(name) is not None:
            problems += analysis_problems(("blue_green", name), options[name])
    for name in ("alias", "preview_alias"):
        if options.get(name) is not None and (not isinstance(options[name], str) or not options[name].strip()):
            problems.append((("blue_green", name), "must be a network alias (text)"))
    return problems


def _rolling_problems(options: Any) -> list[Problem]:
    if not isinstance(options, dict):
        return [(("rolling",), "rolling options are an object")]
    problems: list[Problem] = []
    for name in sorted(set(options) - ROLLING_FIELDS):
        problems.append((("rolling", name), f"unknown option (known: {', '.join(sorted(ROLLING_FIELDS))})"))
    if "parallelism" in options:
        problems += _int_problem(("rolling", "parallelism"), options["parallelism"], 1, 1000)
    for name in ("delay", "monitor", "timeout"):
        if name in options:
            problems += _duration_problem(("rolling", name), options[name])
    return problems


