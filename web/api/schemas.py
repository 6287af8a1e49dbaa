"""Shapes shared by every API router."""

from __future__ import annotations

from typing import Generic, TypeVar

from pydantic import BaseModel

T = TypeVar("T")


class Paginated(BaseModel, Generic[T]):  # noqa: UP046  (Python 3.11 has no PEP 695 syntax)
    items: list[T]
    total: int
