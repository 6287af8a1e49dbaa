"""Usage-record export speed and memory: 100,000 usage records of one instrument to XLSX.

Target (issue "Utilization reports"): under 6 s, streamed (constant memory). The records are
bulk-inserted into a fresh SQLite file; the export runs exactly as the API and the CLI run it
(reports.queries.usage_export_rows → reports.export.usage_xlsx), written to a file. Printed:
the time, the file's size, Python's peak allocation during the export (tracemalloc) for
10,000 and for 100,000 records — constant memory means the two peaks are alike — and a
baseline measured in the same run: one raw SQL query reading the same rows.

    .venv/bin/python bench/report_export.py [--records 100000]
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import sys
import tempfile
import time
import tracemalloc
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import fresh_database
from bench.report_utilization import _insert
from booking.models import Booking, UsageRecord
from core.accounts.models import Organisation, User
from core.db import Database
from instruments.models import Facility
from reports import export, queries
from reports.rules import ReportScope, local_midnight

ZONE = ZoneInfo("Asia/Shanghai")


def build(database: Database, records: int) -> None:
    rng = random.Random(5)
    created = datetime(2024, 1, 1, tzinfo=UTC)
    with database.write_engine.begin() as connection:
        _insert(
            connection,
            Organisation.__table__,  # type: ignore[attr-defined]
            [
                {
                    "id": o + 1,
                    "name": f"导出单位{o}",
                    "type": "university",
                    "district": "沙坪坝区",
                    "cluster": "western_science_city",
                    "is_sme": False,
                    "is_tech_sme": False,
                    "created_at": created,
                    "updated_at": created,
                }
                for o in range(20)
            ],
        )
        _insert(
            connection,
            User.__table__,  # type: ignore[attr-defined]
            [
                {
                    "id": u + 1,
                    "email": f"export{u}@example.cn",
                    "name": f"导出用户{u}",
                    "organisation_id": u % 20 + 1,
                    "locale": "zh-CN",
                    "is_active": True,
                    "created_at": created,
                    "updated_at": created,
                }
                for u in range(500)
            ],
        )
        _insert(
            connection,
            Facility.__table__,  # type: ignore[attr-defined]
            [
                {
                    "id": 1,
                    "organisation_id": 1,
                    "name": "导出平台",
                    "description": "",
                    "address": "",
                    "district": "沙坪坝区",
                    "cluster": "western_science_city",
                    "contact_name": "",
                    "contact_phone": "",
                    "contact_email": "",
                    "timezone": "Asia/Shanghai",
                    "opens_on_holidays": False,
                    "is_active": True,
                    "calendar_token": "export" + "0" * 26,
                    "created_at": created,
                    "updated_at": created,
                }
            ],
        )
        connection.exec_driver_sql(
            "INSERT INTO instrument (id, facility_id, asset_code, name, name_en, keywords, model,"
            " manufacturer, country_of_origin, category, is_large, location, description,"
            " specifications, photo_url, status, operation_mode, special_purpose,"
            " rated_annual_hours, slot_minutes, min_duration_minutes, max_duration_minutes,"
            " max_advance_days, min_notice_minutes, buffer_minutes, approval_mode,"
            " cancellation_deadline_hours, late_cancel_charge_percent, no_show_charge_percent,"
            " unattended_runs_allowed, requires_qualification, price_internal_fen,"
            " price_external_academic_fen, price_enterprise_fen, staff_surcharge_fen,"
            " min_billing_minutes, min_charge_fen, search_text, created_at, updated_at) VALUES"
            " (1, 1, 'EXPORT-1', '导出仪器', '', '', '', '', '', 'analytical', 1, '', '', '', '',"
            " 'active', 'both', 0, 1400, 30, 30, 480, 60, 60, 0, 'automatic_for_qualified', 24,"
            " 50, 50, 0, 1, 0, 0, 0, 0, 30, 0, '', '2024-01-01 00:00:00.000000',"
            " '2024-01-01 00:00:00.000000')"
        )
        start = datetime(2025, 1, 1, 1, tzinfo=UTC)
        bookings, usage = [], []
        for n in range(records):
            begins = start + timedelta(hours=3 * n)
            ends = begins + timedelta(minutes=rng.randint(30, 170))
            user = rng.randrange(500) + 1
            if n % 2 == 0:
                bookings.append(
                    {
                        "id": n + 1,
                        "instrument_id": 1,
                        "facility_id": 1,
                        "user_id": user,
                        "organisation_id": (user - 1) % 20 + 1,
                        "start_at": begins,
                        "end_at": ends,
                        "held_until": ends,
                        "status": "completed",
                        "operated_by": "staff" if n % 4 else "self",
                        "purpose": f"XRD 物相分析，样品批次 {n}",
                        "charge_account": "",
                        "version": 0,
                        "overrides": [],
                        "reason": "",
                        "late_cancellation": False,
                        "attention": "",
                        "created_at": begins,
                        "updated_at": ends,
                    }
                )
            usage.append(
                {
                    "booking_id": n + 1 if n % 2 == 0 else None,
                    "instrument_id": 1,
                    "user_id": user,
                    "organisation_id": (user - 1) % 20 + 1,
                    "started_at": begins,
                    "ended_at": ends,
                    "samples": rng.randint(1, 8),
                    "kind": "use",
                    "note": "" if n % 2 == 0 else "现场使用",
                    "created_at": ends,
                }
            )
        triggers = connection.exec_driver_sql(
            # Only the overlap guard (every row here is past): the month totals stay kept.
            "SELECT name, sql FROM sqlite_master "
            "WHERE type = 'trigger' AND name LIKE 'booking_no_overlap%'"
        ).all()
        for name, _ in triggers:
            connection.exec_driver_sql(f"DROP TRIGGER {name}")
        _insert(connection, Booking.__table__, bookings)  # type: ignore[attr-defined]
        _insert(connection, UsageRecord.__table__, usage)  # type: ignore[attr-defined]
        for _, sql in triggers:
            connection.exec_driver_sql(sql)


def export_once(
    database: Database, records: int, path: Path, *, trace: bool
) -> tuple[float, float, int, int]:
    """Wall-clock and CPU seconds (everything runs in this process: on a busy machine the CPU
    time is the fair measure), bytes written and, when traced (which slows Python down several
    times), Python's peak allocation while exporting."""
    first = date(2025, 1, 1)
    last = first + timedelta(days=records // 8 + 2)  # eight records a day
    if trace:
        tracemalloc.start()
    started, started_cpu = time.perf_counter(), time.process_time()
    with database.transaction(write=False) as session, path.open("wb") as out:
        header = queries.usage_export_header(session, instrument_id=1, scope=ReportScope(None))
        rows = queries.usage_export_rows(
            session,
            instrument_id=1,
            start=local_midnight(first, header.zone),
            end=local_midnight(last, header.zone),
        )
        for chunk in export.usage_xlsx(header, rows):
            out.write(chunk)
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - started_cpu
    peak = 0
    if trace:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return elapsed, cpu, path.stat().st_size, peak


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=100_000)
    args = parser.parse_args()
    with fresh_database("sqlite", "") as database, tempfile.TemporaryDirectory() as directory:
        started = time.perf_counter()
        build(database, args.records)
        print(f"  {args.records:,} usage records built in {time.perf_counter() - started:.1f} s")
        baseline_started = time.perf_counter()
        with database.read_engine.connect() as connection:
            count = sum(
                1
                for _ in connection.exec_driver_sql(
                    "SELECT u.started_at, u.ended_at, u.samples, a.name, o.name, b.purpose"
                    " FROM usage_record u JOIN app_user a ON a.id = u.user_id"
                    " LEFT JOIN organisation o ON o.id = u.organisation_id"
                    " LEFT JOIN booking b ON b.id = u.booking_id"
                    " WHERE u.instrument_id = 1 ORDER BY u.started_at"
                )
            )
        baseline = time.perf_counter() - baseline_started
        print(f"  baseline: one raw SQL query reading the {count:,} rows: {baseline:6.2f} s")
        output = Path(directory) / "usage.xlsx"
        elapsed, cpu, size, _ = export_once(database, args.records, output, trace=False)
        print(
            f"  {args.records:>7,} records → XLSX: {elapsed:6.2f} s wall, {cpu:6.2f} s CPU "
            f"({elapsed / baseline:.1f}× the baseline's wall time), {size / 1e6:5.1f} MB file"
        )
        print(f"  load average now: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
        for records in sorted({min(10_000, args.records), args.records}):
            _, _, _, peak = export_once(database, records, output, trace=True)
            print(f"  {records:>7,} records: Python's peak allocation {peak / 1e6:5.1f} MB")
        rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"  process peak resident memory (whole run, build included): {rss_mb:.0f} MB")


if __name__ == "__main__":
    main()
