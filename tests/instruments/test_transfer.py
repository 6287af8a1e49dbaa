"""Importing and exporting the instrument list: all or nothing, every problem reported."""

import csv
from pathlib import Path

import pytest
from openpyxl import load_workbook
from sqlmodel import Session, func, select

from instruments.models import Instrument
from instruments.transfer import (
    COLUMNS,
    ImportFailed,
    export_instruments,
    import_instruments,
    read_rows,
)
from tests.instruments.factories import make_facility, make_instrument

HEADER_ZH = [
    "仪器编号",
    "所属平台",
    "仪器名称",
    "关键词",
    "仪器分类",
    "运行模式",
    "原值（元）",
    "校内价格（元/小时）",
    "需培训资格",
]


def count(session: Session) -> int:
    return session.exec(select(func.count()).select_from(Instrument)).one()


def write_csv(path: Path, rows: list[list[object]], encoding: str = "utf-8-sig") -> Path:
    with path.open("w", newline="", encoding=encoding) as handle:
        csv.writer(handle).writerows(rows)
    return path


def test_a_csv_with_chinese_headers_creates_instruments(session: Session, tmp_path: Path) -> None:
    facility = make_facility(session, name="分析测试中心")
    path = write_csv(
        tmp_path / "instruments.csv",
        [
            HEADER_ZH,
            [
                "CQU-001",
                "分析测试中心",
                "场发射扫描电镜",
                "电镜 SEM",
                "分析仪器",
                "自主操作",
                "3,200,000",
                "200",
                "是",
            ],
            [
                "CQU-002",
                str(facility.id),
                "X射线衍射仪",
                "XRD",
                "analytical",
                "both",
                "980000.50",
                "80.5",
                "否",
            ],
        ],
    )
    report = import_instruments(session, read_rows(path))
    assert report.created == ["CQU-001", "CQU-002"]
    sem = session.exec(select(Instrument).where(Instrument.asset_code == "CQU-001")).one()
    assert (sem.purchase_value_fen, sem.price_internal_fen, sem.is_large) == (
        320_000_000,
        20_000,
        True,
    )
    xrd = session.exec(select(Instrument).where(Instrument.asset_code == "CQU-002")).one()
    assert (xrd.purchase_value_fen, xrd.price_internal_fen, xrd.requires_qualification) == (
        98_000_050,
        8_050,
        False,
    )


def test_a_gbk_encoded_csv_is_read(session: Session, tmp_path: Path) -> None:
    make_facility(session, name="分析测试中心")
    path = write_csv(
        tmp_path / "gbk.csv",
        [HEADER_ZH[:6], ["CQU-009", "分析测试中心", "拉曼光谱仪", "Raman", "分析仪器", "机组操作"]],
        encoding="gbk",
    )
    assert import_instruments(session, read_rows(path)).created == ["CQU-009"]


def test_a_bad_row_imports_nothing_and_every_problem_names_its_row_and_column(
    session: Session, tmp_path: Path
) -> None:
    make_facility(session, name="分析测试中心")
    before = count(session)
    path = write_csv(
        tmp_path / "bad.csv",
        [
            HEADER_ZH,
            ["OK-001", "分析测试中心", "好仪器", "", "分析仪器", "both", "1000", "10", "是"],
            ["BAD-002", "不存在的平台", "坏仪器", "", "光谱仪器", "both", "1000", "10.001", "也许"],
            ["OK-001", "分析测试中心", "重复编号", "", "分析仪器", "both", "", "", ""],
            ["BAD-004", "分析测试中心", "负价格", "", "分析仪器", "both", "", "-5", ""],
        ],
    )
    with pytest.raises(ImportFailed) as failed:
        import_instruments(session, read_rows(path))
    problems = {(e.row, e.column) for e in failed.value.report.errors}
    assert {
        (3, "facility"),
        (3, "category"),
        (3, "price_internal_yuan"),
        (3, "requires_qualification"),
    } <= problems
    assert (4, "asset_code") in problems
    assert (5, "price_internal_yuan") in problems
    session.rollback()
    assert count(session) == before


def test_unknown_or_missing_columns_are_reported_before_any_row(
    session: Session, tmp_path: Path
) -> None:
    path = write_csv(
        tmp_path / "cols.csv", [["仪器编号", "仪器名称", "颜色"], ["X-1", "某仪器", "红"]]
    )
    with pytest.raises(ImportFailed) as failed:
        import_instruments(session, read_rows(path))
    errors = {(e.row, e.column) for e in failed.value.report.errors}
    assert (1, "颜色") in errors
    assert {(1, "facility"), (1, "category"), (1, "operation_mode")} <= errors


def test_an_export_imports_back_unchanged(session: Session, tmp_path: Path) -> None:
    facility = make_facility(session, name="电镜中心")
    make_instrument(
        session,
        facility=facility,
        name="透射电镜",
        keywords="TEM 电镜",
        purchase_value_fen=1_234_567_89,
        price_internal_fen=45_050,
        staff_surcharge_fen=10_000,
        special_purpose=True,
    )
    make_instrument(session, facility=facility, name="超薄切片机", status="maintenance")
    path = tmp_path / "export.xlsx"
    assert export_instruments(session, path) == 2
    sheet = load_workbook(path).worksheets[0]
    assert [c.value for c in sheet[1]] == [c.header for c in COLUMNS]
    assert sheet[1][0].font.bold

    before = {
        i.asset_code: i.model_dump(exclude={"updated_at"})
        for i in session.exec(select(Instrument)).all()
    }
    report = import_instruments(session, read_rows(path))
    assert report.created == []
    assert report.updated == []
    assert sorted(report.unchanged) == sorted(before)
    after = {
        i.asset_code: i.model_dump(exclude={"updated_at"})
        for i in session.exec(select(Instrument)).all()
    }
    assert after == before


def test_an_import_updates_known_asset_codes(session: Session, tmp_path: Path) -> None:
    facility = make_facility(session, name="测试平台A")
    make_instrument(
        session, facility=facility, asset_code="A-1", name="旧名称", price_internal_fen=100
    )
    path = write_csv(
        tmp_path / "update.csv",
        [
            ["仪器编号", "所属平台", "仪器名称", "仪器分类", "运行模式", "校内价格（元/小时）"],
            ["A-1", "测试平台A", "新名称", "分析仪器", "both", "2"],
        ],
    )
    report = import_instruments(session, read_rows(path))
    assert report.updated == ["A-1"]
    updated = session.exec(select(Instrument).where(Instrument.asset_code == "A-1")).one()
    assert (updated.name, updated.price_internal_fen) == ("新名称", 200)


def test_an_unsupported_file_type_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "list.txt"
    path.write_text("x")
    with pytest.raises(ValueError, match=r"csv or \.xlsx"):
        read_rows(path)


def test_the_import_documentation_lists_every_column() -> None:
    doc = (Path(__file__).parents[2] / "docs" / "instrument-import.md").read_text(encoding="utf-8")
    for column in COLUMNS:
        assert f"| `{column.key}` | {column.header} |" in doc
