"""Importing and exporting the instrument list as CSV or XLSX.

The column set is documented in docs/instrument-import.md; each column may be headed by its key
(``asset_code``) or its Chinese header (``仪器编号``). Rows are matched to instruments by asset
code: a new code creates an instrument, a known one updates it. An import is all-or-nothing:
every row is checked, every problem is reported with its row and column, and if there is any,
nothing is written. An export, imported again, changes nothing.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from openpyxl import Workbook, load_workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.styles import Font, PatternFill
from pydantic import ValidationError
from sqlmodel import Session, col, select

from core.auth.principal import Principal
from core.errors import DomainError
from core.money import MoneyError, fen_to_yuan, yuan_to_fen
from instruments import service
from instruments.models import Facility, Instrument
from instruments.rules import (
    CATEGORY_BY_CHINESE,
    CATEGORY_NAMES,
    ApprovalMode,
    Category,
    InstrumentStatus,
    OperationMode,
)
from instruments.schemas import InstrumentCreate, InstrumentUpdate


@dataclass(frozen=True)
class Column:
    key: str
    header: str  # Chinese header, as the file's users write it
    kind: str  # text, int, bool, yuan, date, category, status, mode, approval, facility
    required: bool = False


COLUMNS: tuple[Column, ...] = (
    Column("asset_code", "仪器编号", "text", required=True),
    Column("facility", "所属平台", "facility", required=True),
    Column("name", "仪器名称", "text", required=True),
    Column("name_en", "英文名称", "text"),
    Column("keywords", "关键词", "text"),
    Column("model", "型号", "text"),
    Column("manufacturer", "生产厂商", "text"),
    Column("country_of_origin", "产地国别", "text"),
    Column("category", "仪器分类", "category", required=True),
    Column("purchase_value_yuan", "原值（元）", "yuan"),
    Column("purchase_date", "购置日期", "date"),
    Column("location", "放置地点", "text"),
    Column("description", "仪器简介", "text"),
    Column("specifications", "主要技术指标", "text"),
    Column("photo_url", "图片链接", "text"),
    Column("status", "状态", "status"),
    Column("operation_mode", "运行模式", "mode", required=True),
    Column("special_purpose", "专用仪器", "bool"),
    Column("rated_annual_hours", "额定机时（小时/年）", "int"),
    Column("slot_minutes", "预约粒度（分钟）", "int"),
    Column("min_duration_minutes", "最短预约（分钟）", "int"),
    Column("max_duration_minutes", "最长预约（分钟）", "int"),
    Column("max_advance_days", "最多提前预约（天）", "int"),
    Column("min_notice_minutes", "最少提前预约（分钟）", "int"),
    Column("buffer_minutes", "预约间隔（分钟）", "int"),
    Column("approval_mode", "审核方式", "approval"),
    Column("cancellation_deadline_hours", "免费取消时限（小时）", "int"),
    Column("late_cancel_charge_percent", "迟取消收费比例（%）", "int"),
    Column("no_show_charge_percent", "爽约收费比例（%）", "int"),
    Column("unattended_runs_allowed", "允许无人值守", "bool"),
    Column("requires_qualification", "需培训资格", "bool"),
    Column("user_weekly_hours_limit", "每人每周限时（小时）", "int"),
    Column("user_future_bookings_limit", "每人未来预约数上限", "int"),
    Column("organisation_weekly_hours_limit", "每单位每周限时（小时）", "int"),
    Column("price_internal_yuan", "校内价格（元/小时）", "yuan"),
    Column("price_external_academic_yuan", "校外科研价格（元/小时）", "yuan"),
    Column("price_enterprise_yuan", "企业价格（元/小时）", "yuan"),
    Column("staff_surcharge_yuan", "机组操作附加费（元/小时）", "yuan"),
    Column("min_billing_minutes", "最小计费单位（分钟）", "int"),
    Column("min_charge_yuan", "最低收费（元）", "yuan"),
)
BY_KEY = {c.key: c for c in COLUMNS}
BY_HEADER = {c.header: c for c in COLUMNS} | BY_KEY

STATUS_WORDS = {
    "在用": InstrumentStatus.ACTIVE,
    "维修": InstrumentStatus.MAINTENANCE,
    "报废": InstrumentStatus.RETIRED,
}
MODE_WORDS = {
    "自主操作": OperationMode.SELF_OPERATED,
    "机组操作": OperationMode.STAFF_OPERATED,
    "两者皆可": OperationMode.BOTH,
}
APPROVAL_WORDS = {
    "合格用户自动": ApprovalMode.AUTOMATIC_FOR_QUALIFIED,
    "人工审核": ApprovalMode.MANUAL,
}
TRUE_WORDS = {"是", "true", "yes", "y", "1"}
FALSE_WORDS = {"否", "false", "no", "n", "0"}
# File columns in yuan map to model fields in fen.
YUAN_FIELDS = {
    "purchase_value_yuan": "purchase_value_fen",
    "price_internal_yuan": "price_internal_fen",
    "price_external_academic_yuan": "price_external_academic_fen",
    "price_enterprise_yuan": "price_enterprise_fen",
    "staff_surcharge_yuan": "staff_surcharge_fen",
    "min_charge_yuan": "min_charge_fen",
}
FIELD_TO_COLUMN = {fen: yuan for yuan, fen in YUAN_FIELDS.items()} | {"facility_id": "facility"}


@dataclass(frozen=True)
class RowError:
    row: int  # the file's row number, the header being row 1
    column: str | None
    reason: str

    def __str__(self) -> str:
        where = f"row {self.row}" + (f", column {self.column}" if self.column else "")
        return f"{where}: {self.reason}"


@dataclass
class ImportReport:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return len(self.created) + len(self.updated) + len(self.unchanged)


class ImportFailed(Exception):
    def __init__(self, report: ImportReport) -> None:
        super().__init__(f"{len(report.errors)} problem(s); nothing was imported")
        self.report = report


# --- Reading files -----------------------------------------------------------------------


def _read_csv(path: Path) -> Iterator[list[Any]]:
    raw = path.read_bytes()
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            text = raw.decode(encoding)
            break
        except UnicodeDecodeError:
            continue
    else:  # pragma: no cover - gb18030 decodes any byte string
        raise ValueError("The file is neither UTF-8 nor GB18030 text.")
    yield from csv.reader(io.StringIO(text))


def _read_xlsx(path: Path) -> Iterator[list[Any]]:
    workbook = load_workbook(path, read_only=True, data_only=True)
    try:
        sheet = workbook.worksheets[0]
        for row in sheet.iter_rows(values_only=True):
            yield list(row)
    finally:
        workbook.close()


def read_rows(path: Path) -> Iterator[list[Any]]:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _read_csv(path)
    if suffix in (".xlsx", ".xlsm"):
        return _read_xlsx(path)
    raise ValueError(f"Unsupported file type {suffix!r}: use .csv or .xlsx.")


# --- Converting cells --------------------------------------------------------------------


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _convert(column: Column, value: Any, facilities: dict[str, int]) -> Any:
    """A cell's value in the model's terms; ValueError says why it is wrong."""
    if column.kind == "date":
        if isinstance(value, datetime):
            return value.date()
        if isinstance(value, date):
            return value
        return date.fromisoformat(str(value).strip())
    text = str(value).strip()
    if column.kind == "text":
        return text
    if column.kind == "int":
        try:
            number = Decimal(text)
        except InvalidOperation as exc:
            raise ValueError("must be a whole number") from exc
        if number != number.to_integral_value():
            raise ValueError("must be a whole number")
        return int(number)
    if column.kind == "yuan":
        try:
            return yuan_to_fen(str(value))
        except MoneyError as exc:
            raise ValueError(str(exc)) from exc
    if column.kind == "bool":
        lowered = str(text).lower()
        if lowered in TRUE_WORDS:
            return True
        if lowered in FALSE_WORDS:
            return False
        raise ValueError("must be 是 or 否 (true or false)")
    if column.kind == "category":
        if text in CATEGORY_BY_CHINESE:
            return CATEGORY_BY_CHINESE[text]
        return Category(text)
    if column.kind == "status":
        return STATUS_WORDS.get(str(text)) or InstrumentStatus(text)
    if column.kind == "mode":
        return MODE_WORDS.get(str(text)) or OperationMode(text)
    if column.kind == "approval":
        return APPROVAL_WORDS.get(str(text)) or ApprovalMode(text)
    if column.kind == "facility":
        if str(text) in facilities:
            return facilities[str(text)]
        if str(text).isdigit() and int(str(text)) in facilities.values():
            return int(str(text))
        raise ValueError(f"no facility named {text}")
    raise AssertionError(column.kind)


def _problems_to_errors(row: int, exc: DomainError) -> list[RowError]:
    if not exc.problems:
        return [RowError(row, None, exc.detail)]
    return [
        RowError(row, FIELD_TO_COLUMN.get(p.field or "", p.field) if p.field else None, p.message)
        for p in exc.problems
    ]


def _validation_errors(row: int, exc: ValidationError) -> list[RowError]:
    errors = []
    for error in exc.errors():
        name = str(error["loc"][0]) if error.get("loc") else None
        errors.append(RowError(row, FIELD_TO_COLUMN.get(name or "", name), str(error["msg"])))
    return errors


def import_instruments(
    session: Session,
    rows: Iterable[list[Any]],
    *,
    actor: Principal | None = None,
    progress: Callable[[int], None] | None = None,
) -> ImportReport:
    """Create or update instruments from rows (the first is the header). All or nothing:
    raises :class:`ImportFailed` listing every problem; the caller then rolls back."""
    report = ImportReport()
    iterator = iter(rows)
    header = next(iterator, None)
    if header is None:
        report.errors.append(RowError(1, None, "The file is empty."))
        raise ImportFailed(report)
    columns: list[Column | None] = []
    for raw in header:
        name = str(raw).strip() if raw is not None else ""
        if not name:
            columns.append(None)
            continue
        if name not in BY_HEADER:
            report.errors.append(RowError(1, name, "Unknown column."))
        columns.append(BY_HEADER.get(name))
    present = {c.key for c in columns if c}
    for column in COLUMNS:
        if column.required and column.key not in present:
            report.errors.append(
                RowError(1, column.key, f"Required column missing ({column.header}).")
            )
    if report.errors:
        raise ImportFailed(report)

    facilities = {
        name: fid for fid, name in session.exec(select(Facility.id, Facility.name)).all() if fid
    }
    seen_codes: dict[str, int] = {}
    for index, raw_row in enumerate(iterator, start=2):
        if progress:
            progress(index - 1)
        if all(_blank(v) for v in raw_row):
            continue
        values: dict[str, Any] = {}
        row_errors: list[RowError] = []
        for cell_column, value in zip(columns, raw_row, strict=False):
            if cell_column is None or _blank(value):
                if cell_column is not None and cell_column.required:
                    row_errors.append(RowError(index, cell_column.key, "Required."))
                continue
            try:
                converted = _convert(cell_column, value, facilities)
            except ValueError as exc:
                row_errors.append(RowError(index, cell_column.key, str(exc) or "Invalid value."))
                continue
            key = (
                "facility_id"
                if cell_column.key == "facility"
                else YUAN_FIELDS.get(cell_column.key, cell_column.key)
            )
            values[key] = converted
        code = str(values.get("asset_code", ""))
        if code in seen_codes:
            row_errors.append(RowError(index, "asset_code", f"Also on row {seen_codes[code]}."))
        if row_errors:
            report.errors.extend(row_errors)
            continue
        seen_codes[code] = index
        _apply_row(session, index, values, actor, report)
    if report.errors:
        raise ImportFailed(report)
    return report


def _apply_row(
    session: Session,
    index: int,
    values: dict[str, Any],
    actor: Principal | None,
    report: ImportReport,
) -> None:
    existing = session.exec(
        select(Instrument).where(Instrument.asset_code == values["asset_code"])
    ).first()
    try:
        with session.begin_nested():
            if existing is None:
                service.create_instrument(
                    session, actor=actor, data=InstrumentCreate.model_validate(values)
                )
                report.created.append(values["asset_code"])
                return
            current = existing.model_dump()
            changes = {
                k: v
                for k, v in values.items()
                if current.get(k) != (str(v) if k == "photo_url" else v)
            }
            if not changes:
                report.unchanged.append(values["asset_code"])
                return
            service.update_instrument(
                session,
                actor=actor,
                instrument_id=existing.id or 0,
                data=InstrumentUpdate.model_validate(changes),
            )
            report.updated.append(values["asset_code"])
    except ValidationError as exc:
        report.errors.extend(_validation_errors(index, exc))
    except DomainError as exc:
        report.errors.extend(_problems_to_errors(index, exc))


# --- Export ------------------------------------------------------------------------------

STATUS_NAMES = {v: k for k, v in STATUS_WORDS.items()}
MODE_NAMES = {v: k for k, v in MODE_WORDS.items()}
APPROVAL_NAMES = {v: k for k, v in APPROVAL_WORDS.items()}


def _export_value(column: Column, instrument: Instrument, facility_name: str) -> Any:
    if column.key == "facility":
        return facility_name
    if column.kind == "yuan":
        fen = getattr(instrument, YUAN_FIELDS[column.key])
        return None if fen is None else float(fen_to_yuan(fen))
    value = getattr(instrument, column.key)
    if column.kind == "category":
        return CATEGORY_NAMES[value][0]
    if column.kind == "status":
        return STATUS_NAMES[value]
    if column.kind == "mode":
        return MODE_NAMES[value]
    if column.kind == "approval":
        return APPROVAL_NAMES[value]
    if column.kind == "bool":
        return "是" if value else "否"
    return value


def export_instruments(
    session: Session,
    path: Path,
    *,
    facility_ids: list[int] | None = None,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Write the instruments to an XLSX file (streamed: constant memory) and count them."""
    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet("仪器 instruments")
    bold = Font(bold=True)
    fill = PatternFill("solid", fgColor="DDEBF7")
    header = []
    for column in COLUMNS:
        cell = WriteOnlyCell(sheet, value=column.header)
        cell.font, cell.fill = bold, fill
        header.append(cell)
    sheet.append(header)
    query = (
        select(Instrument, Facility.name)
        .join(Facility, col(Facility.id) == Instrument.facility_id)
        .order_by(col(Instrument.id))
    )
    if facility_ids is not None:
        query = query.where(col(Instrument.facility_id).in_(facility_ids))
    count = 0
    for instrument, facility_name in session.exec(query.execution_options(yield_per=500)):
        sheet.append([_export_value(c, instrument, facility_name) for c in COLUMNS])
        count += 1
        if progress:
            progress(count)
    workbook.save(path)
    return count
