"""Reads of bookings: lists by who may see them, free time of one or many instruments.

Free time = the catalogue's open intervals − held ranges of bookings, aligned to the
instrument's slots. For many instruments at once everything is loaded in a fixed number of
queries, however many instruments match.
"""

from __future__ import annotations

import dataclasses
import functools
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlmodel import Session, col, func, select

from booking.models import (
    Booking,
    IdempotencyRecord,
    ServiceRequest,
    UsageRecord,
    WaitlistEntry,
    WaitlistStatus,
    is_held,
)
from booking.rules import (
    HELD_STATUSES,
    TRANSITIONS,
    BookingStatus,
    OperatedBy,
    free_intervals,
    is_late_cancellation,
)
from core.accounts.models import Organisation, User
from core.audit import AuditEntry
from core.auth.principal import Principal
from core.clock import now
from core.db import HotStatement
from core.errors import NotFound, Problem, RuleViolation
from instruments import queries as catalogue
from instruments.models import Facility, Instrument, Outage, Qualification, TestingService
from instruments.queries import InstrumentSearch
from instruments.rules import Interval, clip

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


@functools.cache
def _held_ranges(dialect: str, *, one_instrument: bool = False) -> sa.Select[Any]:
    """Held ranges of the instruments ``ids`` (``one_instrument``: ``instrument_id``)
    overlapping ``[start, end)``; built once, with bound parameters (building a statement
    costs more than running it).

    On SQLite the status test is kept out of index choice (``status || ''``): without fresh
    statistics SQLite would walk the status index, every held booking of every instrument,
    instead of each instrument's time range in ``ix_booking_instrument_held``."""
    booking = Booking.__table__.c  # type: ignore[attr-defined]
    status: Any = booking.status
    if dialect == "sqlite":
        status = sa.type_coerce(status, sa.String()).concat(sa.literal_column("''"))
    return sa.select(booking.instrument_id, booking.start_at, booking.held_until).where(
        booking.instrument_id == sa.bindparam("instrument_id")
        if one_instrument
        else booking.instrument_id.in_(sa.bindparam("ids", expanding=True)),
        is_held(status) if one_instrument else status.in_([s.value for s in HELD_STATUSES]),
        booking.start_at < sa.bindparam("end"),
        booking.held_until > sa.bindparam("start"),
    )


@functools.cache
def _held_ranges_of_one(dialect: str) -> HotStatement:
    return HotStatement(_held_ranges(dialect, one_instrument=True))


def held_ranges(
    session: Session, *, instrument_ids: Sequence[int], start: datetime, end: datetime
) -> dict[int, list[Interval]]:
    """Held ranges ``[start, end + buffer)`` of bookings overlapping the window, by instrument.
    For one instrument (an availability) a hot statement: no list expanded on every run."""
    ranges: dict[int, list[Interval]] = defaultdict(list)
    connection = session.connection()
    if len(instrument_ids) == 1:
        parameters = {"instrument_id": instrument_ids[0], "start": start, "end": end}
        for row in _held_ranges_of_one(connection.dialect.name).rows(connection, parameters):
            ranges[row.instrument_id].append((row.start_at, row.held_until))
        return ranges
    statement = _held_ranges(connection.dialect.name)
    parameters = {"ids": list(instrument_ids), "start": start, "end": end}
    for instrument_id, held_start, held_end in connection.execute(statement, parameters):
        ranges[instrument_id].append((held_start, held_end))
    return ranges


def availability(
    session: Session, *, instrument_id: int, start: datetime, end: datetime, min_minutes: int = 0
) -> list[Interval]:
    """Free, bookable intervals of one instrument in ``[start, end)`` (404 if there is no such
    instrument)."""
    _check_window(start, end)
    free = free_time(
        session, instrument_ids=[instrument_id], start=start, end=end, min_minutes=min_minutes
    )
    if instrument_id not in free:
        raise NotFound("Instrument")
    return free[instrument_id]


def free_time(
    session: Session,
    *,
    instrument_ids: Sequence[int],
    start: datetime,
    end: datetime,
    min_minutes: int = 0,
) -> dict[int, list[Interval]]:
    """Free intervals of many instruments (two queries in all, four on a cold calendar cache).

    Each facility's week is expanded once for all its instruments; an instrument that is
    not open at all in the window needs no subtraction.
    """
    calendars = catalogue.load_calendars(
        session, instrument_ids=instrument_ids, start=start, end=end
    )
    if not calendars:
        return {}
    opened = catalogue.open_intervals_of(calendars, start, end)
    bookable = [instrument_id for instrument_id, spans in opened.items() if spans]
    # A booking ending at the window's end still holds its buffer after it.
    buffers = timedelta(minutes=max((c.buffer_minutes for c in calendars.values()), default=0))
    held = (
        held_ranges(session, instrument_ids=bookable, start=start, end=end + buffers)
        if bookable
        else {}
    )
    return {
        instrument_id: free_intervals(
            opened[instrument_id],
            held.get(instrument_id, []),
            slot_minutes=calendar.slot_minutes,
            zone=calendar.facility.zone,
            min_minutes=min_minutes,
            buffer_minutes=calendar.buffer_minutes,
        )
        if opened[instrument_id]
        else []
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
    if filters.start is not None and filters.end is not None and filters.end <= filters.start:
        raise RuleViolation(
            [Problem("end_not_after_start", "The end must be after the start.", "end")]
        )
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


@dataclass(frozen=True)
class CalendarEntry:
    """A booking as an instrument's calendar shows it to one viewer: the viewer's own with its
    id and status; anyone else's only as busy time (who holds it stays private)."""

    start: datetime
    end: datetime
    own_booking_id: int | None = None
    status: BookingStatus | None = None


def calendar_entries(
    session: Session, *, instrument_id: int, viewer_id: int | None, start: datetime, end: datetime
) -> list[CalendarEntry]:
    """Held bookings overlapping ``[start, end)`` (others' up to their held end, buffer
    included), and the viewer's own used ones too; one query."""
    _check_window(start, end)
    statuses = [*HELD_STATUSES, BookingStatus.COMPLETED]
    entries = []
    for booking_id, user_id, status, booked_start, booked_end, held_end in session.execute(
        sa.select(
            col(Booking.id),
            col(Booking.user_id),
            col(Booking.status),
            col(Booking.start_at),
            col(Booking.end_at),
            col(Booking.held_until),
        )
        .where(
            col(Booking.instrument_id) == instrument_id,
            col(Booking.status).in_(statuses),
            col(Booking.start_at) < end,
            col(Booking.held_until) > start,
        )
        .order_by(col(Booking.start_at))
    ):
        if viewer_id is not None and user_id == viewer_id:
            entries.append(CalendarEntry(booked_start, booked_end, booking_id, status))
        elif status in HELD_STATUSES:
            entries.append(CalendarEntry(booked_start, held_end))
    return entries


def recent_charge_accounts(session: Session, *, user_id: int, limit: int = 5) -> list[str]:
    """The accounts (经费卡, payers) a user charged most recently, to offer again."""
    rows = session.execute(
        sa.select(col(Booking.charge_account))
        .where(col(Booking.user_id) == user_id, col(Booking.charge_account) != "")
        .group_by(col(Booking.charge_account))
        .order_by(func.max(col(Booking.created_at)).desc())
        .limit(limit)
    ).scalars()
    return list(rows)


def idempotency_record(session: Session, *, user_id: int, key: str) -> IdempotencyRecord | None:
    """The first answer given to a user's request sent with ``key``, if there was one."""
    return session.exec(
        select(IdempotencyRecord).where(
            IdempotencyRecord.user_id == user_id, IdempotencyRecord.key == key
        )
    ).first()


FREE_SEARCH_CHUNK = 60
FREE_SEARCH_SCAN = 500


def free_instruments(
    session: Session,
    search: InstrumentSearch,
    *,
    start: datetime,
    end: datetime,
    min_minutes: int,
    offset: int = 0,
    limit: int = 50,
) -> tuple[list[tuple[dict[str, Any], list[Interval]]], int]:
    """Catalogue matches free for at least ``min_minutes`` within ``[start, end)``, with their
    free intervals: one page and how many in all (among the first 500 matches). Free time is
    read in chunks of matches, a fixed number of queries per chunk."""
    _check_window(start, end)
    matches, _ = catalogue.search_instruments(session, search, limit=FREE_SEARCH_SCAN)
    found: list[tuple[dict[str, Any], list[Interval]]] = []
    for first in range(0, len(matches), FREE_SEARCH_CHUNK):
        chunk = matches[first : first + FREE_SEARCH_CHUNK]
        free = free_time(
            session,
            instrument_ids=[m["id"] for m in chunk],
            start=start,
            end=end,
            min_minutes=min_minutes,
        )
        found.extend((m, free[m["id"]]) for m in chunk if free.get(m["id"]))
    return found[offset : offset + limit], len(found)


# --- Reads for the lab manager pages ------------------------------------------------------


def bookings_overlapping(
    session: Session,
    *,
    facility_id: int,
    instrument_id: int | None,
    start: datetime,
    end: datetime,
    statuses: Sequence[BookingStatus] = tuple(HELD_STATUSES),
    limit: int = 500,
) -> list[dict[str, Any]]:
    """Bookings in ``statuses`` overlapping ``[start, end)`` on one instrument, or on every
    instrument of the facility, with the instrument's and the user's names: one query."""
    from core.accounts.models import User

    conditions: list[Any] = [
        col(Booking.status).in_(list(statuses)),
        col(Booking.start_at) < end,
        col(Booking.end_at) > start,
    ]
    if instrument_id is not None:
        conditions.append(col(Booking.instrument_id) == instrument_id)
    else:
        conditions.append(col(Booking.facility_id) == facility_id)
    rows = session.execute(
        sa.select(
            col(Booking.id),
            col(Booking.instrument_id),
            col(Booking.start_at),
            col(Booking.end_at),
            col(Booking.status),
            col(Booking.attention),
            col(Booking.reason),
            col(Instrument.name).label("instrument_name"),
            col(User.name).label("user_name"),
            col(User.email).label("user_email"),
        )
        .join(Instrument, col(Instrument.id) == Booking.instrument_id)
        .join(User, col(User.id) == Booking.user_id)
        .where(*conditions)
        .order_by(col(Booking.start_at), col(Booking.id))
        .limit(limit)
    ).mappings()
    return [dict(row) for row in rows]


def facility_service_request_rows(
    session: Session,
    *,
    facility_ids: Sequence[int] | None,
    status: str | None = None,
    offset: int = 0,
    limit: int = 50,
) -> tuple[list[dict[str, Any]], int, dict[str, int]]:
    """Service requests of the facilities (all when None), newest first, with the testing
    service's and requester's names; the total and the count per status: three queries."""
    from booking.models import ServiceRequest
    from core.accounts.models import User
    from instruments.models import Facility, TestingService

    scope: list[Any] = []
    if facility_ids is not None:
        scope.append(col(ServiceRequest.facility_id).in_(list(facility_ids)))
    counts = {
        str(row[0]): int(row[1])
        for row in session.execute(
            sa.select(col(ServiceRequest.status), func.count())
            .where(*scope)
            .group_by(col(ServiceRequest.status))
        )
    }
    conditions = [*scope]
    if status is not None:
        conditions.append(col(ServiceRequest.status) == status)
    total = session.exec(select(func.count()).select_from(ServiceRequest).where(*conditions)).one()
    rows = session.execute(
        sa.select(
            col(ServiceRequest.id),
            col(ServiceRequest.status),
            col(ServiceRequest.sample_count),
            col(ServiceRequest.scheduled_date),
            col(ServiceRequest.submitted_at),
            col(ServiceRequest.facility_id),
            col(TestingService.name).label("service_name"),
            col(Facility.timezone),
            col(User.name).label("user_name"),
            col(User.email).label("user_email"),
        )
        .join(TestingService, col(TestingService.id) == ServiceRequest.testing_service_id)
        .join(Facility, col(Facility.id) == ServiceRequest.facility_id)
        .join(User, col(User.id) == ServiceRequest.user_id)
        .where(*conditions)
        .order_by(sa.desc(col(ServiceRequest.id)))
        .offset(offset)
        .limit(limit)
    ).mappings()
    return [dict(row) for row in rows], int(total), counts


# --- Lab manager pages: bookings and usage with the people and instruments they show -------


@dataclass(frozen=True)
class BookingRow:
    """A booking with what a manager's page shows beside it, loaded in one query per page.

    ``qualification`` is filled for the approval queue only: ``not_required``, ``valid``,
    ``expires_before_end`` or ``missing``.
    """

    booking: Booking
    user_name: str
    user_email: str
    organisation_name: str | None
    instrument_name: str
    facility_id: int
    facility_name: str
    zone: str
    qualification: str | None = None


def _booking_rows_query() -> Any:
    return (
        sa.select(
            Booking,
            col(User.name),
            col(User.email),
            col(Organisation.name),
            col(Instrument.name),
            col(Facility.name),
            col(Facility.timezone),
        )
        .join(User, col(User.id) == Booking.user_id)
        .outerjoin(Organisation, col(Organisation.id) == Booking.organisation_id)
        .join(Instrument, col(Instrument.id) == Booking.instrument_id)
        .join(Facility, col(Facility.id) == Booking.facility_id)
    )


def _booking_row(row: Any) -> BookingRow:
    booking, user_name, email, organisation, instrument, facility, zone = row
    return BookingRow(
        booking, user_name, email, organisation, instrument, booking.facility_id, facility, zone
    )


def facility_bookings(
    session: Session,
    *,
    facility_ids: Sequence[int] | None,
    start: datetime,
    end: datetime,
    statuses: Sequence[BookingStatus],
    instrument_id: int | None = None,
    search: str | None = None,
    offset: int = 0,
    limit: int = 50,
) -> tuple[list[BookingRow], int]:
    """Bookings overlapping ``[start, end)`` at these facilities (None: all), by start time.

    ``search`` matches the booker's name or e-mail. Callers pass only facilities the reader
    manages: these rows name who booked.
    """
    conditions: list[Any] = [
        col(Booking.status).in_(list(statuses)),
        col(Booking.start_at) < end,
        col(Booking.end_at) > start,
    ]
    if facility_ids is not None:
        conditions.append(col(Booking.facility_id).in_(list(facility_ids)))
    if instrument_id is not None:
        conditions.append(col(Booking.instrument_id) == instrument_id)
    if search:
        pattern = f"%{search.strip().lower()}%"
        conditions.append(
            col(Booking.user_id).in_(
                select(User.id).where(
                    func.lower(col(User.name)).like(pattern) | col(User.email).like(pattern)
                )
            )
        )
    total = session.exec(select(func.count()).select_from(Booking).where(*conditions)).one()
    rows = session.execute(
        _booking_rows_query()
        .where(*conditions)
        .order_by(col(Booking.start_at), col(Booking.id))
        .offset(offset)
        .limit(limit)
    ).all()
    return [_booking_row(row) for row in rows], int(total)


def approval_queue(
    session: Session,
    *,
    facility_ids: Sequence[int] | None,
    instrument_id: int | None = None,
    offset: int = 0,
    limit: int = 50,
) -> tuple[list[BookingRow], int]:
    """Pending requests at these facilities (None: all), oldest request first, with whether
    each requester holds a qualification that lasts until the booking ends (three queries)."""
    conditions: list[Any] = [col(Booking.status) == BookingStatus.PENDING]
    if facility_ids is not None:
        conditions.append(col(Booking.facility_id).in_(list(facility_ids)))
    if instrument_id is not None:
        conditions.append(col(Booking.instrument_id) == instrument_id)
    total = session.exec(select(func.count()).select_from(Booking).where(*conditions)).one()
    found = session.execute(
        _booking_rows_query()
        .add_columns(col(Instrument.requires_qualification))
        .where(*conditions)
        .order_by(col(Booking.created_at), col(Booking.id))
        .offset(offset)
        .limit(limit)
    ).all()
    expiries: dict[tuple[int, int], list[datetime | None]] = defaultdict(list)
    if found:
        current = now()
        for user_id, instrument, expires_at in session.execute(
            sa.select(
                col(Qualification.user_id),
                col(Qualification.instrument_id),
                col(Qualification.expires_at),
            ).where(
                col(Qualification.user_id).in_({row[0].user_id for row in found}),
                col(Qualification.instrument_id).in_({row[0].instrument_id for row in found}),
                col(Qualification.revoked_at).is_(None),
                col(Qualification.expires_at).is_(None) | (col(Qualification.expires_at) > current),
            )
        ):
            expiries[(user_id, instrument)].append(expires_at)
    rows = []
    for *columns, requires_qualification in found:
        booking = columns[0]
        held = expiries.get((booking.user_id, booking.instrument_id), [])
        if not requires_qualification or booking.operated_by == OperatedBy.STAFF:
            state = "not_required"
        elif any(expires is None or expires >= booking.end_at for expires in held):
            state = "valid"
        else:
            state = "expires_before_end" if held else "missing"
        rows.append(dataclasses.replace(_booking_row(columns), qualification=state))
    return rows, int(total)


def pending_counts(session: Session, *, facility_ids: Sequence[int] | None) -> dict[int, int]:
    """How many requests wait for a decision, by facility."""
    query = sa.select(col(Booking.facility_id), func.count()).where(
        col(Booking.status) == BookingStatus.PENDING
    )
    if facility_ids is not None:
        query = query.where(col(Booking.facility_id).in_(list(facility_ids)))
    return {
        facility_id: int(count)
        for facility_id, count in session.execute(query.group_by(col(Booking.facility_id)))
    }


@dataclass(frozen=True)
class DecisionCheck:
    """A batch of decisions checked before any is made: all of it applies, or none."""

    to_decide: list[Booking]
    already_done: list[Booking]  # already decided this way by the same manager: a repeat
    blocked: list[tuple[Booking, str]]  # with why: already_confirmed, request_expired, …


def check_decisions(
    session: Session, *, actor: Principal, booking_ids: Sequence[int], outcome: BookingStatus
) -> DecisionCheck:
    """Check approving (``outcome`` confirmed) or rejecting (rejected) these bookings at once.

    Any booking the actor may not decide — missing, or at a facility it does not manage — is
    404 for the whole batch, so nothing says which of them exist.
    """
    ids = list(dict.fromkeys(booking_ids))
    bookings = {
        b.id: b for b in session.exec(select(Booking).where(col(Booking.id).in_(ids))).all()
    }
    if len(bookings) != len(ids) or not all(
        actor.manages_facility(b.facility_id) for b in bookings.values()
    ):
        raise NotFound("Booking")
    current = now()
    to_decide, already_done, blocked = [], [], []
    for booking_id in ids:
        booking = bookings[booking_id]
        if booking.status == BookingStatus.PENDING:
            if booking.expires_at is not None and booking.expires_at <= current:
                blocked.append((booking, "request_expired"))
            else:
                to_decide.append(booking)
        elif booking.status == outcome and booking.decided_by_id == actor.user_id:
            already_done.append(booking)
        elif booking.status == BookingStatus.CONFIRMED:
            blocked.append((booking, "already_confirmed"))
        elif booking.status == BookingStatus.REJECTED:
            blocked.append((booking, "already_rejected"))
        elif booking.status in (BookingStatus.CANCELLED, BookingStatus.EXPIRED):
            blocked.append((booking, str(booking.status)))
        else:
            blocked.append((booking, "not_pending"))
    return DecisionCheck(to_decide, already_done, blocked)


@dataclass(frozen=True)
class UsageRow:
    record: UsageRecord
    user_name: str
    user_email: str
    instrument_name: str
    facility_id: int
    zone: str


def facility_usage(
    session: Session,
    *,
    facility_ids: Sequence[int] | None,
    instrument_id: int | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    record_id: int | None = None,
    offset: int = 0,
    limit: int = 50,
) -> tuple[list[UsageRow], int]:
    """Usage records at these facilities (None: all), newest first, with user and instrument."""
    conditions: list[Any] = []
    if record_id is not None:
        conditions.append(col(UsageRecord.id) == record_id)
    if facility_ids is not None:
        conditions.append(col(Instrument.facility_id).in_(list(facility_ids)))
    if instrument_id is not None:
        conditions.append(col(UsageRecord.instrument_id) == instrument_id)
    if start is not None:
        conditions.append(col(UsageRecord.ended_at) > start)
    if end is not None:
        conditions.append(col(UsageRecord.started_at) < end)
    base = (
        sa.select(
            UsageRecord,
            col(User.name),
            col(User.email),
            col(Instrument.name),
            col(Instrument.facility_id),
            col(Facility.timezone),
        )
        .join(User, col(User.id) == UsageRecord.user_id)
        .join(Instrument, col(Instrument.id) == UsageRecord.instrument_id)
        .join(Facility, col(Facility.id) == Instrument.facility_id)
        .where(*conditions)
    )
    total = session.exec(
        select(func.count())
        .select_from(UsageRecord)
        .join(Instrument, col(Instrument.id) == UsageRecord.instrument_id)
        .where(*conditions)
    ).one()
    rows = session.execute(
        base.order_by(col(UsageRecord.started_at).desc(), col(UsageRecord.id).desc())
        .offset(offset)
        .limit(limit)
    ).all()
    return [UsageRow(*row) for row in rows], int(total)


def booking_to_use_now(
    session: Session, *, user_id: int, instrument_id: int, day_start: datetime, day_end: datetime
) -> Booking | None:
    """The user's booking on the instrument to check in to or out of today: the one in use,
    else the next confirmed one that has not ended."""
    current = now()
    return session.exec(
        select(Booking)
        .where(
            Booking.user_id == user_id,
            Booking.instrument_id == instrument_id,
            col(Booking.start_at) < day_end,
            (col(Booking.status) == BookingStatus.IN_USE)
            | (
                (col(Booking.status) == BookingStatus.CONFIRMED)
                & (col(Booking.end_at) > max(current, day_start))
            ),
        )
        .order_by((col(Booking.status) == BookingStatus.IN_USE).desc(), col(Booking.start_at))
    ).first()


# --- The researcher's own pages: bookings, waitlist, service requests -----------------------


@dataclass(frozen=True)
class OwnBooking:
    """A booking of the user's own with what its page shows of the instrument and facility."""

    booking: Booking
    instrument_name: str
    facility_name: str
    timezone: str
    cancellation_deadline_hours: int
    late_cancel_charge_percent: int


OWN_BOOKING_COLUMNS = (
    col(Instrument.name),
    col(Facility.name),
    col(Facility.timezone),
    col(Instrument.cancellation_deadline_hours),
    col(Instrument.late_cancel_charge_percent),
)


def _is_current(at: datetime) -> Any:
    """Still ahead of the user: held and not over, or in use (the check-out is still due)."""
    return col(Booking.status).in_(list(HELD_STATUSES)) & (
        (col(Booking.end_at) > at) | (col(Booking.status) == BookingStatus.IN_USE)
    )


def own_bookings(
    session: Session,
    *,
    user_id: int,
    upcoming: bool,
    at: datetime,
    offset: int = 0,
    limit: int = 20,
) -> tuple[list[OwnBooking], int]:
    """The user's own bookings, upcoming (soonest first) or past (latest first), with their
    instruments and facilities: one query for the page and one count, however many rows."""
    condition = _is_current(at) if upcoming else sa.not_(_is_current(at))
    mine = col(Booking.user_id) == user_id
    total = session.exec(select(func.count()).select_from(Booking).where(mine, condition)).one()
    order = (
        (col(Booking.start_at), col(Booking.id))
        if upcoming
        else (col(Booking.start_at).desc(), col(Booking.id).desc())
    )
    rows = session.execute(
        sa.select(Booking, *OWN_BOOKING_COLUMNS)
        .join(Instrument, col(Instrument.id) == col(Booking.instrument_id))
        .join(Facility, col(Facility.id) == col(Booking.facility_id))
        .where(mine, condition)
        .order_by(*order)
        .offset(offset)
        .limit(limit)
    ).all()
    return [OwnBooking(*row) for row in rows], int(total)


@dataclass(frozen=True)
class BookingActions:
    """What the booker may do with a booking now, and whether cancelling would be late."""

    cancel: bool
    move: bool
    check_in: bool
    check_out: bool
    hand_over: bool
    accept_offer: bool
    cancellation_deadline: datetime
    late_cancellation: bool  # cancelling now is late: the instrument's charge may apply


def actions_now(
    booking: Booking, *, cancellation_deadline_hours: int, grace: timedelta, at: datetime
) -> BookingActions:
    """The booker's actions allowed at ``at`` (the services check again when one is taken)."""
    status = BookingStatus(booking.status)
    return BookingActions(
        cancel=status in TRANSITIONS["cancel"],
        move=status in TRANSITIONS["move"] and booking.start_at > at,
        check_in=status in TRANSITIONS["check_in"]
        and booking.start_at - grace <= at < booking.end_at,
        check_out=status in TRANSITIONS["check_out"],
        hand_over=status in TRANSITIONS["hand_over"] and booking.end_at > at,
        accept_offer=status is BookingStatus.OFFERED
        and (booking.offer_expires_at is None or booking.offer_expires_at > at),
        cancellation_deadline=booking.start_at - timedelta(hours=cancellation_deadline_hours),
        # Only a confirmed booking is charged for a late cancellation (booking.service.cancel).
        late_cancellation=status is BookingStatus.CONFIRMED
        and is_late_cancellation(at, booking.start_at, cancellation_deadline_hours),
    )


def replaced_booking_id(session: Session, *, booking_id: int) -> int | None:
    """The booking this one replaced when it was moved, if any."""
    return session.exec(select(Booking.id).where(Booking.replaced_by_id == booking_id)).first()


@dataclass(frozen=True)
class HistoryEntry:
    occurred_at: datetime
    action: str
    actor_name: str | None
    data: dict[str, Any]


def history(
    session: Session, *, subject_type: str, subject_ids: Sequence[int], limit: int = 100
) -> list[HistoryEntry]:
    """Audit entries of some bookings or service requests, oldest first, with who acted."""
    rows = session.execute(
        sa.select(AuditEntry, col(User.name))
        .outerjoin(User, col(User.id) == col(AuditEntry.actor_id))
        .where(
            col(AuditEntry.subject_type) == subject_type,
            col(AuditEntry.subject_id).in_([str(i) for i in subject_ids]),
        )
        .order_by(col(AuditEntry.id))
        .limit(limit)
    ).all()
    return [HistoryEntry(e.occurred_at, e.action, name, dict(e.data or {})) for e, name in rows]


def active_user_id_by_email(session: Session, email: str) -> int | None:
    """Whom an e-mail address names (stored lower-cased), if active."""
    return session.exec(
        select(User.id).where(User.email == email.strip().lower(), col(User.is_active).is_(True))
    ).first()


@dataclass(frozen=True)
class OwnWaitlistEntry:
    entry: WaitlistEntry
    instrument_name: str
    facility_name: str
    timezone: str
    offer: Booking | None


def own_waitlist(
    session: Session, *, user_id: int, offset: int = 0, limit: int = 20
) -> tuple[list[OwnWaitlistEntry], int]:
    """The user's waitlist entries with instruments and offers (one query and one count);
    live ones (offered, waiting) first, each group by start."""
    mine = col(WaitlistEntry.user_id) == user_id
    total = session.exec(select(func.count()).select_from(WaitlistEntry).where(mine)).one()
    live = sa.case(
        (col(WaitlistEntry.status) == WaitlistStatus.OFFERED, 0),
        (col(WaitlistEntry.status) == WaitlistStatus.WAITING, 1),
        else_=2,
    )
    rows = session.execute(
        sa.select(WaitlistEntry, col(Instrument.name), col(Facility.name), col(Facility.timezone))
        .join(Instrument, col(Instrument.id) == col(WaitlistEntry.instrument_id))
        .join(Facility, col(Facility.id) == col(Instrument.facility_id))
        .where(mine)
        .order_by(live, col(WaitlistEntry.start_at), col(WaitlistEntry.id))
        .offset(offset)
        .limit(limit)
    ).all()
    offer_ids = [e.offered_booking_id for e, *_ in rows if e.offered_booking_id is not None]
    offers = (
        {b.id: b for b in session.exec(select(Booking).where(col(Booking.id).in_(offer_ids))).all()}
        if offer_ids
        else {}
    )
    return [
        OwnWaitlistEntry(e, name, facility, zone, offers.get(e.offered_booking_id))
        for e, name, facility, zone in rows
    ], int(total)


@dataclass(frozen=True)
class OwnServiceRequest:
    request: ServiceRequest
    service_name: str
    facility_name: str
    timezone: str


def own_service_requests(
    session: Session, *, user_id: int, offset: int = 0, limit: int = 20
) -> tuple[list[OwnServiceRequest], int]:
    """The user's own service requests, newest first, with service and facility names."""
    mine = col(ServiceRequest.user_id) == user_id
    total = session.exec(select(func.count()).select_from(ServiceRequest).where(mine)).one()
    rows = session.execute(
        sa.select(
            ServiceRequest, col(TestingService.name), col(Facility.name), col(Facility.timezone)
        )
        .join(TestingService, col(TestingService.id) == col(ServiceRequest.testing_service_id))
        .join(Facility, col(Facility.id) == col(ServiceRequest.facility_id))
        .where(mine)
        .order_by(col(ServiceRequest.id).desc())
        .offset(offset)
        .limit(limit)
    ).all()
    return [OwnServiceRequest(*row) for row in rows], int(total)


def service_choices(session: Session, *, limit: int = 500) -> list[tuple[TestingService, str]]:
    """Active testing services of active facilities with their facility's name, to choose from."""
    return [
        (service, facility_name)
        for service, facility_name in session.execute(
            sa.select(TestingService, col(Facility.name))
            .join(Facility, col(Facility.id) == col(TestingService.facility_id))
            .where(col(TestingService.is_active).is_(True), col(Facility.is_active).is_(True))
            .order_by(col(Facility.name), col(TestingService.name))
            .limit(limit)
        ).all()
    ]


def service_with_facility(
    session: Session, *, testing_service_id: int
) -> tuple[TestingService, str, str]:
    """A testing service with its facility's name and time zone."""
    service, facility_name, zone = session.execute(
        sa.select(TestingService, col(Facility.name), col(Facility.timezone))
        .join(Facility, col(Facility.id) == col(TestingService.facility_id))
        .where(col(TestingService.id) == testing_service_id)
    ).one()
    return service, facility_name, zone


def requestable_free_time(
    session: Session, *, instrument: Instrument, zone: ZoneInfo, start: datetime, end: datetime
) -> list[Interval]:
    """The free intervals of ``[start, end)`` a request made now could use: from the minimum
    notice on and no further ahead than the instrument allows, on its slots."""
    current = now()
    earliest = max(start, current + timedelta(minutes=instrument.min_notice_minutes))
    latest = min(end, current + timedelta(days=instrument.max_advance_days))
    if latest <= earliest:
        _check_window(start, end)
        return []
    free = availability(session, instrument_id=instrument.id or 0, start=start, end=end)
    return free_intervals(
        clip(free, earliest, latest), [], slot_minutes=instrument.slot_minutes, zone=zone
    )


def first_free_instruments(
    session: Session,
    search: InstrumentSearch,
    *,
    start: datetime,
    end: datetime,
    min_minutes: int,
    limit: int = 50,
) -> list[tuple[dict[str, Any], list[Interval]]]:
    """The first ``limit`` catalogue matches (among the first 500) free for at least
    ``min_minutes`` within ``[start, end)``, with their free intervals: "which X-ray
    diffractometers are free next Tuesday afternoon". Free time is read a chunk of matches at
    a time, stopping once enough are found: most searches need only the first chunk."""
    _check_window(start, end)
    matches, _ = catalogue.search_instruments(session, search, limit=FREE_SEARCH_SCAN)
    found: list[tuple[dict[str, Any], list[Interval]]] = []
    for first in range(0, len(matches), FREE_SEARCH_CHUNK):
        chunk = matches[first : first + FREE_SEARCH_CHUNK]
        free = free_time(
            session,
            instrument_ids=[m["id"] for m in chunk],
            start=start,
            end=end,
            min_minutes=min_minutes,
        )
        found.extend((m, free[m["id"]]) for m in chunk if free.get(m["id"]))
        if len(found) >= limit:
            break
    return found[:limit]


# booking.outages writes the reason of a booking an outage closed or flagged as
# "Outage (<kind>) <start>–<end>: <note>" (English, UTC); booking.service closes a moved
# booking with the reason "moved". Pages show either in the reader's words instead.
OUTAGE_REASON_PREFIX = "Outage ("
MOVED_REASON = "moved"


@dataclass(frozen=True)
class ExplainedReason:
    """A reason recorded on a booking or in its history, as a page shows it: ``moved`` (the
    move says it already), the ``outage`` behind it (its kind and times), else the ``text``."""

    text: str
    moved: bool = False
    outage: Outage | None = None


def explain_reasons(
    session: Session, booking: Booking, reasons: Sequence[str]
) -> dict[str, ExplainedReason]:
    """Each of a booking's recorded reasons explained (one query for an outage, at most)."""
    outage = None
    if any(r.startswith(OUTAGE_REASON_PREFIX) for r in reasons):
        outage = session.exec(
            select(Outage)
            .where(
                col(Outage.start_at) < booking.end_at,
                col(Outage.end_at) > booking.start_at,
                sa.or_(
                    col(Outage.instrument_id) == booking.instrument_id,
                    sa.and_(
                        col(Outage.instrument_id).is_(None),
                        col(Outage.facility_id) == booking.facility_id,
                    ),
                ),
            )
            .order_by(col(Outage.created_at).desc(), col(Outage.id).desc())
        ).first()
    explained: dict[str, ExplainedReason] = {}
    for reason in reasons:
        if reason == MOVED_REASON:
            explained[reason] = ExplainedReason(reason, moved=True)
        elif reason.startswith(OUTAGE_REASON_PREFIX) and outage is not None:
            explained[reason] = ExplainedReason(reason, outage=outage)
        else:
            explained[reason] = ExplainedReason(reason)
    return explained
