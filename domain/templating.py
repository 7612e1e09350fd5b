"""Rendering user-written Jinja2 text (prompt templates, rest_api integrations) safely.

The environment is Jinja2's ``ImmutableSandboxedEnvironment``: no access to underscore
attributes or to Python internals (``{{ ''.__class__ }}`` is refused), no mutation of the values
handed in, no loader (``{% include %}``/``{% import %}``/``{% extends %}`` have nothing to load
from), undefined variables are errors rather than silent blanks, and the output is capped.
Rendering is data in, text out: the result is never evaluated again, and the values given are
never themselves parsed as templates (prompt-injection text in a variable stays text).

Problems are ``Invalid`` with the line of the template: ``[{"loc": [...field, "line", N], ...}]``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from jinja2 import StrictUndefined, TemplateError, TemplateSyntaxError, UndefinedError
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from domain.errors import Invalid

DEFAULT_MAX_BYTES = 200_000
# ``range(10**9)`` would allocate for ever: the sandbox's own range cap, made small.
_MAX_RANGE = 10_000
_MAX_REPEAT = 1_000_000


class _Environment(ImmutableSandboxedEnvironment):
    # ``'x' * 10**10`` or ``9 ** 9 ** 9`` would exhaust memory or CPU before the output cap sees
    # anything: these operators go through call_binop, which bounds their result first.
    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and isinstance(left, int | float) and isinstance(right, int | float) \
                and abs(right) > 64 and abs(left) > 1:
            raise SecurityError("exponent too large")
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, str | list | tuple) and isinstance(times, int) \
                        and len(seq) * times > _MAX_REPEAT:
                    raise SecurityError(f"repetition longer than {_MAX_REPEAT} items")
        return super().call_binop(context, operator, left, right)

    def __init__(self) -> None:
        super().__init__(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True,
                         auto_reload=False, cache_size=0)
        self.globals = {"range": _bounded_range}  # nothing else: no cycler/joiner/namespace/lipsum/dict


def _bounded_range(*args: int) -> range:
    r = range(*args)
    if len(r) > _MAX_RANGE:
        raise SecurityError(f"range() of more than {_MAX_RANGE} items")
    return r


_ENV = _Environment()


def _problem(field: Sequence[Any], message: str, line: int | None, kind: str) -> Invalid:
    loc = [*field, "line", line] if line else list(field)
    where = f" (line {line})" if line else ""
    return Invalid([{"loc": loc, "msg": f"{message}{where}", "type": kind}])


def check_template(text: str, field: Sequence[Any] = ("body",)) -> None:
    """Parse only: a syntax error is ``Invalid`` naming the line."""
    try:
        _ENV.parse(text)
    except TemplateSyntaxError as exc:
        raise _problem(field, f"template syntax error: {exc.message}", exc.lineno, "template_syntax") from None


def render(text: str, variables: Mapping[str, Any], *, field: Sequence[Any] = ("body",),
           max_bytes: int = DEFAULT_MAX_BYTES) -> str:
    """Render ``text`` with ``variables`` in the sandbox; ``Invalid`` (with the line) on a syntax
    error, an undefined variable, a refused attribute, a runtime error or output over
    ``max_bytes`` (UTF-8)."""
    try:
        template = _ENV.from_string(text)
    except TemplateSyntaxError as exc:
        raise _problem(field, f"template syntax error: {exc.message}", exc.lineno, "template_syntax") from None
    parts: list[str] = []
    size = 0
    try:
        for chunk in template.generate(**dict(variables)):
            size += len(chunk.encode())
            if size > max_bytes:
                raise _problem(field, f"the rendered text is larger than {max_bytes} bytes", None, "template_size")
            parts.append(chunk)
    except Invalid:
        raise
    except SecurityError as exc:
        raise _problem(field, f"refused by the template sandbox: {exc}", _line_of(exc), "template_security") from None
    except UndefinedError as exc:
        raise _problem(field, f"undefined variable: {exc.message}", _line_of(exc), "template_undefined") from None
    except (TemplateError, ArithmeticError, TypeError, ValueError, LookupError, RecursionError) as exc:
        raise _problem(field, f"template error: {exc}", _line_of(exc), "template_runtime") from None
    return "".join(parts)


def _line_of(exc: BaseException) -> int | None:
    """The template line a runtime error happened on: Jinja2 rewrites the traceback so frames of
    the template carry the file name ``<template>`` and the template's own line number."""
    tb = exc.__traceback__
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line
