"""`labshare report utilization` and `labshare report usage-export` as an operator runs them,
on an SQLite file of the test's own holding the October 2025 of tests/reports/world.py."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from openpyxl import load_workbook
from typer.testing import CliRunner

from core.db import Database
from core.settings import Settings, get_settings
from tests.reports.world import World, build_world
from web import dbschema
from web.cli import app

runner = CliRunner()


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    monkeypatch.setenv("LABSHARE_DATABASE_URL", url)
    monkeypatch.setenv("LABSHARE_SQLITE_SYNCHRONOUS", "NORMAL")
    get_settings.cache_clear()
    database = Database(Settings(database_url=url))
    dbschema.upgrade(database)
    with database.transaction() as session:
        built = build_world(session)
    database.dispose()
    yield built
    get_settings.cache_clear()


def test_the_report_is_written_as_csv_xlsx_or_json(world: World, tmp_path: Path) -> None:
    period = ["--from", "2025-10-01", "--to", "2026-01-01"]
    as_csv = tmp_path / "report.csv"
    result = runner.invoke(
        app, ["report", "utilization", *period, "--group-by", "facility", "-o", str(as_csv)]
    )
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(as_csv.read_text(encoding="utf-8-sig").splitlines()))
    assert len(rows) == 2 * 3  # two facilities × October, November, December
    october_f = next(r for r in rows if r["name"] == "报表平台F" and r["period"] == "2025-10")
    assert float(october_f["effective_hours"]) == 9.5

    as_xlsx = tmp_path / "report.xlsx"
    result = runner.invoke(
        app,
        [
            "report",
            "utilization",
            *period,
            "--period",
            "quarter",
            "--group-by",
            "cluster",
            "-o",
            str(as_xlsx),
        ],
    )
    assert result.exit_code == 0, result.output
    sheet = load_workbook(as_xlsx)["明细 by period"]
    assert list(sheet.iter_rows(values_only=True))[-1][0] == "合计 Total"

    result = runner.invoke(app, ["report", "utilization", *period, "--period", "year"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["totals"]["effective_hours"] == 9.5 + 8 + 1 + 1


def test_bad_options_are_refused_with_reasons(world: World, tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["report", "utilization", "--from", "2025-11-01", "--to", "2025-10-01"]
    )
    assert result.exit_code == 2
    assert "ends before it starts" in result.output
    result = runner.invoke(
        app,
        [
            "report",
            "utilization",
            "--from",
            "2025-10-01",
            "--to",
            "2025-11-01",
            "--group-by",
            "room",
        ],
    )
    assert result.exit_code == 2
    assert "--group-by" in result.output
    result = runner.invoke(
        app, ["report", "utilization", "--from", "2025-10-01", "--to", "2040-01-01"]
    )
    assert result.exit_code == 2
    assert "10 years" in result.output


def test_the_usage_export_writes_the_instruments_records(world: World, tmp_path: Path) -> None:
    output = tmp_path / "usage.xlsx"
    result = runner.invoke(
        app,
        [
            "report",
            "usage-export",
            "--instrument",
            str(world.a.id),
            "--from",
            "2025-10-01",
            "--to",
            "2025-11-01",
            "-o",
            str(output),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "Exported 5 usage records of RPT-A" in result.output
    assert load_workbook(output).active.max_row == 2 + 5


def test_the_month_totals_are_rebuilt_from_the_records(world: World) -> None:
    """A bulk load that set the triggers aside leaves totals behind; the rebuild puts them
    right and says how many were off."""
    database = Database(get_settings())
    with database.transaction() as session:
        session.execute(sa.text("UPDATE instrument_month SET usage_ms = usage_ms + 3600000"))
        changed = session.execute(
            sa.text("SELECT count(*) FROM instrument_month WHERE usage_ms <> 3600000")
        ).scalar_one()
    database.dispose()
    result = runner.invoke(app, ["report", "rebuild-totals"])
    assert result.exit_code == 0, result.output
    assert f"{changed} differed" in result.output
    assert changed > 0
    result = runner.invoke(app, ["report", "rebuild-totals", "--zone", "Asia/Shanghai"])
    assert "0 differed" in result.output
    october = ["--from", "2025-10-01", "--to", "2025-11-01", "--format", "json"]
    report = json.loads(runner.invoke(app, ["report", "utilization", *october]).stdout)
    assert report["totals"]["effective_hours"] == 9.5 + 8  # facility F's and G's October

    unknown = runner.invoke(app, ["report", "rebuild-totals", "--zone", "Mars/Olympus"])
    assert unknown.exit_code == 1
    assert "Unknown time zone" in unknown.output


def test_an_old_zone_stops_being_kept(world: World) -> None:
    """After LABSHARE_TIMEZONE changes, the old zone's totals can be dropped; the platform's
    own zone cannot."""
    from datetime import UTC, datetime
    from zoneinfo import ZoneInfo

    from booking.models import UsageRecord
    from reports import month_totals

    database = Database(get_settings())
    with database.transaction() as session:
        assert month_totals.ensure_zone(session, ZoneInfo("Europe/Berlin"))
    result = runner.invoke(app, ["report", "drop-totals", "--zone", "Europe/Berlin"])
    assert result.exit_code == 0, result.output
    assert "dropped" in result.output
    with database.transaction() as session:
        assert month_totals.coverage(session, ZoneInfo("Europe/Berlin")) is None
        # A write after the drop adds nothing for the dropped zone.
        session.add(
            UsageRecord(
                instrument_id=world.a.id or 0,
                user_id=world.internal_user.id or 0,
                started_at=datetime(2025, 10, 20, 1, tzinfo=UTC),
                ended_at=datetime(2025, 10, 20, 3, tzinfo=UTC),
            )
        )
        session.flush()
        kept = session.execute(
            sa.text("SELECT count(*) FROM instrument_month WHERE zone = 'Europe/Berlin'")
        ).scalar_one()
        assert kept == 0
    database.dispose()
    again = runner.invoke(app, ["report", "drop-totals", "--zone", "Europe/Berlin"])
    assert "No month totals were kept" in again.output
    own = runner.invoke(app, ["report", "drop-totals", "--zone", "Asia/Shanghai"])
    assert own.exit_code == 2
    assert "LABSHARE_TIMEZONE" in own.output
