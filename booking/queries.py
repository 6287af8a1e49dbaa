"""Reads of bookings: lists by who may see them, free time of one or many instruments.

Free time = the catalogue's open intervals − held ranges of bookings, aligned to the
instrument's slots. For many instruments at once everything is loaded in a fixed number of
queries, however many instruments match.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, func, select

from booking.models import Booking, UsageRecord
from booking.rules import HELD_STATUSES, BookingStatus, free_intervals
from core.auth.principal import Principal
from core.errors import Problem, RuleViolation
from instruments import queries as catalogue
from instruments.models import Instrument
from instruments.rules import Interval

MAX_WINDOW_DAYS = 62


def _check_window(start: datetime, end: datetime) -> None:
    problems = []
    if end <= start:
        problems.append(Problem("end_not_after_start", "The end must be after the start.", "end"))
    elif end - start > timedelta(days=MAX_WINDOW_DAYS):
        problems.append(
            Problem("period_too_long", f"Ask for at most {MAX_WINDOW_DAYS} days.", "end")
        )
    if problems:
        raise RuleViolation(problems)


def held_ranges(
    session: Session, *, instrument_ids: Sequence[int], start: datetime, end: datetime
) -> dict[int, list[Interval]]:
    """Held ranges ``[start, end + buffer)`` of bookings overlapping the window, by instrument."""
    ranges: dict[int, list[Interval]] = defaultdict(list)
    for instrument_id, held_start, held_end in session.execute(
        sa.select(col(Booking.instrument_id), col(Booking.start_at), col(Booking.held_until)).where(
            col(Booking.instrument_id).in_(list(instrument_ids)),
            col(Booking.status).in_(list(HELD_STATUSES)),
            col(Booking.start_at) < end,
            col(Booking.held_until) > start,
        )
    ):
        ranges[instrument_id].append((held_start, held_end))
    return ranges


def availability(
    session: Session, *, instrument_id: int, start: datetime, end: datetime, min_minutes: int = 0
) -> list[Interval]:
    """Free, bookable intervals of one instrument in ``[start, end)``."""
    _check_window(start, end)
    return free_time(
        session, instrument_ids=[instrument_id], start=start, end=end, min_minutes=min_minutes
    ).get(instrument_id, [])


def free_time(
    session: Session,
    *,
    instrument_ids: Sequence[int],
    start: datetime,
    end: datetime,
    min_minutes: int = 0,
) -> dict[int, list[Interval]]:
    """Free intervals of many instruments (three or five queries in all)."""
    calendars = catalogue.load_calendars(
        session, instrument_ids=instrument_ids, start=start, end=end
    )
    if not calendars:
        return {}
    slots = {
        instrument_id: (slot_minutes, buffer_minutes)
        for instrument_id, slot_minutes, buffer_minutes in session.execute(
            sa.select(
                col(Instrument.id), col(Instrument.slot_minutes), col(Instrument.buffer_minutes)
            ).where(col(Instrument.id).in_(list(calendars)))
        ).all()
    }
    # A booking ending at the window's end still holds its buffer after it.
    buffers = timedelta(minutes=max((b for _, b in slots.values()), default=0))
    held = held_ranges(session, instrument_ids=list(calendars), start=start, end=end + buffers)
    return {
        instrument_id: free_intervals(
            calendar.open_intervals(start, end),
            held.get(instrument_id, []),
            slot_minutes=slots[instrument_id][0],
            zone=calendar.facility.zone,
            min_minutes=min_minutes,
            buffer_minutes=slots[instrument_id][1],
        )
        for instrument_id, calendar in calendars.items()
    }


@dataclass(frozen=True)
class BookingFilter:
    instrument_id: int | None = None
    facility_id: int | None = None
    user_id: int | None = None
    status: BookingStatus | None = None
    start: datetime | None = None  # bookings ending after this
    end: datetime | None = None  # bookings starting before this
    pending_queue: bool = False  # pending requests of the facilities the caller manages


def list_bookings(
    session: Session, *, actor: Principal, filters: BookingFilter, offset: int = 0, limit: int = 50
) -> tuple[list[Booking], int]:
    """Bookings the actor may see: its own; a lab manager's facilities'; everything for
    planners and admins. Filters narrow that, never widen it."""
    query = select(Booking)
    if filters.pending_queue:
        query = query.where(Booking.status == BookingStatus.PENDING)
        if not actor.is_admin:
            query = query.where(col(Booking.facility_id).in_(sorted(actor.managed_facility_ids)))
    elif not actor.reads_everything:
        managed = sorted(actor.managed_facility_ids)
        query = query.where(
            (col(Booking.user_id) == actor.user_id) | col(Booking.facility_id).in_(managed)
        )
    conditions: list[Any] = []
    if filters.instrument_id is not None:
        conditions.append(col(Booking.instrument_id) == filters.instrument_id)
    if filters.facility_id is not None:
        conditions.append(col(Booking.facility_id) == filters.facility_id)
    if filters.user_id is not None:
        conditions.append(col(Booking.user_id) == filters.user_id)
    if filters.status is not None:
        conditions.append(col(Booking.status) == filters.status)
    if filters.start is not None:
        conditions.append(col(Booking.end_at) > filters.start)
    if filters.end is not None:
        conditions.append(col(Booking.start_at) < filters.end)
    query = query.where(*conditions)
    total = session.exec(select(func.count()).select_from(query.subquery())).one()
    rows = session.exec(
        query.order_by(col(Booking.start_at), col(Booking.id)).offset(offset).limit(limit)
    ).all()
    return list(rows), int(total)


def list_usage_records(
    session: Session,
    *,
    actor: Principal,
    instrument_id: int | None = None,
    user_id: int | None = None,
    offset: int = 0,
    limit: int = 50,
) -> tuple[list[UsageRecord], int]:
    """Usage records the actor may see: its own; its facilities'; all for planners, admins."""
    query = select(UsageRecord)
    if not actor.reads_everything:
        managed = select(Instrument.id).where(
            col(Instrument.facility_id).in_(sorted(actor.managed_facility_ids))
        )
        query = query.where(
            (col(UsageRecord.user_id) == actor.user_id)
            | col(UsageRecord.instrument_id).in_(managed)
        )
    if instrument_id is not None:
        query = query.where(UsageRecord.instrument_id == instrument_id)
    if user_id is not None:
        query = query.where(UsageRecord.user_id == user_id)
    total = session.exec(select(func.count()).select_from(query.subquery())).one()
    rows = session.exec(
        query.order_by(col(UsageRecord.started_at).desc()).offset(offset).limit(limit)
    ).all()
    return list(rows), int(total)
