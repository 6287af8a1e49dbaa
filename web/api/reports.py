"""Utilization reports for planners, admins and lab managers: JSON, CSV and XLSX (streamed).

Read-only: every endpoint here is a GET. Planners and admins read every facility; a lab
manager only its own (an instrument or facility of another is 404); anyone else is 403.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from typing import Annotated, Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse
from sqlmodel import Session

from core.errors import Problem, RuleViolation
from core.places import Cluster
from instruments.rules import Category
from reports import export, queries, rules
from reports.queries import ReportFilter
from reports.rules import GroupBy, LowUseRules, PeriodKind, ReportFormat, report_scope
from web.deps import ApiPrincipal, AppSettings, DbSession, Pagination
from web.routing import TransactionalRoute

router = APIRouter(prefix="/api/v1/reports", tags=["reports"], route_class=TransactionalRoute)

MEDIA_TYPES = {
    ReportFormat.CSV: "text/csv; charset=utf-8",
    ReportFormat.XLSX: "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}
FromDate = Annotated[
    date | None,
    Query(alias="from", description="First day of the period (local date, inclusive)."),
]
ToDate = Annotated[
    date | None,
    Query(
        alias="to",
        description="First day after the period (exclusive): a year is 2026-01-01 to 2027-01-01.",
    ),
]


def _enum_value(enum_class: Any, value: str | None, field: str, default: Any = None) -> Any:
    """An enum member, or a problem naming the allowed values (collected, not raised)."""
    if value is None:
        return default
    try:
        return enum_class(value)
    except ValueError:
        allowed = ", ".join(member.value for member in enum_class)
        return Problem("unknown_value", f"Unknown {field} {value!r}: use one of {allowed}.", field)


def _parse(
    *,
    start: date | None,
    end: date | None,
    choices: dict[str, tuple[Any, str | None, Any]],
    formats: tuple[ReportFormat, ...] = tuple(ReportFormat),
) -> dict[str, Any]:
    """Every problem of the period and the choices at once (422), or the parsed values."""
    problems = rules.period_problems(start, end)
    parsed: dict[str, Any] = {}
    for field, (enum_class, value, default) in choices.items():
        parsed[field] = _enum_value(enum_class, value, field, default)
        if isinstance(parsed[field], Problem):
            problems.append(parsed[field])
    chosen = parsed.get("format")
    if isinstance(chosen, ReportFormat) and chosen not in formats:
        allowed = ", ".join(f.value for f in formats)
        problems.append(
            Problem(
                "unknown_value", f"Unknown format {chosen.value!r}: use one of {allowed}.", "format"
            )
        )
    if problems:
        raise RuleViolation(problems)
    return parsed


def _download(chunks: Iterator[bytes], fmt: ReportFormat, filename: str) -> StreamingResponse:
    ascii_name = "".join(
        ch if ch.isascii() and (ch.isalnum() or ch in "-_.") else "_" for ch in filename
    )
    return StreamingResponse(
        chunks,
        media_type=MEDIA_TYPES[fmt],
        headers={
            "Content-Disposition": f'attachment; filename="{ascii_name}.{fmt.value}"; '
            f"filename*=UTF-8''{quote(filename)}.{fmt.value}",
            "Cache-Control": "no-store",
        },
    )


def _filters(
    instrument_id: int | None,
    facility_id: int | None,
    organisation_id: int | None,
    category: str | None,
    cluster: str | None,
    district: str | None,
) -> tuple[ReportFilter | None, list[Problem]]:
    problems = []
    chosen_category = _enum_value(Category, category, "category")
    chosen_cluster = _enum_value(Cluster, cluster, "cluster")
    for chosen in (chosen_category, chosen_cluster):
        if isinstance(chosen, Problem):
            problems.append(chosen)
    if problems:
        return None, problems
    return (
        ReportFilter(
            instrument_id=instrument_id,
            facility_id=facility_id,
            organisation_id=organisation_id,
            category=chosen_category,
            cluster=chosen_cluster,
            district=district or None,
        ),
        [],
    )


def _report(
    session: Session,
    principal: ApiPrincipal,
    settings: AppSettings,
    *,
    start: date | None,
    end: date | None,
    group_by: str,
    period: str,
    fmt: str,
    filters: tuple[ReportFilter | None, list[Problem]],
) -> tuple[queries.UtilizationReport, ReportFormat]:
    scope = report_scope(principal)  # 403 before any input is looked at
    report_filter, filter_problems = filters
    try:
        parsed = _parse(
            start=start,
            end=end,
            choices={
                "group_by": (GroupBy, group_by, None),
                "period": (PeriodKind, period, None),
                "format": (ReportFormat, fmt, None),
            },
        )
    except RuleViolation as exc:
        raise RuleViolation(exc.problems + filter_problems) from exc
    if filter_problems:
        raise RuleViolation(filter_problems)
    assert start is not None
    assert end is not None
    report = queries.utilization_report(
        session,
        start=start,
        end=end,
        group_by=parsed["group_by"],
        period=parsed["period"],
        scope=scope,
        zone=ZoneInfo(settings.timezone),
        filters=report_filter,
    )
    return report, parsed["format"]


@router.get("/utilization", response_model=None)
def utilization(
    principal: ApiPrincipal,
    session: DbSession,
    settings: AppSettings,
    start: FromDate = None,
    end: ToDate = None,
    group_by: Annotated[
        str, Query(description="instrument, facility, organisation, category, cluster, district")
    ] = GroupBy.FACILITY.value,
    period: Annotated[str, Query(description="month, quarter or year")] = PeriodKind.MONTH.value,
    format: Annotated[str, Query(description="json, csv or xlsx")] = ReportFormat.JSON.value,
    instrument_id: int | None = None,
    facility_id: int | None = None,
    organisation_id: int | None = None,
    category: str | None = None,
    cluster: str | None = None,
    district: Annotated[str | None, Query(max_length=40)] = None,
) -> Any:
    """Available, rated, booked, effective and external hours, utilization, occupancy, sharing,
    no-show and late-cancel rates, testing capacity use and turnaround, per group and period.

    JSON: ``rows`` (group × period), ``groups`` (whole period), ``series`` (all groups per
    period), ``totals`` and ``definitions`` (each metric in Chinese and English). CSV: one
    line per group and period. XLSX: the same with a formatted header, units and totals, a
    summary, the trend and the definitions."""
    report, fmt = _report(
        session,
        principal,
        settings,
        start=start,
        end=end,
        group_by=group_by,
        period=period,
        fmt=format,
        filters=_filters(instrument_id, facility_id, organisation_id, category, cluster, district),
    )
    if fmt is ReportFormat.JSON:
        return report.as_dict()
    name = f"utilization-{report.group_by.value}-{report.period.value}-{report.start}-{report.end}"
    chunks = export.report_csv(report) if fmt is ReportFormat.CSV else export.report_xlsx(report)
    return _download(chunks, fmt, name)


@router.get("/definitions")
def definitions(principal: ApiPrincipal) -> dict[str, dict[str, str]]:
    """Each metric's unit and definition, in Chinese and English (footnotes and hover texts)."""
    report_scope(principal)
    return rules.definitions()


@router.get("/low-use", response_model=None)
def low_use(
    principal: ApiPrincipal,
    session: DbSession,
    settings: AppSettings,
    page: Pagination,
    start: FromDate = None,
    end: ToDate = None,
    threshold: Annotated[
        float, Query(description="Utilization below which an instrument is listed (0.5 = 50 %).")
    ] = rules.DEFAULT_LOW_USE_THRESHOLD,
    facility_id: int | None = None,
    organisation_id: int | None = None,
    category: str | None = None,
    cluster: str | None = None,
    district: Annotated[str | None, Query(max_length=40)] = None,
) -> dict[str, Any]:
    """Instruments (not retired) under the utilization threshold for the period, lowest
    first (paginated: ``page``, ``page_size``), each with its reasons (long outages, few
    bookings, many no-shows) and whether it is a large instrument (≥ 500,000 yuan)."""
    scope = report_scope(principal)
    report_filter, problems = _filters(
        None, facility_id, organisation_id, category, cluster, district
    )
    problems = rules.period_problems(start, end) + problems + LowUseRules(threshold).problems()
    if problems:
        raise RuleViolation(problems)
    assert start is not None
    assert end is not None
    items = queries.low_use_instruments(
        session,
        start=start,
        end=end,
        scope=scope,
        zone=ZoneInfo(settings.timezone),
        low_use=LowUseRules(threshold),
        filters=report_filter,
    )
    return {
        "from": start.isoformat(),
        "to": end.isoformat(),
        "threshold": threshold,
        "items": items[page.offset : page.offset + page.page_size],
        "total": len(items),
        "definitions": rules.definitions(),
    }


@router.get("/usage-export", response_model=None)
def usage_export(
    principal: ApiPrincipal,
    session: DbSession,
    instrument_id: Annotated[int | None, Query(description="The instrument's id.")] = None,
    start: FromDate = None,
    end: ToDate = None,
    format: Annotated[str, Query(description="csv or xlsx")] = ReportFormat.XLSX.value,
) -> StreamingResponse:
    """An instrument's usage records in the shape provincial and national sharing platforms
    collect (date, time slot, hours, samples, user and organisation, internal or external,
    content; the charge column stays empty until billing exists). Streamed."""
    scope = report_scope(principal)
    problems = []
    if instrument_id is None:
        problems.append(Problem("required", "Name the instrument.", "instrument_id"))
    try:
        parsed = _parse(
            start=start,
            end=end,
            choices={"format": (ReportFormat, format, None)},
            formats=(ReportFormat.CSV, ReportFormat.XLSX),
        )
    except RuleViolation as exc:
        raise RuleViolation(problems + exc.problems) from exc
    if problems:
        raise RuleViolation(problems)
    assert instrument_id is not None
    assert start is not None
    assert end is not None
    header = queries.usage_export_header(session, instrument_id=instrument_id, scope=scope)
    utc_start = rules.local_midnight(start, header.zone)
    utc_end = rules.local_midnight(end, header.zone)
    records = queries.usage_export_rows(
        session, instrument_id=instrument_id, start=utc_start, end=utc_end
    )
    fmt: ReportFormat = parsed["format"]
    chunks = (
        export.usage_csv(header, records)
        if fmt is ReportFormat.CSV
        else export.usage_xlsx(header, records)
    )
    return _download(chunks, fmt, f"usage-{header.asset_code}-{start}-{end}")
