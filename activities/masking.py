"""Masking of secret values in step logs, outputs and error messages.

A step's output is masked for every secret the step could see, in the plain form and in
the encodings a script is likely to print it in (base64, URL-encoding).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, quote_plus

MASK = "***"
MIN_SECRET_LENGTH = 3  # shorter values would mask ordinary text everywhere


def _variants(value: str) -> set[str]:
    raw = value.encode()
    forms = {
        value,
        base64.b64encode(raw).decode(),
        base64.b64encode(raw).decode().rstrip("="),
        base64.urlsafe_b64encode(raw).decode().rstrip("="),
        quote(value, safe=""),
        quote(value),  # urllib's default keeps "/" unencoded
        quote_plus(value, safe=""),
    }
    # A multi-line secret is printed one line at a time.
    forms.update(line for line in value.splitlines() if line.strip())
    return {form for form in forms if len(form) >= MIN_SECRET_LENGTH}


class Masker:
    """Replaces every known secret form with ``***``; longest forms first so that a secret
    containing another secret is masked whole."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        forms: set[str] = set()
        for secret in secrets:
            # The encodings of a short value are short too (base64 of "ab" is "YWI"): skip them all.
            if len(secret) >= MIN_SECRET_LENGTH:
                forms |= _variants(secret)
        ordered = sorted(forms, key=len, reverse=True)
        self._pattern = re.compile("|".join(re.escape(f) for f in ordered)) if ordered else None

    def __bool__(self) -> bool:
        return self._pattern is not None

    def mask(self, text: str) -> str:
        if self._pattern is None or not text:
            return text
        return self._pattern.sub(MASK, text)

    def mask_value(self, value: Any) -> Any:
        """Mask strings inside nested dicts and lists."""
        if isinstance(value, str):
            return self.mask(value)
        if isinstance(value, dict):
            return {k: self.mask_value(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.mask_value(v) for v in value]
        return value
