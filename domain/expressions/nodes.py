"""The parsed form of an expression: immutable AST nodes and iterative walks over them."""

from __future__ import annotations

from dataclasses import dataclass


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


def children(node: Expr) -> tuple[Expr, ...]:
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


def walk(node: Expr):
    """Yield every node of the tree (iteratively, so it never hits the recursion limit)."""
    stack = [node]
    while stack:
        current = stack.pop()
        yield current
        stack.extend(children(current))
