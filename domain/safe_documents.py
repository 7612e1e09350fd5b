"""Bounded parsing of YAML and JSON documents users send (the request guard in
``api/safe_parse.py`` applies the same limits to bodies, paths and queries).

Why: a 565-byte YAML alias bomb expands to hundreds of millions of nodes when the parsed object
is walked (pydantic, ``json.dumps``, deepcopy); ``json.loads`` raises ``RecursionError`` on
deep nesting; integers beyond 64 bits overflow SQLite and PostgreSQL; a NUL character cannot
reach argv, an environment or a path, and PostgreSQL refuses it in text. Each of those used to
surface as a 5xx (or a frozen API); here it is a 413/422 naming the field, decided in
milliseconds and before anything is built from the document.

Limits (one place, used by every caller):

* bodies and documents: ``MAX_BODY_BYTES`` (2 MB) → 413;
* ``MAX_NODES`` (100,000) nodes after alias expansion and ``MAX_EXPANDED_CHARS`` (4 MB) of
  scalar text after alias expansion → 413 (an alias counts as the whole node it refers to);
* nesting deeper than ``MAX_DEPTH`` (64) → 422;
* integers outside signed 64 bits, non-finite numbers, NUL characters, YAML values with no
  JSON form (binary, sets) → 422 naming the JSON path.
"""

from __future__ import annotations

import json
import math
from typing import Any

import yaml
from yaml.constructor import SafeConstructor

MAX_BODY_BYTES = 2 * 1024 * 1024
MAX_NODES = 100_000
MAX_DEPTH = 64
MAX_EXPANDED_CHARS = 4 * 1024 * 1024
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# Parsing more than this on the event loop would stall every other request; bigger goes to a thread.
_INLINE_PARSE_BYTES = 64 * 1024

Loc = tuple[Any, ...]


class DocumentRefused(ValueError):
    """A document (or a value in it) the service will not take; ``status`` is 413 or 422."""

    def __init__(self, loc: Loc, message: str, kind: str, status: int = 422) -> None:
        super().__init__(message)
        self.loc, self.message, self.kind, self.status = tuple(loc), message, kind, status

    def detail(self) -> list[dict[str, Any]]:
        return [{"loc": list(self.loc), "msg": self.message, "type": self.kind}]

    def body(self) -> dict[str, Any]:
        """The answer's JSON: a message for 413, the problem list for 422."""
        return {"detail": self.message} if self.status == 413 else {"detail": self.detail()}


def _too_large(loc: Loc, limit: int) -> DocumentRefused:
    return DocumentRefused(loc, f"the document is larger than {limit // (1024 * 1024)} MB", "too_large", 413)


# ---- values -----------------------------------------------------------------------------------------------------


def check_value(data: Any, loc: Loc = ("body",), *, max_nodes: int = MAX_NODES, max_depth: int = MAX_DEPTH) -> None:
    """Refuse what no route can store or run: too many nodes, too deep, integers outside 64 bits,
    NaN/Infinity, NUL characters, and types JSON cannot hold. Iterative: depth cannot overflow
    Python's stack. Raises ``DocumentRefused`` naming the first offending path."""
    nodes = 1
    stack: list[tuple[Any, Loc, int]] = [(data, tuple(loc), 0)]
    while stack:
        value, path, depth = stack.pop()
        if isinstance(value, str):
            if "\x00" in value:
                raise DocumentRefused(path, "must not contain a NUL character (\\u0000)", "nul_character")
        elif isinstance(value, bool) or value is None:
            pass
        elif isinstance(value, int):
            if not INT64_MIN <= value <= INT64_MAX:
                raise DocumentRefused(path, "integer out of range: must fit in a signed 64-bit integer",
                                      "int_out_of_range")
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise DocumentRefused(path, "must be a finite number (no NaN or Infinity)", "finite_number")
        elif isinstance(value, (dict, list)):
            # counted when seen, so a huge flat list is refused before its items are visited
            nodes += len(value)
            if nodes > max_nodes:
                raise DocumentRefused(loc, f"the document has more than {max_nodes} values", "too_many_nodes", 413)
            if depth >= max_depth:
                raise DocumentRefused(path, f"nested more than {max_depth} levels deep", "too_deep")
            if isinstance(value, dict):
                for key, item in value.items():
                    if isinstance(key, str) and "\x00" in key:
                        raise DocumentRefused((*path, key.replace("\x00", "\\u0000")),
                                              "a key must not contain a NUL character (\\u0000)", "nul_character")
                    if not isinstance(key, (str, int, float, bool)) and key is not None:
                        raise DocumentRefused(path, "keys must be text or numbers", "key_type")
                    stack.append((item, (*path, key), depth + 1))
            else:
                stack.extend((item, (*path, index), depth + 1) for index, item in enumerate(value))
        else:
            raise DocumentRefused(path, f"a {type(value).__name__} value has no JSON form; quote it as text",
                                  "value_type")


# ---- JSON -------------------------------------------------------------------------------------------------------


def loads_json(raw: bytes | str, loc: Loc = ("body",), *, max_bytes: int = MAX_BODY_BYTES,
               max_nodes: int = MAX_NODES, max_depth: int = MAX_DEPTH) -> Any:
    """``json.loads`` with the limits above. Syntax errors stay ``json.JSONDecodeError`` (and
    undecodable bytes ``UnicodeDecodeError``) so callers keep their own wording for them."""
    if len(raw) > max_bytes:
        raise _too_large(loc, max_bytes)
    try:
        data = json.loads(raw)
    except RecursionError:
        raise DocumentRefused(loc, f"nested more than {max_depth} levels deep", "too_deep") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise
    except ValueError as exc:  # e.g. an integer literal longer than Python's 4300-digit limit
        raise DocumentRefused(loc, f"invalid JSON: {exc}", "json_invalid") from None
    check_value(data, loc, max_nodes=max_nodes, max_depth=max_depth)
    return data


# ---- YAML -------------------------------------------------------------------------------------------------------


_BaseLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_BaseLoader):  # type: ignore[misc,valid-type]
    """SafeLoader whose timestamps stay text: a date has no JSON form, and `2024-01-01` in a
    step's `with` means the text."""


_Loader.add_constructor("tag:yaml.org,2002:timestamp", SafeConstructor.construct_yaml_str)


def _measure(root: yaml.Node, loc: Loc, max_nodes: int, max_depth: int, max_chars: int) -> None:
    """The size the node graph has once aliases are expanded, without expanding it: each node's
    expanded size is computed once (aliases share node objects) and an alias counts as the whole
    node it refers to. A node that contains itself is refused."""
    sizes: dict[int, tuple[int, int, int]] = {}  # id(node) -> (nodes, chars, depth) expanded
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            on_path.discard(key)
            children = _children(node)
            count = 1 + sum(sizes[id(c)][0] for c in children)
            chars = sum(sizes[id(c)][1] for c in children)
            depth = 1 + max((sizes[id(c)][2] for c in children), default=0)
            if count > max_nodes:
                raise DocumentRefused(loc, f"the document has more than {max_nodes} values once its aliases are "
                                           "expanded", "too_many_nodes", 413)
            if chars > max_chars:
                raise DocumentRefused(loc, f"the document holds more than {max_chars // (1024 * 1024)} MB of text "
                                           "once its aliases are expanded", "too_large", 413)
            if depth > max_depth + 1:  # the deepest level is scalars, which nest nothing
                raise DocumentRefused(loc, f"nested more than {max_depth} levels deep", "too_deep")
            sizes[key] = (count, chars, depth)
            continue
        if key in sizes:
            continue
        if isinstance(node, yaml.ScalarNode):
            sizes[key] = (1, len(node.value), 1)
            continue
        if key in on_path:
            raise DocumentRefused(loc, "an alias refers to a node that contains it", "recursive_alias")
        on_path.add(key)
        stack.append((node, True))
        for child in _children(node):
            if id(child) in on_path:
                raise DocumentRefused(loc, "an alias refers to a node that contains it", "recursive_alias")
            if id(child) not in sizes:
                stack.append((child, False))


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def load_yaml(text: str, loc: Loc = ("body",), *, max_bytes: int = MAX_BODY_BYTES, max_nodes: int = MAX_NODES,
              max_depth: int = MAX_DEPTH, max_chars: int = MAX_EXPANDED_CHARS) -> Any:
    """``yaml.safe_load`` of one document with the limits above, checked on the composed node
    graph before any object is built. YAML syntax errors stay ``yaml.YAMLError``."""
    if len(text) > max_bytes or len(text.encode("utf-8", errors="surrogatepass")) > max_bytes:
        raise _too_large(loc, max_bytes)
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _measure(node, loc, max_nodes, max_depth, max_chars)
        data = loader.construct_document(node)
    finally:
        loader.dispose()
    check_value(data, loc, max_nodes=max_nodes, max_depth=max_depth)
    return data


# ---- the request guard ------------------------------------------------------------------------------------------

#: OpenAPI extension on an operation that reads, limits and parses its own body (webhook
#: deliveries: 25 MB, parsed only after their signature is checked): the guard enforces that
#: byte limit and leaves the parsing to the route.
