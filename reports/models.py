"""What the utilization reports keep beside the records: covering indexes on the booking tables,
and totals per instrument and local month that the database maintains.

Where the totals cannot answer (a month cut by the period's start or end, or a zone not listed),
a report sums every booking and usage record of those days per instrument and kind (or status)
first. The indexes hold every column those sums read, in that order, so both databases answer
from the index alone in one pass, without visiting each row or sorting for the GROUP BY
(1,000,000 usage records on SQLite: about 9 s through the ``started_at`` index and the table,
about half a second of CPU from this one; see bench/report_utilization.py).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from booking.models import Booking, UsageRecord
from core.db import utc_column

USAGE_REPORT_INDEX = sa.Index(
    "ix_usage_record_instrument_report",
    *(
        UsageRecord.__table__.c[name]  # type: ignore[attr-defined]
        for name in ("instrument_id", "kind", "organisation_id", "started_at", "ended_at")
    ),
)
BOOKING_REPORT_INDEX = sa.Index(
    "ix_booking_instrument_report",
    *(
        Booking.__table__.c[name]  # type: ignore[attr-defined]
        for name in (
            "instrument_id",
            "status",
            "late_cancellation",
            "replaced_by_id",
            "start_at",
            "end_at",
        )
    ),
)


def _total(description: str, *, milliseconds: bool = False) -> Any:
    """A column of totals: 0 until a trigger adds to it (an upsert names only its own columns)."""
    return Field(
        default=0,
        description=description,
        sa_type=sa.BigInteger if milliseconds else sa.Integer,
        sa_column_kwargs={"server_default": "0"},
    )


class ReportMonth(SQLModel, table=True):
    """A calendar month of a time zone the platform reports in, with its UTC bounds.

    The month-totals triggers split every booking and usage record by these months, for each
    zone listed here (normally one: the platform's). A zone is listed, and its totals built
    from the records, by :func:`reports.month_totals.ensure_zone` (``labshare db upgrade``)."""

    __tablename__ = "report_month"
    __table_args__ = (sa.Index("ix_report_month_utc_end", "utc_end"),)

    zone: str = Field(primary_key=True, max_length=64)
    month: date = Field(primary_key=True, description="The first day of the month.")
    utc_start: datetime = Field(sa_column=utc_column())
    utc_end: datetime = Field(sa_column=utc_column())


class InstrumentMonth(SQLModel, table=True):
    """Hours and counts of one instrument in one local month, kept by the database.

    Triggers on ``usage_record``, ``booking``, ``instrument`` and ``facility`` (migration 0010)
    add each record's share to the months it overlaps and take it back when it changes, in the
    same transaction as the write. Durations are whole milliseconds, so adding and taking back
    leaves no rounding behind. A report over whole months reads these rows instead of every
    record (see :mod:`reports.queries`)."""

    __tablename__ = "instrument_month"

    zone: str = Field(primary_key=True, max_length=64)
    month: date = Field(primary_key=True)
    instrument_id: int = Field(primary_key=True, foreign_key="instrument.id", ondelete="CASCADE")
    usage_ms: int = _total("All kinds.", milliseconds=True)
    external_ms: int = _total(
        "Use (not training or maintenance) by users outside the facility's owner.",
        milliseconds=True,
    )
    training_ms: int = _total("Training.", milliseconds=True)
    maintenance_ms: int = _total("Maintenance.", milliseconds=True)
    usage_records: int = _total("Usage records overlapping the month.")
    usage_carried: int = _total("Of those, records that started before the month.")
    booked_ms: int = _total("Bookings in a booked status.", milliseconds=True)
    bookings_made: int = _total("Bookings starting in the month, in a made status.")
    bookings_completed: int = _total("Of those, completed.")
    no_shows: int = _total("Of those, no-shows.")
    late_cancellations: int = _total("Late cancellations starting in the month (not moves).")
