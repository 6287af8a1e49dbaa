"""The one clock. Everything below ``web`` works in aware UTC datetimes; tests freeze it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

_now: Callable[[], datetime] = lambda: datetime.now(UTC)  # noqa: E731


def now() -> datetime:
    """The current time, aware, in UTC."""
    return _now()


@contextmanager
def frozen(at: datetime) -> Iterator[None]:
    """Freeze :func:`now` at ``at`` (aware) for the duration of the block."""
    global _now
    if at.tzinfo is None:
        raise ValueError("frozen() needs an aware datetime")
    previous = _now
    _now = lambda: at.astimezone(UTC)  # noqa: E731
    try:
        yield
    finally:
        _now = previous


def ensure_utc(value: datetime) -> datetime:
    """Return ``value`` in UTC; naive datetimes are a programming error below ``web``.

    SQLite hands back naive values for timezone-aware columns; :class:`core.db.UTCDateTime`
    re-attaches UTC on the way out, so a naive value here means someone bypassed it.
    """
    if value.tzinfo is None:
        raise ValueError("naive datetime: every datetime below web is aware UTC")
    return value.astimezone(UTC)
