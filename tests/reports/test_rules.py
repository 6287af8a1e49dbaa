"""Pure rules of the reports: periods, buckets, rated hours, open time, scope, low-use reasons."""

from __future__ import annotations

from datetime import UTC, date, datetime
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest

from core.accounts.models import RoleAssignment, User
from core.accounts.rules import Role, ScopeKind
from core.auth.principal import Principal
from core.errors import PermissionDenied
from reports import rules
from reports.rules import LowUseFacts, LowUseRules, OpenTime, PeriodKind

SHANGHAI = ZoneInfo("Asia/Shanghai")


@pytest.mark.parametrize(
    ("start", "end", "kind", "labels"),
    [
        (
            date(2026, 1, 1),
            date(2027, 1, 1),
            PeriodKind.QUARTER,
            ["2026-Q1", "2026-Q2", "2026-Q3", "2026-Q4"],
        ),
        (date(2026, 1, 15), date(2026, 3, 10), PeriodKind.MONTH, ["2026-01", "2026-02", "2026-03"]),
        (date(2025, 11, 1), date(2026, 2, 1), PeriodKind.QUARTER, ["2025-Q4", "2026-Q1"]),
        (date(2025, 6, 1), date(2027, 6, 1), PeriodKind.YEAR, ["2025", "2026", "2027"]),
    ],
)
def test_buckets_tile_the_period(
    start: date, end: date, kind: PeriodKind, labels: list[str]
) -> None:
    found = rules.buckets(start, end, kind)
    assert [b.label for b in found] == labels
    assert found[0].start == start
    assert found[-1].end == end
    assert all(a.end == b.start for a, b in pairwise(found))


def test_a_bucket_is_bounded_by_local_midnights() -> None:
    bucket = rules.buckets(date(2026, 3, 1), date(2026, 4, 1), PeriodKind.MONTH)[0]
    assert bucket.utc_range(SHANGHAI) == (
        datetime(2026, 2, 28, 16, tzinfo=UTC),
        datetime(2026, 3, 31, 16, tzinfo=UTC),
    )


@pytest.mark.parametrize(
    ("start", "end", "codes"),
    [
        (date(2026, 1, 1), date(2027, 1, 1), []),
        (date(2026, 1, 1), date(2036, 1, 1), []),  # exactly ten years
        (date(2026, 1, 1), date(2036, 1, 2), ["period_too_long"]),
        (date(2026, 1, 2), date(2026, 1, 1), ["inverted_period"]),
        (date(2026, 1, 1), date(2026, 1, 1), ["empty_period"]),
        (None, None, ["required", "required"]),
    ],
)
def test_period_problems(start: date | None, end: date | None, codes: list[str]) -> None:
    assert [p.code for p in rules.period_problems(start, end)] == codes


def test_rated_hours_follow_the_days_of_each_year() -> None:
    assert rules.rated_hours(1400, date(2026, 1, 1), date(2027, 1, 1), date(2000, 1, 1)) == 1400
    assert rules.rated_hours(
        1400, date(2028, 2, 1), date(2028, 3, 1), date(2000, 1, 1)
    ) == pytest.approx(1400 * 29 / 366)
    # Across a year end, each part at its own year's length.
    assert rules.rated_hours(
        800, date(2027, 12, 1), date(2028, 2, 1), date(2000, 1, 1)
    ) == pytest.approx(800 * 31 / 365 + 800 * 31 / 366)
    # In service from 1 July: half a year (184 of 365 days).
    assert rules.rated_hours(
        1400, date(2026, 1, 1), date(2027, 1, 1), date(2026, 7, 1)
    ) == pytest.approx(1400 * 184 / 365)
    assert rules.rated_hours(1400, date(2026, 1, 1), date(2026, 2, 1), date(2026, 3, 1)) == 0


def test_service_starts_at_the_purchase_date_else_at_listing() -> None:
    listed = datetime(2026, 3, 31, 17, tzinfo=UTC)  # 1 April in Shanghai
    assert rules.in_service_date(date(2019, 5, 1), listed, SHANGHAI) == date(2019, 5, 1)
    assert rules.in_service_date(None, listed, SHANGHAI) == date(2026, 4, 1)


def test_open_time_counts_hours_in_any_range() -> None:
    day = datetime(2026, 3, 2, tzinfo=UTC)
    open_time = OpenTime.of(
        [
            (day.replace(hour=1), day.replace(hour=4)),
            (day.replace(hour=6), day.replace(hour=9)),
            (day.replace(hour=3), day.replace(hour=5)),  # overlaps the first: merged
        ]
    )
    assert open_time.hours(day, day.replace(hour=23)) == 7
    assert open_time.hours(day.replace(hour=2), day.replace(hour=7)) == 4
    assert (
        open_time.hours_within(
            [(day.replace(hour=4), day.replace(hour=8))], day, day.replace(hour=23)
        )
        == 3
    )
    assert open_time.open_dates(SHANGHAI) == [date(2026, 3, 2)]
    assert (
        rules.count_between(
            [date(2026, 3, 1), date(2026, 3, 2)], date(2026, 3, 2), date(2026, 3, 3)
        )
        == 1
    )


def test_ratios_of_nothing_are_none() -> None:
    assert rules.ratio(1, 0) is None
    assert rules.ratio(0, 4) == 0
    assert rules.ratio(1, 4) == 0.25


def principal(*grants: tuple[Role, ScopeKind, int | None]) -> Principal:
    return Principal(
        user=User(id=1, email="p@example.cn", name="p"),
        assignments=tuple(
            RoleAssignment(user_id=1, role=role, scope_kind=kind, scope_id=scope)
            for role, kind, scope in grants
        ),
    )


def test_who_reads_which_facilities() -> None:
    assert rules.report_scope(principal((Role.PLANNER, ScopeKind.PLATFORM, None))).everything
    assert rules.report_scope(principal((Role.ADMIN, ScopeKind.PLATFORM, None))).everything
    manager = rules.report_scope(principal((Role.LAB_MANAGER, ScopeKind.FACILITY, 7)))
    assert manager.facility_ids == {7}
    assert manager.sees(7)
    assert not manager.sees(8)
    for role, kind in ((Role.RESEARCHER, ScopeKind.PLATFORM), (Role.FINANCE, ScopeKind.PLATFORM)):
        with pytest.raises(PermissionDenied):
            rules.report_scope(principal((role, kind, None)))


@pytest.mark.parametrize(
    ("facts", "codes"),
    [
        (LowUseFacts(0.1, 100, 30, 10, 0, 10, 30), ["long_outages"]),
        (LowUseFacts(0.1, 100, 0, 3, 0, 3, 30), ["few_bookings"]),
        (LowUseFacts(0.1, 100, 0, 10, 3, 7, 30), ["many_no_shows"]),
        (LowUseFacts(0.1, 100, 0, 10, 1, 1, 30), []),  # one no-show is no pattern
        (LowUseFacts(0.1, 0, 0, 0, 0, 0, 365), ["few_bookings"]),
    ],
)
def test_low_use_reasons(facts: LowUseFacts, codes: list[str]) -> None:
    reasons = rules.low_use_reasons(facts, LowUseRules())
    assert [r["code"] for r in reasons] == codes
    assert all(r["zh"] and r["en"] for r in reasons)


def test_low_use_threshold() -> None:
    assert rules.is_low_use(0.49, LowUseRules())
    assert not rules.is_low_use(0.5, LowUseRules())
    assert not rules.is_low_use(None, LowUseRules())
    assert [p.code for p in LowUseRules(threshold=0).problems()] == ["out_of_range"]


def test_every_metric_has_both_languages_and_a_unit() -> None:
    for name, text in rules.definitions().items():
        assert set(text) == {"unit", "zh", "en"}, name
        assert text["zh"]
        assert text["en"]
