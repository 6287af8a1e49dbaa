"""Recurring bookings (the booking package's series operations).

A series repeats a first booking daily or weekly at the same local wall-clock time, a number
of times or until a date. All or nothing by default: if any occurrence cannot be booked,
every failing date is listed and nothing is booked; or "book the free ones", which books what
it can and lists the dates it skipped, with why. Cancel one occurrence like any booking, or
this one and the rest of the series.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

from pydantic import Field, model_validator
from sqlmodel import Session, col, select

from booking import rules, service
from booking.models import Booking, BookingSeries
from booking.rules import OperatedBy
from booking.schemas import BookingCreate
from core.accounts.schemas import StrictModel
from core.auth.principal import Principal
from core.errors import DomainError, Problem, RuleViolation
from core.types import UTCDateTimeIn
from instruments import queries as catalogue

MAX_OCCURRENCES = 100


class Frequency(StrEnum):
    DAILY = "daily"
    WEEKLY = "weekly"


class SeriesMode(StrEnum):
    ALL_OR_NOTHING = "all_or_nothing"
    FREE_ONLY = "free_only"


class SeriesCreate(StrictModel):
    instrument_id: int
    start: UTCDateTimeIn = Field(description="The first occurrence's start.")
    end: UTCDateTimeIn = Field(description="The first occurrence's end.")
    frequency: Frequency
    interval: int = Field(default=1, ge=1, le=52, description="Every N days or weeks.")
    count: int | None = Field(default=None, ge=1, le=MAX_OCCURRENCES)
    until: date | None = Field(default=None, description="Last local date (inclusive).")
    mode: SeriesMode = SeriesMode.ALL_OR_NOTHING
    purpose: str = Field(default="", max_length=1000)
    charge_account: str = Field(default="", max_length=200)
    operated_by: OperatedBy = OperatedBy.SELF
    sample_count: int | None = Field(default=None, ge=1, le=100_000)

    @model_validator(mode="after")
    def count_or_until(self) -> SeriesCreate:
        if (self.count is None) == (self.until is None):
            raise ValueError("Give either count or until.")
        return self


@dataclass(frozen=True)
class SkippedOccurrence:
    start: datetime
    end: datetime
    code: str
    detail: str


@dataclass(frozen=True)
class SeriesResult:
    series: BookingSeries
    booked: list[Booking]
    skipped: list[SkippedOccurrence]


def occurrences(
    start: datetime,
    end: datetime,
    *,
    zone: ZoneInfo,
    frequency: Frequency,
    interval: int,
    count: int | None,
    until: date | None,
) -> list[tuple[datetime, datetime]]:
    """The occurrences' UTC ranges, repeating the local wall-clock times (DST-safe)."""
    local_start, local_end = start.astimezone(zone), end.astimezone(zone)
    step = timedelta(days=interval if frequency is Frequency.DAILY else 7 * interval)
    found = []
    for n in range(MAX_OCCURRENCES + 1):
        naive_start = local_start.replace(tzinfo=None) + step * n
        if until is not None and naive_start.date() > until:
            break
        if count is not None and n >= count:
            break
        naive_end = local_end.replace(tzinfo=None) + step * n
        found.append(
            (
                naive_start.replace(tzinfo=zone).astimezone(start.tzinfo),
                naive_end.replace(tzinfo=zone).astimezone(start.tzinfo),
            )
        )
    if len(found) > MAX_OCCURRENCES:
        raise RuleViolation(
            [Problem("too_many", f"A series has at most {MAX_OCCURRENCES} occurrences.", "until")]
        )
    if not found:
        raise RuleViolation(
            [Problem("no_occurrences", "The series ends before its first occurrence.", "until")]
        )
    return found


def create_series(
    session: Session, *, actor: Principal, data: SeriesCreate, policy: service.BookingPolicy
) -> SeriesResult:
    """Book every occurrence (all or nothing), or the free ones and list the rest."""
    _, facility = catalogue.instrument_with_facility(session, data.instrument_id)
    ranges = occurrences(
        data.start,
        data.end,
        zone=ZoneInfo(facility.timezone),
        frequency=data.frequency,
        interval=data.interval,
        count=data.count,
        until=data.until,
    )
    if not actor.managed_facility_ids and not actor.is_admin:
        service.check_rate(session, user_id=actor.user_id, policy=policy)
    series = BookingSeries(
        instrument_id=data.instrument_id,
        user_id=actor.user_id,
        frequency=data.frequency,
        interval=data.interval,
        occurrences=len(ranges),
    )
    session.add(series)
    session.flush()
    booked: list[Booking] = []
    skipped: list[SkippedOccurrence] = []
    for start, end in ranges:
        request = BookingCreate(
            instrument_id=data.instrument_id,
            start=start,
            end=end,
            purpose=data.purpose,
            charge_account=data.charge_account,
            operated_by=data.operated_by,
            sample_count=data.sample_count,
        )
        try:
            with session.begin_nested():
                booking = service.create_booking(
                    session, actor=actor, data=request, policy=policy, rate_limited=False
                )
                booking.series_id = series.id
                session.add(booking)
                session.flush()
            booked.append(booking)
        except DomainError as exc:
            # Each broken rule by its own code (a quota, a qualification), not "validation".
            reasons = exc.problems or [Problem(exc.code, exc.detail)]
            detail = "; ".join(p.message for p in reasons)
            skipped.append(SkippedOccurrence(start, end, reasons[0].code, detail))
    if data.mode is SeriesMode.ALL_OR_NOTHING and skipped:
        raise RuleViolation(
            _problems_of(skipped),
            detail=f"{len(skipped)} of {len(ranges)} occurrences cannot be booked; none was.",
        )
    if not booked:
        raise RuleViolation(_problems_of(skipped), detail="No occurrence can be booked.")
    return SeriesResult(series, booked, skipped)


def _problems_of(skipped: list[SkippedOccurrence]) -> list[Problem]:
    return [Problem(s.code, f"{s.start.isoformat()}: {s.detail}", "occurrences") for s in skipped]


def cancel_rest_of_series(
    session: Session, *, actor: Principal, booking_id: int, reason: str = ""
) -> list[Booking]:
    """Cancel this occurrence and every later one of its series that can still be cancelled."""
    first = service.visible_booking(session, actor=actor, booking_id=booking_id)
    if first.series_id is None:
        raise RuleViolation(
            [Problem("not_in_series", "This booking is not part of a series.", "booking_id")]
        )
    later = session.exec(
        select(Booking)
        .where(
            Booking.series_id == first.series_id,
            col(Booking.start_at) >= first.start_at,
            # One in use is past cancelling; the rest of the series still goes.
            col(Booking.status).in_(list(rules.TRANSITIONS["cancel"])),
        )
        .order_by(col(Booking.start_at))
    ).all()
    cancelled = []
    for booking in later:
        with session.begin_nested():
            cancelled.append(
                service.cancel(session, actor=actor, booking_id=booking.id or 0, reason=reason)
            )
    return cancelled
