"""`labshare import instruments` and `labshare export instruments` as an operator runs them."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlmodel import func, select
from typer.testing import CliRunner

from core.db import Database
from core.settings import Settings, get_settings
from instruments.models import Instrument
from tests.instruments.factories import make_facility
from web import dbschema
from web.cli import app

runner = CliRunner()


@pytest.fixture
def database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Database]:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    monkeypatch.setenv("LABSHARE_DATABASE_URL", url)
    get_settings.cache_clear()
    database = Database(Settings(database_url=url))
    dbschema.upgrade(database)
    with database.transaction() as session:
        make_facility(session, name="分析测试中心")
    yield database
    database.dispose()
    get_settings.cache_clear()


def instrument_count(database: Database) -> int:
    with database.transaction(write=False) as session:
        return session.exec(select(func.count()).select_from(Instrument)).one()


def csv_file(tmp_path: Path, *rows: str) -> Path:
    path = tmp_path / "list.csv"
    header = "仪器编号,所属平台,仪器名称,仪器分类,运行模式,校内价格（元/小时）"
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def test_a_dry_run_checks_everything_and_writes_nothing(database: Database, tmp_path: Path) -> None:
    path = csv_file(tmp_path, "A-1,分析测试中心,拉曼光谱仪,分析仪器,自主操作,80")
    result = runner.invoke(app, ["import", "instruments", str(path), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "Would import 1 rows: 1 new" in result.output
    assert instrument_count(database) == 0


def test_an_import_writes_and_a_second_one_changes_nothing(
    database: Database, tmp_path: Path
) -> None:
    path = csv_file(
        tmp_path,
        "A-1,分析测试中心,拉曼光谱仪,分析仪器,自主操作,80",
        "A-2,分析测试中心,红外光谱仪,分析仪器,both,40",
    )
    assert runner.invoke(app, ["import", "instruments", str(path)]).exit_code == 0
    assert instrument_count(database) == 2
    again = runner.invoke(app, ["import", "instruments", str(path)])
    assert "0 new, 0 updated, 2 unchanged" in again.output


def test_a_bad_row_is_reported_and_nothing_imported(database: Database, tmp_path: Path) -> None:
    path = csv_file(
        tmp_path,
        "A-1,分析测试中心,拉曼光谱仪,分析仪器,自主操作,80",
        "A-2,分析测试中心,坏仪器,不是分类,both,1.001",
    )
    result = runner.invoke(app, ["import", "instruments", str(path)])
    assert result.exit_code == 2
    assert "row 3, column category" in result.output
    assert "row 3, column price_internal_yuan" in result.output
    assert "nothing was imported" in result.output
    assert instrument_count(database) == 0


def test_an_export_round_trips_through_the_command_line(database: Database, tmp_path: Path) -> None:
    path = csv_file(tmp_path, "A-1,分析测试中心,拉曼光谱仪,分析仪器,自主操作,80")
    runner.invoke(app, ["import", "instruments", str(path)])
    exported = tmp_path / "out.xlsx"
    result = runner.invoke(app, ["export", "instruments", str(exported)])
    assert result.exit_code == 0, result.output
    assert "Exported 1 instruments" in result.output
    again = runner.invoke(app, ["import", "instruments", str(exported)])
    assert "0 new, 0 updated, 1 unchanged" in again.output


def test_export_writes_only_xlsx(database: Database, tmp_path: Path) -> None:
    result = runner.invoke(app, ["export", "instruments", str(tmp_path / "out.csv")])
    assert result.exit_code == 2
