"""Booking rules without a database: what a request must satisfy, free time, late cancellations,
which action may start from which status."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from booking.rules import (
    HELD_STATUSES,
    TRANSITIONS,
    BookingStatus,
    InstrumentBookingRules,
    free_intervals,
    is_aligned,
    is_late_cancellation,
    request_problems,
)
from instruments.rules import Interval, subtract

SHANGHAI = ZoneInfo("Asia/Shanghai")
KOLKATA = ZoneInfo("Asia/Kolkata")  # UTC+05:30: its whole hours are half hours in UTC


def at(local: str, zone: ZoneInfo = SHANGHAI) -> datetime:
    """A facility-local wall-clock time such as "2026-12-01 10:00", as aware UTC."""
    return datetime.fromisoformat(local).replace(tzinfo=zone).astimezone(UTC)


NOW = at("2026-11-30 09:00")  # a Monday of an ordinary week
RULES = InstrumentBookingRules(
    slot_minutes=30,
    min_duration_minutes=30,
    max_duration_minutes=480,
    max_advance_days=60,
    min_notice_minutes=60,
    buffer_minutes=0,
    unattended_runs_allowed=False,
    zone=SHANGHAI,
)


def weekdays_9_to_5(first: str, days: int) -> list[Interval]:
    start = datetime.fromisoformat(first)
    return [
        (at(f"{day:%Y-%m-%d} 09:00"), at(f"{day:%Y-%m-%d} 17:00"))
        for day in (start + timedelta(days=n) for n in range(days))
        if day.weekday() < 5
    ]


OPEN = weekdays_9_to_5("2026-11-23", 70)  # up to the end of January 2027


def problems_of(
    start: str,
    end: str,
    *,
    outages: list[tuple[str, str]] = (),  # type: ignore[assignment]
    **rule_changes: object,
) -> list[tuple[str, str | None]]:
    """(code, field) of every problem of a request given in Shanghai wall-clock times."""
    outage_intervals = [(at(s), at(e)) for s, e in outages]
    problems = request_problems(
        start=at(start),
        end=at(end),
        now=NOW,
        rules=replace(RULES, **rule_changes),  # type: ignore[arg-type]
        open_intervals=subtract(OPEN, outage_intervals),
        outages=outage_intervals,
    )
    return [(p.code, p.field) for p in problems]


@pytest.mark.parametrize(
    ("start", "end", "changes", "expected"),
    [
        pytest.param("2026-12-01 10:00", "2026-12-01 12:00", {}, [], id="a good request"),
        pytest.param(
            "2026-12-01 12:00",
            "2026-12-01 10:00",
            {},
            [("end_not_after_start", "end")],
            id="end before start",
        ),
        pytest.param(
            "2026-12-01 10:00",
            "2026-12-01 10:00",
            {},
            [("end_not_after_start", "end")],
            id="zero length",
        ),
        pytest.param(
            "2026-11-27 10:00", "2026-11-27 11:00", {}, [("in_past", "start")], id="in the past"
        ),
        pytest.param(
            "2026-12-01 10:15",
            "2026-12-01 11:00",
            {},
            [("not_aligned", "start")],
            id="start between slots",
        ),
        pytest.param(
            "2026-12-01 10:00",
            "2026-12-01 11:10",
            {},
            [("not_aligned", "end")],
            id="end between slots",
        ),
        pytest.param(
            "2026-12-01 09:00",
            "2026-12-01 12:00",
            {"slot_minutes": 180},
            [],
            id="three-hour slots count from local midnight, not UTC midnight",
        ),
        pytest.param(
            "2026-12-01 10:00",
            "2026-12-01 13:00",
            {"slot_minutes": 180},
            [("not_aligned", "start"), ("not_aligned", "end")],
            id="three-hour slots, both ends between slots",
        ),
        pytest.param(
            "2026-12-01 10:00",
            "2026-12-01 10:30",
            {"min_duration_minutes": 60},
            [("too_short", "end")],
            id="shorter than the minimum",
        ),
        pytest.param(
            "2026-12-01 09:00",
            "2026-12-01 17:00",
            {"max_duration_minutes": 240},
            [("too_long", "end")],
            id="longer than the maximum",
        ),
        pytest.param(
            "2026-11-30 09:30",
            "2026-11-30 10:30",
            {},
            [("too_short_notice", "start")],
            id="less notice than required",
        ),
        pytest.param(
            "2026-11-30 10:00", "2026-11-30 11:00", {}, [], id="exactly the notice required"
        ),
        pytest.param(
            "2026-11-30 09:30", "2026-11-30 10:30", {"min_notice_minutes": 0}, [], id="no notice"
        ),
        pytest.param(
            "2027-01-29 09:00", "2027-01-29 10:00", {}, [], id="exactly the furthest ahead"
        ),
        pytest.param(
            "2027-01-29 09:30",
            "2027-01-29 10:30",
            {},
            [("too_far_ahead", "start")],
            id="further ahead than allowed",
        ),
        pytest.param(
            "2026-12-01 16:00",
            "2026-12-01 18:00",
            {},
            [("outside_opening_hours", "start")],
            id="running past closing time",
        ),
        pytest.param(
            "2026-12-05 10:00",
            "2026-12-05 11:00",
            {},
            [("outside_opening_hours", "start")],
            id="on a Saturday",
        ),
        pytest.param(
            "2026-12-01 16:00",
            "2026-12-02 10:00",
            {"unattended_runs_allowed": True, "max_duration_minutes": 1440},
            [],
            id="an unattended run only needs to start in open time",
        ),
        pytest.param(
            "2026-12-01 18:00",
            "2026-12-02 10:00",
            {"unattended_runs_allowed": True, "max_duration_minutes": 1440},
            [("outside_opening_hours", "start")],
            id="an unattended run starting after closing time",
        ),
        pytest.param(
            "2026-11-27 07:10",
            "2026-11-27 07:20",
            {"min_duration_minutes": 60},
            [
                ("in_past", "start"),
                ("not_aligned", "start"),
                ("not_aligned", "end"),
                ("too_short", "end"),
                ("outside_opening_hours", "start"),
            ],
            id="every problem at once",
        ),
    ],
)
def test_a_request_is_checked_against_every_rule_at_once(
    start: str, end: str, changes: dict, expected: list
) -> None:
    assert problems_of(start, end, **changes) == expected


def test_a_request_during_an_outage_says_so_rather_than_closed() -> None:
    outage = [("2026-12-01 11:00", "2026-12-03 12:00")]
    assert problems_of("2026-12-01 10:00", "2026-12-01 12:00", outages=outage) == [
        ("during_outage", "start")
    ]
    assert problems_of("2026-12-02 10:00", "2026-12-02 11:00", outages=outage) == [
        ("during_outage", "start")
    ]
    # Half-open intervals: ending as the outage starts, or starting as it ends, is fine.
    assert problems_of("2026-12-01 10:00", "2026-12-01 11:00", outages=outage) == []
    assert problems_of("2026-12-03 12:00", "2026-12-03 13:00", outages=outage) == []


def test_an_unattended_run_may_not_start_during_an_outage() -> None:
    problems = problems_of(
        "2026-12-01 16:00",
        "2026-12-02 10:00",
        outages=[("2026-12-01 20:00", "2026-12-01 22:00")],
        unattended_runs_allowed=True,
        max_duration_minutes=1440,
    )
    assert problems == [("during_outage", "start")]


def test_a_lab_manager_may_override_limits_and_opening_hours_but_not_facts() -> None:
    overridable = {
        p.code: p.overridable
        for p in request_problems(
            start=at("2026-11-27 07:10"),
            end=at("2026-11-27 07:20"),
            now=NOW,
            rules=replace(RULES, min_duration_minutes=60),
            open_intervals=OPEN,
            outages=[],
        )
        + request_problems(
            start=at("2026-11-30 09:30"),
            end=at("2026-11-30 17:30"),
            now=NOW,
            rules=replace(RULES, max_duration_minutes=240),
            open_intervals=OPEN,
            outages=[],
        )
        + request_problems(
            start=at("2027-01-29 10:00"),
            end=at("2027-01-29 11:00"),
            now=NOW,
            rules=RULES,
            open_intervals=OPEN,
            outages=[(at("2027-01-29 00:00"), at("2027-01-30 00:00"))],
        )
        + request_problems(
            start=at("2026-12-01 11:00"),
            end=at("2026-12-01 10:00"),
            now=NOW,
            rules=RULES,
            open_intervals=OPEN,
            outages=[],
        )
    }
    assert overridable == {
        "in_past": False,
        "not_aligned": False,
        "too_short": True,
        "outside_opening_hours": True,
        "too_short_notice": True,
        "too_long": True,
        "too_far_ahead": True,
        "during_outage": False,
        "end_not_after_start": False,
    }


@pytest.mark.parametrize(
    ("moment", "slot_minutes", "zone", "aligned"),
    [
        (at("2026-12-01 10:30"), 30, SHANGHAI, True),
        (at("2026-12-01 10:30"), 60, SHANGHAI, False),
        (at("2026-12-01 00:00"), 1440, SHANGHAI, True),
        (at("2026-12-01 08:00"), 1440, SHANGHAI, False),  # midnight UTC is not midnight here
        (at("2026-12-01 10:00") + timedelta(seconds=1), 30, SHANGHAI, False),
        (at("2026-12-01 10:00", KOLKATA), 60, KOLKATA, True),  # 04:30 UTC
        (datetime(2026, 12, 1, 4, 0, tzinfo=UTC), 60, KOLKATA, False),  # 09:30 in Kolkata
    ],
)
def test_slots_are_counted_in_the_facility_zone(
    moment: datetime, slot_minutes: int, zone: ZoneInfo, aligned: bool
) -> None:
    assert is_aligned(moment, slot_minutes, zone) is aligned


def free(
    open_intervals: list[tuple[str, str]],
    held: list[tuple[str, str]] = (),  # type: ignore[assignment]
    *,
    slot_minutes: int = 30,
    min_minutes: int = 0,
    buffer_minutes: int = 0,
    zone: ZoneInfo = SHANGHAI,
) -> list[tuple[str, str]]:
    """free_intervals on local wall-clock times, answered in the same local times."""
    result = free_intervals(
        [(at(s, zone), at(e, zone)) for s, e in open_intervals],
        [(at(s, zone), at(e, zone)) for s, e in held],
        slot_minutes=slot_minutes,
        zone=zone,
        min_minutes=min_minutes,
        buffer_minutes=buffer_minutes,
    )
    return [
        (f"{s.astimezone(zone):%Y-%m-%d %H:%M}", f"{e.astimezone(zone):%Y-%m-%d %H:%M}")
        for s, e in result
    ]


DAY = [("2026-12-01 09:00", "2026-12-01 17:00")]


@pytest.mark.parametrize(
    ("open_intervals", "held", "options", "expected"),
    [
        pytest.param(DAY, [], {}, DAY, id="nothing booked"),
        pytest.param(
            DAY,
            [("2026-12-01 10:00", "2026-12-01 11:00")],
            {},
            [("2026-12-01 09:00", "2026-12-01 10:00"), ("2026-12-01 11:00", "2026-12-01 17:00")],
            id="a booking cuts the day in two",
        ),
        pytest.param(
            DAY,
            [("2026-12-01 10:00", "2026-12-01 11:15")],
            {},
            [("2026-12-01 09:00", "2026-12-01 10:00"), ("2026-12-01 11:30", "2026-12-01 17:00")],
            id="a held range with its buffer frees from the next slot",
        ),
        pytest.param(
            [("2026-12-01 09:10", "2026-12-01 16:50")],
            [],
            {},
            [("2026-12-01 09:30", "2026-12-01 16:30")],
            id="open time is trimmed inward to slots",
        ),
        pytest.param(
            DAY,
            [("2026-12-01 09:00", "2026-12-01 09:20"), ("2026-12-01 09:40", "2026-12-01 17:00")],
            {},
            [],
            id="a gap shorter than a slot is not free",
        ),
        pytest.param(
            DAY,
            [("2026-12-01 10:00", "2026-12-01 12:00"), ("2026-12-01 11:00", "2026-12-01 13:00")],
            {},
            [("2026-12-01 09:00", "2026-12-01 10:00"), ("2026-12-01 13:00", "2026-12-01 17:00")],
            id="overlapping held ranges",
        ),
        pytest.param(
            DAY,
            [("2026-12-01 10:00", "2026-12-01 16:00")],
            {"min_minutes": 60},
            [("2026-12-01 09:00", "2026-12-01 10:00"), ("2026-12-01 16:00", "2026-12-01 17:00")],
            id="exactly the minimum length",
        ),
        pytest.param(
            DAY,
            [("2026-12-01 10:00", "2026-12-01 16:30")],
            {"min_minutes": 60},
            [("2026-12-01 09:00", "2026-12-01 10:00")],
            id="shorter than the minimum length",
        ),
        pytest.param(
            DAY,
            [("2026-12-01 13:00", "2026-12-01 14:15")],
            {"buffer_minutes": 15},
            [("2026-12-01 09:00", "2026-12-01 12:30"), ("2026-12-01 14:30", "2026-12-01 17:00")],
            id="a free interval leaves room for its own buffer before the next booking",
        ),
        pytest.param(
            [("2026-12-01 09:30", "2026-12-01 13:30")],
            [],
            {"slot_minutes": 60, "zone": KOLKATA},
            [("2026-12-01 10:00", "2026-12-01 13:00")],
            id="slots of the facility zone",
        ),
    ],
)
def test_free_time_is_open_time_minus_held_ranges_on_slots(
    open_intervals: list, held: list, options: dict, expected: list
) -> None:
    assert free(open_intervals, held, **options) == expected


@pytest.mark.parametrize(
    ("cancelled_at", "deadline_hours", "late"),
    [
        ("2026-11-30 09:59", 24, False),
        ("2026-11-30 10:00", 24, False),  # exactly at the deadline is still in time
        ("2026-11-30 10:01", 24, True),
        ("2026-12-01 09:59", 0, False),
        ("2026-12-01 10:01", 0, True),
        ("2026-11-28 10:01", 72, True),
    ],
)
def test_a_cancellation_after_the_deadline_is_late(
    cancelled_at: str, deadline_hours: int, late: bool
) -> None:
    start = at("2026-12-01 10:00")
    assert is_late_cancellation(at(cancelled_at), start, deadline_hours) is late


S = BookingStatus
EXPECTED_TRANSITIONS = {
    "approve": {S.PENDING},
    "reject": {S.PENDING},
    "cancel": {S.OFFERED, S.PENDING, S.CONFIRMED},
    "check_in": {S.CONFIRMED},
    "check_out": {S.IN_USE},
    "no_show": {S.CONFIRMED},
    "expire": {S.PENDING},
    "move": {S.PENDING, S.CONFIRMED},
    "hand_over": {S.PENDING, S.CONFIRMED},
}


@pytest.mark.parametrize("action", sorted(EXPECTED_TRANSITIONS))
def test_each_action_starts_only_from_its_statuses(action: str) -> None:
    assert TRANSITIONS[action] == EXPECTED_TRANSITIONS[action]


def test_no_action_starts_from_a_finished_booking() -> None:
    finished = {S.COMPLETED, S.NO_SHOW, S.CANCELLED, S.REJECTED, S.EXPIRED}
    assert set(TRANSITIONS) == set(EXPECTED_TRANSITIONS)
    assert all(not allowed & finished for allowed in TRANSITIONS.values())
    assert set(S) - HELD_STATUSES == finished
