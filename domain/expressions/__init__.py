"""Evaluator for GitHub-Actions-style ``${{ ... }}`` expressions.

The package is pure and deterministic (no I/O, clock, randomness or threads) because it runs
inside Temporal workflow code; the same code validates pipeline documents at save time.

The language follows GitHub Actions' documented expression semantics: ``null``/``true``/
``false``, numbers and single-quoted strings; property access (``a.b``, ``a['b']``, ``a[0]``,
``a.*``); ``!``, ``< <= > >=``, ``== !=``, ``&&``, ``||`` (loose, case-insensitive comparisons
with numeric coercion); and the functions ``contains``, ``startsWith``, ``endsWith``,
``format``, ``join``, ``toJSON``, ``fromJSON``, ``success``, ``failure``, ``always`` and
``cancelled``.

This module is the public surface; the parts live in submodules, each importing only the ones
below it: ``errors``, ``nodes`` (the AST), ``lexer``, ``values`` (coercions and comparisons),
``functions`` (the built-ins), ``parser``, ``analysis`` (templates and static reads) and
``evaluator`` (evaluation, conditions and rendering).
"""

from __future__ import annotations

from domain.expressions.analysis import find_templates, has_templates, references, uses_status_function
from domain.expressions.errors import ExpressionError
from domain.expressions.evaluator import (
    JOB_STATUSES,
    evaluate,
    evaluate_condition,
    render,
    render_value,
)
from domain.expressions.functions import STATUS_FUNCTIONS
from domain.expressions.nodes import Expr
from domain.expressions.parser import parse
from domain.expressions.values import is_truthy, to_display_string

__all__ = [
    "JOB_STATUSES",
    "STATUS_FUNCTIONS",
    "Expr",
    "ExpressionError",
    "evaluate",
    "evaluate_condition",
    "find_templates",
    "has_templates",
    "is_truthy",
    "parse",
    "references",
    "render",
    "render_value",
    "to_display_string",
    "uses_status_function",
]
