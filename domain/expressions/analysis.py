"""Reading templates and expressions without evaluating them: where the ``${{ }}`` are, which
context paths an expression reads, and whether it calls a status function."""

from __future__ import annotations

from domain.expressions.errors import ExpressionError
from domain.expressions.functions import STATUS_FUNCTIONS
from domain.expressions.nodes import Call, ContextRef, Expr, Index, Literal, Star, children, walk
from domain.expressions.parser import as_expr


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


def references(expr: Expr | str) -> set[tuple[str, ...]]:
    """The context paths an expression reads, as deep as they are statically known.

    ``steps['build'].outputs.sha`` gives ``('steps', 'build', 'outputs', 'sha')``; a dynamic
    index or ``*`` ends the path, and paths inside a dynamic index are collected too.
    """
    found: set[tuple[str, ...]] = set()
    stack = [as_expr(expr)]
    while stack:
        node = stack.pop()
        if not isinstance(node, Index | Star | ContextRef):
            stack.extend(children(node))
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
    return any(isinstance(node, Call) and node.name in STATUS_FUNCTIONS for node in walk(as_expr(expr)))
