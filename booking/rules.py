"""Pure rules of booking: states and transitions, held ranges, what a request must satisfy.

Invariants owned here: a booking's held range is ``[start, end + buffer)`` and bookings in a
held status never overlap on one instrument (the database enforces it; these rules explain
it); every problem with a request is reported at once, each marked whether a lab manager may
override it; times are aware UTC, slots align to the facility's local midnight.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

from core.errors import Problem
from instruments.rules import Interval, merge, subtract


class BookingStatus(StrEnum):
    OFFERED = "offered"
    PENDING = "pending"
    CONFIRMED = "confirmed"
    IN_USE = "in_use"
    COMPLETED = "completed"
    NO_SHOW = "no_show"
    CANCELLED = "cancelled"
    REJECTED = "rejected"
    EXPIRED = "expired"


HELD_STATUSES = frozenset(
    {BookingStatus.OFFERED, BookingStatus.PENDING, BookingStatus.CONFIRMED, BookingStatus.IN_USE}
)
# Which status each action may start from.
TRANSITIONS: dict[str, frozenset[BookingStatus]] = {
    "approve": frozenset({BookingStatus.PENDING}),
    "reject": frozenset({BookingStatus.PENDING}),
    "cancel": frozenset({BookingStatus.OFFERED, BookingStatus.PENDING, BookingStatus.CONFIRMED}),
    "check_in": frozenset({BookingStatus.CONFIRMED}),
    "check_out": frozenset({BookingStatus.IN_USE}),
    "no_show": frozenset({BookingStatus.CONFIRMED}),
    "expire": frozenset({BookingStatus.PENDING}),
    "move": frozenset({BookingStatus.PENDING, BookingStatus.CONFIRMED}),
    "hand_over": frozenset({BookingStatus.PENDING, BookingStatus.CONFIRMED}),
}


class OperatedBy(StrEnum):
    SELF = "self"  # the user runs the instrument (needs a qualification)
    STAFF = "staff"  # the facility's staff run it


@dataclass(frozen=True)
class InstrumentBookingRules:
    slot_minutes: int
    min_duration_minutes: int
    max_duration_minutes: int
    max_advance_days: int
    min_notice_minutes: int
    buffer_minutes: int
    unattended_runs_allowed: bool
    zone: ZoneInfo


def held_until(end: datetime, buffer_minutes: int) -> datetime:
    return end + timedelta(minutes=buffer_minutes)


def is_aligned(moment: datetime, slot_minutes: int, zone: ZoneInfo) -> bool:
    local = moment.astimezone(zone)
    if local.second or local.microsecond:
        return False
    return (local.hour * 60 + local.minute) % slot_minutes == 0


def request_problems(
    *,
    start: datetime,
    end: datetime,
    now: datetime,
    rules: InstrumentBookingRules,
    open_intervals: Sequence[Interval],
    outages: Sequence[Interval],
) -> list[Problem]:
    """Every problem of a requested ``[start, end)`` against the instrument's rules and open time.

    Overlap with other bookings is checked separately (it depends on the database's state).
    """
    problems: list[Problem] = []
    if end <= start:
        return [Problem("end_not_after_start", "The end must be after the start.", "end")]
    if start < now:
        problems.append(Problem("in_past", "The booking starts in the past.", "start"))
    if not is_aligned(start, rules.slot_minutes, rules.zone):
        problems.append(
            Problem(
                "not_aligned", f"Start on a {rules.slot_minutes}-minute slot boundary.", "start"
            )
        )
    if not is_aligned(end, rules.slot_minutes, rules.zone):
        problems.append(
            Problem("not_aligned", f"End on a {rules.slot_minutes}-minute slot boundary.", "end")
        )
    minutes = (end - start).total_seconds() / 60
    if minutes < rules.min_duration_minutes:
        problems.append(
            Problem(
                "too_short", f"Book at least {rules.min_duration_minutes} minutes.", "end", True
            )
        )
    if minutes > rules.max_duration_minutes:
        problems.append(
            Problem("too_long", f"Book at most {rules.max_duration_minutes} minutes.", "end", True)
        )
    if start >= now and start - now < timedelta(minutes=rules.min_notice_minutes):
        problems.append(
            Problem(
                "too_short_notice",
                f"Book at least {rules.min_notice_minutes} minutes ahead.",
                "start",
                True,
            )
        )
    if start - now > timedelta(days=rules.max_advance_days):
        problems.append(
            Problem(
                "too_far_ahead", f"Book at most {rules.max_advance_days} days ahead.", "start", True
            )
        )
    if any(s < end and start < e for s, e in outages):
        problems.append(Problem("during_outage", "The instrument is out of service then.", "start"))
    elif not fits_open_time(start, end, open_intervals, rules.unattended_runs_allowed):
        problems.append(
            Problem(
                "outside_opening_hours",
                "The instrument is not open for the whole time."
                if not rules.unattended_runs_allowed
                else "An unattended run must start while the facility is open.",
                "start",
                True,
            )
        )
    return problems


def fits_open_time(
    start: datetime, end: datetime, open_intervals: Sequence[Interval], unattended: bool
) -> bool:
    """Inside one open interval; an unattended run only needs to start in one."""
    if unattended:
        return any(s <= start < e for s, e in open_intervals)
    return any(s <= start and end <= e for s, e in open_intervals)


def free_intervals(
    open_intervals: Sequence[Interval],
    held: Sequence[Interval],
    *,
    slot_minutes: int,
    zone: ZoneInfo,
    min_minutes: int = 0,
    buffer_minutes: int = 0,
) -> list[Interval]:
    """Open time minus held ranges, trimmed inward to slot boundaries, at least ``min_minutes``.

    A booking ending where a held range starts would hold its own buffer into it, so each held
    range also takes the ``buffer_minutes`` before it: what is free is bookable as it stands.
    """
    result = []
    slot = timedelta(minutes=slot_minutes)
    buffer = timedelta(minutes=buffer_minutes)
    for start, end in subtract(open_intervals, merge((s - buffer, e) for s, e in held)):
        aligned_start = _ceil_to_slot(start, slot_minutes, zone)
        aligned_end = _floor_to_slot(end, slot_minutes, zone)
        if aligned_end - aligned_start >= max(slot, timedelta(minutes=min_minutes)):
            result.append((aligned_start, aligned_end))
    return result


def _floor_to_slot(moment: datetime, slot_minutes: int, zone: ZoneInfo) -> datetime:
    local = moment.astimezone(zone)
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
    minutes = int((local - midnight).total_seconds() // 60)
    return (midnight + timedelta(minutes=minutes - minutes % slot_minutes)).astimezone(
        moment.tzinfo
    )


def _ceil_to_slot(moment: datetime, slot_minutes: int, zone: ZoneInfo) -> datetime:
    floored = _floor_to_slot(moment, slot_minutes, zone)
    return floored if floored == moment else floored + timedelta(minutes=slot_minutes)


def is_late_cancellation(now: datetime, start: datetime, deadline_hours: int) -> bool:
    """Cancelling after the deadline (hours before the start) is a late cancellation."""
    return now > start - timedelta(hours=deadline_hours)
