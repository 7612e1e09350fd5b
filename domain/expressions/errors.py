"""The one error type of the expression language, raised by the lexer, parser and evaluator."""

from __future__ import annotations


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
