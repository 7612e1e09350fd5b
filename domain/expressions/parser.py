"""Recursive-descent parser from expression text to an AST, memoised and depth-checked."""

from __future__ import annotations

import functools

from domain.expressions.errors import ExpressionError
from domain.expressions.functions import SIGNATURES
from domain.expressions.lexer import Token, tokenize
from domain.expressions.nodes import (
    Call,
    Compare,
    ContextRef,
    Expr,
    Index,
    Literal,
    Logical,
    Not,
    Star,
    children,
)

# GitHub caps nesting at 50 levels; the same cap keeps the recursive-descent parser far from
# Python's recursion limit.
_MAX_NESTING = 50
# Long postfix/comparison/'!' chains are built iteratively but evaluated recursively.
_MAX_DEPTH = 100
_KEYWORDS: dict[str, None | bool] = {"null": None, "true": True, "false": False}


class _Parser:
    """Recursive descent over GitHub's precedence: ``||`` < ``&&`` < ``== !=`` < ``< <= > >=``
    < ``!`` < postfix ``. []`` < primary."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.tokens = tokenize(source)
        self.index = 0
        self.nesting = 0

    # -- helpers -------------------------------------------------------------------------------

    @property
    def peek(self) -> Token:
        return self.tokens[self.index]

    def advance(self) -> Token:
        token = self.tokens[self.index]
        if token.kind != "end":
            self.index += 1
        return token

    def at(self, *puncts: str) -> bool:
        return self.peek.kind == "punct" and self.peek.value in puncts

    def error(self, message: str, position: int) -> ExpressionError:
        return ExpressionError(message, position, self.source)

    def unexpected(self, token: Token) -> ExpressionError:
        if token.kind == "end":
            return self.error(f"unexpected end of expression at position {token.pos}", token.pos)
        return self.error(f"unexpected token '{token.text}' at position {token.pos}", token.pos)

    def expect(self, punct: str) -> Token:
        if not self.at(punct):
            raise self.unexpected(self.peek)
        return self.advance()

    def enter(self, token: Token) -> None:
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

    def parse_call(self, name: Token) -> Expr:
        spec = SIGNATURES.get(name.value.lower())
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
        stack.extend((child, depth + 1) for child in children(node))


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


def as_expr(expr: Expr | str) -> Expr:
    return parse(expr) if isinstance(expr, str) else expr
