"""Masking of secret values in step logs, outputs and error messages.

A step's output is masked for every secret the step could see, in the plain form and in the
forms a script is likely to print it in:

* plain, JSON-escaped (as inside a JSON string: quotes, backslashes and newlines escaped, with
  and without ``\\uXXXX`` for non-ASCII) and URL-encoded (``quote``, ``quote_plus``);
* base64, standard and URL-safe, with and without padding; and, for a secret embedded anywhere
  in a longer base64 blob (a config file, a docker auth JSON), the inner part of the blob that
  only the secret determines, for each of the three byte alignments it can have;
* base64 of base64 (``base64 | base64``: also when the inner one was wrapped and ended in a
  newline, as ``base64`` prints it);
* hex, lower and upper case, contiguous (``xxd -p``, ``od -An -tx1 | tr -d ' \\n'``), and
  lower case with a space between bytes (``od -An -tx1``, ``xxd -g1``'s hex part);
* every line of a multi-line secret (a PEM key) on its own, so it is masked when it is logged
  line by line and when its lines land in different log chunks.

Split values. Tools wrap long output (``base64`` at 76 columns, ``xxd -p`` at 60, ``openssl
base64`` at 64, ``fold -w N``), so a form reaches the log as pieces on consecutive lines. Every
line is also checked at its edges: a line that *ends with the beginning* of a form, *starts
with the end* of one, or *is* a piece from its middle is masked there -- at any wrap width and
with any text before the first piece or after the last one. This errs on the side of hiding:
a line that ends with the first ``MIN_PART_LENGTH`` or more characters of a secret (say the
``postgresql://user`` of a URL secret) is masked there even if the rest does not follow.

Thresholds. A secret shorter than ``MIN_SECRET_LENGTH`` is not masked at all (it would mask
ordinary text everywhere). A *part* of a form -- a line of a multi-line secret, the inner part
of an embedded base64, a wrapped piece at a line edge -- is masked only when it has at least
``MIN_PART_LENGTH`` characters: a PEM's ``-----`` or a 2-character tail of a wrap is left alone.

What is not caught: parts shorter than ``MIN_PART_LENGTH`` (the last few characters of a wrap,
the lines of a secret made of very short lines); a secret deliberately cut into pieces that do
not sit at line edges (interleaved with other text on the same line) or into arbitrary short
pieces; transformations not listed above (reversed, compressed, encrypted, another encoding or
character set, ``xxd``'s ASCII column, one hex byte a line); at line edges, a window of a very
repetitive secret past its first ``MAX_OCCURRENCES`` places; and any value that is not a
stored secret.
"""

from __future__ import annotations

import base64
import bisect
import json
import re
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import quote, quote_plus

MASK = "***"
MIN_SECRET_LENGTH = 3  # shorter values would mask ordinary text everywhere
MIN_PART_LENGTH = 6  # shorter parts of a form (a line, a wrapped piece) would too
BASE64_WRAP = 76  # the column at which coreutils `base64` wraps its output
MAX_OCCURRENCES = 100  # places of one window in the forms checked against a line's edge


def _b64_inner(data: bytes, shift: int, urlsafe: bool) -> str:
    """The base64 characters that only ``data`` determines when it starts ``shift`` bytes into
    a longer blob: a character that shares bits with a neighbouring byte changes with it."""
    padded = bytes(shift) + data + bytes(-(shift + len(data)) % 3)
    encoded = (base64.urlsafe_b64encode if urlsafe else base64.b64encode)(padded).decode()
    return encoded[-(-8 * shift // 6):8 * (shift + len(data)) // 6]


def _wrap(text: str, width: int) -> str:
    return "\n".join(text[i:i + width] for i in range(0, len(text), width))


def _common_prefix_length(a: str, b: str) -> int:
    low, high = 0, min(len(a), len(b))
    while low < high:  # binary search: each comparison runs in C, even for a 100 KB form
        middle = (low + high + 1) // 2
        if b.startswith(a[:middle]):
            low = middle
        else:
            high = middle - 1
    return low


def _trie_pattern(forms: Iterable[str]) -> str:
    """One regex matching any of ``forms``, the longest at a given position, shaped as a trie
    (common prefixes written once): a position costs one walk down the trie instead of a try
    of every form, so masking stays fast with many secrets and forms."""

    def render(group: list[str]) -> str:  # sorted, distinct
        ends = group[0] == ""
        branches = []
        i = 1 if ends else 0
        while i < len(group):
            j = i + 1
            while j < len(group) and group[j][0] == group[i][0]:
                j += 1
            shared = len(group[i]) if j == i + 1 else _common_prefix_length(group[i], group[j - 1])
            branches.append(re.escape(group[i][:shared]) + render([f[shared:] for f in group[i:j]]))
            i = j
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else f"(?:{'|'.join(branches)})"
        # greedy: the longer form is tried first, the one ending here when it does not match
        return f"(?:{body})?" if ends else body

    return render(sorted(set(forms)))


def _forms(value: str) -> tuple[set[str], set[str]]:
    """The whole forms of one secret, and its parts (masked only from ``MIN_PART_LENGTH``)."""
    raw = value.encode()
    b64 = base64.b64encode(raw).decode()
    urlsafe = base64.urlsafe_b64encode(raw).decode()
    whole = {
        value,
        json.dumps(value)[1:-1],
        json.dumps(value, ensure_ascii=False)[1:-1],
        quote(value, safe=""),
        quote(value),  # urllib's default keeps "/" unencoded
        quote_plus(value, safe=""),
        quote_plus(value),
        b64, b64.rstrip("="), urlsafe, urlsafe.rstrip("="),
        raw.hex(), raw.hex().upper(), raw.hex(" "),
    }
    # base64 of base64, the inner one as `base64 -w0` and as plain `base64` print it
    for inner in (b64, _wrap(b64, BASE64_WRAP) + "\n"):
        double = base64.b64encode(inner.encode()).decode()
        whole |= {double, double.rstrip("=")}
    parts = {_b64_inner(raw, shift, safe) for shift in range(3) for safe in (False, True)}
    # base64 of base64 when more followed the secret (`echo "$T" | base64 | base64`): the inner
    # one's stable start (as `base64 -w0` and as plain `base64` print it), itself base64-encoded
    stable = _b64_inner(raw, 0, False)
    parts.update(_b64_inner(inner.encode(), 0, False) for inner in (stable, _wrap(stable, BASE64_WRAP)))
    lines = value.splitlines()
    if len(lines) > 1:
        parts.update(lines)
        parts.update(line.strip() for line in lines)
    return whole, {part for part in parts if len(part) >= MIN_PART_LENGTH}


class Masker:
    """Replaces every known secret form with ``***``, the longest one matching at a position so
    that a secret containing another secret is masked whole; and the pieces of a wrapped form at
    each line's edges (see the module docstring). Built once per step, in time growing with the
    secrets' total size (a few ms for a token, ~0.1 s for a 3 KB key); masking is linear in the
    text and does not grow with the number of forms."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        forms: set[str] = set()
        for secret in secrets:
            # The encodings of a short value are short too (base64 of "ab" is "YWI"): skip them all.
            if len(secret) >= MIN_SECRET_LENGTH:
                whole, parts = _forms(secret)
                forms |= whole | parts
        self._pattern: re.Pattern[str] | None = None
        if forms:
            try:
                self._pattern = re.compile(_trie_pattern(forms))
            except RecursionError:  # forms nested many levels deep (prefixes of prefixes): a flat list
                self._pattern = re.compile("|".join(re.escape(f) for f in sorted(forms, key=len, reverse=True)))
        # All forms in one string, and where each of its MIN_PART_LENGTH-character windows first
        # occurs: a line's first and last characters are looked up here to find a piece of a
        # form at the line's edge (the separator never matches: a line holds no newline).
        self._haystack = hay = "\n".join(sorted(forms))
        self._breaks = [match.start() for match in re.finditer("\n", hay)]
        size = MIN_PART_LENGTH
        self._windows = {hay[i:i + size]: i for i in range(len(hay) - size, -1, -1)}

    def __bool__(self) -> bool:
        return self._pattern is not None

    def _edge_spans(self, text: str) -> list[tuple[int, int]]:
        """Spans of ``text`` where a line is wholly a piece of a form, starts with the end of
        one or ends with the start of one (the pieces of a wrapped form). Positions are in the
        haystack, where a form (or a line of a multi-line one) ends at a newline or its end."""
        spans: list[tuple[int, int]] = []
        size, hay, windows = MIN_PART_LENGTH, self._haystack, self._windows
        start = 0
        for line in text.split("\n"):
            stop = start + len(line)
            if len(line) >= size:
                first = start + len(line) - len(line.lstrip())
                last = start + len(line.rstrip())
                width = last - first
                head, tail = text[first:first + size], text[last - size:last]
                if width < size:
                    pass
                elif head in windows and hay.find(text[first:last]) != -1:
                    spans.append((first, last))  # the whole line is a piece of a form
                else:
                    if head in windows:
                        for at in self._occurrences(head):
                            end = self._line_end(at)
                            if end - at <= width and text.startswith(hay[at:end], first):
                                spans.append((first, first + end - at))  # starts with a form's end
                    if tail in windows:
                        for at in self._occurrences(tail):
                            begin = self._line_start(at)
                            if at + size - begin <= width and text.endswith(hay[begin:at + size], first, last):
                                spans.append((last - (at + size - begin), last))  # ends with a form's start
            start = stop + 1
        return spans

    def _occurrences(self, window: str) -> Iterator[int]:
        """Where ``window`` occurs in the haystack; only the first MAX_OCCURRENCES: a window
        repeated all over a very repetitive secret must not make each line cost its length."""
        at = self._windows.get(window, -1)
        for _ in range(MAX_OCCURRENCES):
            if at == -1:
                return
            yield at
            at = self._haystack.find(window, at + 1)

    def _line_end(self, at: int) -> int:
        index = bisect.bisect_left(self._breaks, at)
        return self._breaks[index] if index < len(self._breaks) else len(self._haystack)

    def _line_start(self, at: int) -> int:
        index = bisect.bisect_left(self._breaks, at)
        return self._breaks[index - 1] + 1 if index else 0

    def mask(self, text: str) -> str:
        if self._pattern is None or not text:
            return text
        edges = self._edge_spans(text)
        if not edges:
            return self._pattern.sub(MASK, text)
        spans = sorted([m.span() for m in self._pattern.finditer(text)] + edges)
        out: list[str] = []
        done = 0
        for begin, end in spans:
            if end <= done:
                continue
            if begin >= done:
                out.append(text[done:begin])
                out.append(MASK)
            done = end
        out.append(text[done:])
        return "".join(out)

    def mask_value(self, value: Any) -> Any:
        """Mask strings inside nested dicts and lists."""
        if isinstance(value, str):
            return self.mask(value)
        if isinstance(value, dict):
            return {k: self.mask_value(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.mask_value(v) for v in value]
        return value
