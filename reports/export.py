"""Streamed CSV and XLSX files of reports and usage records, in constant memory.

Both formats are generators of byte chunks: rows are read from an iterator and written as they
come, so a download starts at once and a million records never sit in memory. XLSX files are
written here as plain SpreadsheetML (inline strings, a frozen, formatted header, a units row
and a totals row) into a ZIP stream: openpyxl's own writer is about ten times slower without
lxml, and its write-only mode still holds each sheet in a temporary file before zipping.
"""

from __future__ import annotations

import csv
import io
import re
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from xml.sax.saxutils import escape

from reports import rules
from reports.queries import FIGURES, UsageExportHeader, UtilizationReport
from reports.rules import GroupBy, UsageKind

Progress = Callable[[int], None]
CHUNK_ROWS = 500  # rows written between two chunks handed to the caller


@dataclass(frozen=True)
class Column:
    key: str
    zh: str
    en: str
    unit: str = ""
    kind: str = "text"  # text, hours, ratio, count, number

    @property
    def header(self) -> str:
        return f"{self.zh} {self.en}"


def _figure_column(name: str) -> Column:
    titles = FIGURE_TITLES[name]
    definition = rules.METRIC_DEFINITIONS.get(name, {})
    unit = definition.get("unit", titles[2])
    kind = {"h": "hours", "%": "ratio", "d": "number"}.get(unit, "count")
    return Column(name, titles[0], titles[1], unit, kind)


FIGURE_TITLES: dict[str, tuple[str, str, str]] = {
    "instruments": ("仪器数", "Instruments", "台"),
    "large_instruments": ("大型仪器数", "Large instruments", "台"),
    "available_hours": ("可用机时", "Available hours", "h"),
    "outage_hours": ("停机机时", "Outage hours", "h"),
    "rated_hours": ("额定机时", "Rated hours", "h"),
    "booked_hours": ("预约机时", "Booked hours", "h"),
    "effective_hours": ("有效机时", "Effective hours", "h"),
    "external_hours": ("对外服务机时", "External service hours", "h"),
    "training_hours": ("培训机时", "Training hours", "h"),
    "maintenance_hours": ("维护机时", "Maintenance hours", "h"),
    "utilization": ("使用率", "Utilization", "%"),
    "occupancy": ("预约占用率", "Occupancy", "%"),
    "sharing_rate": ("共享率", "Sharing rate", "%"),
    "bookings": ("预约数", "Bookings", "次"),
    "completed": ("完成数", "Completed", "次"),
    "no_shows": ("爽约数", "No-shows", "次"),
    "late_cancellations": ("逾期取消数", "Late cancellations", "次"),
    "no_show_rate": ("爽约率", "No-show rate", "%"),
    "late_cancel_rate": ("逾期取消率", "Late-cancel rate", "%"),
    "samples_accepted": ("受理样品数", "Samples accepted", "个"),
    "sample_capacity": ("样品容量", "Sample capacity", "个"),
    "testing_capacity_use": ("检测能力利用率", "Testing capacity use", "%"),
    "reports_issued": ("出具报告数", "Reports issued", "份"),
    "turnaround_days": ("检测周期中位数", "Median turnaround", "d"),
}

GROUP_COLUMNS: dict[GroupBy, tuple[Column, ...]] = {
    GroupBy.INSTRUMENT: (
        Column("asset_code", "仪器编号", "Asset code"),
        Column("name", "仪器名称", "Instrument"),
        Column("facility_name", "所属平台", "Facility"),
        Column("is_large", "大型仪器", "Large"),
    ),
    GroupBy.FACILITY: (Column("name", "平台", "Facility"), Column("district", "区县", "District")),
    GroupBy.ORGANISATION: (Column("name", "单位", "Organisation"),),
    GroupBy.CATEGORY: (Column("name", "仪器类别", "Category"), Column("name_en", "", "")),
    GroupBy.CLUSTER: (Column("name", "科创集群", "Cluster"), Column("name_en", "", "")),
    GroupBy.DISTRICT: (Column("name", "区县", "District"),),
}
PERIOD_COLUMN = Column("period", "统计期", "Period")


def report_columns(group_by: GroupBy, *, with_period: bool = True) -> list[Column]:
    columns = [Column("key", "编号", "Key"), *GROUP_COLUMNS[group_by]]
    if with_period:
        columns.append(PERIOD_COLUMN)
    return columns + [_figure_column(name) for name in FIGURES]


# --- CSV -------------------------------------------------------------------------------------


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    return value


def csv_stream(
    columns: Sequence[Column], rows: Iterable[dict[str, Any]], progress: Progress | None = None
) -> Iterator[bytes]:
    """UTF-8 with a byte-order mark (so spreadsheet programs read Chinese), a header of
    stable column keys, ratios as fractions, hours as decimal numbers."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow([c.key for c in columns])
    yield "\ufeff".encode() + buffer.getvalue().encode()
    buffer.seek(0)
    buffer.truncate()
    count = 0
    for row in rows:
        writer.writerow([_csv_value(row.get(c.key)) for c in columns])
        count += 1
        if count % CHUNK_ROWS == 0:
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
            if progress:
                progress(count)
    yield buffer.getvalue().encode()
    if progress:
        progress(count)


# --- XLSX ------------------------------------------------------------------------------------

# Cell styles (indexes into cellXfs below).
TEXT, HEADER, UNITS, HOURS, RATIO, COUNT, TOTAL_TEXT, TOTAL_HOURS, TOTAL_RATIO, TOTAL_COUNT = range(
    10
)
STYLE_OF = {"hours": HOURS, "ratio": RATIO, "count": COUNT, "number": HOURS, "text": TEXT}
TOTAL_STYLE_OF = {
    "hours": TOTAL_HOURS,
    "ratio": TOTAL_RATIO,
    "count": TOTAL_COUNT,
    "number": TOTAL_HOURS,
    "text": TOTAL_TEXT,
}
STYLES_XML = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
    '<styleSheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">'
    '<fonts count="3"><font><sz val="11"/><name val="Calibri"/></font>'
    '<font><b/><sz val="11"/><name val="Calibri"/></font>'
    '<font><i/><sz val="10"/><color rgb="FF595959"/><name val="Calibri"/></font></fonts>'
    '<fills count="3"><fill><patternFill patternType="none"/></fill>'
    '<fill><patternFill patternType="gray125"/></fill>'
    '<fill><patternFill patternType="solid"><fgColor rgb="FFDDEBF7"/></patternFill></fill></fills>'
    '<borders count="2"><border/><border><top style="thin"/></border></borders>'
    '<cellStyleXfs count="1"><xf/></cellStyleXfs>'
    '<cellXfs count="10">'
    '<xf numFmtId="0"/>'
    '<xf numFmtId="0" fontId="1" fillId="2" applyFont="1" applyFill="1">'
    '<alignment wrapText="1" vertical="center"/></xf>'
    '<xf numFmtId="0" fontId="2" fillId="2" applyFont="1" applyFill="1"/>'
    '<xf numFmtId="2" applyNumberFormat="1"/>'
    '<xf numFmtId="10" applyNumberFormat="1"/>'
    '<xf numFmtId="1" applyNumberFormat="1"/>'
    '<xf numFmtId="0" fontId="1" borderId="1" applyFont="1" applyBorder="1"/>'
    + "".join(
        f'<xf numFmtId="{number_format}" fontId="1" borderId="1" applyFont="1" applyBorder="1" '
        'applyNumberFormat="1"/>'
        for number_format in (2, 10, 1)
    )
    + "</cellXfs>"
    '<cellStyles count="1"><cellStyle name="Normal" xfId="0" builtinId="0"/></cellStyles>'
    "</styleSheet>"
)


@dataclass
class Sheet:
    name: str
    columns: Sequence[Column]
    rows: Iterable[dict[str, Any]]
    totals: dict[str, Any] | None = None
    units: bool = True
    progress: Progress | None = None


def _column_letter(index: int) -> str:
    letters = ""
    index += 1
    while index:
        index, remainder = divmod(index - 1, 26)
        letters = chr(65 + remainder) + letters
    return letters


# XML 1.0 allows no control characters other than tab and line breaks.
_NOT_IN_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f]")


def _text_cell(ref: str, text: str, style: int) -> str:
    if _NOT_IN_XML.search(text):
        text = _NOT_IN_XML.sub("", text)
    return (
        f'<c r="{ref}" s="{style}" t="inlineStr">'
        f'<is><t xml:space="preserve">{escape(text)}</t></is></c>'
    )


def _cell(ref: str, value: Any, kind: str, style: int) -> str:
    if value is None or value == "":
        return ""
    if value is True or value is False:
        return _text_cell(ref, "是" if value else "否", style)
    if kind != "text" and type(value) in (int, float):
        return f'<c r="{ref}" s="{style}"><v>{value!r}</v></c>'
    return _text_cell(ref, str(value), style)


def _sheet_xml(sheet: Sheet) -> Iterator[str]:
    letters = [_column_letter(i) for i in range(len(sheet.columns))]
    header_rows = 2 if sheet.units else 1
    widths = "".join(
        f'<col min="{i + 1}" max="{i + 1}" width="{max(10, min(40, len(c.header) + 2))}" '
        'customWidth="1"/>'
        for i, c in enumerate(sheet.columns)
    )
    yield (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        '<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">'
        '<sheetViews><sheetView workbookViewId="0">'
        f'<pane ySplit="{header_rows}" topLeftCell="A{header_rows + 1}" activePane="bottomLeft" '
        'state="frozen"/></sheetView></sheetViews>'
        f"<cols>{widths}</cols><sheetData>"
    )
    yield (
        '<row r="1">'
        + "".join(
            _text_cell(f"{letters[i]}1", c.header, HEADER) for i, c in enumerate(sheet.columns)
        )
        + "</row>"
    )
    if sheet.units:
        yield (
            '<row r="2">'
            + "".join(
                _text_cell(f"{letters[i]}2", c.unit, UNITS)
                for i, c in enumerate(sheet.columns)
                if c.unit
            )
            + "</row>"
        )
    number = header_rows
    kinds = [(c.key, c.kind, STYLE_OF[c.kind]) for c in sheet.columns]
    parts: list[str] = []
    columns = [
        (letter, key, kind, style)
        for letter, (key, kind, style) in zip(letters, kinds, strict=True)
    ]
    for row in sheet.rows:
        number += 1
        line = str(number)
        cells = "".join(
            [
                _cell(letter + line, row.get(key), kind, style)
                for letter, key, kind, style in columns
            ]
        )
        parts.append(f'<row r="{line}">{cells}</row>')
        if len(parts) == CHUNK_ROWS:
            yield "".join(parts)
            parts.clear()
            if sheet.progress:
                sheet.progress(number - header_rows)
    if parts:
        yield "".join(parts)
    if sheet.totals is not None:
        number += 1
        cells = "".join(
            _cell(f"{letters[i]}{number}", sheet.totals.get(c.key), c.kind, TOTAL_STYLE_OF[c.kind])
            for i, c in enumerate(sheet.columns)
        )
        yield f'<row r="{number}">{cells}</row>'
    if sheet.progress:
        sheet.progress(number - header_rows - (1 if sheet.totals is not None else 0))
    yield "</sheetData></worksheet>"


class _Sink(io.RawIOBase):
    """A write-only, non-seekable stream whose bytes are taken out as they arrive (the ZIP
    writer then puts each entry's sizes after its data instead of seeking back)."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.position = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self.parts.append(chunk)
        self.position += len(chunk)
        return len(chunk)

    def tell(self) -> int:
        return self.position

    def take(self) -> bytes:
        data = b"".join(self.parts)
        self.parts.clear()
        return data


def _workbook_parts(sheets: Sequence[Sheet]) -> dict[str, str]:
    overrides = "".join(
        f'<Override PartName="/xl/worksheets/sheet{i + 1}.xml" ContentType="application/'
        'vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>'
        for i in range(len(sheets))
    )
    sheet_entries = "".join(
        f'<sheet name="{escape(s.name[:31])}" sheetId="{i + 1}" r:id="rId{i + 1}"/>'
        for i, s in enumerate(sheets)
    )
    relations = "".join(
        f'<Relationship Id="rId{i + 1}" Type="http://schemas.openxmlformats.org/officeDocument/'
        f'2006/relationships/worksheet" Target="worksheets/sheet{i + 1}.xml"/>'
        for i in range(len(sheets))
    )
    styles_id = len(sheets) + 1
    return {
        "[Content_Types].xml": (
            '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
            '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
            '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.'
            'relationships+xml"/><Default Extension="xml" ContentType="application/xml"/>'
            '<Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-'
            'officedocument.spreadsheetml.sheet.main+xml"/>'
            '<Override PartName="/xl/styles.xml" ContentType="application/vnd.openxmlformats-'
            f'officedocument.spreadsheetml.styles+xml"/>{overrides}</Types>'
        ),
        "_rels/.rels": (
            '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
            '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
            '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/'
            'relationships/officeDocument" Target="xl/workbook.xml"/></Relationships>'
        ),
        "xl/workbook.xml": (
            '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
            '<workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" '
            'xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships">'
            f"<sheets>{sheet_entries}</sheets></workbook>"
        ),
        "xl/_rels/workbook.xml.rels": (
            '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
            '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
            f'{relations}<Relationship Id="rId{styles_id}" Type="http://schemas.openxmlformats.org/'
            'officeDocument/2006/relationships/styles" Target="styles.xml"/></Relationships>'
        ),
        "xl/styles.xml": STYLES_XML,
    }


def xlsx_stream(sheets: Sequence[Sheet]) -> Iterator[bytes]:
    """An XLSX workbook of ``sheets``, as byte chunks, each sheet's rows read lazily."""
    sink = _Sink()
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for name, content in _workbook_parts(sheets).items():
            archive.writestr(name, content)
        yield sink.take()
        for index, sheet in enumerate(sheets):
            with archive.open(f"xl/worksheets/sheet{index + 1}.xml", "w", force_zip64=True) as out:
                for text in _sheet_xml(sheet):
                    out.write(text.encode())
                    if sink.parts:  # the compressor let some bytes out: pass them on
                        yield sink.take()
            yield sink.take()
    yield sink.take()


# --- Report files ----------------------------------------------------------------------------


def _definitions_rows() -> Iterator[dict[str, Any]]:
    for name, text in rules.METRIC_DEFINITIONS.items():
        titles = FIGURE_TITLES.get(name, (name, name, ""))
        yield {
            "metric": name,
            "title": f"{titles[0]} {titles[1]}",
            "unit": text["unit"],
            "zh": text["zh"],
            "en": text["en"],
        }


DEFINITION_COLUMNS = (
    Column("metric", "指标", "Metric"),
    Column("title", "名称", "Name"),
    Column("unit", "单位", "Unit"),
    Column("zh", "定义", "Definition (zh)"),
    Column("en", "定义（英文）", "Definition (en)"),
)


def report_csv(report: UtilizationReport, progress: Progress | None = None) -> Iterator[bytes]:
    """One line per group and period (the totals are the JSON's and the XLSX's)."""
    return csv_stream(report_columns(report.group_by), report.rows(), progress)


def report_xlsx(report: UtilizationReport, progress: Progress | None = None) -> Iterator[bytes]:
    """Sheets: per group and period (with totals), per group over the whole period (with
    totals), the trend per period, and the definitions."""
    totals = {"key": "合计 Total", **report.totals()}
    return xlsx_stream(
        [
            Sheet(
                "明细 by period",
                report_columns(report.group_by),
                report.rows(),
                totals | {"period": f"{report.start}–{report.end}"},
                progress=progress,
            ),
            Sheet(
                "汇总 summary",
                report_columns(report.group_by, with_period=False),
                report.groups(),
                totals,
            ),
            Sheet(
                "趋势 trend",
                [PERIOD_COLUMN, *(_figure_column(name) for name in FIGURES)],
                report.series(),
                totals | {"period": "合计 Total"},
            ),
            Sheet("定义 definitions", DEFINITION_COLUMNS, _definitions_rows(), units=False),
        ]
    )


# --- Usage-record export (the provincial and national platforms' shape) --------------------

USAGE_COLUMNS = (
    Column("seq", "序号", "No.", "", "count"),
    Column("date", "使用日期", "Date"),
    Column("time_slot", "使用时段", "Time slot"),
    Column("hours", "机时", "Hours", "h", "hours"),
    Column("samples", "样品数", "Samples", "个", "count"),
    Column("user", "使用人", "User"),
    Column("user_organisation", "使用人单位", "User's organisation"),
    Column("service_to", "服务对象", "Internal/external"),
    Column("kind", "使用类型", "Kind of use"),
    Column("operated_by", "操作方式", "Operated by"),
    Column("content", "服务内容", "Content / purpose"),
    Column("charge_yuan", "收费金额", "Charge", "元", "number"),
)
KIND_NAMES = {
    UsageKind.USE.value: "使用 use",
    UsageKind.TRAINING.value: "培训 training",
    UsageKind.MAINTENANCE.value: "维护 maintenance",
}
OPERATED_BY_NAMES = {"self": "自主上机 self", "staff": "机组操作 staff"}


def _time_slot(started: datetime, ended: datetime) -> str:
    end_text = f"{ended.hour:02d}:{ended.minute:02d}"
    days = (ended.date() - started.date()).days
    if days:
        end_text += f" (+{days})"
    return f"{started.hour:02d}:{started.minute:02d}–{end_text}"


def usage_export_dicts(
    header: UsageExportHeader, records: Iterable[Any]
) -> Iterator[dict[str, Any]]:
    """Each usage record as one export line, times in the facility's zone."""
    zone = header.zone
    for seq, record in enumerate(records, start=1):
        started = record.started_at.astimezone(zone)
        ended = record.ended_at.astimezone(zone)
        yield {
            "seq": seq,
            "date": started.date().isoformat(),
            "time_slot": _time_slot(started, ended),
            "hours": round((ended - started).total_seconds() / 3600, 2),
            "samples": record.samples,
            "user": record.user_name,
            "user_organisation": record.user_organisation or "",
            "service_to": "校内 internal" if record.internal else "校外 external",
            "kind": KIND_NAMES.get(record.kind, record.kind),
            "operated_by": OPERATED_BY_NAMES.get(record.operated_by or "", ""),
            "content": record.purpose or record.note or "",
            # Empty until billing exists: then the charge of the record's charge line.
            "charge_yuan": None,
        }


def usage_csv(
    header: UsageExportHeader, records: Iterable[Any], progress: Progress | None = None
) -> Iterator[bytes]:
    return csv_stream(USAGE_COLUMNS, usage_export_dicts(header, records), progress)


def usage_xlsx(
    header: UsageExportHeader, records: Iterable[Any], progress: Progress | None = None
) -> Iterator[bytes]:
    title = f"{header.asset_code} 机时记录"
    return xlsx_stream(
        [Sheet(title, USAGE_COLUMNS, usage_export_dicts(header, records), progress=progress)]
    )
