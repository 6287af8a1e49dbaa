"""Pure rules of the catalogue: categories, customer classes, validation, open intervals.

Invariants owned here: intervals are half-open ``[start, end)`` in aware UTC; opening hours are
local wall-clock minutes of a facility's zone, expanded with ``zoneinfo`` (never a fixed
``+08:00``); an instrument's open time is its facility's opening hours minus statutory holidays
(make-up working days 调休 open), minus the facility's closures, minus outages.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from itertools import pairwise
from zoneinfo import ZoneInfo

from core.accounts.rules import OrganisationType
from core.errors import Problem

MINUTES_PER_DAY = 24 * 60
DEFAULT_RATED_HOURS = 1400  # 7 h × 5 days × 40 weeks, Chongqing's own statistics
SPECIAL_PURPOSE_RATED_HOURS = 800
LARGE_INSTRUMENT_YUAN = 500_000  # scope of the national open-sharing evaluation

Interval = tuple[datetime, datetime]


class Category(StrEnum):
    """Top level of the national large-instrument classification."""

    ANALYTICAL = "analytical"
    PHYSICAL_PROPERTY = "physical_property"
    METROLOGY = "metrology"
    ELECTRONIC_MEASUREMENT = "electronic_measurement"
    OCEAN = "ocean"
    EARTH_EXPLORATION = "earth_exploration"
    ATMOSPHERIC = "atmospheric"
    SPECIAL_TESTING = "special_testing"
    LASER = "laser"
    PROCESS_TESTING = "process_testing"
    COMPUTING = "computing"
    ASTRONOMICAL = "astronomical"
    MEDICAL_RESEARCH = "medical_research"
    NUCLEAR = "nuclear"
    OTHER = "other"


CATEGORY_NAMES: dict[Category, tuple[str, str]] = {
    Category.ANALYTICAL: ("分析仪器", "Analytical instruments"),
    Category.PHYSICAL_PROPERTY: ("物理性能测试仪器", "Physical property testing"),
    Category.METROLOGY: ("计量仪器", "Metrology instruments"),
    Category.ELECTRONIC_MEASUREMENT: ("电子测量仪器", "Electronic measurement"),
    Category.OCEAN: ("海洋仪器", "Ocean instruments"),
    Category.EARTH_EXPLORATION: ("地球探测仪器", "Earth exploration"),
    Category.ATMOSPHERIC: ("大气探测仪器", "Atmospheric sounding"),
    Category.SPECIAL_TESTING: ("特种检测仪器", "Special testing"),
    Category.LASER: ("激光器", "Lasers"),
    Category.PROCESS_TESTING: ("工艺试验仪器", "Process testing"),
    Category.COMPUTING: ("计算机及其配套设备", "Computers and peripherals"),
    Category.ASTRONOMICAL: ("天文仪器", "Astronomical instruments"),
    Category.MEDICAL_RESEARCH: ("医学科研仪器", "Medical research"),
    Category.NUCLEAR: ("核仪器", "Nuclear instruments"),
    Category.OTHER: ("其他", "Other"),
}
CATEGORY_BY_CHINESE = {zh: category for category, (zh, _) in CATEGORY_NAMES.items()}


class InstrumentStatus(StrEnum):
    ACTIVE = "active"
    MAINTENANCE = "maintenance"
    RETIRED = "retired"


class OperationMode(StrEnum):
    SELF_OPERATED = "self_operated"
    STAFF_OPERATED = "staff_operated"
    BOTH = "both"


class ApprovalMode(StrEnum):
    AUTOMATIC_FOR_QUALIFIED = "automatic_for_qualified"
    MANUAL = "manual"


class CustomerClass(StrEnum):
    INTERNAL = "internal"  # 校内: the facility's own organisation
    EXTERNAL_ACADEMIC = "external_academic"
    ENTERPRISE = "enterprise"


class OutageKind(StrEnum):
    MAINTENANCE = "maintenance"
    CALIBRATION = "calibration"
    REPAIR = "repair"
    OTHER = "other"


class DayKind(StrEnum):
    WORKDAY = "workday"
    WEEKEND = "weekend"
    HOLIDAY = "holiday"  # a statutory holiday (法定节假日), weekend days inside one included
    MAKEUP_WORKDAY = "makeup_workday"  # a weekend day worked in exchange (调休上班)


# A make-up working day keeps the hours of an ordinary working day: Monday's.
MAKEUP_DAY_HOURS_FROM = 0


def customer_class(
    *,
    user_organisation_id: int | None,
    user_organisation_type: OrganisationType | None,
    facility_organisation_id: int,
) -> CustomerClass:
    """Which price list applies: own organisation, other academia/government, or enterprise."""
    if user_organisation_id is not None and user_organisation_id == facility_organisation_id:
        return CustomerClass.INTERNAL
    if user_organisation_type in (
        OrganisationType.UNIVERSITY,
        OrganisationType.INSTITUTE,
        OrganisationType.GOVERNMENT,
    ):
        return CustomerClass.EXTERNAL_ACADEMIC
    return CustomerClass.ENTERPRISE


def is_large_instrument(
    purchase_value_fen: int | None, threshold_yuan: int = LARGE_INSTRUMENT_YUAN
) -> bool:
    return purchase_value_fen is not None and purchase_value_fen >= threshold_yuan * 100


def default_rated_hours(special_purpose: bool) -> int:
    return SPECIAL_PURPOSE_RATED_HOURS if special_purpose else DEFAULT_RATED_HOURS


@dataclass(frozen=True)
class OpeningSpan:
    """One interval of a weekday's opening hours, in local minutes after midnight."""

    weekday: int  # 0 = Monday
    start_minute: int
    end_minute: int  # up to 1440 (midnight at the end of the day)


def opening_hours_problems(
    spans: Sequence[OpeningSpan], field: str = "opening_hours"
) -> list[Problem]:
    """Every problem of a week's opening hours: bad weekday, inverted or overlapping intervals."""
    problems: list[Problem] = []
    by_day: dict[int, list[tuple[int, OpeningSpan]]] = {}
    for index, span in enumerate(spans):
        where = f"{field}.{index}"
        if not 0 <= span.weekday <= 6:
            problems.append(
                Problem("invalid_weekday", "Weekday must be 0 (Monday) to 6 (Sunday).", where)
            )
            continue
        if not (
            0 <= span.start_minute < MINUTES_PER_DAY and 0 < span.end_minute <= MINUTES_PER_DAY
        ):
            problems.append(
                Problem("out_of_day", "Opening times must lie within the day (00:00–24:00).", where)
            )
            continue
        if span.end_minute <= span.start_minute:
            problems.append(
                Problem(
                    "end_not_after_start", "An opening interval must end after it starts.", where
                )
            )
            continue
        by_day.setdefault(span.weekday, []).append((index, span))
    for spans_of_day in by_day.values():
        ordered = sorted(spans_of_day, key=lambda item: item[1].start_minute)
        for (_, previous), (index, current) in pairwise(ordered):
            if current.start_minute < previous.end_minute:
                problems.append(
                    Problem(
                        "overlapping_hours",
                        "Opening intervals of one day must not overlap.",
                        f"{field}.{index}",
                    )
                )
    return problems


@dataclass(frozen=True)
class BookingRules:
    slot_minutes: int
    min_duration_minutes: int
    max_duration_minutes: int
    max_advance_days: int
    min_notice_minutes: int
    buffer_minutes: int
    cancellation_deadline_hours: int
    late_cancel_charge_percent: int
    no_show_charge_percent: int


def booking_rules_problems(rules: BookingRules) -> list[Problem]:
    problems: list[Problem] = []
    slot = rules.slot_minutes
    if slot < 5 or MINUTES_PER_DAY % slot:
        problems.append(
            Problem(
                "invalid_slot",
                "The slot must be at least 5 minutes and divide a day evenly.",
                "slot_minutes",
            )
        )
        slot = 0
    if slot and (rules.min_duration_minutes < slot or rules.min_duration_minutes % slot):
        problems.append(
            Problem(
                "invalid_duration",
                "The minimum duration must be a whole number of slots.",
                "min_duration_minutes",
            )
        )
    if slot and rules.max_duration_minutes % slot:
        problems.append(
            Problem(
                "invalid_duration",
                "The maximum duration must be a whole number of slots.",
                "max_duration_minutes",
            )
        )
    if rules.max_duration_minutes < rules.min_duration_minutes:
        problems.append(
            Problem(
                "max_below_min",
                "The maximum duration is below the minimum.",
                "max_duration_minutes",
            )
        )
    if not 1 <= rules.max_advance_days <= 730:
        problems.append(
            Problem("out_of_range", "Bookings may open 1 to 730 days ahead.", "max_advance_days")
        )
    for name in ("min_notice_minutes", "buffer_minutes", "cancellation_deadline_hours"):
        if getattr(rules, name) < 0:
            problems.append(Problem("negative", "Must not be negative.", name))
    for name in ("late_cancel_charge_percent", "no_show_charge_percent"):
        if not 0 <= getattr(rules, name) <= 100:
            problems.append(Problem("out_of_range", "A charge is 0 to 100 percent.", name))
    return problems


def merge(intervals: Iterable[Interval]) -> list[Interval]:
    """Sorted, with overlapping or touching intervals joined."""
    merged: list[Interval] = []
    for start, end in sorted(i for i in intervals if i[0] < i[1]):
        if merged and start <= merged[-1][1]:
            if end > merged[-1][1]:
                merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged


def subtract(intervals: Sequence[Interval], holes: Sequence[Interval]) -> list[Interval]:
    """``intervals`` minus ``holes``; both are merged first, the result stays sorted."""
    result: list[Interval] = []
    holes = merge(holes)
    for start, end in merge(intervals):
        cursor = start
        for hole_start, hole_end in holes:
            if hole_end <= cursor:
                continue
            if hole_start >= end:
                break
            if hole_start > cursor:
                result.append((cursor, hole_start))
            cursor = max(cursor, hole_end)
            if cursor >= end:
                break
        if cursor < end:
            result.append((cursor, end))
    return result


def clip(intervals: Iterable[Interval], start: datetime, end: datetime) -> list[Interval]:
    return [(max(s, start), min(e, end)) for s, e in intervals if s < end and e > start]


def _local(day: date, minute: int, zone: ZoneInfo) -> datetime:
    if minute >= MINUTES_PER_DAY:
        return datetime.combine(day + timedelta(days=1), time(0), tzinfo=zone)
    return datetime.combine(day, time(minute // 60, minute % 60), tzinfo=zone)


def open_intervals(
    start: datetime,
    end: datetime,
    *,
    zone: ZoneInfo,
    weekly_hours: Mapping[int, Sequence[tuple[int, int]]],
    day_kind: Callable[[date], DayKind],
    opens_on_holidays: bool = False,
    closed_dates: Iterable[tuple[date, date]] = (),
    outages: Iterable[Interval] = (),
) -> list[Interval]:
    """When an instrument is open within ``[start, end)``, as merged UTC intervals.

    ``weekly_hours`` maps a weekday (0 = Monday) to local ``(start_minute, end_minute)`` pairs;
    ``closed_dates`` are inclusive local date ranges (the facility's own closures).
    """
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("open_intervals needs aware datetimes")
    if end <= start:
        return []
    closures = list(closed_dates)
    first = start.astimezone(zone).date() - timedelta(days=1)
    last = end.astimezone(zone).date()
    spans: list[Interval] = []
    day = first
    while day <= last:
        if not any(lo <= day <= hi for lo, hi in closures):
            kind = day_kind(day)
            hours: Sequence[tuple[int, int]] = ()
            if kind is DayKind.MAKEUP_WORKDAY:
                hours = weekly_hours.get(MAKEUP_DAY_HOURS_FROM, ())
            elif kind is not DayKind.HOLIDAY or opens_on_holidays:
                hours = weekly_hours.get(day.weekday(), ())
            for open_minute, close_minute in hours:
                spans.append(
                    (
                        _local(day, open_minute, zone).astimezone(UTC),
                        _local(day, close_minute, zone).astimezone(UTC),
                    )
                )
        day += timedelta(days=1)
    utc_start, utc_end = start.astimezone(UTC), end.astimezone(UTC)
    return subtract(
        clip(merge(spans), utc_start, utc_end),
        [(s.astimezone(UTC), e.astimezone(UTC)) for s, e in outages],
    )
