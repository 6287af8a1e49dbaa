"""Open intervals, opening-hour and booking-rule validation, customer classes (pure rules)."""

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.accounts.rules import OrganisationType
from instruments import holidays
from instruments.rules import (
    BookingRules,
    CustomerClass,
    DayKind,
    OpeningSpan,
    booking_rules_problems,
    customer_class,
    is_large_instrument,
    merge,
    open_intervals,
    opening_hours_problems,
    subtract,
)

SHANGHAI = ZoneInfo("Asia/Shanghai")
OFFICE_HOURS = {d: [(8 * 60 + 30, 12 * 60), (14 * 60, 17 * 60 + 30)] for d in range(5)}


def local(*args: int, zone: ZoneInfo = SHANGHAI) -> datetime:
    return datetime(*args, tzinfo=zone)  # type: ignore[misc]


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def ordinary_days(day: date) -> DayKind:
    return DayKind.WEEKEND if day.weekday() >= 5 else DayKind.WORKDAY


def test_office_hours_become_utc_intervals() -> None:
    # Monday 30 November and Tuesday 1 December 2026, an ordinary week.
    result = open_intervals(
        local(2026, 11, 30),
        local(2026, 12, 2),
        zone=SHANGHAI,
        weekly_hours=OFFICE_HOURS,
        day_kind=holidays.day_kind,
    )
    assert result == [
        (utc(2026, 11, 30, 0, 30), utc(2026, 11, 30, 4)),
        (utc(2026, 11, 30, 6), utc(2026, 11, 30, 9, 30)),
        (utc(2026, 12, 1, 0, 30), utc(2026, 12, 1, 4)),
        (utc(2026, 12, 1, 6), utc(2026, 12, 1, 9, 30)),
    ]


def test_the_period_clips_the_first_and_last_interval() -> None:
    result = open_intervals(
        local(2026, 11, 30, 10),
        local(2026, 11, 30, 15),
        zone=SHANGHAI,
        weekly_hours=OFFICE_HOURS,
        day_kind=holidays.day_kind,
    )
    assert result == [
        (utc(2026, 11, 30, 2), utc(2026, 11, 30, 4)),
        (utc(2026, 11, 30, 6), utc(2026, 11, 30, 7)),
    ]


def test_statutory_holidays_are_closed_unless_the_facility_opens_them() -> None:
    # 1 October 2026 (Thursday) is National Day.
    period = (local(2026, 10, 1), local(2026, 10, 2))
    assert (
        open_intervals(
            *period, zone=SHANGHAI, weekly_hours=OFFICE_HOURS, day_kind=holidays.day_kind
        )
        == []
    )
    opened = open_intervals(
        *period,
        zone=SHANGHAI,
        weekly_hours=OFFICE_HOURS,
        day_kind=holidays.day_kind,
        opens_on_holidays=True,
    )
    assert len(opened) == 2


def test_a_make_up_working_day_opens_with_mondays_hours() -> None:
    # Saturday 10 October 2026 is worked in exchange for the National Day week (调休).
    assert holidays.day_kind(date(2026, 10, 10)) is DayKind.MAKEUP_WORKDAY
    result = open_intervals(
        local(2026, 10, 10),
        local(2026, 10, 11),
        zone=SHANGHAI,
        weekly_hours=OFFICE_HOURS,
        day_kind=holidays.day_kind,
    )
    assert result == [
        (utc(2026, 10, 10, 0, 30), utc(2026, 10, 10, 4)),
        (utc(2026, 10, 10, 6), utc(2026, 10, 10, 9, 30)),
    ]
    # The next Saturday is an ordinary weekend day: closed.
    assert (
        open_intervals(
            local(2026, 10, 17),
            local(2026, 10, 18),
            zone=SHANGHAI,
            weekly_hours=OFFICE_HOURS,
            day_kind=holidays.day_kind,
        )
        == []
    )


def test_the_facilitys_own_closures_close_whole_days() -> None:
    result = open_intervals(
        local(2026, 11, 30),
        local(2026, 12, 3),
        zone=SHANGHAI,
        weekly_hours=OFFICE_HOURS,
        day_kind=ordinary_days,
        closed_dates=[(date(2026, 11, 30), date(2026, 12, 1))],
    )
    assert [start.date() for start, _ in result] == [date(2026, 12, 2), date(2026, 12, 2)]


def test_an_outage_over_several_days_cuts_into_open_time() -> None:
    round_the_clock = {d: [(0, 1440)] for d in range(7)}
    result = open_intervals(
        local(2026, 12, 1),
        local(2026, 12, 5),
        zone=SHANGHAI,
        weekly_hours=round_the_clock,
        day_kind=ordinary_days,
        outages=[(local(2026, 12, 1, 18), local(2026, 12, 3, 9))],
    )
    # Days join into one interval across midnights; the outage splits it in two.
    assert result == [
        (local(2026, 12, 1).astimezone(UTC), local(2026, 12, 1, 18).astimezone(UTC)),
        (local(2026, 12, 3, 9).astimezone(UTC), local(2026, 12, 5).astimezone(UTC)),
    ]


def test_opening_hours_follow_the_wall_clock_across_a_dst_change() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    nine_to_five = {d: [(9 * 60, 17 * 60)] for d in range(7)}
    result = open_intervals(
        local(2026, 3, 28, zone=berlin),
        local(2026, 3, 30, zone=berlin),
        zone=berlin,
        weekly_hours=nine_to_five,
        day_kind=ordinary_days,
    )
    assert result == [
        (utc(2026, 3, 28, 8), utc(2026, 3, 28, 16)),
        (utc(2026, 3, 29, 7), utc(2026, 3, 29, 15)),
    ]


def test_an_empty_or_inverted_period_has_no_open_time() -> None:
    kwargs = {"zone": SHANGHAI, "weekly_hours": OFFICE_HOURS, "day_kind": ordinary_days}
    assert open_intervals(local(2026, 12, 1), local(2026, 12, 1), **kwargs) == []  # type: ignore[arg-type]
    assert open_intervals(local(2026, 12, 2), local(2026, 12, 1), **kwargs) == []  # type: ignore[arg-type]


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        open_intervals(
            datetime(2026, 12, 1),  # noqa: DTZ001
            datetime(2026, 12, 2),  # noqa: DTZ001
            zone=SHANGHAI,
            weekly_hours=OFFICE_HOURS,
            day_kind=ordinary_days,
        )


@pytest.mark.parametrize(
    ("spans", "codes"),
    [
        ([OpeningSpan(0, 480, 720), OpeningSpan(0, 840, 1050)], []),
        ([OpeningSpan(0, 480, 720), OpeningSpan(0, 720, 1050)], []),  # touching is fine
        ([OpeningSpan(0, 480, 720), OpeningSpan(0, 700, 1050)], ["overlapping_hours"]),
        ([OpeningSpan(1, 720, 480)], ["end_not_after_start"]),
        ([OpeningSpan(1, 600, 600)], ["end_not_after_start"]),
        ([OpeningSpan(7, 480, 720)], ["invalid_weekday"]),
        ([OpeningSpan(2, 0, 1441)], ["out_of_day"]),
        ([OpeningSpan(2, 0, 1440)], []),
        (
            [OpeningSpan(3, 800, 700), OpeningSpan(8, 0, 60)],
            ["end_not_after_start", "invalid_weekday"],
        ),
    ],
)
def test_opening_hours_problems_are_all_reported(
    spans: list[OpeningSpan], codes: list[str]
) -> None:
    assert [p.code for p in opening_hours_problems(spans)] == codes


BASE_RULES = BookingRules(30, 30, 480, 60, 60, 0, 24, 50, 50)


@pytest.mark.parametrize(
    ("changes", "fields"),
    [
        ({}, []),
        ({"slot_minutes": 7}, ["slot_minutes"]),
        ({"min_duration_minutes": 45}, ["min_duration_minutes"]),
        ({"max_duration_minutes": 20}, ["max_duration_minutes", "max_duration_minutes"]),
        (
            {"late_cancel_charge_percent": 120, "buffer_minutes": -5},
            ["buffer_minutes", "late_cancel_charge_percent"],
        ),
        ({"max_advance_days": 0}, ["max_advance_days"]),
    ],
)
def test_booking_rules_problems(changes: dict[str, int], fields: list[str]) -> None:
    rules = BookingRules(**(BASE_RULES.__dict__ | changes))
    assert sorted(p.field for p in booking_rules_problems(rules)) == sorted(fields)


@pytest.mark.parametrize(
    ("user_org", "user_type", "klass"),
    [
        (1, OrganisationType.UNIVERSITY, CustomerClass.INTERNAL),
        (2, OrganisationType.UNIVERSITY, CustomerClass.EXTERNAL_ACADEMIC),
        (2, OrganisationType.INSTITUTE, CustomerClass.EXTERNAL_ACADEMIC),
        (2, OrganisationType.GOVERNMENT, CustomerClass.EXTERNAL_ACADEMIC),
        (2, OrganisationType.ENTERPRISE, CustomerClass.ENTERPRISE),
        (None, None, CustomerClass.ENTERPRISE),
    ],
)
def test_customer_class(
    user_org: int | None, user_type: OrganisationType | None, klass: CustomerClass
) -> None:
    assert (
        customer_class(
            user_organisation_id=user_org,
            user_organisation_type=user_type,
            facility_organisation_id=1,
        )
        is klass
    )


def test_large_instruments_start_at_half_a_million_yuan() -> None:
    assert is_large_instrument(500_000_00)
    assert not is_large_instrument(499_999_99)
    assert not is_large_instrument(None)


minutes = st.integers(min_value=0, max_value=7 * 24 * 60)
intervals = st.lists(st.tuples(minutes, minutes).map(sorted), max_size=12)
T0 = utc(2026, 12, 1)


def as_times(pairs: list[list[int]]) -> list[tuple[datetime, datetime]]:
    return [(T0 + timedelta(minutes=a), T0 + timedelta(minutes=b)) for a, b in pairs]


@given(intervals, intervals)
def test_subtracting_holes_leaves_disjoint_sorted_time_outside_every_hole(
    base: list[list[int]], holes: list[list[int]]
) -> None:
    result = subtract(as_times(base), as_times(holes))
    assert result == merge(result)  # sorted, disjoint, nothing empty
    for start, end in result:
        assert all(end <= hs or start >= he for hs, he in as_times(holes) if hs < he)
        assert any(bs <= start and end <= be for bs, be in merge(as_times(base)))
    # Nothing of the base outside the holes is lost.
    covered = sum(((e - s) for s, e in result), timedelta())
    base_total = sum(((e - s) for s, e in merge(as_times(base))), timedelta())
    overlap = sum(
        (
            max(timedelta(), min(be, he) - max(bs, hs))
            for bs, be in merge(as_times(base))
            for hs, he in merge(as_times(holes))
        ),
        timedelta(),
    )
    assert covered == base_total - overlap
