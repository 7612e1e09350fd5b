"""Evaluator for GitHub-Actions-style ``${{ ... }}`` expressions.

The module is pure and deterministic (no I/O, clock, randomness or threads) because it runs
inside Temporal workflow code; the same code validates pipeline documents at save time.

The language follows GitHub Actions' documented expression semantics: ``null``/``true``/
``false``, numbers and single-quoted strings; property access (``a.b``, ``a['b']``, ``a[0]``,
``a.*``); ``!``, ``< <= > >=``, ``== !=``, ``&&``, ``||`` (loose, case-insensitive comparisons
with numeric coercion); and the functions ``contains``, ``startsWith``, ``endsWith``,
``format``, ``join``, ``toJSON``, ``fromJSON``, ``success``, ``failure``, ``always`` and
``cancelled``.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
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

JOB_STATUSES = frozenset({"success", "failure", "cancelled"})
STATUS_FUNCTIONS = frozenset({"success", "failure", "always", "cancelled"})

# GitHub caps nesting at 50 levels; the same cap keeps the recursive-descent parser far from
# Python's recursion limit.
_MAX_NESTING = 50
# Long postfix/comparison/'!' chains are built iteratively but evaluated recursively.
_MAX_DEPTH = 100

# Lower-cased name -> (canonical name, minimum arguments, maximum arguments or None).
_FUNCTIONS: dict[str, tuple[str, int, int | None]] = {
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


class ExpressionError(ValueError):
    """Raised for syntax or evaluation errors.

    Attributes: ``message`` (str), ``position`` (0-based offset into ``source`` or None) and
    ``source`` (the expression or template text the position refers to; may be empty when an
    already-parsed expression was evaluated).
    """

    def __init__(self, message: str, position: int | None = None, source: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.position = position
        self.source = source


# --------------------------------------------------------------------------------------------
# AST


class Expr:
    """Base class of parsed expression nodes; nodes are immutable and safe to cache/share."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class Literal(Expr):
    value: str | int | float | bool | None
    pos: int


@dataclass(frozen=True, slots=True)
class ContextRef(Expr):
    name: str
    pos: int


@dataclass(frozen=True, slots=True)
class Index(Expr):
    """``obj.name`` (index is a string Literal) or ``obj[index]``."""

    obj: Expr
    index: Expr
    pos: int


@dataclass(frozen=True, slots=True)
class Star(Expr):
    """The object filter ``obj.*`` / ``obj[*]``."""

    obj: Expr
    pos: int


@dataclass(frozen=True, slots=True)
class Not(Expr):
    operand: Expr
    pos: int


@dataclass(frozen=True, slots=True)
class Compare(Expr):
    op: str
    left: Expr
    right: Expr
    pos: int


@dataclass(frozen=True, slots=True)
class Logical(Expr):
    """An n-ary ``&&`` or ``||`` chain (flat, so long chains do not nest deeply)."""

    op: str
    operands: tuple[Expr, ...]
    pos: int


@dataclass(frozen=True, slots=True)
class Call(Expr):
    name: str  # canonical spelling, e.g. "startsWith"
    args: tuple[Expr, ...]
    pos: int


def _children(node: Expr) -> tuple[Expr, ...]:
    match node:
        case Index(obj=obj, index=index):
            return (obj, index)
        case Star(obj=obj):
            return (obj,)
        case Not(operand=operand):
            return (operand,)
        case Compare(left=left, right=right):
            return (left, right)
        case Logical(operands=operands):
            return operands
        case Call(args=args):
            return args
    return ()


def _walk(node: Expr):
    """Yield every node of the tree (iteratively, so it never hits the recursion limit)."""
    stack = [node]
    while stack:
        current = stack.pop()
        yield current
        stack.extend(_children(current))


# --------------------------------------------------------------------------------------------
# Lexer


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # "number", "string", "ident", "punct" or "end"
    value: Any
    pos: int
    text: str


_NUMBER_RE = re.compile(r"-?(?:0[xX][0-9a-fA-F]+|0[oO][0-7]+|[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?)")
# Hyphens are allowed after the first character, as in step ids like ``my-step``.
_IDENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
# Longest first so that "<=" wins over "<".
_PUNCTUATION = ("&&", "||", "==", "!=", "<=", ">=", "<", ">", "!", "(", ")", "[", "]", ".", ",", "*")
_KEYWORDS: dict[str, None | bool] = {"null": None, "true": True, "false": False}


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


def _tokenize(source: str) -> list[_Token]:
    tokens: list[_Token] = []
    i, length = 0, len(source)
    while i < length:
        char = source[i]
        if char.isspace():
            i += 1
        elif char == "'":
            value, end = _read_string(source, i)
            tokens.append(_Token("string", value, i, source[i:end]))
            i = end
        elif char == '"':
            raise ExpressionError(
                f"unexpected character '\"' at position {i}: use single quotes for strings", i, source
            )
        elif _is_digit(char) or (char == "-" and i + 1 < length and _is_digit(source[i + 1])):
            match = _NUMBER_RE.match(source, i)
            assert match is not None  # a digit always starts a number
            text = match.group()
            tokens.append(_Token("number", _number_value(text, i, source), i, text))
            i = match.end()
        elif (match := _IDENT_RE.match(source, i)) is not None:
            tokens.append(_Token("ident", match.group(), i, match.group()))
            i = match.end()
        else:
            punct = next((p for p in _PUNCTUATION if source.startswith(p, i)), None)
            if punct is None:
                raise ExpressionError(f"unexpected character '{char}' at position {i}", i, source)
            tokens.append(_Token("punct", punct, i, punct))
            i += len(punct)
    tokens.append(_Token("end", None, length, ""))
    return tokens


# --------------------------------------------------------------------------------------------
# Parser


class _Parser:
    """Recursive descent over GitHub's precedence: ``||`` < ``&&`` < ``== !=`` < ``< <= > >=``
    < ``!`` < postfix ``. []`` < primary."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.tokens = _tokenize(source)
        self.index = 0
        self.nesting = 0

    # -- helpers -------------------------------------------------------------------------------

    @property
    def peek(self) -> _Token:
        return self.tokens[self.index]

    def advance(self) -> _Token:
        token = self.tokens[self.index]
        if token.kind != "end":
            self.index += 1
        return token

    def at(self, *puncts: str) -> bool:
        return self.peek.kind == "punct" and self.peek.value in puncts

    def error(self, message: str, position: int) -> ExpressionError:
        return ExpressionError(message, position, self.source)

    def unexpected(self, token: _Token) -> ExpressionError:
        if token.kind == "end":
            return self.error(f"unexpected end of expression at position {token.pos}", token.pos)
        return self.error(f"unexpected token '{token.text}' at position {token.pos}", token.pos)

    def expect(self, punct: str) -> _Token:
        if not self.at(punct):
            raise self.unexpected(self.peek)
        return self.advance()

    def enter(self, token: _Token) -> None:
        self.nesting += 1
        if self.nesting > _MAX_NESTING:
            raise self.error(
                f"expression nested too deeply (more than {_MAX_NESTING} levels) at position {token.pos}",
                token.pos,
            )

    def leave(self) -> None:
        self.nesting -= 1

    # -- grammar -------------------------------------------------------------------------------

    def parse(self) -> Expr:
        if self.peek.kind == "end":
            raise self.error("empty expression", 0)
        node = self.parse_logical("||")
        if self.peek.kind != "end":
            raise self.unexpected(self.peek)
        return node

    def parse_logical(self, op: str) -> Expr:
        # "||" binds looser than "&&"; both collect their operands into one flat node.
        parse_operand = (lambda: self.parse_logical("&&")) if op == "||" else self.parse_equality
        first = parse_operand()
        operands = [first]
        while self.at(op):
            self.advance()
            operands.append(parse_operand())
        if len(operands) == 1:
            return first
        return Logical(op, tuple(operands), first.pos)

    def parse_equality(self) -> Expr:
        node = self.parse_comparison()
        while self.at("==", "!="):
            op = self.advance()
            node = Compare(op.value, node, self.parse_comparison(), op.pos)
        return node

    def parse_comparison(self) -> Expr:
        node = self.parse_unary()
        while self.at("<", "<=", ">", ">="):
            op = self.advance()
            node = Compare(op.value, node, self.parse_unary(), op.pos)
        return node

    def parse_unary(self) -> Expr:
        bangs = []
        while self.at("!"):
            bangs.append(self.advance().pos)
        node = self.parse_postfix()
        for pos in reversed(bangs):
            node = Not(node, pos)
        return node

    def parse_postfix(self) -> Expr:
        node = self.parse_primary()
        while True:
            if self.at("."):
                dot = self.advance()
                name = self.advance()
                if name.kind == "ident":
                    node = Index(node, Literal(name.value, name.pos), dot.pos)
                elif name.kind == "punct" and name.value == "*":
                    node = Star(node, dot.pos)
                else:
                    raise self.error(f"expected a property name after '.' at position {name.pos}", name.pos)
            elif self.at("["):
                bracket = self.advance()
                self.enter(bracket)
                following = self.tokens[self.index + 1] if self.at("*") else None
                if following is not None and following.kind == "punct" and following.value == "]":
                    self.advance()
                    node = Star(node, bracket.pos)
                else:
                    node = Index(node, self.parse_logical("||"), bracket.pos)
                self.expect("]")
                self.leave()
            else:
                return node

    def parse_primary(self) -> Expr:
        token = self.advance()
        if token.kind in ("number", "string"):
            return Literal(token.value, token.pos)
        if token.kind == "ident":
            if self.at("("):
                return self.parse_call(token)
            if token.value in _KEYWORDS:
                return Literal(_KEYWORDS[token.value], token.pos)
            return ContextRef(token.value, token.pos)
        if token.kind == "punct" and token.value == "(":
            self.enter(token)
            node = self.parse_logical("||")
            self.expect(")")
            self.leave()
            return node
        raise self.unexpected(token)

    def parse_call(self, name: _Token) -> Expr:
        spec = _FUNCTIONS.get(name.value.lower())
        if spec is None:
            raise self.error(f"unknown function '{name.value}' at position {name.pos}", name.pos)
        canonical, minimum, maximum = spec
        self.enter(self.advance())
        args: list[Expr] = []
        if not self.at(")"):
            args.append(self.parse_logical("||"))
            while self.at(","):
                self.advance()
                args.append(self.parse_logical("||"))
        self.expect(")")
        self.leave()
        if len(args) < minimum or (maximum is not None and len(args) > maximum):
            raise self.error(
                f"function '{canonical}' takes {_arity_text(minimum, maximum)}, got {len(args)}",
                name.pos,
            )
        return Call(canonical, tuple(args), name.pos)


def _arity_text(minimum: int, maximum: int | None) -> str:
    if maximum is None:
        count = f"at least {minimum}"
    elif minimum == maximum:
        count = str(minimum)
    else:
        count = f"{minimum} to {maximum}"
    largest = minimum if maximum is None else maximum
    return f"{count} argument" + ("" if largest == 1 else "s")


def _check_depth(root: Expr, source: str) -> None:
    stack = [(root, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > _MAX_DEPTH:
            raise ExpressionError(
                f"expression nested too deeply (more than {_MAX_DEPTH} levels) at position {node.pos}",
                node.pos,
                source,
            )
        stack.extend((child, depth + 1) for child in _children(node))


@functools.lru_cache(maxsize=2048)
def _parse_cached(source: str) -> Expr:
    root = _Parser(source).parse()
    _check_depth(root, source)
    return root


def parse(source: str) -> Expr:
    """Parse the text inside ``${{ }}`` (surrounding whitespace allowed) into an AST.

    Results are memoised; the AST is immutable. Raises ExpressionError for syntax errors,
    unknown functions and wrong argument counts, with ``position`` set.
    """
    if not isinstance(source, str):
        raise TypeError(f"expression source must be a str, not {type(source).__name__}")
    return _parse_cached(source)


def _as_expr(expr: Expr | str) -> Expr:
    return parse(expr) if isinstance(expr, str) else expr


# --------------------------------------------------------------------------------------------
# Templates


def find_templates(text: str) -> list[tuple[int, int, str]]:
    """Return ``(start, end, inner_source)`` for every ``${{ ... }}`` in ``text``.

    ``end`` is exclusive and covers the closing braces. ``}}`` inside a single-quoted string
    literal does not close the template. Raises ExpressionError for an unclosed ``${{``.
    """
    found = []
    search_from = 0
    while (start := text.find("${{", search_from)) != -1:
        i = start + 3
        in_string = False
        while i < len(text):
            char = text[i]
            if char == "'":
                # A doubled quote inside a string toggles twice, so it needs no special case.
                in_string = not in_string
            elif not in_string and text.startswith("}}", i):
                break
            i += 1
        else:
            hint = " (a string literal inside it is not terminated)" if in_string else ""
            raise ExpressionError(
                "unclosed '${{' at position " + f"{start}: expected '}}}}'{hint}", start, text
            )
        found.append((start, i + 2, text[start + 3 : i]))
        search_from = i + 2
    return found


def has_templates(text: str) -> bool:
    """True if ``text`` contains a ``${{`` template opening."""
    return "${{" in text


# --------------------------------------------------------------------------------------------
# Static analysis


def references(expr: Expr | str) -> set[tuple[str, ...]]:
    """The context paths an expression reads, as deep as they are statically known.

    ``steps['build'].outputs.sha`` gives ``('steps', 'build', 'outputs', 'sha')``; a dynamic
    index or ``*`` ends the path, and paths inside a dynamic index are collected too.
    """
    found: set[tuple[str, ...]] = set()
    stack = [_as_expr(expr)]
    while stack:
        node = stack.pop()
        if not isinstance(node, Index | Star | ContextRef):
            stack.extend(_children(node))
            continue
        chain = []
        root = node
        while isinstance(root, Index | Star):
            chain.append(root)
            root = root.obj
        chain.reverse()
        if isinstance(root, ContextRef):
            found.add(_static_path(root.name, chain))
        else:
            stack.append(root)
        stack.extend(link.index for link in chain if isinstance(link, Index))
    return found


def _static_path(name: str, chain: list[Expr]) -> tuple[str, ...]:
    path = [name]
    for link in chain:
        segment = link.index.value if isinstance(link, Index) and isinstance(link.index, Literal) else None
        if isinstance(segment, bool) or not isinstance(segment, str | int):
            break
        path.append(str(segment))
    return tuple(path)


def uses_status_function(expr: Expr | str) -> bool:
    """True if the expression calls success(), failure(), always() or cancelled() anywhere."""
    return any(isinstance(node, Call) and node.name in STATUS_FUNCTIONS for node in _walk(_as_expr(expr)))


# --------------------------------------------------------------------------------------------
# Value semantics


class _Filtered(list):
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
    return _dumps(value, separators=(",", ":"))


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


def _dumps(value: Any, **options: Any) -> str:
    try:
        return json.dumps(_jsonable(value), ensure_ascii=False, **options)
    except ExpressionError:
        raise
    except (TypeError, ValueError, RecursionError) as exc:
        raise ExpressionError(f"value cannot be converted to JSON: {exc}") from None


def _kind(value: Any) -> str:
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


def _loose_equal(left: Any, right: Any) -> bool:
    left_kind, right_kind = _kind(left), _kind(right)
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


def _compare(op: str, left: Any, right: Any) -> bool:
    if op == "==":
        return _loose_equal(left, right)
    if op == "!=":
        return not _loose_equal(left, right)
    if _kind(left) == _kind(right) == "string":
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


def _index(obj: Any, key: Any) -> Any:
    if isinstance(obj, _Filtered):
        result = _Filtered()
        for item in obj:
            value = _index(item, key)
            if value is not None:
                result.append(value)
        return result
    if isinstance(obj, Mapping):
        if _kind(key) == "object":
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


def _star(obj: Any) -> _Filtered:
    if isinstance(obj, _Filtered):
        return _Filtered(member for item in obj for member in _members(item))
    return _Filtered(_members(obj))


# --------------------------------------------------------------------------------------------
# Functions


def _fn_contains(search: Any, item: Any) -> bool:
    if isinstance(search, list | tuple):
        return any(_loose_equal(element, item) for element in search)
    return to_display_string(item).casefold() in to_display_string(search).casefold()


def _fn_starts_with(text: Any, prefix: Any) -> bool:
    if "object" in (_kind(text), _kind(prefix)):
        return False
    return to_display_string(text).casefold().startswith(to_display_string(prefix).casefold())


def _fn_ends_with(text: Any, suffix: Any) -> bool:
    if "object" in (_kind(text), _kind(suffix)):
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
    return _dumps(value, indent=2)


def _fn_from_json(value: Any) -> Any:
    text = to_display_string(value)
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        shown = text if len(text) <= 60 else text[:57] + "..."
        raise ExpressionError(f"fromJSON: invalid JSON '{shown}': {exc}") from None


_FUNCTION_IMPLEMENTATIONS = {
    "contains": _fn_contains,
    "startsWith": _fn_starts_with,
    "endsWith": _fn_ends_with,
    "format": _fn_format,
    "join": _fn_join,
    "toJSON": _fn_to_json,
    "fromJSON": _fn_from_json,
}


# --------------------------------------------------------------------------------------------
# Evaluation


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
                return _index(self.eval(obj), self.eval(index))
            case Star(obj=obj):
                return _star(self.eval(obj))
            case Not(operand=operand):
                return not is_truthy(self.eval(operand))
            case Compare(op=op, left=left, right=right):
                return _compare(op, self.eval(left), self.eval(right))
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
            return _FUNCTION_IMPLEMENTATIONS[node.name](*args)
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
    node = _as_expr(expr)
    try:
        value = _Evaluator(context, job_status).eval(node)
    except ExpressionError as exc:
        if not exc.source:
            exc.source = source
        raise
    except RecursionError:
        raise ExpressionError("expression too complex to evaluate", None, source) from None
    return list(value) if isinstance(value, _Filtered) else value


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
