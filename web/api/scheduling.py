"""Recurring bookings, the waitlist, and what outages do to bookings."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Response, status
from pydantic import BaseModel, Field
from sqlmodel import Session

from booking import outages, series, waitlist
from booking.models import WaitlistStatus
from booking.rules import OperatedBy
from booking.schemas import BookingRead, OptionalReason
from core.accounts.schemas import StrictModel
from core.auth.principal import Principal
from core.types import UTCDateTimeIn
from instruments import service as instruments
from instruments.models import Outage
from web.api.bookings import booking_read, policy_of
from web.deps import ApiPrincipal, AppSettings, DbSession, ObjectId
from web.retry import commit_with_retries
from web.routing import TransactionalRoute

router = APIRouter(prefix="/api/v1", tags=["bookings"], route_class=TransactionalRoute)


class SkippedRead(BaseModel):
    start: datetime
    end: datetime
    code: str
    detail: str


class SeriesRead(BaseModel):
    series_id: int
    booked: list[BookingRead]
    skipped: list[SkippedRead]


@router.post("/booking-series", response_model=SeriesRead, status_code=status.HTTP_201_CREATED)
def create_series(
    data: series.SeriesCreate, principal: ApiPrincipal, session: DbSession, settings: AppSettings
) -> SeriesRead:
    """Book daily or weekly occurrences: all or nothing (every failing date listed, 422/409),
    or `mode=free_only` to book the free ones and list the skipped dates."""

    def work() -> SeriesRead:
        result = series.create_series(
            session, actor=principal, data=data, policy=policy_of(settings)
        )
        return SeriesRead(
            series_id=result.series.id or 0,
            booked=[booking_read(b) for b in result.booked],
            skipped=[SkippedRead(**s.__dict__) for s in result.skipped],
        )

    return commit_with_retries(session, work)


@router.post("/bookings/{booking_id}/cancel-rest-of-series", response_model=list[BookingRead])
def cancel_rest_of_series(
    booking_id: ObjectId,
    principal: ApiPrincipal,
    session: DbSession,
    data: OptionalReason | None = None,
) -> list[BookingRead]:
    """Cancel this occurrence and every later one of its series."""
    cancelled = series.cancel_rest_of_series(
        session, actor=principal, booking_id=booking_id, reason=data.reason if data else ""
    )
    return [booking_read(b) for b in cancelled]


class WaitlistJoin(StrictModel):
    instrument_id: int
    start: UTCDateTimeIn
    end: UTCDateTimeIn


class WaitlistRead(BaseModel):
    id: int
    instrument_id: int
    start_at: datetime
    end_at: datetime
    status: WaitlistStatus
    offered_booking_id: int | None
    created_at: datetime


@router.post("/waitlist", response_model=WaitlistRead, status_code=status.HTTP_201_CREATED)
def join_waitlist(data: WaitlistJoin, principal: ApiPrincipal, session: DbSession) -> WaitlistRead:
    """Wait for a taken interval; when it frees up you are offered it (first come, first served)."""
    entry = waitlist.join(
        session, actor=principal, instrument_id=data.instrument_id, start=data.start, end=data.end
    )
    return WaitlistRead.model_validate(entry, from_attributes=True)


@router.get("/waitlist", response_model=list[WaitlistRead])
def my_waitlist(principal: ApiPrincipal, session: DbSession) -> list[WaitlistRead]:
    return [
        WaitlistRead.model_validate(e, from_attributes=True)
        for e in waitlist.entries_of(session, user_id=principal.user_id)
    ]


@router.delete("/waitlist/{entry_id}", status_code=204)
def leave_waitlist(entry_id: ObjectId, principal: ApiPrincipal, session: DbSession) -> Response:
    waitlist.leave(session, actor=principal, entry_id=entry_id)
    return Response(status_code=204)


class OfferAcceptance(StrictModel):
    operated_by: OperatedBy = OperatedBy.SELF


@router.post("/bookings/{booking_id}/accept-offer", response_model=BookingRead)
def accept_offer(
    booking_id: ObjectId,
    principal: ApiPrincipal,
    session: DbSession,
    settings: AppSettings,
    data: OfferAcceptance | None = None,
) -> BookingRead:
    """Take a waitlist offer (decline it with /cancel): every rule of a booking request
    applies, as if the time were requested now."""
    booking = waitlist.accept(
        session,
        actor=principal,
        booking_id=booking_id,
        operated_by=data.operated_by if data else OperatedBy.SELF,
        policy=policy_of(settings),
    )
    return booking_read(booking)


class OutageBookingsAction(StrictModel):
    action: outages.OutageAction = Field(description="flag them for attention, or cancel them")


@router.get("/outages/{outage_id}/bookings", response_model=list[BookingRead])
def outage_bookings(
    outage_id: ObjectId, principal: ApiPrincipal, session: DbSession
) -> list[BookingRead]:
    """The held bookings an outage falls on (lab managers of the facility)."""
    outage = instruments_outage(session, principal, outage_id)
    return [booking_read(b) for b in outages.affected_bookings(session, outage_id=outage.id or 0)]


@router.post("/outages/{outage_id}/bookings", response_model=list[BookingRead])
def act_on_outage_bookings(
    outage_id: ObjectId, data: OutageBookingsAction, principal: ApiPrincipal, session: DbSession
) -> list[BookingRead]:
    """Flag or cancel (with the outage as the reason) the bookings an outage falls on."""
    outage = instruments_outage(session, principal, outage_id)
    affected = outages.apply_outage(
        session, actor=principal, outage_id=outage.id or 0, action=data.action
    )
    return [booking_read(b) for b in affected]


def instruments_outage(session: Session, principal: Principal, outage_id: int) -> Outage:
    """The outage, if the caller manages its facility (403 without a managing role, else 404)."""
    outage = session.get(Outage, outage_id)
    facility_id = outage.facility_id if outage is not None else 0
    instruments.managed_facility(session, actor=principal, facility_id=facility_id, action="see it")
    assert outage is not None
    return outage
