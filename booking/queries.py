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

from booking.models import (
    Booking,
    ServiceRequest,
    UsageRecord,
    WaitlistEntry,
    WaitlistStatus,
)
from booking.rules import (
    HELD_STATUSES,
    TRANSITIONS,
    BookingStatus,
    free_intervals,
    is_late_cancellation,
)
from core.accounts.models import User
from core.audit import AuditEntry
from core.auth.principal import Principal
from core.errors import Problem, RuleViolation
from instruments import queries as catalogue
from instruments.models import Facility, Instrument, TestingService
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
