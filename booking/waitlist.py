"""The waitlist (the booking package's waitlist operations).

Someone may wait for an interval that is taken. When held time of that instrument is freed
(a cancellation, rejection, expiry, move or lapsed offer), the earliest waiter whose whole
interval is now free is offered it: a booking in status ``offered``, held for them until the
offer lapses. Accepting turns it into a request (confirmed or pending by the usual rules);
declining cancels it; a lapsed offer expires and the next waiter is offered.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlmodel import Session, col, select

from booking import rules, service
from booking.models import Booking, WaitlistEntry, WaitlistStatus
from booking.rules import BookingStatus, OperatedBy
from core import audit, events
from core.auth.principal import Principal
from core.clock import now
from core.errors import Conflict, NotFound, PermissionDenied, Problem, RuleViolation
from instruments import queries as catalogue

OFFER_HOURS = 12


def join(
    session: Session, *, actor: Principal, instrument_id: int, start: datetime, end: datetime
) -> WaitlistEntry:
    """Wait for a taken interval; a free one should simply be booked (409)."""
    instrument, _ = catalogue.instrument_with_facility(session, instrument_id)
    problems = []
    if end <= start:
        problems.append(Problem("end_not_after_start", "The end must be after the start.", "end"))
    if start <= now():
        problems.append(Problem("in_past", "Wait only for future time.", "start"))
    if problems:
        raise RuleViolation(problems)
    taken = service.overlapping(
        session, instrument_id, start, rules.held_until(end, instrument.buffer_minutes)
    )
    if not taken:
        raise Conflict("That time is free: book it instead of waiting.", code="time_is_free")
    if any(booking.user_id == actor.user_id for booking in taken):
        # Cancelling it would offer the time back to oneself, ahead of the others waiting.
        raise Conflict("You hold part of this time already.", code="already_held")
    duplicate = session.exec(
        select(WaitlistEntry.id).where(
            WaitlistEntry.instrument_id == instrument_id,
            WaitlistEntry.user_id == actor.user_id,
            WaitlistEntry.start_at == start,
            WaitlistEntry.end_at == end,
            col(WaitlistEntry.status).in_([WaitlistStatus.WAITING, WaitlistStatus.OFFERED]),
        )
    ).first()
    if duplicate is not None:
        raise Conflict("You are already waiting for this time.", code="already_waiting")
    entry = WaitlistEntry(
        instrument_id=instrument_id, user_id=actor.user_id, start_at=start, end_at=end
    )
    session.add(entry)
    session.flush()
    audit.record(
        session,
        actor_id=actor.user_id,
        action="waitlist.joined",
        subject_type="waitlist_entry",
        subject_id=entry.id or 0,
        data={"instrument_id": instrument_id},
    )
    return entry


def leave(session: Session, *, actor: Principal, entry_id: int) -> WaitlistEntry:
    entry = session.get(WaitlistEntry, entry_id)
    if entry is None or entry.user_id != actor.user_id:
        raise NotFound("Waitlist entry")
    if entry.status is not WaitlistStatus.WAITING:
        raise Conflict(f"The entry is {entry.status}.", code="wrong_status")
    entry.status = WaitlistStatus.CANCELLED
    entry.updated_at = now()
    session.add(entry)
    session.flush()
    return entry


def offer_freed_time(
    session: Session, *, instrument_id: int, start: datetime, until: datetime
) -> list[Booking]:
    """Offer time freed in ``[start, until)`` to the earliest waiters whose interval now fits."""
    instrument, facility = catalogue.instrument_with_facility(session, instrument_id)
    waiting = session.exec(
        select(WaitlistEntry)
        .where(
            WaitlistEntry.instrument_id == instrument_id,
            WaitlistEntry.status == WaitlistStatus.WAITING,
            col(WaitlistEntry.start_at) < until,
            col(WaitlistEntry.end_at) > start,
            col(WaitlistEntry.start_at) > now(),
        )
        .order_by(col(WaitlistEntry.created_at), col(WaitlistEntry.id))
    ).all()
    offers = []
    for entry in waiting:
        held_until = rules.held_until(entry.end_at, instrument.buffer_minutes)
        if service.overlapping(session, instrument_id, entry.start_at, held_until):
            continue
        # Time freed by an outage is no time to offer.
        calendar = catalogue.load_calendars(
            session, instrument_ids=[instrument_id], start=entry.start_at, end=entry.end_at
        )[instrument_id]
        if not calendar.bookable or any(
            outage_start < entry.end_at and outage_end > entry.start_at
            for outage_start, outage_end in calendar.outages
        ):
            continue
        current = now()
        with session.begin_nested():
            booking = service.insert_held(
                session,
                instrument_id=instrument_id,
                facility_id=facility.id or 0,
                user_id=entry.user_id,
                organisation_id=service.organisation_of(session, entry.user_id),
                start_at=entry.start_at,
                end_at=entry.end_at,
                held_until=held_until,
                status=BookingStatus.OFFERED,
                operated_by=OperatedBy.SELF,
                offer_expires_at=min(current + timedelta(hours=OFFER_HOURS), entry.start_at),
                purpose="waitlist offer",
                created_at=current,
                updated_at=current,
            )
        entry.status = WaitlistStatus.OFFERED
        entry.offered_booking_id = booking.id
        entry.updated_at = current
        session.add(entry)
        session.flush()
        audit.record(
            session,
            actor_id=None,
            action="waitlist.offered",
            subject_type="booking",
            subject_id=booking.id or 0,
            data={"waitlist_entry_id": entry.id},
        )
        events.emit(
            session,
            "waitlist.offered",
            service.booking_payload(booking)
            | {
                "offer_expires_at": booking.offer_expires_at.isoformat()
                if booking.offer_expires_at
                else None
            },
        )
        offers.append(booking)
    return offers


def _entry_of(session: Session, booking_id: int) -> WaitlistEntry | None:
    return session.exec(
        select(WaitlistEntry).where(WaitlistEntry.offered_booking_id == booking_id)
    ).first()


def accept(
    session: Session,
    *,
    actor: Principal,
    booking_id: int,
    operated_by: OperatedBy,
    policy: service.BookingPolicy,
) -> Booking:
    """Take a waitlist offer: it becomes a request, confirmed or pending by the usual rules.

    Every rule of a booking request applies (qualification to the end, operation mode,
    quotas, suspension, notice): waiting is no way around them."""
    booking = service.visible_booking(session, actor=actor, booking_id=booking_id)
    if booking.user_id != actor.user_id:
        raise PermissionDenied("Only the person offered the time may accept it.")
    if booking.status is not BookingStatus.OFFERED:
        raise Conflict(f"A {booking.status} booking is no offer.", code="wrong_status")
    if booking.offer_expires_at is not None and booking.offer_expires_at <= now():
        raise Conflict("The offer has lapsed.", code="offer_lapsed")
    status = service.check_request(
        session,
        actor=actor,
        instrument_id=booking.instrument_id,
        user_id=actor.user_id,
        start=booking.start_at,
        end=booking.end_at,
        operated_by=operated_by,
        override=[],
        policy=policy,
        ignore_booking_id=booking_id,
    ).status
    result = session.execute(
        sa.update(Booking)
        .where(col(Booking.id) == booking_id, col(Booking.status) == BookingStatus.OFFERED)
        .values(
            status=status,
            operated_by=operated_by,
            offer_expires_at=None,
            version=Booking.version + 1,
            updated_at=now(),
            expires_at=None
            if status is BookingStatus.CONFIRMED
            else min(now() + policy.pending_ttl, booking.start_at),
        )
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise Conflict("The offer changed meanwhile.", code="wrong_status")
    session.refresh(booking)
    entry = _entry_of(session, booking_id)
    if entry is not None:
        entry.status = WaitlistStatus.ACCEPTED
        entry.updated_at = now()
        session.add(entry)
    service.record_change(
        session,
        booking,
        actor_id=actor.user_id,
        action="confirmed" if status is BookingStatus.CONFIRMED else "requested",
    )
    return booking


def expire_offers(session: Session, *, limit: int = 200) -> int:
    """Lapsed offers expire (each once) and the time goes to the next waiter."""
    query = (
        sa.select(col(Booking.id))
        .where(col(Booking.status) == BookingStatus.OFFERED, col(Booking.offer_expires_at) <= now())
        .limit(limit)
    )
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    done = 0
    for booking_id in session.execute(query).scalars().all():
        result = session.execute(
            sa.update(Booking)
            .where(col(Booking.id) == booking_id, col(Booking.status) == BookingStatus.OFFERED)
            .values(
                status=BookingStatus.EXPIRED,
                reason="Offer not taken in time.",
                version=Booking.version + 1,
                updated_at=now(),
            )
            .execution_options(synchronize_session=False)
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            continue
        booking = session.get(Booking, booking_id)
        assert booking is not None
        session.refresh(booking)
        entry = _entry_of(session, booking_id)
        if entry is not None:
            entry.status = WaitlistStatus.EXPIRED
            entry.updated_at = now()
            session.add(entry)
        service.record_change(session, booking, actor_id=None, action="offer_expired")
        offer_freed_time(
            session,
            instrument_id=booking.instrument_id,
            start=booking.start_at,
            until=booking.held_until,
        )
        done += 1
    return done


def entries_of(session: Session, *, user_id: int) -> list[WaitlistEntry]:
    return list(
        session.exec(
            select(WaitlistEntry)
            .where(WaitlistEntry.user_id == user_id)
            .order_by(col(WaitlistEntry.start_at))
        ).all()
    )
