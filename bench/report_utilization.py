"""Utilization report speed: a year's full report over 1,000 instruments and 1,000,000 usage
records, grouped by facility.

Target (issue "Utilization reports"): within 3× of a baseline measured in the same run — one
raw SQL query summing effective hours per facility over the same data — and under 2 s on
SQLite. The data is bulk-inserted into a freshly migrated database: 100 facilities of 10
instruments, a year (2025) of bookings with their usage records (plus no-shows, late
cancellations and moves), outages, testing services with accepted samples and reported
requests. The database's triggers keep the month totals up to date while it is built (as they
do for every write), so a year's report reads those totals (docs/metrics.md, "How it is
computed"). For information, the same report summed from the records themselves is timed too
(what a period cut mid-month or a zone without totals costs), and with --months a monthly report.

    .venv/bin/python bench/report_utilization.py [--instruments 1000] [--usage 1000000]
        [--runs 5] [--months] [--postgres postgresql+psycopg://postgres@127.0.0.1:5432/postgres]
        [--sqlite-file var/bench-report.db]   (build once, measure again without rebuilding)
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from psycopg.types.json import Jsonb
from sqlmodel import Session, col

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import fresh_database
from booking.models import Booking, ServiceCapacityDay, ServiceRequest, UsageRecord
from core.accounts.models import Organisation, User
from core.db import Database
from core.places import DISTRICT_CLUSTER
from core.settings import Settings
from instruments.models import Facility, Instrument, OpeningSpan, Outage, TestingService
from reports.models import ReportMonth
from reports.queries import UtilizationReport, utilization_report
from reports.rules import GroupBy, PeriodKind, ReportScope
from web import dbschema

ZONE = ZoneInfo("Asia/Shanghai")
YEAR = 2025
CHUNK = 20_000
# Four two-hour slots a working day, local time.
SLOTS = [(8, 30), (10, 30), (14, 0), (16, 0)]


def _driver_value(value: Any, dialect: str) -> Any:
    """A value as the driver takes it; on SQLite as core.db.UTCDateTime stores it (UTC text)."""
    if dialect != "sqlite":
        return Jsonb(value) if isinstance(value, list) else value
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, list):
        return json.dumps(value)
    return value


def _insert(connection: sa.Connection, table: Any, rows: list[dict[str, Any]]) -> None:
    """Bulk insert through the driver: the ORM's per-value processing would dominate."""
    if not rows:
        return
    dialect = connection.dialect.name
    columns = list(rows[0])
    mark = "?" if dialect == "sqlite" else "%s"
    sql = (
        f"INSERT INTO {table.name} ({', '.join(columns)}) "
        f"VALUES ({', '.join(mark for _ in columns)})"
    )
    for offset in range(0, len(rows), CHUNK):
        connection.exec_driver_sql(
            sql,
            [
                tuple(_driver_value(row[c], dialect) for c in columns)
                for row in rows[offset : offset + CHUNK]
            ],
        )


def build(database: Database, instruments: int, usage_records: int) -> None:
    """Bulk-insert the benchmark's year of history."""
    started = time.perf_counter()
    rng = random.Random(2025)
    created = datetime(2024, 6, 1, tzinfo=UTC)
    districts = list(DISTRICT_CLUSTER)
    facilities = max(1, instruments // 10)
    organisations = facilities // 2 + 20
    with database.write_engine.begin() as connection:
        _insert(
            connection,
            Organisation.__table__,  # type: ignore[attr-defined]
            [
                {
                    "id": o + 1,
                    "name": f"基准单位{o}",
                    "type": "university" if o % 3 else "enterprise",
                    "district": districts[o % len(districts)],
                    "cluster": DISTRICT_CLUSTER[districts[o % len(districts)]].value,
                    "is_sme": False,
                    "is_tech_sme": False,
                    "created_at": created,
                    "updated_at": created,
                }
                for o in range(organisations)
            ],
        )
        users = 2000
        _insert(
            connection,
            User.__table__,  # type: ignore[attr-defined]
            [
                {
                    "id": u + 1,
                    "email": f"bench{u}@example.cn",
                    "name": f"用户{u}",
                    "organisation_id": u % organisations + 1,
                    "locale": "zh-CN",
                    "is_active": True,
                    "created_at": created,
                    "updated_at": created,
                }
                for u in range(users)
            ],
        )
        _insert(
            connection,
            Facility.__table__,  # type: ignore[attr-defined]
            [
                {
                    "id": f + 1,
                    "organisation_id": f // 2 + 1,
                    "name": f"基准平台{f}",
                    "description": "",
                    "address": "",
                    "district": districts[(f // 2) % len(districts)],
                    "cluster": DISTRICT_CLUSTER[districts[(f // 2) % len(districts)]].value,
                    "contact_name": "",
                    "contact_phone": "",
                    "contact_email": "",
                    "timezone": "Asia/Shanghai",
                    "opens_on_holidays": f % 10 == 0,
                    "is_active": True,
                    "calendar_token": f"bench{f:027d}",
                    "created_at": created,
                    "updated_at": created,
                }
                for f in range(facilities)
            ],
        )
        _insert(
            connection,
            OpeningSpan.__table__,  # type: ignore[attr-defined]
            [
                {"facility_id": f + 1, "weekday": d, "start_minute": s, "end_minute": e}
                for f in range(facilities)
                for d in range(5)
                for s, e in ((510, 720), (840, 1050))
            ],
        )
        _insert(
            connection,
            Instrument.__table__,  # type: ignore[attr-defined]
            [
                {
                    "id": n + 1,
                    "facility_id": n % facilities + 1,
                    "asset_code": f"B-{n:06d}",
                    "name": f"基准仪器{n}",
                    "name_en": "",
                    "keywords": "",
                    "model": "",
                    "manufacturer": "",
                    "country_of_origin": "",
                    "category": "analytical",
                    "purchase_value_fen": rng.randint(10_000, 3_000_000) * 100,
                    # A tenth entered service during the year.
                    "purchase_date": date(YEAR, rng.randint(2, 11), 1) if n % 10 == 3 else None,
                    "is_large": n % 2 == 0,
                    "location": "",
                    "description": "",
                    "specifications": "",
                    "photo_url": "",
                    "status": "active",
                    "operation_mode": "both",
                    "special_purpose": n % 7 == 0,
                    "rated_annual_hours": 800 if n % 7 == 0 else 1400,
                    "slot_minutes": 30,
                    "min_duration_minutes": 30,
                    "max_duration_minutes": 480,
                    "max_advance_days": 60,
                    "min_notice_minutes": 60,
                    "buffer_minutes": 0,
                    "approval_mode": "automatic_for_qualified",
                    "cancellation_deadline_hours": 24,
                    "late_cancel_charge_percent": 50,
                    "no_show_charge_percent": 50,
                    "unattended_runs_allowed": False,
                    "requires_qualification": True,
                    "price_internal_fen": 10_000,
                    "price_external_academic_fen": 20_000,
                    "price_enterprise_fen": 30_000,
                    "staff_surcharge_fen": 0,
                    "min_billing_minutes": 30,
                    "min_charge_fen": 0,
                    "search_text": "",
                    "created_at": created,
                    "updated_at": created,
                }
                for n in range(instruments)
            ],
        )
        _insert(
            connection,
            Outage.__table__,  # type: ignore[attr-defined]
            [
                {
                    "facility_id": n % facilities + 1,
                    "instrument_id": n + 1,
                    "start_at": (start := datetime(YEAR, rng.randint(1, 12), 3, tzinfo=UTC)),
                    "end_at": start + timedelta(days=rng.randint(1, 20)),
                    "kind": "maintenance",
                    "note": "",
                    "created_at": created,
                }
                for n in range(0, instruments, 10)
            ],
        )
        _insert(
            connection,
            TestingService.__table__,  # type: ignore[attr-defined]
            [
                {
                    "id": f + 1,
                    "facility_id": f + 1,
                    "name": f"检测{f}",
                    "name_en": "",
                    "method_standard": "",
                    "description": "",
                    "price_internal_fen": 5000,
                    "price_external_academic_fen": 8000,
                    "price_enterprise_fen": 12000,
                    "turnaround_days": 5,
                    "daily_sample_capacity": 10,
                    "cma_accredited": False,
                    "cnas_accredited": False,
                    "is_active": True,
                    "created_at": created,
                    "updated_at": created,
                }
                for f in range(facilities)
            ],
        )
    print(f"  catalogue built in {time.perf_counter() - started:.1f} s")

    # The year's working days (Monday to Friday; the holiday calendar is for the report).
    days = [
        date(YEAR, 1, 1) + timedelta(days=d)
        for d in range(365)
        if (date(YEAR, 1, 1) + timedelta(days=d)).weekday() < 5
    ]
    slot_starts = [
        datetime(day.year, day.month, day.day, h, m, tzinfo=ZONE).astimezone(UTC)
        for day in days
        for h, m in SLOTS
    ]
    per_instrument = usage_records // instruments
    started = time.perf_counter()
    booking_id = 0
    with database.write_engine.begin() as connection:
        # SQLite's overlap trigger costs most of a bulk load (every row here is past, none
        # held): set aside during the load, put back as it was. The month totals' triggers
        # stay: they keep the totals the report reads.
        triggers = []
        if database.dialect == "sqlite":
            # A bulk load: a page cache big enough for the indexes being filled.
            connection.exec_driver_sql("PRAGMA cache_size=-262144")
            triggers = connection.exec_driver_sql(
                "SELECT name, sql FROM sqlite_master "
                "WHERE type = 'trigger' AND name LIKE 'booking_no_overlap%'"
            ).all()
            for name, _ in triggers:
                connection.exec_driver_sql(f"DROP TRIGGER {name}")
        bookings: list[dict[str, Any]] = []
        usage: list[dict[str, Any]] = []
        for n in range(instruments):
            chosen = sorted(rng.sample(range(len(slot_starts)), per_instrument + 40))
            extra = set(rng.sample(range(len(chosen)), 40))
            for position, slot in enumerate(chosen):
                booking_id += 1
                start = slot_starts[slot]
                end = start + timedelta(hours=2)
                # Seven uses in ten by the owner's own people (users of an organisation are
                # those whose number leaves its remainder), the rest by outsiders.
                owner = (n % facilities) // 2 + 1
                user = rng.randrange(2000)
                if rng.random() < 0.7:
                    user = user - user % organisations + owner - 1
                    user = user if user < 2000 else owner - 1
                organisation = user % organisations + 1
                status = "completed"
                late = False
                if position in extra:  # no-shows and cancellations besides the used bookings
                    status = rng.choice(["no_show", "cancelled", "cancelled"])
                    late = status == "cancelled" and rng.random() < 0.6
                bookings.append(
                    {
                        "id": booking_id,
                        "instrument_id": n + 1,
                        "facility_id": n % facilities + 1,
                        "user_id": user + 1,
                        "organisation_id": organisation,
                        "start_at": start,
                        "end_at": end,
                        "held_until": end,
                        "status": status,
                        "operated_by": "self",
                        "purpose": "基准测试",
                        "charge_account": "",
                        "version": 0,
                        "overrides": [],
                        "reason": "",
                        "late_cancellation": late,
                        "attention": "",
                        "created_at": start - timedelta(days=3),
                        "updated_at": end,
                    }
                )
                if status == "completed":
                    kind = rng.choices(["use", "training", "maintenance"], [95, 3, 2])[0]
                    usage.append(
                        {
                            "booking_id": booking_id,
                            "instrument_id": n + 1,
                            "user_id": user + 1,
                            "organisation_id": organisation,
                            "operator_id": user + 1,
                            "started_at": start + timedelta(minutes=rng.randint(-10, 10)),
                            "ended_at": end + timedelta(minutes=rng.randint(-30, 20)),
                            "samples": rng.randint(1, 6),
                            "kind": kind,
                            "note": "",
                            "created_at": end,
                        }
                    )
            if len(usage) >= 100_000:
                _insert(connection, Booking.__table__, bookings)  # type: ignore[attr-defined]
                _insert(connection, UsageRecord.__table__, usage)  # type: ignore[attr-defined]
                bookings, usage = [], []
        _insert(connection, Booking.__table__, bookings)  # type: ignore[attr-defined]
        _insert(connection, UsageRecord.__table__, usage)  # type: ignore[attr-defined]
        requests = []
        capacity: dict[tuple[int, date], int] = {}
        for r in range(20_000):
            service = r % facilities + 1
            submitted = datetime(YEAR, 1, 1, tzinfo=UTC) + timedelta(minutes=rng.randrange(525_000))
            day = submitted.astimezone(ZONE).date() + timedelta(days=1)
            capacity[(service, day)] = capacity.get((service, day), 0) + 1
            requests.append(
                {
                    "testing_service_id": service,
                    "facility_id": service,
                    "user_id": rng.randrange(2000) + 1,
                    "sample_count": 1,
                    "description": "",
                    "status": "reported",
                    "scheduled_date": day,
                    "reason": "",
                    "version": 3,
                    "submitted_at": submitted,
                    "reported_at": submitted + timedelta(hours=rng.randint(24, 400)),
                    "updated_at": submitted,
                }
            )
        _insert(connection, ServiceRequest.__table__, requests)  # type: ignore[attr-defined]
        _insert(
            connection,
            ServiceCapacityDay.__table__,  # type: ignore[attr-defined]
            [
                {"testing_service_id": s, "day": d, "accepted_samples": min(count, 10)}
                for (s, d), count in capacity.items()
            ],
        )
        for _, sql in triggers:
            connection.exec_driver_sql(sql)
    raw = database.write_engine.raw_connection()
    try:
        if database.dialect == "sqlite":
            # Outside any transaction. Readers would otherwise look every page up in a
            # write-ahead log of the whole load.
            raw.driver_connection.execute("ANALYZE")  # type: ignore[union-attr]
            raw.driver_connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # type: ignore[union-attr]
        else:
            raw.driver_connection.autocommit = True  # type: ignore[union-attr]
            raw.driver_connection.execute("VACUUM ANALYZE")  # type: ignore[union-attr]
            raw.driver_connection.autocommit = False  # type: ignore[union-attr]
    finally:
        raw.close()
    with database.write_engine.connect() as connection:
        counted = connection.exec_driver_sql("SELECT count(*) FROM usage_record").scalar()
        booked = connection.exec_driver_sql("SELECT count(*) FROM booking").scalar()
    print(
        f"  {booked:,} bookings and {counted:,} usage records built in "
        f"{time.perf_counter() - started:.1f} s"
    )


def _baseline_sql(dialect: str) -> str:
    hours = (
        "(julianday(u.ended_at) - julianday(u.started_at)) * 24.0"
        if dialect == "sqlite"
        else "EXTRACT(EPOCH FROM u.ended_at - u.started_at) / 3600.0"
    )
    # On SQLite the same covering index the report reads (left to itself, SQLite picks the
    # started_at index and visits every row: several times slower, an unfair baseline).
    indexed = " INDEXED BY ix_usage_record_instrument_report" if dialect == "sqlite" else ""
    return (
        f"SELECT i.facility_id, SUM({hours}) FROM usage_record u{indexed} "
        "JOIN instrument i ON i.id = u.instrument_id "
        "WHERE u.started_at >= :start AND u.started_at < :end GROUP BY i.facility_id"
    )


def _time(call: Callable[[], object], runs: int) -> tuple[list[float], list[float]]:
    """Wall-clock and CPU seconds of each run. SQLite works in this process, so its CPU time
    is the fair measure on a busy machine, where the wall clock also counts waiting for a
    core; on PostgreSQL the work happens in the server and only the wall clock tells."""
    call()  # warm-up: caches, the holiday table, the statement cache
    wall, cpu = [], []
    for _ in range(runs):
        started, started_cpu = time.perf_counter(), time.process_time()
        call()
        wall.append(time.perf_counter() - started)
        cpu.append(time.process_time() - started_cpu)
    return wall, cpu


def run(kind: str, database: Database, runs: int, *, with_months: bool = False) -> float:
    start, end = date(YEAR, 1, 1), date(YEAR + 1, 1, 1)
    utc_start = datetime(YEAR - 1, 12, 31, 16, tzinfo=UTC)
    utc_end = datetime(YEAR, 12, 31, 16, tzinfo=UTC)
    bound = (
        {"start": utc_start.replace(tzinfo=None), "end": utc_end.replace(tzinfo=None)}
        if database.dialect == "sqlite"
        else {"start": utc_start, "end": utc_end}
    )
    sql = sa.text(_baseline_sql(database.dialect))

    def baseline() -> object:
        with database.read_engine.connect() as connection:
            return connection.execute(sql, bound).all()

    def by_facility(session: Session, period: PeriodKind) -> UtilizationReport:
        return utilization_report(
            session,
            start=start,
            end=end,
            group_by=GroupBy.FACILITY,
            period=period,
            scope=ReportScope(None),
            zone=ZONE,
        )

    def report(period: PeriodKind) -> Callable[[], object]:
        def call() -> object:
            with database.transaction(write=False) as session:
                return by_facility(session, period).as_dict()

        return call

    def from_records() -> object:
        # Without the zone's months the report sums every record; rolled back afterwards.
        session = database.new_session()
        try:
            session.execute(sa.delete(ReportMonth).where(col(ReportMonth.zone) == ZONE.key))
            return by_facility(session, PeriodKind.YEAR).as_dict()
        finally:
            session.rollback()
            session.close()

    base = _time(baseline, runs)
    yearly = _time(report(PeriodKind.YEAR), runs)
    records = _time(from_records, runs)
    monthly = _time(report(PeriodKind.MONTH), runs) if with_months else ([0.0], [0.0])
    with database.transaction(write=False) as session:
        totals = by_facility(session, PeriodKind.YEAR).totals()
    print(
        f"  totals: effective {totals['effective_hours']:,.0f} h, rated "
        f"{totals['rated_hours']:,.0f} h, utilization {totals['utilization']:.1%}, sharing "
        f"{totals['sharing_rate']:.1%}, no-shows {totals['no_show_rate']:.1%}"
    )
    print(f"  load average now: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    ratio = 0.0
    for clock, which in (("wall", 0), ("CPU", 1)):
        median_base, median_year, median_month, median_records = (
            statistics.median(samples[which]) for samples in (base, yearly, monthly, records)
        )
        print(
            f"  {kind} {clock}: baseline (one raw SQL sum per facility) "
            f"{median_base * 1000:8.1f} ms"
        )
        print(
            f"  {kind} {clock}: full report, year by facility        {median_year * 1000:8.1f} ms"
            f"  = {median_year / median_base:.2f}× the baseline"
        )
        print(
            f"  {kind} {clock}: same, summed from the records        "
            f"{median_records * 1000:8.1f} ms"
            f"  = {median_records / median_base:.2f}× the baseline (information)"
        )
        if with_months:
            print(
                f"  {kind} {clock}: full report, 12 months by facility   "
                f"{median_month * 1000:8.1f} ms"
                f"  = {median_month / median_base:.2f}× the baseline (information)"
            )
        ratio = median_year / median_base
    return ratio


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--instruments", type=int, default=1000)
    parser.add_argument("--usage", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--postgres", help="admin URL: also run on a fresh PostgreSQL database")
    parser.add_argument("--months", action="store_true", help="also time a monthly report")
    parser.add_argument(
        "--sqlite-file",
        type=Path,
        help="build the SQLite data once into this file and reuse it on later runs",
    )
    args = parser.parse_args()
    if args.sqlite_file:
        database = Database(
            Settings(database_url=f"sqlite:///{args.sqlite_file}", sqlite_synchronous="NORMAL")
        )
        built = args.sqlite_file.exists()
        dbschema.upgrade(database)  # a file built by an older schema gets its month totals
        if not built:
            build(database, args.instruments, args.usage)
        print(
            f"sqlite ({args.sqlite_file}): {args.instruments:,} instruments, "
            f"{args.usage:,} usage records"
        )
        run("sqlite", database, args.runs, with_months=args.months)
        database.dispose()
        return
    kinds = ["sqlite"] + (["postgres"] if args.postgres else [])
    for kind in kinds:
        print(f"{kind}: {args.instruments:,} instruments, {args.usage:,} usage records")
        with fresh_database(kind, args.postgres or "") as database:
            build(database, args.instruments, args.usage)
            run(kind, database, args.runs, with_months=args.months)


if __name__ == "__main__":
    main()
