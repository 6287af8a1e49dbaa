"""Totals per instrument and local month, kept by the database for the utilization reports.

Triggers (migration 0010) add every booking's and usage record's share to
``instrument_month`` for each zone listed in ``report_month``, in the same transaction as the
write, and take it back when the record changes or goes. This module lists a zone: it writes
the zone's months and builds its totals from the records already stored, with the same
arithmetic as the triggers (tests compare the two). A report over whole months of a listed zone
reads a few thousand total rows instead of every record (:mod:`reports.queries`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, col

from booking.models import Booking, UsageRecord
from booking.rules import BookingStatus
from instruments.models import Facility, Instrument
from reports.models import InstrumentMonth, ReportMonth
from reports.rules import BOOKED_STATUSES, MADE_STATUSES, UsageKind, local_midnight
from reports.sql import (
    days_later,
    external_use,
    greatest,
    hours_between,
    late_cancellation,
    least,
    milliseconds_between,
)

# The months listed for a zone: records outside them are still reported, from the records.
FIRST_MONTH = date(2000, 1, 1)
END_MONTH = date(2101, 1, 1)


def next_month(day: date) -> date:
    return date(day.year + day.month // 12, day.month % 12 + 1, 1)


@dataclass(frozen=True)
class Coverage:
    """The months ``[first, end)`` for which a zone has totals."""

    first: date
    end: date

    def covers(self, start: date, end: date) -> bool:
        """Whether ``[start, end)`` is whole months that the totals hold."""
        return start.day == 1 and end.day == 1 and self.first <= start and end <= self.end


def coverage(session: Session, zone: ZoneInfo) -> Coverage | None:
    """The months with totals in ``zone``, or None when the zone is not listed."""
    first, last = session.execute(
        sa.select(sa.func.min(col(ReportMonth.month)), sa.func.max(col(ReportMonth.month))).where(
            col(ReportMonth.zone) == zone.key
        )
    ).one()
    if first is None:
        return None
    return Coverage(first, next_month(last))


def ensure_zone(session: Session, zone: ZoneInfo) -> bool:
    """List ``zone`` and build its totals from the records; False when it was listed already.

    On PostgreSQL the record tables are locked against writes meanwhile: a booking committed
    between listing the months and reading the records would be missing from the totals."""
    if coverage(session, zone) is not None:
        return False
    if session.connection().dialect.name == "postgresql":
        session.execute(
            sa.text("LOCK TABLE usage_record, booking, instrument, facility IN SHARE MODE")
        )
    months = []
    month = FIRST_MONTH
    while month < END_MONTH:
        following = next_month(month)
        months.append(
            {
                "zone": zone.key,
                "month": month,
                "utc_start": local_midnight(month, zone),
                "utc_end": local_midnight(following, zone),
            }
        )
        month = following
    session.execute(sa.insert(ReportMonth), months)
    _add_usage(session, zone)
    _add_bookings(session, zone)
    return True


def rebuild_zone(session: Session, zone: ZoneInfo) -> int:
    """Build ``zone``'s totals afresh from the records (after writes that bypassed the
    triggers, say a bulk load with them set aside); the number of month totals that differed.
    """
    before = _kept(session, zone)
    totals, months = InstrumentMonth.__table__.c, ReportMonth.__table__.c  # type: ignore[attr-defined]
    session.execute(sa.delete(InstrumentMonth).where(totals.zone == zone.key))
    session.execute(sa.delete(ReportMonth).where(months.zone == zone.key))
    ensure_zone(session, zone)
    after = _kept(session, zone)
    return sum(1 for key in before.keys() | after.keys() if before.get(key) != after.get(key))


def drop_zone(session: Session, zone: ZoneInfo) -> bool:
    """Stop keeping ``zone``'s totals (after a change of the platform's zone, a write no longer
    pays for the old one); False when it was not listed. Its reports then sum the records."""
    totals, months = InstrumentMonth.__table__.c, ReportMonth.__table__.c  # type: ignore[attr-defined]
    listed = coverage(session, zone) is not None
    session.execute(sa.delete(InstrumentMonth).where(totals.zone == zone.key))
    session.execute(sa.delete(ReportMonth).where(months.zone == zone.key))
    return listed


def _kept(session: Session, zone: ZoneInfo) -> dict[tuple[Any, ...], tuple[int, ...]]:
    """The zone's non-empty totals (a record taken back leaves a row of zeros behind)."""
    table = InstrumentMonth.__table__  # type: ignore[attr-defined]
    figures = [c for c in table.c if c.name not in ("zone", "month", "instrument_id")]
    rows = session.execute(
        sa.select(table.c.month, table.c.instrument_id, *figures).where(table.c.zone == zone.key)
    )
    return {(row[0], row[1]): tuple(int(v) for v in row[2:]) for row in rows if any(row[2:])}


def _records_in_month(session: Session, zone: ZoneInfo, start: Any, end: Any) -> Any:
    """Join condition: the record ``[start, end)`` overlaps the month.

    The database reads the records month by month through their start index: a record
    starts at most the longest record's length before a month it overlaps."""
    m = ReportMonth.__table__.c  # type: ignore[attr-defined]
    longest = session.execute(sa.select(sa.func.max(hours_between(start, end)))).scalar() or 0
    return sa.and_(
        m.zone == zone.key,
        start < m.utc_end,
        end > m.utc_start,
        start >= days_later(m.utc_start, -(math.ceil(longest / 24) + 1)),
    )


def _upsert(session: Session, select: Any, names: list[str]) -> None:
    """Add the selected totals to ``instrument_month`` (rows there already keep their other
    columns)."""
    dialect = session.connection().dialect.name
    insert = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(InstrumentMonth)
    statement = insert.from_select(["zone", "month", "instrument_id", *names], select)
    excluded = statement.excluded
    table = InstrumentMonth.__table__.c  # type: ignore[attr-defined]
    session.execute(
        statement.on_conflict_do_update(
            index_elements=["zone", "month", "instrument_id"],
            set_={name: table[name] + excluded[name] for name in names},
        )
    )


def _add_usage(session: Session, zone: ZoneInfo) -> None:
    """Usage totals: summed per month, instrument, kind and user organisation first (the
    records read month by month), then per month and instrument against the facility's owner
    (joined to the few sums rather than to every record: SQLite otherwise reorders the joins
    and reads every record once per month)."""
    usage = UsageRecord.__table__.c  # type: ignore[attr-defined]
    m = ReportMonth.__table__.c  # type: ignore[attr-defined]
    ms = milliseconds_between(
        greatest(usage.started_at, m.utc_start), least(usage.ended_at, m.utc_end)
    )
    sums = (
        sa.select(
            m.zone,
            m.month,
            usage.instrument_id,
            usage.kind,
            usage.organisation_id,
            sa.func.sum(ms).label("ms"),
            sa.func.count().label("records"),
            sa.func.sum(sa.case((usage.started_at < m.utc_start, 1), else_=0)).label("carried"),
        )
        .select_from(ReportMonth.__table__)  # type: ignore[attr-defined]
        .join(
            UsageRecord.__table__,  # type: ignore[attr-defined]
            _records_in_month(session, zone, usage.started_at, usage.ended_at),
        )
        .group_by(m.zone, m.month, usage.instrument_id, usage.kind, usage.organisation_id)
        .subquery("usage_sums")
    )
    external = external_use(sums.c.kind, sums.c.organisation_id, col(Facility.organisation_id))
    select = (
        sa.select(
            sums.c.zone,
            sums.c.month,
            sums.c.instrument_id,
            sa.func.sum(sums.c.ms),
            sa.func.sum(sa.case((external, sums.c.ms), else_=0)),
            sa.func.sum(sa.case((sums.c.kind == UsageKind.TRAINING.value, sums.c.ms), else_=0)),
            sa.func.sum(sa.case((sums.c.kind == UsageKind.MAINTENANCE.value, sums.c.ms), else_=0)),
            sa.func.sum(sums.c.records),
            sa.func.sum(sums.c.carried),
        )
        .select_from(sums)
        .join(Instrument, col(Instrument.id) == sums.c.instrument_id)
        .join(Facility, col(Facility.id) == Instrument.facility_id)
        # SQLite reads ON CONFLICT after a join as the join's ON without a WHERE between.
        .where(sa.true())
        .group_by(sums.c.zone, sums.c.month, sums.c.instrument_id)
    )
    _upsert(
        session,
        select,
        [
            "usage_ms",
            "external_ms",
            "training_ms",
            "maintenance_ms",
            "usage_records",
            "usage_carried",
        ],
    )


def _add_bookings(session: Session, zone: ZoneInfo) -> None:
    booking = Booking.__table__.c  # type: ignore[attr-defined]
    m = ReportMonth.__table__.c  # type: ignore[attr-defined]
    ms = milliseconds_between(
        greatest(booking.start_at, m.utc_start), least(booking.end_at, m.utc_end)
    )
    starts_here = sa.and_(booking.start_at >= m.utc_start, booking.start_at < m.utc_end)
    late = late_cancellation(booking.status, booking.late_cancellation, booking.replaced_by_id)

    def starting(condition: Any) -> Any:
        return sa.func.sum(sa.case((sa.and_(starts_here, condition), 1), else_=0))

    select = (
        sa.select(
            m.zone,
            m.month,
            booking.instrument_id,
            sa.func.sum(sa.case((booking.status.in_(BOOKED_STATUSES), ms), else_=0)),
            starting(booking.status.in_(MADE_STATUSES)),
            starting(booking.status == BookingStatus.COMPLETED.value),
            starting(booking.status == BookingStatus.NO_SHOW.value),
            starting(late),
        )
        .select_from(ReportMonth.__table__)  # type: ignore[attr-defined]
        .join(
            Booking.__table__,  # type: ignore[attr-defined]
            _records_in_month(session, zone, booking.start_at, booking.end_at),
        )
        .where(sa.or_(booking.status.in_(MADE_STATUSES), late))
        .group_by(m.zone, m.month, booking.instrument_id)
    )
    _upsert(
        session,
        select,
        ["booked_ms", "bookings_made", "bookings_completed", "no_shows", "late_cancellations"],
    )
