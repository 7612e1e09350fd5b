"""Turns expression text into tokens: literals, identifiers and punctuation, with positions."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from domain.expressions.errors import ExpressionError


@dataclass(frozen=True, slots=True)
class Token:
    kind: str  # "number", "string", "ident", "punct" or "end"
    value: Any
    pos: int
    text: str


_NUMBER_RE = re.compile(r"-?(?:0[xX][0-9a-fA-F]+|0[oO][0-7]+|[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?)")
# Hyphens are allowed after the first character, as in step ids like ``my-step``.
_IDENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
# Longest first so that "<=" wins over "<".
_PUNCTUATION = ("&&", "||", "==", "!=", "<=", ">=", "<", ">", "!", "(", ")", "[", "]", ".", ",", "*")


def _is_digit(char: str) -> bool:
    # str.isdigit() would accept non-ASCII digits the number grammar does not.
    return "0" <= char <= "9"


def _number_value(text: str, pos: int, source: str) -> int | float:
    negative = text.startswith("-")
    body = text[1:] if negative else text
    prefix = body[:2].lower()
    if prefix == "0x":
        value: int | float = int(body[2:], 16)
    elif prefix == "0o":
        value = int(body[2:], 8)
    elif any(char in body for char in ".eE"):
        value = float(body)
    else:
        try:
            value = int(body)
        except ValueError:  # Python refuses to convert integers with thousands of digits
            raise ExpressionError(f"number literal too large at position {pos}", pos, source) from None
    return -value if negative else value


def _read_string(source: str, start: int) -> tuple[str, int]:
    """Read a single-quoted literal starting at ``start``; return (value, end offset)."""
    parts = []
    i = start + 1
    while True:
        quote = source.find("'", i)
        if quote == -1:
            raise ExpressionError(f"unterminated string literal starting at position {start}", start, source)
        parts.append(source[i:quote])
        if source.startswith("''", quote):
            parts.append("'")
            i = quote + 2
        else:
            return "".join(parts), quote + 1


def tokenize(source: str) -> list[Token]:
    tokens: list[Token] = []
    i, length = 0, len(source)
    while i < length:
        char = source[i]
        if char.isspace():
            i += 1
        elif char == "'":
            value, end = _read_string(source, i)
            tokens.append(Token("string", value, i, source[i:end]))
            i = end
        elif char == '"':
            raise ExpressionError(
                f"unexpected character '\"' at position {i}: use single quotes for strings", i, source
            )
        elif _is_digit(char) or (char == "-" and i + 1 < length and _is_digit(source[i + 1])):
            match = _NUMBER_RE.match(source, i)
            assert match is not None  # a digit always starts a number
            text = match.group()
            tokens.append(Token("number", _number_value(text, i, source), i, text))
            i = match.end()
        elif (match := _IDENT_RE.match(source, i)) is not None:
            tokens.append(Token("ident", match.group(), i, match.group()))
            i = match.end()
        else:
            punct = next((p for p in _PUNCTUATION if source.startswith(p, i)), None)
            if punct is None:
                raise ExpressionError(f"unexpected character '{char}' at position {i}", i, source)
            tokens.append(Token("punct", punct, i, punct))
            i += len(punct)
    tokens.append(Token("end", None, length, ""))
    return tokens
