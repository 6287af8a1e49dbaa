"""The report figures against the hand-computed October 2025 of tests/reports/world.py, on
SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import date

import pytest
from sqlmodel import Session

from core.errors import NotFound, RuleViolation
from reports import queries
from reports.queries import ReportFilter
from reports.rules import GroupBy, LowUseRules, PeriodKind, ReportScope
from tests.querycount import counted_statements
from tests.reports.world import SHANGHAI, World, build_world

EVERYTHING = ReportScope(None)
OCTOBER = (date(2025, 10, 1), date(2025, 11, 1))


@pytest.fixture
def world(session: Session) -> World:
    return build_world(session)


def report(session: Session, group_by: GroupBy, period: PeriodKind, start: date, end: date, **kw):  # type: ignore[no-untyped-def]
    return queries.utilization_report(
        session,
        start=start,
        end=end,
        group_by=group_by,
        period=period,
        scope=kw.pop("scope", EVERYTHING),
        zone=SHANGHAI,
        **kw,
    )


def by_key(rows: list[dict]) -> dict[str, dict]:  # type: ignore[type-arg]
    return {row["key"]: row for row in rows}


def test_an_instrument_month_matches_the_hand_computed_figures(
    session: Session, world: World
) -> None:
    groups = by_key(report(session, GroupBy.INSTRUMENT, PeriodKind.MONTH, *OCTOBER).groups())
    a = groups[str(world.a.id)]
    assert a["opening_hours"] == 144
    assert a["outage_hours"] == 10
    assert a["available_hours"] == 134
    assert a["rated_hours"] == pytest.approx(1400 * 31 / 365, abs=0.01)
    assert a["effective_hours"] == pytest.approx(9.5)
    assert a["external_hours"] == pytest.approx(5.5)
    assert a["training_hours"] == pytest.approx(2)
    assert a["maintenance_hours"] == pytest.approx(1)
    assert a["booked_hours"] == pytest.approx(7)
    assert (a["completed"], a["no_shows"], a["late_cancellations"], a["bookings"]) == (2, 2, 1, 5)
    assert a["utilization"] == pytest.approx(9.5 / (1400 * 31 / 365), abs=1e-4)
    assert a["occupancy"] == pytest.approx(7 / 134, abs=1e-4)
    assert a["sharing_rate"] == pytest.approx(5.5 / 9.5, abs=1e-4)
    assert a["no_show_rate"] == 0.5
    assert a["late_cancel_rate"] == 0.2
    assert (a["samples_accepted"], a["sample_capacity"]) == (10, 180)
    assert a["testing_capacity_use"] == pytest.approx(10 / 180, abs=1e-4)
    assert a["turnaround_days"] == 3.0
    assert a["reports_issued"] == 4
    assert a["is_large"] is True


def test_an_instrument_added_mid_month_counts_from_its_start(
    session: Session, world: World
) -> None:
    b = by_key(report(session, GroupBy.INSTRUMENT, PeriodKind.MONTH, *OCTOBER).groups())[
        str(world.b.id)
    ]
    assert b["opening_hours"] == 96  # 16 October on: 12 open days
    assert b["outage_hours"] == 40
    assert b["available_hours"] == 56
    assert b["rated_hours"] == pytest.approx(1400 * 16 / 365, abs=0.01)
    assert b["effective_hours"] == 0
    assert b["utilization"] == 0
    assert b["sharing_rate"] is None  # no use: no rate, rather than 0 %
    year = by_key(
        report(
            session, GroupBy.INSTRUMENT, PeriodKind.YEAR, date(2025, 1, 1), date(2026, 1, 1)
        ).groups()
    )[str(world.b.id)]
    assert year["rated_hours"] == pytest.approx(1400 * 77 / 365, abs=0.01)


def test_a_facility_opening_on_holidays_has_every_weekday(session: Session, world: World) -> None:
    c = by_key(report(session, GroupBy.INSTRUMENT, PeriodKind.MONTH, *OCTOBER).groups())[
        str(world.c.id)
    ]
    assert c["available_hours"] == 192
    assert c["effective_hours"] == 8
    assert c["external_hours"] == 8  # U's user on E's instrument


def test_uses_crossing_month_quarter_and_year_boundaries_are_split(
    session: Session, world: World
) -> None:
    months = report(
        session,
        GroupBy.INSTRUMENT,
        PeriodKind.MONTH,
        date(2025, 9, 1),
        date(2025, 12, 1),
        filters=ReportFilter(instrument_id=world.a.id),
    )
    effective = {row["period"]: row["effective_hours"] for row in months.rows()}
    assert effective == {"2025-09": 8, "2025-10": 9.5, "2025-11": 1}
    booked = {row["period"]: row["booked_hours"] for row in months.rows()}
    assert booked == {"2025-09": 0, "2025-10": 7, "2025-11": 2}
    quarters = report(
        session,
        GroupBy.INSTRUMENT,
        PeriodKind.QUARTER,
        date(2025, 7, 1),
        date(2026, 1, 1),
        filters=ReportFilter(instrument_id=world.a.id),
    )
    assert {r["period"]: r["effective_hours"] for r in quarters.rows()} == {
        "2025-Q3": 8,
        "2025-Q4": 2 + 4 + 3 + 1.5 + 1,
    }
    years = report(
        session,
        GroupBy.FACILITY,
        PeriodKind.YEAR,
        date(2025, 1, 1),
        date(2027, 1, 1),
        filters=ReportFilter(facility_id=world.facility.id),
    )
    by_year = {r["period"]: r["effective_hours"] for r in years.rows()}
    assert by_year == {"2025": 10 + 4 + 3 + 1.5 + 1, "2026": 1}
    assert years.totals()["effective_hours"] == 10 + 4 + 3 + 1.5 + 1 + 1


def test_a_report_of_more_months_than_one_scan_sums_splits_uses_across_its_scans(
    session: Session, world: World
) -> None:
    only_a = ReportFilter(instrument_id=world.a.id)
    three = report(
        session, GroupBy.INSTRUMENT, PeriodKind.MONTH, date(2025, 9, 1), date(2025, 12, 1),
        filters=only_a,
    )  # fmt: skip
    # Fourteen months: September 2025 ends the first scan, October starts the second, and a
    # use crossing that boundary is split between them as in the three-month report.
    fourteen = report(
        session, GroupBy.INSTRUMENT, PeriodKind.MONTH, date(2024, 10, 1), date(2025, 12, 1),
        filters=only_a,
    )  # fmt: skip
    assert len(fourteen.buckets) > queries.BUCKETS_PER_SCAN
    rows = {row["period"]: row for row in fourteen.rows()}
    for row in three.rows():
        for figure in ("effective_hours", "booked_hours", "usage_records", "bookings"):
            assert rows[row["period"]][figure] == pytest.approx(row[figure]), figure
    for figure in ("effective_hours", "booked_hours", "usage_records", "no_shows"):
        assert fourteen.totals()[figure] == pytest.approx(three.totals()[figure]), figure


def test_a_report_puts_back_the_planner_settings_it_changed(session: Session, world: World) -> None:
    connection = session.connection()
    if connection.dialect.name != "postgresql":
        pytest.skip("parallel scans are PostgreSQL's planner settings")
    names = list(queries.PARALLEL_SCAN_SETTINGS)

    def current() -> list[str]:
        return [connection.exec_driver_sql(f"SHOW {name}").scalar() for name in names]

    before = current()
    assert before != list(queries.PARALLEL_SCAN_SETTINGS.values())
    report(session, GroupBy.FACILITY, PeriodKind.YEAR, date(2025, 1, 1), date(2026, 1, 1))
    assert current() == before


def test_groups_series_and_totals_add_up(session: Session, world: World) -> None:
    for group_by in GroupBy:
        result = report(session, group_by, PeriodKind.MONTH, *OCTOBER)
        groups = result.groups()
        assert sum(g["effective_hours"] for g in groups) == pytest.approx(9.5 + 8)
        assert result.totals()["effective_hours"] == pytest.approx(9.5 + 8)
        assert result.totals()["instruments"] == 3
        assert result.series()[0]["available_hours"] == pytest.approx(134 + 56 + 192)
        assert result.as_dict()["definitions"]["utilization"]["zh"].startswith("使用率")
    clusters = by_key(report(session, GroupBy.CLUSTER, PeriodKind.MONTH, *OCTOBER).groups())
    assert clusters["western_science_city"]["instruments"] == 2  # 沙坪坝区
    assert clusters["guangyang_bay"]["instruments"] == 1  # 南岸区
    organisations = by_key(
        report(session, GroupBy.ORGANISATION, PeriodKind.MONTH, *OCTOBER).groups()
    )
    assert organisations[str(world.university.id)]["name"] == "报表大学"
    assert organisations[str(world.university.id)]["samples_accepted"] == 10


def test_the_totals_take_the_median_of_all_reports_not_of_the_groups(
    session: Session, world: World
) -> None:
    result = report(session, GroupBy.FACILITY, PeriodKind.MONTH, *OCTOBER)
    assert result.totals()["turnaround_days"] == 3.0
    assert result.series()[0]["turnaround_days"] == 3.0


def test_a_lab_manager_reads_only_its_facilities(session: Session, world: World) -> None:
    own = ReportScope(frozenset({world.facility.id or 0}))
    result = report(session, GroupBy.INSTRUMENT, PeriodKind.MONTH, *OCTOBER, scope=own)
    assert set(by_key(result.groups())) == {str(world.a.id), str(world.b.id)}
    assert result.totals()["effective_hours"] == pytest.approx(9.5)
    with pytest.raises(NotFound):
        report(
            session,
            GroupBy.INSTRUMENT,
            PeriodKind.MONTH,
            *OCTOBER,
            scope=own,
            filters=ReportFilter(instrument_id=world.c.id),
        )
    with pytest.raises(NotFound):
        queries.usage_export_header(session, instrument_id=world.c.id or 0, scope=own)


@pytest.mark.parametrize(
    ("start", "end", "code"),
    [
        (date(2025, 11, 1), date(2025, 10, 1), "inverted_period"),
        (date(2025, 10, 1), date(2025, 10, 1), "empty_period"),
        (date(2015, 1, 1), date(2025, 1, 2), "period_too_long"),
    ],
)
def test_a_bad_period_is_refused_with_its_reason(
    session: Session, world: World, start: date, end: date, code: str
) -> None:
    with pytest.raises(RuleViolation) as refused:
        report(session, GroupBy.FACILITY, PeriodKind.MONTH, start, end)
    assert [p.code for p in refused.value.problems] == [code]


def test_the_low_use_list_gives_reasons_and_marks_large_instruments(
    session: Session, world: World
) -> None:
    items = queries.low_use_instruments(
        session, start=OCTOBER[0], end=OCTOBER[1], scope=EVERYTHING, zone=SHANGHAI
    )
    listed = {item["key"]: item for item in items}
    assert set(listed) == {str(world.a.id), str(world.b.id)}  # C is used 94 % of its rated time
    assert [item["key"] for item in items] == [str(world.b.id), str(world.a.id)]  # lowest first
    assert [r["code"] for r in listed[str(world.a.id)]["reasons"]] == ["many_no_shows"]
    assert listed[str(world.a.id)]["is_large"] is True
    assert [r["code"] for r in listed[str(world.b.id)]["reasons"]] == [
        "long_outages",
        "few_bookings",
    ]
    assert listed[str(world.b.id)]["is_large"] is False
    assert "42%" in listed[str(world.b.id)]["reasons"][0]["en"]
    # A lower threshold lists fewer.
    assert queries.low_use_instruments(
        session,
        start=OCTOBER[0],
        end=OCTOBER[1],
        scope=EVERYTHING,
        zone=SHANGHAI,
        low_use=LowUseRules(threshold=0.05),
    ) == [listed[str(world.b.id)] | {"threshold": 0.05}]


def test_the_number_of_queries_does_not_grow_with_the_data(
    session: Session, world: World, database
) -> None:  # type: ignore[no-untyped-def]
    two_months = (date(2025, 10, 1), date(2025, 12, 1))
    with counted_statements(database) as few:
        report(session, GroupBy.INSTRUMENT, PeriodKind.MONTH, *two_months)
    from tests.reports.world import _usage, local

    for day in range(1, 29):
        _usage(session, world.b, world.external_user, local(11, day, 9), local(11, day, 10))
    with counted_statements(database) as many:
        report(session, GroupBy.INSTRUMENT, PeriodKind.MONTH, *two_months)
    assert len(many) == len(few)
    # Whole months come from the month totals: one query however many buckets.
    with counted_statements(database) as one_year:
        report(session, GroupBy.INSTRUMENT, PeriodKind.MONTH, date(2025, 1, 1), date(2026, 1, 1))
    with counted_statements(database) as two_years:
        report(session, GroupBy.INSTRUMENT, PeriodKind.MONTH, date(2024, 1, 1), date(2026, 1, 1))
    assert len(two_years) == len(one_year)
    assert not [s for s in one_year if "FROM usage_record" in s]
    # Months cut by the period's ends are summed from the records: one scan each, as they
    # are not next to each other.
    with counted_statements(database) as cut:
        report(session, GroupBy.INSTRUMENT, PeriodKind.MONTH, date(2025, 1, 15), date(2026, 1, 15))
    assert len([s for s in cut if "FROM usage_record" in s]) == 2
