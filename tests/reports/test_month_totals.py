"""The month totals the database keeps for reports: triggers follow every write exactly as a
rebuild from the records would, and a report read from them equals one summed from the records.
On SQLite and PostgreSQL."""

from __future__ import annotations

import random
from datetime import date, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from sqlmodel import Session, col

from booking.models import Booking, UsageRecord
from booking.rules import BookingStatus
from instruments.models import Instrument
from reports import month_totals, queries
from reports.models import InstrumentMonth, ReportMonth
from reports.rules import GroupBy, PeriodKind, ReportScope
from tests.factories import make_organisation
from tests.instruments.factories import make_facility, make_instrument
from tests.reports.world import SHANGHAI, World, _booking, _usage, build_world, local

TOTALS = [c.name for c in InstrumentMonth.__table__.c]  # type: ignore[attr-defined]


@pytest.fixture
def world(session: Session) -> World:
    return build_world(session)


def stored_totals(session: Session) -> dict[tuple[Any, ...], tuple[int, ...]]:
    """Every non-empty row of instrument_month (a record taken back leaves zeros behind)."""
    rows = session.execute(sa.select(InstrumentMonth.__table__)).all()  # type: ignore[attr-defined]
    return {tuple(row[:3]): tuple(int(v) for v in row[3:]) for row in rows if any(row[3:])}


def rebuilt_totals(session: Session) -> dict[tuple[Any, ...], tuple[int, ...]]:
    """The totals built afresh from the records, as listing the zone the first time does."""
    month_totals.rebuild_zone(session, SHANGHAI)
    assert not month_totals.ensure_zone(session, SHANGHAI)  # listed once
    return stored_totals(session)


def test_the_upgrade_lists_the_platform_zone(session: Session) -> None:
    months = month_totals.coverage(session, SHANGHAI)
    assert months == month_totals.Coverage(date(2000, 1, 1), date(2101, 1, 1))
    assert months.covers(date(2025, 1, 1), date(2026, 1, 1))
    assert not months.covers(date(2025, 1, 15), date(2026, 1, 1))
    assert month_totals.coverage(session, ZoneInfo("Europe/Berlin")) is None


def test_a_usage_record_is_split_by_local_month_in_milliseconds(
    session: Session, world: World
) -> None:
    october, november = (("Asia/Shanghai", date(2025, month, 1), world.c.id) for month in (10, 11))
    before = dict(zip(TOTALS[3:], stored_totals(session)[october], strict=True))
    # 31 October 22:00 to 1 November 01:00 Shanghai time: two hours in October, one in November.
    record = _usage(session, world.c, world.external_user, local(10, 31, 22), local(11, 1, 1))
    totals = stored_totals(session)
    in_october = dict(zip(TOTALS[3:], totals[october], strict=True))
    in_november = dict(zip(TOTALS[3:], totals[november], strict=True))
    assert in_october["usage_ms"] - before["usage_ms"] == 7_200_000
    assert in_october["usage_records"] - before["usage_records"] == 1
    assert in_november["usage_ms"] == in_november["external_ms"] == 3_600_000
    assert (in_november["usage_records"], in_november["usage_carried"]) == (1, 1)
    # Taking the record back leaves both months as they were before it.
    session.delete(record)
    session.flush()
    after = stored_totals(session)
    assert november not in after
    assert dict(zip(TOTALS[3:], after[october], strict=True)) == before


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_triggers_follow_every_change_as_a_rebuild_would(
    session: Session, world: World, seed: int
) -> None:
    """Random inserts, edits and deletes of usage records and bookings (times across month
    ends, kinds, organisations, statuses, moves), an instrument moved to another owner's
    facility and a facility changing owner: the kept totals equal a rebuild after each round."""
    rng = random.Random(seed)
    other_owner = make_organisation(session, name=f"他方{seed}")
    elsewhere = make_facility(session, organisation=other_owner, name=f"他方平台{seed}")
    instruments = [world.a, world.b, world.c]
    users = [world.internal_user, world.external_user, world.loner]
    start_of = local(8, 1)
    records: list[UsageRecord] = []
    bookings: list[Booking] = []
    statuses = [s.value for s in BookingStatus]

    def some_time() -> Any:
        # Hours from 1 August to late December, often right at a local midnight.
        hours = rng.randrange(0, 150 * 24)
        return start_of + timedelta(hours=hours - hours % 24 if rng.random() < 0.2 else hours)

    for round_ in range(4):
        for _ in range(25):
            action = rng.random()
            if action < 0.3 or not records:
                start = some_time()
                records.append(
                    _usage(
                        session,
                        rng.choice(instruments),
                        rng.choice(users),
                        start,
                        start + timedelta(minutes=rng.choice([30, 90, 600, 3000, 50_000])),
                        kind=rng.choice(["use", "use", "training", "maintenance"]),
                    )
                )
            elif action < 0.55:
                # Each booking on an instrument of its own: held ones (confirmed, in use) never
                # meet the overlap guard, however they move.
                start = some_time()
                own = make_instrument(
                    session,
                    facility=rng.choice([world.facility, world.other_facility, elsewhere]),
                )
                bookings.append(
                    _booking(
                        session,
                        own,
                        rng.choice(users),
                        start,
                        start + timedelta(minutes=rng.choice([60, 120, 2000])),
                        rng.choice(statuses),
                        late_cancellation=rng.random() < 0.5,
                    )
                )
            elif action < 0.7:
                record = rng.choice(records)
                record.started_at = some_time()
                record.ended_at = record.started_at + timedelta(minutes=rng.randrange(1, 5000))
                record.kind = rng.choice(["use", "training", "maintenance"])
                record.organisation_id = rng.choice([u.organisation_id for u in users])
                session.flush()
            elif action < 0.85 and bookings:
                booking = rng.choice(bookings)
                booking.status = rng.choice(statuses)
                booking.late_cancellation = rng.random() < 0.5
                booking.replaced_by_id = rng.choice([None, rng.choice(bookings).id])
                shift = timedelta(hours=rng.randrange(-800, 800))
                booking.start_at += shift
                booking.end_at += shift
                booking.held_until = booking.end_at
                session.flush()
            elif action < 0.95:
                record = records.pop(rng.randrange(len(records)))
                session.delete(record)
                session.flush()
            else:
                instrument = rng.choice(instruments)
                instrument.facility_id = rng.choice(
                    [world.facility.id, world.other_facility.id, elsewhere.id]
                )
                session.flush()
        if round_ == 2:
            elsewhere.organisation_id = world.university.id
            session.flush()
        kept = stored_totals(session)
        assert kept == rebuilt_totals(session), f"round {round_}"


def _report(session: Session, group_by: GroupBy, period: PeriodKind, **filters: Any) -> Any:
    return queries.utilization_report(
        session,
        start=date(2025, 7, 1),
        end=date(2026, 4, 1),
        group_by=group_by,
        period=period,
        scope=ReportScope(None),
        zone=SHANGHAI,
        filters=queries.ReportFilter(**filters),
    ).as_dict()


def _close(a: Any, b: Any) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float):
        return abs(a - b) <= 0.011  # whole milliseconds against exact seconds, rounded to 0.01
    return bool(a == b)


def test_reports_from_the_month_totals_equal_reports_from_the_records(
    session: Session, world: World
) -> None:
    # Beyond the world's October: records over several months and a quarter's end.
    _usage(session, world.a, world.external_user, local(8, 30, 9), local(10, 2, 9))
    _usage(session, world.b, world.loner, local(9, 30, 20), local(10, 1, 4), kind="training")
    _booking(
        session,
        world.c,
        world.external_user,
        local(12, 31, 20),
        local(1, 2, 9, year=2026),
        "completed",
    )
    _booking(
        session,
        world.c,
        world.internal_user,
        local(3, 31, 23, year=2026),
        local(4, 1, 1, year=2026),
        "no_show",
    )
    cases = [
        (group_by, period, {})
        for group_by in GroupBy
        for period in (PeriodKind.MONTH, PeriodKind.QUARTER, PeriodKind.YEAR)
    ] + [
        (GroupBy.FACILITY, PeriodKind.MONTH, {"instrument_id": world.a.id}),
        (GroupBy.CLUSTER, PeriodKind.QUARTER, {"organisation_id": world.university.id}),
    ]
    from_totals = [_report(session, g, p, **f) for g, p, f in cases]
    session.execute(sa.delete(ReportMonth).where(col(ReportMonth.zone) == SHANGHAI.key))
    assert month_totals.coverage(session, SHANGHAI) is None
    from_records = [_report(session, g, p, **f) for g, p, f in cases]
    for case, totals, records in zip(cases, from_totals, from_records, strict=True):
        assert _close(totals, records), case
    # Not vacuous: the period has usage, bookings, no-shows and several groups.
    assert from_records[0]["totals"]["effective_hours"] > 0
    assert from_records[0]["totals"]["no_shows"] > 0


def test_a_change_of_owner_changes_what_counts_as_external(session: Session, world: World) -> None:
    def external_hours(instrument: Instrument) -> float:
        report = queries.utilization_report(
            session,
            start=date(2025, 10, 1),
            end=date(2025, 11, 1),
            group_by=GroupBy.INSTRUMENT,
            period=PeriodKind.MONTH,
            scope=ReportScope(None),
            zone=SHANGHAI,
        )
        return report.per_group[str(instrument.id)].external_hours

    # C belongs to the enterprise's facility: the university user's eight hours are external.
    assert external_hours(world.c) == pytest.approx(8)
    world.other_facility.organisation_id = world.university.id
    session.flush()
    assert external_hours(world.c) == 0
    # A moves from the university's facility to one another organisation owns: every use on
    # it becomes external (9.5 effective hours in October, 5.5 of them external before).
    assert external_hours(world.a) == pytest.approx(5.5)
    elsewhere = make_facility(session, organisation=world.enterprise, name="企业新平台")
    world.a.facility_id = elsewhere.id
    session.flush()
    assert external_hours(world.a) == pytest.approx(9.5)
