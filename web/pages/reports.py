"""Planner pages: the utilization dashboard with charts, drill-down and exports.

Planners and admins read every facility, a lab manager its own (``reports.rules.report_scope``);
anyone else gets a 403 page. The pages only read: there is no form that writes. Filters are a
GET form that works without JavaScript; bad filters are answered 422 with the reason next to
the field. The figures, definitions and exports are the reports package's; this module parses
the filters, picks what each part of the page shows and formats it.

The period on these pages is ``from`` … ``until`` with both days included (what people type);
the reports package takes the day after the period, so ``until`` + 1 day is passed on.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import date, timedelta
from typing import Any, TypeVar
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from sqlmodel import Session

from core.accounts.models import Organisation
from core.clock import now
from core.errors import NotFound
from core.places import CLUSTER_NAMES, Cluster
from instruments import queries as catalogue
from instruments.models import Facility
from instruments.rules import CATEGORY_NAMES, Category
from reports import export, queries
from reports.queries import ReportFilter, UtilizationReport
from reports.rules import (
    GroupBy,
    LowUseRules,
    PeriodKind,
    ReportScope,
    definitions,
    local_midnight,
    period_problems,
    report_scope,
)
from web import i18n
from web.deps import AppSettings, DbSession
from web.messages import N_
from web.pages.deps import PagePrincipal
from web.routing import TransactionalRoute
from web.templating import locale_for, render

router = APIRouter(route_class=TransactionalRoute, include_in_schema=False)

E = TypeVar("E", GroupBy, PeriodKind, Cluster, Category)
T = TypeVar("T")

DEFAULT_MONTHS = 12
PAGE_SIZE = 50  # groups per page of the table
LOW_USE_PAGE_SIZE = 20
CHART_GROUPS = 30  # bars in the by-group charts (the table has them all)
TOP_N = 5  # instruments in each of the top and bottom charts
FACILITY_LIMIT = 500
MAX_PAGE = 100_000
DEFAULT_THRESHOLD_PERCENT = round(LowUseRules().threshold * 100)
MAX_THRESHOLD_PERCENT = 1000

XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
CSV_TYPE = "text/csv; charset=utf-8"

GROUP_BY_LABELS: dict[GroupBy, str] = {
    GroupBy.CLUSTER: N_("Cluster"),
    GroupBy.DISTRICT: N_("District"),
    GroupBy.ORGANISATION: N_("Organisation"),
    GroupBy.FACILITY: N_("Facility"),
    GroupBy.CATEGORY: N_("Category"),
    GroupBy.INSTRUMENT: N_("Instrument"),
}
GROUP_BY_ORDER = (
    GroupBy.CLUSTER,
    GroupBy.DISTRICT,
    GroupBy.ORGANISATION,
    GroupBy.FACILITY,
    GroupBy.CATEGORY,
    GroupBy.INSTRUMENT,
)
PERIOD_LABELS: dict[PeriodKind, str] = {
    PeriodKind.MONTH: N_("Month"),
    PeriodKind.QUARTER: N_("Quarter"),
    PeriodKind.YEAR: N_("Year"),
}
FIGURE_LABELS: dict[str, str] = {
    "instruments": N_("Number of instruments"),
    "large_instruments": N_("Large instruments"),
    "rated_hours": N_("Rated hours"),
    "available_hours": N_("Available hours"),
    "booked_hours": N_("Booked hours"),
    "effective_hours": N_("Effective hours"),
    "external_hours": N_("External service hours"),
    "utilization": N_("Utilization"),
    "occupancy": N_("Occupancy"),
    "sharing_rate": N_("Sharing rate"),
    "no_show_rate": N_("No-show rate"),
    "late_cancel_rate": N_("Late-cancel rate"),
    "testing_capacity_use": N_("Testing capacity use"),
    "turnaround_days": N_("Median turnaround"),
    "outage_hours": N_("Outage hours"),
    "training_hours": N_("Training hours"),
    "maintenance_hours": N_("Maintenance hours"),
}
# Counts the reports package does not define: their definitions are written here.
PAGE_DEFINITIONS: dict[str, str] = {
    "instruments": N_(
        "Instruments: the instruments listed on the platform in the facilities shown, "
        "whatever their state."
    ),
    "large_instruments": N_(
        "Large instruments: instruments with a purchase value of at least 500,000 yuan."
    ),
}
HEADLINE = (
    "instruments",
    "large_instruments",
    "rated_hours",
    "available_hours",
    "booked_hours",
    "effective_hours",
    "external_hours",
    "utilization",
    "sharing_rate",
    "no_show_rate",
    "late_cancel_rate",
    "testing_capacity_use",
    "turnaround_days",
)
TABLE_COLUMNS = (
    "instruments",
    "large_instruments",
    "available_hours",
    "rated_hours",
    "booked_hours",
    "effective_hours",
    "external_hours",
    "utilization",
    "sharing_rate",
    "no_show_rate",
    "late_cancel_rate",
)
SORTABLE = ("name", *TABLE_COLUMNS)
DEFAULT_SORT = "name"

# Why filters are refused, shown next to the field (English ids, translated when shown).
PERIOD_MESSAGES: dict[tuple[str, str], str] = {
    ("required", "from"): N_("Give the first day of the period."),
    ("required", "until"): N_("Give the last day of the period."),
    ("inverted_period", "until"): N_(
        "The period ends before it starts: the last day must not come before the first."
    ),
    ("empty_period", "until"): N_(
        "The period ends before it starts: the last day must not come before the first."
    ),
    # reports.rules.MAX_REPORT_YEARS (a test holds the two together)
    ("period_too_long", "until"): N_("Ask for at most ten years at a time."),
}
BAD_DATE = N_("Give a date as YYYY-MM-DD.")
BAD_CHOICE = N_("Choose one of the listed values.")
BAD_NUMBER = N_("Give a whole number.")
BAD_THRESHOLD = N_("Give a utilization threshold in percent, above 0 and at most 1000.")
BAD_SORT = N_("The table cannot be sorted by this column.")
BAD_PAGE = N_("Page numbers are whole numbers from 1.")
REFUSED = N_("Utilization reports are for planners, admins and the lab managers of a facility.")
CHART_TEXTS = [N_("Hours"), N_("All")]  # passed to gettext() by name below
NOT_FOUND_MESSAGES = [
    N_("Facility not found."),
    N_("Instrument not found."),
    N_("Export format not found."),
]


# --- Filters ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class DashboardQuery:
    """The dashboard's filters, checked."""

    start: date  # first day
    until: date  # last day, included
    period: PeriodKind
    group_by: GroupBy
    filters: ReportFilter
    threshold_percent: float
    sort: str = DEFAULT_SORT
    descending: bool = False
    page: int = 1
    low_page: int = 1

    @property
    def end(self) -> date:
        """The day after the period (what the reports package takes)."""
        return self.until + timedelta(days=1)

    @property
    def low_use_rules(self) -> LowUseRules:
        return LowUseRules(threshold=self.threshold_percent / 100)

    def params(self, **changes: Any) -> dict[str, str]:
        """The query string of this view (with ``changes``), defaults left out."""
        query = replace(self, **changes) if changes else self
        params: dict[str, Any] = {
            "from": query.start.isoformat(),
            "until": query.until.isoformat(),
            "period": query.period.value,
            "group_by": query.group_by.value,
        }
        for name in ("cluster", "facility_id", "category", "organisation_id", "district"):
            value = getattr(query.filters, name)
            if value is not None:
                params[name] = value.value if hasattr(value, "value") else value
        if query.filters.instrument_id is not None:
            params["instrument_id"] = query.filters.instrument_id
        if query.threshold_percent != DEFAULT_THRESHOLD_PERCENT:
            params["threshold"] = f"{query.threshold_percent:g}"
        if query.sort != DEFAULT_SORT or query.descending:
            params["sort"] = query.sort
            params["order"] = "desc" if query.descending else "asc"
        if query.page != 1:
            params["page"] = query.page
        if query.low_page != 1:
            params["low_page"] = query.low_page
        return {key: str(value) for key, value in params.items()}

    def url(self, path: str = "/reports", **changes: Any) -> str:
        return f"{path}?{urlencode(self.params(**changes))}"

    def filtered(self, group_by: GroupBy, **filters: Any) -> str:
        """A drill-down: another grouping, narrower filters, first page, default sort."""
        return self.url(
            group_by=group_by,
            filters=replace(self.filters, **filters),
            sort=DEFAULT_SORT,
            descending=False,
            page=1,
            low_page=1,
        )


def default_period(today: date) -> tuple[date, date]:
    """The last twelve months: this month up to today and the eleven before it."""
    month = today.year * 12 + today.month - 1 - (DEFAULT_MONTHS - 1)
    return date(month // 12, month % 12 + 1, 1), today


def _date(raw: str, name: str, errors: dict[str, Any]) -> date | None:
    if not raw:
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError:
        errors[name] = BAD_DATE
        return None


def _choice(kind: type[E], raw: str, name: str, errors: dict[str, Any]) -> E | None:
    if not raw:
        return None
    try:
        return kind(raw)
    except ValueError:
        errors[name] = BAD_CHOICE
        return None


def _whole(raw: str, name: str, errors: dict[str, Any], message: str = BAD_NUMBER) -> int | None:
    if not raw:
        return None
    if not raw.isdigit() or not 1 <= int(raw) <= 2**31 - 1:
        errors[name] = message
        return None
    return int(raw)


def parse_query(
    params: Mapping[str, str], today: date
) -> tuple[DashboardQuery | None, dict[str, str], dict[str, Any]]:
    """The checked filters (None when any is wrong), the values as entered, and the errors by
    field (message ids; problems of no field under "")."""
    values = {key: params.get(key, "").strip() for key in FORM_FIELDS}
    default_from, default_until = default_period(today)
    if "from" not in params and "until" not in params:
        values["from"], values["until"] = default_from.isoformat(), default_until.isoformat()
    errors: dict[str, Any] = {}
    start = _date(values["from"], "from", errors)
    until = _date(values["until"], "until", errors)
    if not errors:
        problems = period_problems(start, until + timedelta(days=1) if until else None)
        for problem in problems:
            field = "until" if problem.field == "to" else problem.field or "until"
            errors.setdefault(field, PERIOD_MESSAGES.get((problem.code, field), BAD_DATE))
    period = _choice(PeriodKind, values["period"], "period", errors) or PeriodKind.MONTH
    group_by = _choice(GroupBy, values["group_by"], "group_by", errors) or GroupBy.CLUSTER
    cluster = _choice(Cluster, values["cluster"], "cluster", errors)
    category = _choice(Category, values["category"], "category", errors)
    facility_id = _whole(values["facility_id"], "facility_id", errors)
    organisation_id = _whole(values["organisation_id"], "organisation_id", errors)
    instrument_id = _whole(values["instrument_id"], "instrument_id", errors)
    threshold = float(DEFAULT_THRESHOLD_PERCENT)
    if values["threshold"]:
        try:
            threshold = float(values["threshold"])
        except ValueError:
            threshold = math.nan
        if not 0 < threshold <= MAX_THRESHOLD_PERCENT:  # NaN fails this too
            errors["threshold"] = BAD_THRESHOLD
    sort = values["sort"] or DEFAULT_SORT
    general: list[str] = []
    if sort not in SORTABLE or values["order"] not in ("", "asc", "desc"):
        general.append(BAD_SORT)
    page_errors: dict[str, str] = {}
    page = _whole(values["page"], "page", page_errors) or 1
    low_page = _whole(values["low_page"], "low_page", page_errors) or 1
    if page_errors or max(page, low_page) > MAX_PAGE:
        general.append(BAD_PAGE)
    if general:
        errors[""] = general
    if errors or start is None or until is None:
        return None, values, errors
    query = DashboardQuery(
        start=start,
        until=until,
        period=period,
        group_by=group_by,
        filters=ReportFilter(
            instrument_id=instrument_id,
            facility_id=facility_id,
            organisation_id=organisation_id,
            category=category,
            cluster=cluster,
            district=values["district"] or None,
        ),
        threshold_percent=threshold,
        sort=sort,
        descending=values["order"] == "desc",
        page=page,
        low_page=low_page,
    )
    return query, values, {}


FORM_FIELDS = (
    "from",
    "until",
    "period",
    "group_by",
    "cluster",
    "facility_id",
    "category",
    "organisation_id",
    "district",
    "instrument_id",
    "threshold",
    "sort",
    "order",
    "page",
    "low_page",
)


# --- Formatting ------------------------------------------------------------------------------


def unit_of(metric: str) -> str:
    return definitions().get(metric, {}).get("unit", "")


def formatted(metric: str, value: Any) -> str:
    """A figure as shown: hours to 0.1 h, ratios in per cent, days to 0.1 d, counts whole."""
    if value is None:
        return "—"
    unit = unit_of(metric)
    if unit == "%":
        return f"{value * 100:.1f} %"
    if unit == "h":
        return f"{value:,.1f} h"
    if unit == "d":
        return f"{value:,.1f} d"
    return f"{value:,}"


def definition_texts(locale: str, gettext: Callable[[str], str]) -> dict[str, str]:
    """Each headline and table figure's definition in the page's language."""
    language = "en" if locale == "en" else "zh"
    texts = {name: text[language] for name, text in definitions().items()}
    for name, message in PAGE_DEFINITIONS.items():
        texts.setdefault(name, gettext(message))
    return texts


def group_name(group: Mapping[str, Any], locale: str) -> str:
    if locale == "en" and group.get("name_en"):
        return str(group["name_en"])
    return str(group.get("name") or group.get("key") or "")


# --- What the page shows ---------------------------------------------------------------------


def zone_of(settings: AppSettings) -> ZoneInfo:
    return ZoneInfo(settings.timezone)


def today_in(zone: ZoneInfo) -> date:
    return now().astimezone(zone).date()


def build_report(
    session: Session, query: DashboardQuery, scope: ReportScope, zone: ZoneInfo
) -> UtilizationReport:
    return queries.utilization_report(
        session,
        start=query.start,
        end=query.end,
        group_by=query.group_by,
        period=query.period,
        scope=scope,
        zone=zone,
        filters=query.filters,
    )


def instrument_report(
    session: Session,
    query: DashboardQuery,
    scope: ReportScope,
    zone: ZoneInfo,
    report: UtilizationReport,
) -> UtilizationReport:
    """Every instrument over the period (the top and bottom charts, the low-use list): the
    page's own report when it is grouped by instrument, else one more."""
    if report.group_by is GroupBy.INSTRUMENT:
        return report
    return queries.utilization_report(
        session,
        start=query.start,
        end=query.end,
        group_by=GroupBy.INSTRUMENT,
        period=PeriodKind.YEAR,
        scope=scope,
        zone=zone,
        filters=query.filters,
    )


def sorted_groups(groups: list[dict[str, Any]], query: DashboardQuery) -> list[dict[str, Any]]:
    """Groups by the chosen column; groups without a figure last in either direction."""
    if query.sort == "name":
        return sorted(groups, key=lambda g: (g["name"], g["key"]), reverse=query.descending)
    known = [g for g in groups if g.get(query.sort) is not None]
    unknown = [g for g in groups if g.get(query.sort) is None]
    known.sort(key=lambda g: (g[query.sort], g["name"]), reverse=query.descending)
    return known + unknown


def top_and_bottom(
    instruments: list[dict[str, Any]],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The best-used instruments, highest first, and the least used of the others, lowest
    first: up to ``TOP_N`` each, an instrument in one of them only (with fewer than twice
    ``TOP_N`` instruments, the upper half is the top and the lower half the bottom)."""
    measured = sorted(
        (i for i in instruments if i.get("utilization") is not None),
        key=lambda i: (-i["utilization"], i["name"], i["key"]),
    )
    top = measured[: min(TOP_N, math.ceil(len(measured) / 2))]
    bottom = list(reversed(measured[len(top) :][-TOP_N:]))
    return top, bottom


def drill_down(query: DashboardQuery, group: Mapping[str, Any]) -> str | None:
    """The next level of a group: cluster, district, organisation → facilities; facility,
    category → instruments; an instrument → its own view."""
    key = group["key"]
    match query.group_by:
        case GroupBy.CLUSTER:
            return query.filtered(GroupBy.FACILITY, cluster=Cluster(key))
        case GroupBy.DISTRICT:
            return query.filtered(GroupBy.FACILITY, district=key)
        case GroupBy.ORGANISATION:
            return query.filtered(GroupBy.FACILITY, organisation_id=int(key))
        case GroupBy.FACILITY:
            return query.filtered(GroupBy.INSTRUMENT, facility_id=int(key))
        case GroupBy.CATEGORY:
            return query.filtered(GroupBy.INSTRUMENT, category=Category(key))
        case GroupBy.INSTRUMENT:
            if query.filters.instrument_id is not None:
                return None
            return query.filtered(GroupBy.INSTRUMENT, instrument_id=int(key))
    return None  # pragma: no cover - every grouping is matched above


def chart_data(
    report: UtilizationReport,
    groups: list[dict[str, Any]],
    instruments: list[dict[str, Any]],
    locale: str,
    gettext: Callable[[str], str],
) -> dict[str, Any]:
    """What the charts draw (and their tables repeat): series names already translated."""
    shown = groups[:CHART_GROUPS]
    top, bottom = top_and_bottom(instruments)

    def percent(value: float | None) -> float | None:
        return None if value is None else round(value * 100, 1)

    def named(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [
            {
                "key": item["key"],
                "name": group_name(item, locale),
                "utilization": percent(item["utilization"]),
            }
            for item in items
        ]

    series = report.series()
    return {
        "group_by": report.group_by.value,
        "group_label": gettext(GROUP_BY_LABELS[report.group_by]),
        "text": {
            "utilization": gettext("Utilization"),
            "sharing_rate": gettext("Sharing rate"),
            "effective_hours": gettext("Effective hours"),
            "external_hours": gettext("External service hours"),
            "hours": gettext("Hours"),
            "percent": "%",
            "no_data": gettext("No data for this period."),
        },
        "groups": [
            {
                "key": group["key"],
                "name": group_name(group, locale),
                "utilization": percent(group["utilization"]),
                "sharing_rate": percent(group["sharing_rate"]),
            }
            for group in shown
        ],
        "more_groups": max(0, len(groups) - len(shown)),
        "trend": {
            "periods": [point["period"] for point in series],
            "effective_hours": [point["effective_hours"] for point in series],
            "external_hours": [point["external_hours"] for point in series],
            "utilization": [percent(point["utilization"]) for point in series],
        },
        "top": named(top),
        "bottom": named(bottom),
    }


@dataclass(frozen=True)
class Pager:
    page: int
    total: int
    size: int

    @property
    def pages(self) -> int:
        return max(1, math.ceil(self.total / self.size))

    def slice(self, items: list[T]) -> list[T]:
        start = (self.page - 1) * self.size
        return items[start : start + self.size]


def filter_chips(
    session: Session,
    query: DashboardQuery,
    facilities: list[Facility],
    instruments: list[dict[str, Any]],
    locale: str,
) -> list[tuple[str, str, str]]:
    """The active filters as (kind, name, the view without it)."""
    chips: list[tuple[str, str, str]] = []
    filters = query.filters
    english = locale == "en"
    if filters.cluster is not None:
        zh, en = CLUSTER_NAMES[filters.cluster]
        chips.append((N_("Cluster"), en if english else zh, _without(query, cluster=None)))
    if filters.district is not None:
        chips.append((N_("District"), filters.district, _without(query, district=None)))
    if filters.organisation_id is not None:
        organisation = session.get(Organisation, filters.organisation_id)
        name = str(filters.organisation_id)
        if organisation is not None:
            name = (organisation.name_en if english else "") or organisation.name
        chips.append((N_("Organisation"), name, _without(query, organisation_id=None)))
    if filters.facility_id is not None:
        facility = next((f for f in facilities if f.id == filters.facility_id), None)
        name = str(filters.facility_id)
        if facility is not None:
            name = (facility.name_en if english else "") or facility.name
        chips.append((N_("Facility"), name, _without(query, facility_id=None)))
    if filters.category is not None:
        zh, en = CATEGORY_NAMES[filters.category]
        chips.append((N_("Category"), en if english else zh, _without(query, category=None)))
    if filters.instrument_id is not None:
        found = next((i for i in instruments if i["key"] == str(filters.instrument_id)), None)
        name = group_name(found, locale) if found else str(filters.instrument_id)
        chips.append((N_("Instrument"), name, _without(query, instrument_id=None)))
    return chips


def _without(query: DashboardQuery, **filters: Any) -> str:
    return query.url(filters=replace(query.filters, **filters), page=1, low_page=1)


def form_options(
    facilities: list[Facility], locale: str, gettext: Callable[[str], str]
) -> dict[str, list[tuple[str, str]]]:
    english = locale == "en"
    every = ("", gettext("All"))
    return {
        "period": [(kind.value, gettext(label)) for kind, label in PERIOD_LABELS.items()],
        "group_by": [(g.value, gettext(GROUP_BY_LABELS[g])) for g in GROUP_BY_ORDER],
        "cluster": [every]
        + [(c.value, names[1] if english else names[0]) for c, names in CLUSTER_NAMES.items()],
        "category": [every]
        + [(c.value, names[1] if english else names[0]) for c, names in CATEGORY_NAMES.items()],
        "facility_id": [every]
        + [(str(f.id), ((f.name_en if english else "") or f.name)) for f in facilities],
    }


def visible_facilities(session: Session, scope: ReportScope) -> list[Facility]:
    ids = None if scope.facility_ids is None else sorted(scope.facility_ids)
    found, _ = catalogue.list_facilities(
        session, ids=ids, include_inactive=True, limit=FACILITY_LIMIT
    )
    return found


# --- Routes ----------------------------------------------------------------------------------


@router.get("/reports")
def dashboard(
    request: Request, principal: PagePrincipal, session: DbSession, settings: AppSettings
) -> Response:
    scope = report_scope(principal)
    zone = zone_of(settings)
    locale = locale_for(request)
    gettext = _translator(locale)
    query, values, errors = parse_query(request.query_params, today_in(zone))
    facilities = visible_facilities(session, scope)
    context: dict[str, Any] = {
        "values": values,
        "errors": errors,
        "options": form_options(facilities, locale, gettext),
        "query": query,
        "figure_labels": FIGURE_LABELS,
        "definitions": definition_texts(locale, gettext),
        "fmt": formatted,
        "default_threshold": DEFAULT_THRESHOLD_PERCENT,
        "everything": scope.everything,
        "headline": HEADLINE,
    }
    if query is None:
        return render(request, "reports/dashboard.html", context, status_code=422)
    report = build_report(session, query, scope, zone)
    groups = sorted_groups(report.groups(), query)
    by_instrument = instrument_report(session, query, scope, zone, report)
    instruments = by_instrument.groups()
    low_use = queries.low_use_in(by_instrument, query.low_use_rules)
    pager = Pager(min(query.page, _pages(len(groups), PAGE_SIZE)), len(groups), PAGE_SIZE)
    low_pager = Pager(
        min(query.low_page, _pages(len(low_use), LOW_USE_PAGE_SIZE)),
        len(low_use),
        LOW_USE_PAGE_SIZE,
    )
    language = "en" if locale == "en" else "zh"
    context |= {
        "report": report,
        "totals": report.totals(),
        "columns": TABLE_COLUMNS,
        "period_label": PERIOD_LABELS[query.period],
        "platform_url": query.url(
            group_by=GroupBy.CLUSTER, filters=ReportFilter(), page=1, low_page=1
        ),
        "groups": pager.slice(groups),
        "pager": pager,
        "group_label": GROUP_BY_LABELS[query.group_by],
        "group_name": lambda g: group_name(g, locale),
        "drill_down": lambda g: drill_down(query, g),
        "charts": chart_data(report, groups, instruments, locale, gettext),
        "chips": filter_chips(session, query, facilities, instruments, locale),
        "low_use": low_pager.slice(low_use),
        "low_pager": low_pager,
        "language": language,
        "instrument": _the_instrument(query, instruments),
    }
    return render(request, "reports/dashboard.html", context)


@router.get("/reports/data.json")
def chart_json(
    request: Request, principal: PagePrincipal, session: DbSession, settings: AppSettings
) -> Response:
    """The charts' data for the dashboard's filters, as JSON (the page carries the same data
    in an attribute for reports.js, so one view computes the report once)."""
    scope = report_scope(principal)
    zone = zone_of(settings)
    locale = locale_for(request)
    query, _, errors = parse_query(request.query_params, today_in(zone))
    if query is None:
        return _invalid_json(errors, _translator(locale))
    report = build_report(session, query, scope, zone)
    groups = sorted_groups(report.groups(), query)
    instruments = instrument_report(session, query, scope, zone, report).groups()
    data = chart_data(report, groups, instruments, locale, _translator(locale))
    data |= {"from": query.start.isoformat(), "until": query.until.isoformat()}
    data["totals"] = report.totals()
    return JSONResponse(data)


@router.get("/reports/export.{extension}")
def report_export(
    extension: str,
    request: Request,
    principal: PagePrincipal,
    session: DbSession,
    settings: AppSettings,
) -> Response:
    """The current view as CSV or XLSX (the reports package's export, with the page's login)."""
    scope = report_scope(principal)
    zone = zone_of(settings)
    query, _, errors = parse_query(request.query_params, today_in(zone))
    if extension not in ("csv", "xlsx"):
        return _unknown_format()
    if query is None:
        return _invalid_json(errors, _translator(locale_for(request)))
    report = build_report(session, query, scope, zone)
    name = f"utilization-{query.group_by.value}-{query.start}-{query.until}.{extension}"
    if extension == "csv":
        return _download(export.report_csv(report), CSV_TYPE, name)
    return _download(export.report_xlsx(report), XLSX_TYPE, name)


@router.get("/reports/instruments/{instrument_id}/usage.{extension}")
def usage_export(
    instrument_id: int,
    extension: str,
    request: Request,
    principal: PagePrincipal,
    session: DbSession,
    settings: AppSettings,
) -> Response:
    """An instrument's usage records over the period, in the platforms' shape."""
    scope = report_scope(principal)
    query, _, errors = parse_query(request.query_params, today_in(zone_of(settings)))
    if extension not in ("csv", "xlsx"):
        return _unknown_format()
    if query is None:
        return _invalid_json(errors, _translator(locale_for(request)))
    header = queries.usage_export_header(session, instrument_id=instrument_id, scope=scope)
    records = queries.usage_export_rows(
        session,
        instrument_id=instrument_id,
        start=local_midnight(query.start, header.zone),
        end=local_midnight(query.end, header.zone),
    )
    name = f"usage-{header.asset_code}-{query.start}-{query.until}.{extension}"
    if extension == "csv":
        return _download(export.usage_csv(header, records), CSV_TYPE, name)
    return _download(export.usage_xlsx(header, records), XLSX_TYPE, name)


# --- Helpers of the routes -------------------------------------------------------------------


def _pages(total: int, size: int) -> int:
    return max(1, math.ceil(total / size))


def _the_instrument(
    query: DashboardQuery, instruments: list[dict[str, Any]]
) -> dict[str, Any] | None:
    if query.filters.instrument_id is None:
        return None
    return next((i for i in instruments if i["key"] == str(query.filters.instrument_id)), None)


def _translator(locale: str) -> Callable[[str], str]:
    def translate(message: str) -> str:
        token = i18n.current_locale.set(locale)
        try:
            return i18n.gettext(message)
        finally:
            i18n.current_locale.reset(token)

    return translate


def _invalid_json(errors: Mapping[str, Any], gettext: Callable[[str], str]) -> JSONResponse:
    """Bad filters as the API answers them: 422 with every problem and its field."""
    problems: list[dict[str, Any]] = []
    for field, messages in errors.items():
        for message in [messages] if isinstance(messages, str) else messages:
            problem: dict[str, Any] = {"code": "invalid", "message": gettext(message)}
            if field:
                problem["field"] = field
            problems.append(problem)
    return JSONResponse(
        {
            "detail": "; ".join(p["message"] for p in problems),
            "code": "validation_failed",
            "errors": problems,
        },
        status_code=422,
    )


def _unknown_format() -> Response:
    raise NotFound("Export format")


def _download(chunks: Iterator[bytes], media_type: str, filename: str) -> StreamingResponse:
    return StreamingResponse(
        chunks,
        media_type=media_type,
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
