"""The built-in functions: their names and arities (read by the parser) and implementations.

The status functions (``success()`` and friends) have no implementation here: their value is the
job status, which only the evaluator knows.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from domain.expressions.errors import ExpressionError
from domain.expressions.values import dumps, kind_of, loose_equal, to_display_string

STATUS_FUNCTIONS = frozenset({"success", "failure", "always", "cancelled"})

# Lower-cased name -> (canonical name, minimum arguments, maximum arguments or None).
SIGNATURES: dict[str, tuple[str, int, int | None]] = {
    "contains": ("contains", 2, 2),
    "startswith": ("startsWith", 2, 2),
    "endswith": ("endsWith", 2, 2),
    "format": ("format", 1, None),
    "join": ("join", 1, 2),
    "tojson": ("toJSON", 1, 1),
    "fromjson": ("fromJSON", 1, 1),
    "success": ("success", 0, 0),
    "failure": ("failure", 0, 0),
    "always": ("always", 0, 0),
    "cancelled": ("cancelled", 0, 0),
}


def _fn_contains(search: Any, item: Any) -> bool:
    if isinstance(search, list | tuple):
        return any(loose_equal(element, item) for element in search)
    return to_display_string(item).casefold() in to_display_string(search).casefold()


def _fn_starts_with(text: Any, prefix: Any) -> bool:
    if "object" in (kind_of(text), kind_of(prefix)):
        return False
    return to_display_string(text).casefold().startswith(to_display_string(prefix).casefold())


def _fn_ends_with(text: Any, suffix: Any) -> bool:
    if "object" in (kind_of(text), kind_of(suffix)):
        return False
    return to_display_string(text).casefold().endswith(to_display_string(suffix).casefold())


_PLACEHOLDER_RE = re.compile(r"\{([0-9]+)\}")


def _fn_format(fmt: Any, *args: Any) -> str:
    text = to_display_string(fmt)
    out = []
    i = 0
    while i < len(text):
        if text.startswith("{{", i) or text.startswith("}}", i):
            out.append(text[i])
            i += 2
        elif (match := _PLACEHOLDER_RE.match(text, i)) is not None:
            digits = match.group(1)
            # Nine digits is far beyond any argument count and safe to convert.
            index = int(digits) if len(digits) <= 9 else len(args)
            if index >= len(args):
                raise ExpressionError(
                    f"format: placeholder '{{{digits}}}' has no argument ({len(args)} given)"
                )
            out.append(to_display_string(args[index]))
            i = match.end()
        elif text[i] in "{}":
            raise ExpressionError(
                f"format: invalid format string '{text}': unescaped '{text[i]}' at offset {i} "
                "(use '{{' and '}}' for literal braces)"
            )
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def _fn_join(value: Any, separator: Any = ",") -> str:
    if isinstance(value, list | tuple):
        return to_display_string(separator).join(to_display_string(item) for item in value)
    if isinstance(value, Mapping):
        return ""
    return to_display_string(value)


def _fn_to_json(value: Any) -> str:
    return dumps(value, indent=2)


def _fn_from_json(value: Any) -> Any:
    text = to_display_string(value)
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        shown = text if len(text) <= 60 else text[:57] + "..."
        raise ExpressionError(f"fromJSON: invalid JSON '{shown}': {exc}") from None


IMPLEMENTATIONS = {
    "contains": _fn_contains,
    "startsWith": _fn_starts_with,
    "endsWith": _fn_ends_with,
    "format": _fn_format,
    "join": _fn_join,
    "toJSON": _fn_to_json,
    "fromJSON": _fn_from_json,
}
