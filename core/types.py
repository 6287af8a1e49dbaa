"""Pydantic types shared by every API shape."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime


def _to_utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


# An ISO 8601 time that must carry an offset (a naive one is 422), held in UTC from then on,
# so what is stored and answered is UTC ("Z") whatever offset the client sent.
UTCDateTimeIn = Annotated[AwareDatetime, AfterValidator(_to_utc)]
