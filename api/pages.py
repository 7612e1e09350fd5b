"""One shape for every list the API answers: ``Page[XPublic]`` = ``{"data": [...], "count": N}``.

``count`` is the total number of items matching the request's filters, across all pages —
not the length of ``data`` — everywhere (a list without paging simply has ``count == len(data)``).
Lists with more than data and count (cursor paging) subclass ``Page`` and add their fields.
"""

from __future__ import annotations

from typing import Generic, TypeVar

from pydantic import BaseModel, Field

T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    data: list[T]
    count: int = Field(description="the total number of matching items across all pages (not len(data))")
