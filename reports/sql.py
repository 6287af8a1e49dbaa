"""SQL both the reports and the month totals use: the metrics' conditions (external use, a
late cancellation), and what the two engines write differently (the later or earlier of two
timestamps, the time between them, a timestamp some days later)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from booking.rules import BookingStatus
from core.db import UTCDateTime
from reports.rules import NOT_EFFECTIVE_KINDS


def external_use(kind: Any, user_organisation_id: Any, owner_id: Any) -> Any:
    """Effective use by someone outside the organisation owning the instrument's facility
    (a user without an organisation is outside)."""
    return sa.and_(
        kind.not_in(NOT_EFFECTIVE_KINDS),
        sa.or_(user_organisation_id.is_(None), user_organisation_id != owner_id),
    )


def late_cancellation(status: Any, late: Any, replaced_by_id: Any) -> Any:
    """A cancellation after the deadline; a move cancels the old booking with
    ``replaced_by_id`` set, which is not one."""
    return sa.and_(
        status == BookingStatus.CANCELLED.value, late.is_(True), replaced_by_id.is_(None)
    )


class greatest(FunctionElement[datetime]):
    """The later of two timestamps: GREATEST on PostgreSQL, scalar MAX on SQLite."""

    type = UTCDateTime()
    inherit_cache = True


class least(FunctionElement[datetime]):
    """The earlier of two timestamps: LEAST on PostgreSQL, scalar MIN on SQLite."""

    type = UTCDateTime()
    inherit_cache = True


class hours_between(FunctionElement[float]):
    """``end - start`` in hours (a float)."""

    type = sa.Float()
    inherit_cache = True


@compiles(greatest)
def _greatest(element: greatest, compiler: SQLCompiler, **kw: Any) -> str:
    return f"GREATEST({compiler.process(element.clauses, **kw)})"


@compiles(greatest, "sqlite")
def _greatest_sqlite(element: greatest, compiler: SQLCompiler, **kw: Any) -> str:
    # SQLite keeps UTC as 'YYYY-MM-DD HH:MM:SS.ffffff' text (core.db.UTCDateTime): it orders.
    return f"MAX({compiler.process(element.clauses, **kw)})"


@compiles(least)
def _least(element: least, compiler: SQLCompiler, **kw: Any) -> str:
    return f"LEAST({compiler.process(element.clauses, **kw)})"


@compiles(least, "sqlite")
def _least_sqlite(element: least, compiler: SQLCompiler, **kw: Any) -> str:
    return f"MIN({compiler.process(element.clauses, **kw)})"


@compiles(hours_between)
def _hours_between(element: hours_between, compiler: SQLCompiler, **kw: Any) -> str:
    start, end = (compiler.process(c, **kw) for c in element.clauses)
    return f"(EXTRACT(EPOCH FROM ({end}) - ({start})) / 3600.0)"


@compiles(hours_between, "sqlite")
def _hours_between_sqlite(element: hours_between, compiler: SQLCompiler, **kw: Any) -> str:
    start, end = (compiler.process(c, **kw) for c in element.clauses)
    return f"((julianday({end}) - julianday({start})) * 24.0)"


class milliseconds_between(FunctionElement[int]):
    """``end - start`` in whole milliseconds (an integer: sums of them add up exactly)."""

    type = sa.BigInteger()
    inherit_cache = True


@compiles(milliseconds_between)
def _milliseconds_between(element: milliseconds_between, compiler: SQLCompiler, **kw: Any) -> str:
    start, end = (compiler.process(c, **kw) for c in element.clauses)
    return f"CAST(ROUND(EXTRACT(EPOCH FROM ({end}) - ({start})) * 1000) AS BIGINT)"


@compiles(milliseconds_between, "sqlite")
def _milliseconds_between_sqlite(
    element: milliseconds_between, compiler: SQLCompiler, **kw: Any
) -> str:
    # julianday counts whole milliseconds internally: the product is exact.
    start, end = (compiler.process(c, **kw) for c in element.clauses)
    return f"CAST(ROUND((julianday({end}) - julianday({start})) * 86400000.0) AS INTEGER)"


class days_later(FunctionElement[datetime]):
    """A timestamp plus a whole number of days (negative: earlier)."""

    type = UTCDateTime()
    inherit_cache = True

    def __init__(self, value: Any, days: int) -> None:
        # The days are a bound parameter, not an attribute: cached statements must not keep
        # the first call's number.
        super().__init__(value, sa.literal(int(days), sa.Integer))


@compiles(days_later)
def _days_later(element: days_later, compiler: SQLCompiler, **kw: Any) -> str:
    value, days = (compiler.process(c, **kw) for c in element.clauses)
    return f"({value} + make_interval(days => {days}))"


@compiles(days_later, "sqlite")
def _days_later_sqlite(element: days_later, compiler: SQLCompiler, **kw: Any) -> str:
    value, days = (compiler.process(c, **kw) for c in element.clauses)
    return f"datetime({value}, ({days}) || ' days')"
