"""What a new outage does to the bookings it falls on (the booking package's outage operations).

The catalogue records outages; bookings are this package's. Bookings held during a new outage
are listed for the manager and, as the platform is configured, flagged for attention (the
manager decides each) or cancelled with the outage as the reason.
"""

from __future__ import annotations

from enum import StrEnum

from sqlmodel import Session, col, select

from booking import service
from booking.models import Booking
from booking.rules import HELD_STATUSES, TRANSITIONS
from core.auth.principal import Principal
from core.errors import NotFound
from instruments.models import Outage

CANCELLABLE = TRANSITIONS["cancel"]


class OutageAction(StrEnum):
    FLAG = "flag"
    CANCEL = "cancel"


def affected_bookings(session: Session, *, outage_id: int) -> list[Booking]:
    """Held bookings that overlap the outage (a facility outage covers all its instruments)."""
    outage = session.get(Outage, outage_id)
    if outage is None:
        raise NotFound("Outage")
    query = select(Booking).where(
        col(Booking.status).in_(list(HELD_STATUSES)),
        col(Booking.start_at) < outage.end_at,
        col(Booking.end_at) > outage.start_at,
    )
    if outage.instrument_id is not None:
        query = query.where(Booking.instrument_id == outage.instrument_id)
    else:
        query = query.where(Booking.facility_id == outage.facility_id)
    return list(session.exec(query.order_by(col(Booking.start_at))).all())


def apply_outage(
    session: Session, *, actor: Principal | None, outage_id: int, action: OutageAction
) -> list[Booking]:
    """Flag or cancel the bookings a new outage falls on; returns them."""
    outage = session.get(Outage, outage_id)
    if outage is None:
        raise NotFound("Outage")
    reason = f"Outage ({outage.kind}) {outage.start_at.isoformat()}–{outage.end_at.isoformat()}"
    if outage.note:
        reason += f": {outage.note}"
    affected = affected_bookings(session, outage_id=outage_id)
    for booking in affected:
        if action is OutageAction.CANCEL and booking.status in CANCELLABLE:
            with session.begin_nested():
                service.cancel(session, actor=actor, booking_id=booking.id or 0, reason=reason)
        else:  # flagged for the manager to decide (a booking in use is never cut off)
            booking.attention = reason[:300]
            booking.version += 1
            session.add(booking)
            session.flush()
            service.record_change(
                session,
                booking,
                actor_id=actor.user_id if actor else None,
                action="flagged",
                reason=reason,
            )
    return affected
