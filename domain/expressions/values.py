"""Value semantics of GitHub expressions: truthiness, string and number coercion, loose
comparison, JSON conversion and property/index access (including the ``*`` object filter)."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

from domain.expressions.errors import ExpressionError


class Filtered(list):
    """Result of an object filter (``*``); later property accesses apply to each element."""


def is_truthy(value: Any) -> bool:
    """GitHub truthiness: null, false, 0, -0, NaN and '' are falsy; all else (incl. '0', {}, []) is truthy."""
    if value is None or isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return value != 0
    if isinstance(value, float):
        return not (value == 0 or math.isnan(value))
    if isinstance(value, str):
        return value != ""
    return True


def _format_float(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    if value.is_integer() and abs(value) < 1e21:
        return str(int(value))
    # repr is the shortest round-tripping form; drop exponent zero-padding like JavaScript.
    return re.sub(r"e([+-])0*(?=[0-9])", r"e\1", repr(value))


def to_display_string(value: Any) -> str:
    """GitHub's string coercion: null -> '', booleans -> 'true'/'false', integral numbers
    without '.0', other numbers in shortest form, strings as is, objects/arrays -> compact JSON."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        try:
            return str(value)
        except ValueError:  # too many digits to print; no double could hold it either
            return "Infinity" if value > 0 else "-Infinity"
    if isinstance(value, float):
        return _format_float(value)
    return dumps(value, separators=(",", ":"))


def _jsonable(value: Any) -> Any:
    """A JSON-ready copy: integral floats become ints (3.0 prints as 3), tuples become lists."""
    if value is None or isinstance(value, bool | str | int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() and abs(value) < 1e21 else value
    if isinstance(value, Mapping):
        return {
            (key if isinstance(key, str) else to_display_string(key)): _jsonable(item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    raise ExpressionError(f"a value of type {type(value).__name__} cannot be converted to JSON")


def dumps(value: Any, **options: Any) -> str:
    try:
        return json.dumps(_jsonable(value), ensure_ascii=False, **options)
    except ExpressionError:
        raise
    except (TypeError, ValueError, RecursionError) as exc:
        raise ExpressionError(f"value cannot be converted to JSON: {exc}") from None


def kind_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "object"  # objects and arrays alike: neither converts to a number


_DECIMAL_RE = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_INTEGER_RE = re.compile(r"[+-]?[0-9]+")
_HEX_RE = re.compile(r"0[xX][0-9a-fA-F]+")
_INFINITIES = {"Infinity": math.inf, "+Infinity": math.inf, "-Infinity": -math.inf}


def _string_to_number(text: str) -> int | float:
    stripped = text.strip()
    if not stripped:
        return 0
    if _INTEGER_RE.fullmatch(stripped):
        try:
            return int(stripped)
        except ValueError:  # thousands of digits: a float approximation is all GitHub has too
            return float(stripped)
    if _DECIMAL_RE.fullmatch(stripped):
        return float(stripped)
    if _HEX_RE.fullmatch(stripped):
        return int(stripped[2:], 16)
    return _INFINITIES.get(stripped, math.nan)


def _to_number(value: Any) -> int | float:
    if value is None:
        return 0
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int | float):
        return value
    if isinstance(value, str):
        return _string_to_number(value)
    return math.nan


def loose_equal(left: Any, right: Any) -> bool:
    left_kind, right_kind = kind_of(left), kind_of(right)
    if left_kind == right_kind:
        if left_kind == "string":
            return left.casefold() == right.casefold()
        if left_kind == "object":
            return left is right  # GitHub compares objects and arrays by reference
        return left == right  # null, boolean, number (NaN is unequal to itself)
    if "object" in (left_kind, right_kind):
        return False
    return _to_number(left) == _to_number(right)


_ORDERINGS = {
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


def compare(op: str, left: Any, right: Any) -> bool:
    if op == "==":
        return loose_equal(left, right)
    if op == "!=":
        return not loose_equal(left, right)
    if kind_of(left) == kind_of(right) == "string":
        return _ORDERINGS[op](left.casefold(), right.casefold())
    # Everything else compares as numbers; NaN (objects, unparseable strings) makes it false.
    return _ORDERINGS[op](_to_number(left), _to_number(right))


def _get_property(obj: Mapping, name: str) -> Any:
    if name in obj:
        return obj[name]
    # GitHub property names are case-insensitive; exact matches win.
    folded = name.casefold()
    for key, value in obj.items():
        if isinstance(key, str) and key.casefold() == folded:
            return value
    return None


def index_value(obj: Any, key: Any) -> Any:
    if isinstance(obj, Filtered):
        result = Filtered()
        for item in obj:
            value = index_value(item, key)
            if value is not None:
                result.append(value)
        return result
    if isinstance(obj, Mapping):
        if kind_of(key) == "object":
            return None
        return _get_property(obj, key if isinstance(key, str) else to_display_string(key))
    if isinstance(obj, list | tuple):
        number = _to_number(key)
        if isinstance(number, float):
            if not number.is_integer():  # NaN and infinities included
                return None
            number = int(number)
        return obj[number] if 0 <= number < len(obj) else None
    return None


def _members(value: Any) -> list:
    if isinstance(value, Mapping):
        return list(value.values())
    if isinstance(value, list | tuple):
        return list(value)
    return []


def star_value(obj: Any) -> Filtered:
    if isinstance(obj, Filtered):
        return Filtered(member for item in obj for member in _members(item))
    return Filtered(_members(obj))
