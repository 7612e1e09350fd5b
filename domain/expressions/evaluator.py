"""Evaluating expressions against a context, conditions (``if:``) and templated text."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from domain.expressions.analysis import find_templates, uses_status_function
from domain.expressions.errors import ExpressionError
from domain.expressions.functions import IMPLEMENTATIONS, STATUS_FUNCTIONS
from domain.expressions.nodes import Call, Compare, ContextRef, Expr, Index, Literal, Logical, Not, Star
from domain.expressions.parser import as_expr
from domain.expressions.values import Filtered, compare, index_value, is_truthy, star_value, to_display_string

JOB_STATUSES = frozenset({"success", "failure", "cancelled"})


class _Evaluator:
    def __init__(self, context: Mapping[str, Any], job_status: str) -> None:
        self.context = context
        self.job_status = job_status

    def eval(self, node: Expr) -> Any:
        match node:
            case Literal(value=value):
                return value
            case ContextRef():
                return self.lookup_context(node)
            case Index(obj=obj, index=index):
                return index_value(self.eval(obj), self.eval(index))
            case Star(obj=obj):
                return star_value(self.eval(obj))
            case Not(operand=operand):
                return not is_truthy(self.eval(operand))
            case Compare(op=op, left=left, right=right):
                return compare(op, self.eval(left), self.eval(right))
            case Logical():
                return self.eval_logical(node)
            case Call():
                return self.call(node)
        raise ExpressionError(f"cannot evaluate a {type(node).__name__} node")

    def eval_logical(self, node: Logical) -> Any:
        # Short-circuit and return the deciding operand itself, like JavaScript and GitHub.
        stop_when_truthy = node.op == "||"
        value = None
        for operand in node.operands:
            value = self.eval(operand)
            if is_truthy(value) == stop_when_truthy:
                return value
        return value

    def lookup_context(self, node: ContextRef) -> Any:
        if node.name in self.context:
            return self.context[node.name]
        folded = node.name.casefold()
        for key, value in self.context.items():
            if isinstance(key, str) and key.casefold() == folded:
                return value
        raise ExpressionError(f"unknown context '{node.name}' at position {node.pos}", node.pos)

    def call(self, node: Call) -> Any:
        if node.name in STATUS_FUNCTIONS:
            return node.name == "always" or node.name == self.job_status
        args = [self.eval(arg) for arg in node.args]
        try:
            return IMPLEMENTATIONS[node.name](*args)
        except ExpressionError as exc:
            if exc.position is None:
                exc.position = node.pos
            raise


def _check_job_status(job_status: str) -> None:
    if job_status not in JOB_STATUSES:
        raise ExpressionError(
            f"invalid job_status {job_status!r}: expected one of {', '.join(sorted(JOB_STATUSES))}"
        )


def evaluate(expr: Expr | str, context: Mapping[str, Any], *, job_status: str = "success") -> Any:
    """Evaluate an expression against ``context`` (top-level name -> JSON-like value).

    An unknown top-level name raises ExpressionError("unknown context ..."); a missing property
    of a known object is None. ``job_status`` ('success', 'failure' or 'cancelled') drives
    success()/failure()/cancelled(); always() is true. Returns a JSON-like value.
    """
    _check_job_status(job_status)
    if not isinstance(context, Mapping):
        raise TypeError(f"context must be a mapping, not {type(context).__name__}")
    source = expr if isinstance(expr, str) else ""
    node = as_expr(expr)
    try:
        value = _Evaluator(context, job_status).eval(node)
    except ExpressionError as exc:
        if not exc.source:
            exc.source = source
        raise
    except RecursionError:
        raise ExpressionError("expression too complex to evaluate", None, source) from None
    return list(value) if isinstance(value, Filtered) else value


def _condition_source(source: str) -> str | None:
    """The expression of an ``if:``: the inside of a lone template, the bare text, or None if blank."""
    stripped = source.strip()
    if not stripped:
        return None
    templates = find_templates(stripped)
    if not templates:
        return stripped
    start, end, inner = templates[0]
    if len(templates) == 1 and start == 0 and end == len(stripped):
        return inner
    # GitHub would treat such text as a (always truthy) string; refusing it avoids that trap.
    raise ExpressionError(
        "a condition must be a single expression, either bare or wrapped in one '${{ }}'",
        source.find("${{"),
        source,
    )


def evaluate_condition(source: str, context: Mapping[str, Any], *, job_status: str = "success") -> bool:
    """Evaluate a step's ``if:``, bare or wrapped in ``${{ }}``.

    Without a status function the condition means ``success() && (expr)``, as on GitHub; a
    blank condition means ``success()``.
    """
    _check_job_status(job_status)
    inner = _condition_source(source)
    if inner is None:
        return job_status == "success"
    if not uses_status_function(inner) and job_status != "success":
        return False
    return is_truthy(evaluate(inner, context, job_status=job_status))


def render(text: str, context: Mapping[str, Any], *, job_status: str = "success") -> Any:
    """Substitute the templates in ``text``.

    A string that is exactly one template (surrounding whitespace ignored) gives the typed
    value; otherwise each template is replaced by its display string. Text without templates
    is returned unchanged.
    """
    templates = find_templates(text)
    if not templates:
        return text
    if len(templates) == 1:
        start, end, inner = templates[0]
        if not text[:start].strip() and not text[end:].strip():
            return evaluate(inner, context, job_status=job_status)
    parts = []
    last = 0
    for start, end, inner in templates:
        parts.append(text[last:start])
        parts.append(to_display_string(evaluate(inner, context, job_status=job_status)))
        last = end
    parts.append(text[last:])
    return "".join(parts)


def render_value(value: Any, context: Mapping[str, Any], *, job_status: str = "success") -> Any:
    """Render every string inside nested dicts/lists (keys are left alone); other values pass through."""
    if isinstance(value, str):
        return render(value, context, job_status=job_status)
    if isinstance(value, Mapping):
        return {key: render_value(item, context, job_status=job_status) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [render_value(item, context, job_status=job_status) for item in value]
    return value
