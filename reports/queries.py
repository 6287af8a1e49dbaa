"""Reads of the utilization reports: SQL aggregations grouped by instrument, facility,
organisation, category, cluster or district, per month, quarter or year.

Buckets made of whole months read the month totals the database keeps per instrument
(:mod:`reports.month_totals`): a few thousand rows, whatever the number of records. A bucket cut
by the period's start or end, or a zone without totals, is summed from the bookings and usage
records themselves (``GROUP BY`` the group, a column per bucket, ``CASE`` for the kinds, each
interval clipped to its bucket with the larger start and the smaller end). Figures from service
requests and accepted samples are SQL aggregations too; Python never loops over those rows.
Available and rated hours come from calendars: each facility's opening hours are expanded once
for the whole period (the catalogue's open-interval rules), then every instrument and bucket
reads them through running totals. The number of queries does not grow with the number of
instruments, bookings or usage records.

The dashboard calls :func:`utilization_report` and :func:`low_use_instruments`; exports read
:func:`usage_export_rows`.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlmodel import Session, col

from booking.models import Booking, ServiceCapacityDay, ServiceRequest, UsageRecord
from booking.rules import BookingStatus
from core.accounts.models import Organisation, User
from core.db import UTCDateTime
from core.errors import NotFound, RuleViolation
from core.places import CLUSTER_NAMES, Cluster
from instruments import holidays
from instruments import rules as catalogue_rules
from instruments.models import (
    Facility,
    FacilityClosure,
    Instrument,
    OpeningSpan,
    Outage,
    TestingService,
    TestingServiceInstrument,
)
from instruments.queries import FacilityCalendar
from instruments.rules import CATEGORY_NAMES, Category, InstrumentStatus, Interval
from reports import month_totals, rules
from reports.models import InstrumentMonth
from reports.rules import (
    BOOKED_STATUSES,
    MADE_STATUSES,
    Bucket,
    GroupBy,
    LowUseFacts,
    LowUseRules,
    OpenTime,
    PeriodKind,
    ReportScope,
    UsageKind,
    local_midnight,
    ratio,
)
from reports.sql import external_use, greatest, hours_between, late_cancellation, least

# --- Clipping ---------------------------------------------------------------------------------


def _clipped_hours(start: Any, end: Any, bucket_start: Any, bucket_end: Any) -> Any:
    """Hours of ``[start, end)`` within the bucket. Most intervals lie wholly inside it and
    skip the clipping (two comparisons cost less than the two functions, a third of a
    second per million rows on SQLite)."""
    return sa.case(
        (sa.and_(start >= bucket_start, end <= bucket_end), hours_between(start, end)),
        else_=hours_between(greatest(start, bucket_start), least(end, bucket_end)),
    )


# --- Filters and scope -----------------------------------------------------------------------


@dataclass(frozen=True)
class ReportFilter:
    """Narrow a report to part of the platform (the dashboard's drill-down)."""

    instrument_id: int | None = None
    facility_id: int | None = None
    organisation_id: int | None = None
    category: Category | None = None
    cluster: Cluster | None = None
    district: str | None = None

    @property
    def by_instrument(self) -> bool:
        """Whether testing services must be reached through their instruments."""
        return self.instrument_id is not None or self.category is not None


def _conditions(scope: ReportScope, filters: ReportFilter, *, instruments: bool) -> list[Any]:
    """WHERE conditions on facility (and, with ``instruments``, instrument) columns."""
    conditions: list[Any] = []
    if scope.facility_ids is not None:
        conditions.append(col(Facility.id).in_(sorted(scope.facility_ids)))
    for column, value in (
        (Facility.id, filters.facility_id),
        (Facility.organisation_id, filters.organisation_id),
        (Facility.cluster, filters.cluster),
        (Facility.district, filters.district),
    ):
        if value is not None:
            conditions.append(col(column) == value)
    if instruments:
        if filters.instrument_id is not None:
            conditions.append(col(Instrument.id) == filters.instrument_id)
        if filters.category is not None:
            conditions.append(col(Instrument.category) == filters.category)
    return conditions


def check_filters_visible(session: Session, scope: ReportScope, filters: ReportFilter) -> None:
    """A filter naming an instrument or facility the caller may not read is a 404 (as if it
    did not exist); one naming nothing that exists is a 404 too."""
    if filters.instrument_id is not None:
        facility_id = session.execute(
            sa.select(col(Instrument.facility_id)).where(
                col(Instrument.id) == filters.instrument_id
            )
        ).scalar()
        if facility_id is None or not scope.sees(facility_id):
            raise NotFound("Instrument")
    if filters.facility_id is not None and (
        session.get(Facility, filters.facility_id) is None or not scope.sees(filters.facility_id)
    ):
        raise NotFound("Facility")


def _group_column(group_by: GroupBy) -> Any:
    return {
        GroupBy.INSTRUMENT: col(Instrument.id),
        # The instrument's column, not the facility's: an index orders instruments by it.
        GroupBy.FACILITY: col(Instrument.facility_id),
        GroupBy.ORGANISATION: col(Facility.organisation_id),
        GroupBy.CATEGORY: col(Instrument.category),
        GroupBy.CLUSTER: col(Facility.cluster),
        GroupBy.DISTRICT: col(Facility.district),
    }[group_by]


def _bucket_of(column: Any, ends: Sequence[tuple[int, Any]]) -> Any:
    """The index of the bucket a value falls in, from (index, end) of consecutive buckets in
    order (the caller keeps the values within them). A comparison per bucket, where joining a
    table of buckets had the database read every row once per bucket (a year by month: 12)."""
    return sa.case(*((column < end, index) for index, end in ends))


# --- Figures ---------------------------------------------------------------------------------


@dataclass
class Sums:
    """The additive figures of one group and bucket; ratios are derived from them."""

    instruments: int = 0
    large_instruments: int = 0
    opening_hours: float = 0.0
    outage_hours: float = 0.0
    available_hours: float = 0.0
    rated_hours: float = 0.0
    booked_hours: float = 0.0
    effective_hours: float = 0.0
    external_hours: float = 0.0
    training_hours: float = 0.0
    maintenance_hours: float = 0.0
    usage_records: int = 0
    bookings: int = 0
    completed: int = 0
    no_shows: int = 0
    late_cancellations: int = 0
    samples_accepted: int = 0
    sample_capacity: int = 0
    reports_issued: int = 0

    def add(self, other: Sums) -> None:
        for name in ADDITIVE:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def figures(self, turnaround_days: float | None) -> dict[str, Any]:
        """The sums (hours to 0.01 h) and the derived ratios (to 0.0001)."""
        data: dict[str, Any] = {
            name: round(value, 2) if isinstance(value, float) else value
            for name, value in asdict(self).items()
        }
        derived = {
            "utilization": ratio(self.effective_hours, self.rated_hours),
            "occupancy": ratio(self.booked_hours, self.available_hours),
            "sharing_rate": ratio(self.external_hours, self.effective_hours),
            "no_show_rate": ratio(self.no_shows, self.completed + self.no_shows),
            "late_cancel_rate": ratio(
                self.late_cancellations, self.completed + self.no_shows + self.late_cancellations
            ),
            "testing_capacity_use": ratio(self.samples_accepted, self.sample_capacity),
        }
        data |= {name: None if v is None else round(v, 4) for name, v in derived.items()}
        data["turnaround_days"] = None if turnaround_days is None else round(turnaround_days, 2)
        return data


ADDITIVE = tuple(f.name for f in fields(Sums))
# Columns of every row, in the order exports show them (after the group's own columns).
FIGURES = (
    "instruments",
    "large_instruments",
    "available_hours",
    "outage_hours",
    "rated_hours",
    "booked_hours",
    "effective_hours",
    "external_hours",
    "training_hours",
    "maintenance_hours",
    "utilization",
    "occupancy",
    "sharing_rate",
    "bookings",
    "completed",
    "no_shows",
    "late_cancellations",
    "no_show_rate",
    "late_cancel_rate",
    "samples_accepted",
    "sample_capacity",
    "testing_capacity_use",
    "reports_issued",
    "turnaround_days",
)


@dataclass(frozen=True)
class GroupLabel:
    key: str
    name: str
    name_en: str
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"key": self.key, "name": self.name, "name_en": self.name_en, **self.details}


@dataclass
class UtilizationReport:
    """A report: one row per group and bucket, per group, per bucket, and the totals."""

    start: date
    end: date
    group_by: GroupBy
    period: PeriodKind
    buckets: list[Bucket]
    labels: dict[str, GroupLabel]
    cells: dict[tuple[str, int], Sums]
    per_group: dict[str, Sums]
    per_bucket: dict[int, Sums]
    total: Sums
    turnaround: dict[tuple[str | None, int | None], float]

    @property
    def group_keys(self) -> list[str]:
        return sorted(self.labels, key=lambda k: (self.labels[k].name, k))

    def rows(self) -> Iterator[dict[str, Any]]:
        """Group × bucket rows, groups by name, buckets in time order (exports stream these)."""
        for key in self.group_keys:
            for index, bucket in enumerate(self.buckets):
                sums = self.cells.get((key, index)) or self.empty_cell(key)
                yield {
                    **self.labels[key].as_dict(),
                    "period": bucket.label,
                    **sums.figures(self.turnaround.get((key, index))),
                }

    def empty_cell(self, key: str) -> Sums:
        group = self.per_group.get(key, Sums())
        return Sums(instruments=group.instruments, large_instruments=group.large_instruments)

    def groups(self) -> list[dict[str, Any]]:
        """Each group over the whole period."""
        return [
            {
                **self.labels[key].as_dict(),
                **self.per_group.get(key, Sums()).figures(self.turnaround.get((key, None))),
            }
            for key in self.group_keys
        ]

    def series(self) -> list[dict[str, Any]]:
        """All groups together, bucket by bucket (the trend)."""
        return [
            {
                "period": bucket.label,
                "from": bucket.start.isoformat(),
                "to": bucket.end.isoformat(),
                **self.per_bucket.get(index, Sums()).figures(self.turnaround.get((None, index))),
            }
            for index, bucket in enumerate(self.buckets)
        ]

    def totals(self) -> dict[str, Any]:
        return self.total.figures(self.turnaround.get((None, None)))

    def as_dict(self) -> dict[str, Any]:
        return {
            "from": self.start.isoformat(),
            "to": self.end.isoformat(),
            "group_by": self.group_by.value,
            "period": self.period.value,
            "periods": [b.label for b in self.buckets],
            "rows": list(self.rows()),
            "groups": self.groups(),
            "series": self.series(),
            "totals": self.totals(),
            "definitions": rules.definitions(),
        }


@dataclass(frozen=True)
class _InstrumentFacts:
    instrument_id: int
    facility_id: int
    key: str
    in_service: date
    rated_annual_hours: int
    is_large: bool


def _label_key(value: Any) -> str:
    return str(value.value if hasattr(value, "value") else value)


def _instruments(
    session: Session,
    *,
    group_by: GroupBy,
    scope: ReportScope,
    filters: ReportFilter,
    zone: ZoneInfo,
) -> tuple[list[_InstrumentFacts], dict[str, GroupLabel]]:
    """The instruments in the report (one query) and the labels of their groups."""
    rows = session.execute(
        sa.select(
            col(Instrument.id),
            col(Instrument.asset_code),
            col(Instrument.name),
            col(Instrument.name_en),
            col(Instrument.category),
            col(Instrument.is_large),
            col(Instrument.purchase_value_fen),
            col(Instrument.purchase_date),
            col(Instrument.created_at),
            col(Instrument.rated_annual_hours),
            col(Instrument.status),
            col(Facility.id).label("facility_id"),
            col(Facility.name).label("facility_name"),
            col(Facility.name_en).label("facility_name_en"),
            col(Facility.organisation_id),
            col(Facility.cluster),
            col(Facility.district),
            col(Organisation.name).label("organisation_name"),
            col(Organisation.name_en).label("organisation_name_en"),
        )
        .join(Facility, col(Facility.id) == Instrument.facility_id)
        .join(Organisation, col(Organisation.id) == Facility.organisation_id)
        .where(*_conditions(scope, filters, instruments=True))
        .order_by(col(Instrument.id))
    ).mappings()
    facts: list[_InstrumentFacts] = []
    labels: dict[str, GroupLabel] = {}
    for row in rows:
        label = _group_label(group_by, row)
        labels.setdefault(label.key, label)
        facts.append(
            _InstrumentFacts(
                instrument_id=row["id"],
                facility_id=row["facility_id"],
                key=label.key,
                in_service=rules.in_service_date(row["purchase_date"], row["created_at"], zone),
                rated_annual_hours=row["rated_annual_hours"],
                is_large=bool(row["is_large"]),
            )
        )
    return facts, labels


def _group_label(group_by: GroupBy, row: Any) -> GroupLabel:
    if group_by is GroupBy.INSTRUMENT:
        return GroupLabel(
            str(row["id"]),
            row["name"],
            row["name_en"] or "",
            {
                "instrument_id": row["id"],
                "asset_code": row["asset_code"],
                "facility_id": row["facility_id"],
                "facility_name": row["facility_name"],
                "category": _label_key(row["category"]),
                "is_large": bool(row["is_large"]),
                "purchase_value_yuan": None
                if row["purchase_value_fen"] is None
                else row["purchase_value_fen"] // 100,
                "status": _label_key(row["status"]),
            },
        )
    if group_by is GroupBy.FACILITY:
        return GroupLabel(
            str(row["facility_id"]),
            row["facility_name"],
            row["facility_name_en"] or "",
            {
                "facility_id": row["facility_id"],
                "organisation_id": row["organisation_id"],
                "cluster": _label_key(row["cluster"]),
                "district": row["district"],
            },
        )
    if group_by is GroupBy.ORGANISATION:
        return GroupLabel(
            str(row["organisation_id"]),
            row["organisation_name"],
            row["organisation_name_en"] or "",
            {"organisation_id": row["organisation_id"]},
        )
    if group_by is GroupBy.CATEGORY:
        category = Category(row["category"])
        zh, en = CATEGORY_NAMES[category]
        return GroupLabel(category.value, zh, en, {"category": category.value})
    if group_by is GroupBy.CLUSTER:
        cluster = Cluster(row["cluster"])
        zh, en = CLUSTER_NAMES[cluster]
        return GroupLabel(cluster.value, zh, en, {"cluster": cluster.value})
    return GroupLabel(row["district"], row["district"], "", {"district": row["district"]})


def _facility_calendars(
    session: Session, facility_rows: Sequence[tuple[int, str, bool]]
) -> dict[int, FacilityCalendar]:
    """Weekly hours and closures of facilities (id, zone, opens on holidays): two queries."""
    ids = [row[0] for row in facility_rows]
    weekly: dict[int, dict[int, list[tuple[int, int]]]] = {f: {} for f in ids}
    closed: dict[int, list[tuple[date, date]]] = {f: [] for f in ids}
    if ids:
        for facility_id, weekday, opens, closes in session.execute(
            sa.select(
                col(OpeningSpan.facility_id),
                col(OpeningSpan.weekday),
                col(OpeningSpan.start_minute),
                col(OpeningSpan.end_minute),
            )
            .where(col(OpeningSpan.facility_id).in_(ids))
            .order_by(col(OpeningSpan.start_minute))
        ):
            weekly[facility_id].setdefault(weekday, []).append((opens, closes))
        for facility_id, closed_from, closed_to in session.execute(
            sa.select(
                col(FacilityClosure.facility_id),
                col(FacilityClosure.start_date),
                col(FacilityClosure.end_date),
            ).where(col(FacilityClosure.facility_id).in_(ids))
        ):
            closed[facility_id].append((closed_from, closed_to))
    return {
        facility_id: FacilityCalendar(
            zone=ZoneInfo(zone),
            opens_on_holidays=opens_on_holidays,
            weekly_hours=weekly[facility_id],
            closed_dates=tuple(closed[facility_id]),
        )
        for facility_id, zone, opens_on_holidays in facility_rows
    }


@dataclass
class _Availability:
    """Per facility: its opening time over the whole period, and the outages in it."""

    opening: dict[int, OpenTime]
    facility_outages: dict[int, list[Interval]]
    instrument_outages: dict[int, list[Interval]]

    def facility_open(self, facility_id: int) -> OpenTime:
        """Opening time minus facility-wide outages (for open days of testing services)."""
        holes = self.facility_outages.get(facility_id)
        opening = self.opening[facility_id]
        if not holes:
            return opening
        return OpenTime.of(catalogue_rules.subtract(list(opening.intervals), holes))


def _availability(
    session: Session, facility_ids: Sequence[int], start: datetime, end: datetime
) -> _Availability:
    """Opening time of each facility over ``[start, end)`` and the outages overlapping it."""
    facility_rows = [
        (row[0], row[1], bool(row[2]))
        for row in session.execute(
            sa.select(col(Facility.id), col(Facility.timezone), col(Facility.opens_on_holidays))
            .where(col(Facility.id).in_(list(facility_ids)))
            .order_by(col(Facility.id))
        )
    ]
    calendars = _facility_calendars(session, facility_rows)
    # Facilities with the same week, zone, holiday choice and closures share one expansion.
    expanded: dict[tuple[Any, ...], OpenTime] = {}
    opening = {}
    for facility_id, calendar in calendars.items():
        same = (
            calendar.zone.key,
            calendar.opens_on_holidays,
            tuple(sorted((day, tuple(spans)) for day, spans in calendar.weekly_hours.items())),
            tuple(sorted(calendar.closed_dates)),
        )
        if same not in expanded:
            expanded[same] = OpenTime.of(
                catalogue_rules.open_intervals(
                    start,
                    end,
                    zone=calendar.zone,
                    weekly_hours=calendar.weekly_hours,
                    day_kind=holidays.day_kind,
                    opens_on_holidays=calendar.opens_on_holidays,
                    closed_dates=calendar.closed_dates,
                )
            )
        opening[facility_id] = expanded[same]
    facility_outages: dict[int, list[Interval]] = defaultdict(list)
    instrument_outages: dict[int, list[Interval]] = defaultdict(list)
    if facility_ids:
        for facility_id, instrument_id, outage_start, outage_end in session.execute(
            sa.select(
                col(Outage.facility_id),
                col(Outage.instrument_id),
                col(Outage.start_at),
                col(Outage.end_at),
            ).where(
                col(Outage.facility_id).in_(list(facility_ids)),
                col(Outage.end_at) > start,
                col(Outage.start_at) < end,
            )
        ):
            if instrument_id is None:
                facility_outages[facility_id].append((outage_start, outage_end))
            else:
                instrument_outages[instrument_id].append((outage_start, outage_end))
    return _Availability(opening, facility_outages, instrument_outages)


def _calendar_figures(
    instruments: Sequence[_InstrumentFacts],
    availability: _Availability,
    buckets: Sequence[Bucket],
    zone: ZoneInfo,
    cells: dict[tuple[str, int], Sums],
) -> None:
    """Opening, outage, available and rated hours: per instrument and bucket from the
    facility's running totals (no booking or usage row is read here)."""
    ranges = [bucket.utc_range(zone) for bucket in buckets]
    for instrument in instruments:
        opening = availability.opening[instrument.facility_id]
        holes = availability.instrument_outages.get(
            instrument.instrument_id, []
        ) + availability.facility_outages.get(instrument.facility_id, [])
        in_service_at = local_midnight(instrument.in_service, zone)
        for index, (bucket, (bucket_start, bucket_end)) in enumerate(
            zip(buckets, ranges, strict=True)
        ):
            cell = cells[(instrument.key, index)]
            counted_from = max(bucket_start, in_service_at)
            open_hours = opening.hours(counted_from, bucket_end)
            outage_hours = (
                opening.hours_within(holes, counted_from, bucket_end) if holes and open_hours else 0
            )
            cell.opening_hours += open_hours
            cell.outage_hours += outage_hours
            cell.available_hours += open_hours - outage_hours
            cell.rated_hours += rules.rated_hours(
                instrument.rated_annual_hours, bucket.start, bucket.end, instrument.in_service
            )


# A scan sums at most this many buckets side by side (a monthly year is one scan).
BUCKETS_PER_SCAN = 12


@dataclass(frozen=True)
class _Span:
    """Consecutive buckets of a report (their indexes), summed in one scan of the records."""

    indexes: list[int]
    bounds: list[tuple[datetime, datetime]]  # UTC [start, end) of each bucket

    @property
    def start(self) -> datetime:
        return self.bounds[0][0]

    @property
    def end(self) -> datetime:
        return self.bounds[-1][1]


def _spans(buckets: Sequence[Bucket], zone: ZoneInfo, indexes: Sequence[int]) -> list[_Span]:
    """The buckets ``indexes`` in runs of consecutive ones, at most ``BUCKETS_PER_SCAN`` each
    (a scan reads every record between its first and its last bucket)."""
    runs: list[list[int]] = []
    for index in indexes:
        if runs and runs[-1][-1] == index - 1 and len(runs[-1]) < BUCKETS_PER_SCAN:
            runs[-1].append(index)
        else:
            runs.append([index])
    return [_Span(run, [buckets[i].utc_range(zone) for i in run]) for run in runs]


def _utc(value: datetime) -> Any:
    return sa.literal(value, UTCDateTime())


def _per_bucket_hours(span: _Span, start: Any, end: Any, when: Any = None) -> list[Any]:
    """For each bucket of the span, the hours of ``[start, end)`` inside it (0 outside).

    The buckets are columns side by side rather than rows of a joined table: the database
    reads the index once in its own order and groups without sorting (joining twelve monthly
    buckets made SQLite look every record up through another index, twenty times slower)."""
    if len(span.bounds) == 1:
        # The scan's own range is the bucket: every row read overlaps it.
        lo, hi = span.bounds[0]
        hours = _clipped_hours(start, end, _utc(lo), _utc(hi))
        return [hours if when is None else sa.case((when, hours), else_=0.0)]
    columns = []
    for lo, hi in span.bounds:
        overlaps = sa.and_(start < _utc(hi), end > _utc(lo))
        if when is not None:
            overlaps = sa.and_(when, overlaps)
        columns.append(
            sa.case((overlaps, _clipped_hours(start, end, _utc(lo), _utc(hi))), else_=0.0)
        )
    return columns


def _per_bucket_count(span: _Span, condition: Any) -> list[Any]:
    """For each bucket of the span: 1 where ``condition(lo, hi)`` holds for it, else 0."""
    return [sa.case((condition(_utc(lo), _utc(hi)), 1), else_=0) for lo, hi in span.bounds]


# Planner costs that let PostgreSQL split a report's scans across parallel workers: by default
# it keeps the grouped scan of a million index entries in one process (measured: the usage
# scan of a year over 1,000,000 records 490 → 360 ms with two workers).
PARALLEL_SCAN_SETTINGS = {"parallel_setup_cost": "10", "parallel_tuple_cost": "0.001"}


@contextlib.contextmanager
def _parallel_scans(session: Session) -> Iterator[None]:
    """On PostgreSQL, parallel plans for the scans inside; the settings before are put back
    (transaction-local either way: a failed report leaves nothing behind)."""
    connection = session.connection()
    if connection.dialect.name != "postgresql":
        yield
        return
    names = list(PARALLEL_SCAN_SETTINGS)
    before = connection.execute(sa.select(*(sa.func.current_setting(name) for name in names))).one()
    connection.execute(
        sa.select(*(sa.func.set_config(n, v, True) for n, v in PARALLEL_SCAN_SETTINGS.items()))
    )
    yield
    connection.execute(
        sa.select(*(sa.func.set_config(n, v, True) for n, v in zip(names, before, strict=True)))
    )


def _in_scope(column: Any, conditions: list[Any]) -> list[Any]:
    """Restrict an instrument-id column to the instruments the conditions allow (none: all)."""
    if not conditions:
        return []
    return [
        column.in_(
            sa.select(col(Instrument.id))
            .join(Facility, col(Facility.id) == Instrument.facility_id)
            .where(*conditions)
        )
    ]


def _usage_figures(
    session: Session,
    group_column: Any,
    conditions: list[Any],
    span: _Span,
    cells: dict[tuple[str, int], Sums],
) -> None:
    """Effective, external, training and maintenance hours of the span's buckets: two GROUP
    BYs in one query.

    The inner one sums clipped durations per instrument, kind and organisation of the user
    (a column per bucket): the index holds the records in that order, so the database reads
    them in one pass and computes each duration once, without sorting. The outer one adds
    those few rows up per group, telling kinds and internal from external apart."""
    usage = UsageRecord.__table__.c  # type: ignore[attr-defined]
    hours = _per_bucket_hours(span, usage.started_at, usage.ended_at)
    records = (
        [sa.literal(1)]
        if len(span.bounds) == 1
        else _per_bucket_count(
            span, lambda lo, hi: sa.and_(usage.started_at < hi, usage.ended_at > lo)
        )
    )
    sums = (
        sa.select(
            usage.instrument_id,
            usage.kind,
            usage.organisation_id,
            *(sa.func.sum(h).label(f"h{k}") for k, h in enumerate(hours)),
            *(sa.func.sum(r).label(f"n{k}") for k, r in enumerate(records)),
        )
        .select_from(UsageRecord.__table__)  # type: ignore[attr-defined]
        .where(
            usage.started_at < span.end,
            usage.ended_at > span.start,
            *_in_scope(usage.instrument_id, conditions),
        )
        .group_by(usage.instrument_id, usage.kind, usage.organisation_id)
        .subquery("usage_sums")
    )
    external = external_use(sums.c.kind, sums.c.organisation_id, col(Facility.organisation_id))
    training = sums.c.kind == UsageKind.TRAINING.value
    maintenance = sums.c.kind == UsageKind.MAINTENANCE.value
    figures = []
    for k in range(len(span.bounds)):
        h = sums.c[f"h{k}"]
        figures += [
            sa.func.sum(h),
            sa.func.sum(sa.case((external, h), else_=0.0)),
            sa.func.sum(sa.case((training, h), else_=0.0)),
            sa.func.sum(sa.case((maintenance, h), else_=0.0)),
            sa.func.sum(sums.c[f"n{k}"]),
        ]
    for key, *values in session.execute(_per_group(sums, group_column, conditions, figures)):
        for k in range(len(span.bounds)):
            total, external_hours, training_hours, maintenance_hours, count = values[
                5 * k : 5 * k + 5
            ]
            _add_usage(
                cells,
                (_label_key(key), span.indexes[k]),
                hours=total or 0.0,
                external=external_hours or 0.0,
                training=training_hours or 0.0,
                maintenance=maintenance_hours or 0.0,
                records=int(count or 0),  # PostgreSQL sums bigints as numeric
            )


def _booking_figures(
    session: Session,
    group_column: Any,
    conditions: list[Any],
    span: _Span,
    cells: dict[tuple[str, int], Sums],
) -> None:
    """Booked hours and the counts behind the no-show and late-cancel rates: as for usage,
    an inner GROUP BY per instrument and status in the index's order (a column per bucket),
    then per group."""
    booking = Booking.__table__.c  # type: ignore[attr-defined]
    booked = booking.status.in_(BOOKED_STATUSES)
    hours = _per_bucket_hours(span, booking.start_at, booking.end_at, when=booked)
    starts = _per_bucket_count(
        span, lambda lo, hi: sa.and_(booking.start_at >= lo, booking.start_at < hi)
    )
    sums = (
        sa.select(
            booking.instrument_id,
            booking.status,
            booking.late_cancellation,
            booking.replaced_by_id,
            *(sa.func.sum(h).label(f"h{k}") for k, h in enumerate(hours)),
            *(sa.func.sum(n).label(f"n{k}") for k, n in enumerate(starts)),
        )
        .select_from(Booking.__table__)  # type: ignore[attr-defined]
        .where(
            booking.start_at < span.end,
            booking.end_at > span.start,
            booking.status.in_([*MADE_STATUSES, BookingStatus.CANCELLED.value]),
            *_in_scope(booking.instrument_id, conditions),
        )
        .group_by(
            booking.instrument_id,
            booking.status,
            booking.late_cancellation,
            booking.replaced_by_id,
        )
        .subquery("booking_sums")
    )
    made = sums.c.status.in_(MADE_STATUSES)
    completed = sums.c.status == BookingStatus.COMPLETED.value
    no_show = sums.c.status == BookingStatus.NO_SHOW.value
    late = late_cancellation(sums.c.status, sums.c.late_cancellation, sums.c.replaced_by_id)
    figures = []
    for k in range(len(span.bounds)):
        n = sums.c[f"n{k}"]
        figures += [
            sa.func.sum(sums.c[f"h{k}"]),
            *(
                sa.func.sum(sa.case((which, n), else_=0))
                for which in (made, completed, no_show, late)
            ),
        ]
    for key, *values in session.execute(_per_group(sums, group_column, conditions, figures)):
        for k in range(len(span.bounds)):
            booked_hours, made_count, completed_count, no_shows, late_count = values[
                5 * k : 5 * k + 5
            ]
            # PostgreSQL sums bigints as numeric: counts come back as Decimal there.
            _add_bookings(
                cells,
                (_label_key(key), span.indexes[k]),
                booked=booked_hours or 0.0,
                made=int(made_count or 0),
                completed=int(completed_count or 0),
                no_shows=int(no_shows or 0),
                late=int(late_count or 0),
            )


def _per_group(sums: Any, group_column: Any, conditions: list[Any], figures: list[Any]) -> Any:
    """The outer GROUP BY of a scan: the per-instrument ``sums`` added up per group."""
    return (
        sa.select(group_column.label("key"), *figures)
        .select_from(sums)
        .join(Instrument, col(Instrument.id) == sums.c.instrument_id)
        .join(Facility, col(Facility.id) == Instrument.facility_id)
        .where(*conditions)
        .group_by(group_column)
    )


def _add_usage(
    cells: dict[tuple[str, int], Sums],
    cell_key: tuple[str, int],
    *,
    hours: float,
    external: float,
    training: float,
    maintenance: float,
    records: int,
) -> None:
    """A group's usage in a bucket (hours of every kind); no cell for a bucket without any."""
    if not records:
        return
    cell = cells[cell_key]
    cell.effective_hours += hours - training - maintenance
    cell.external_hours += external
    cell.training_hours += training
    cell.maintenance_hours += maintenance
    cell.usage_records += records


def _add_bookings(
    cells: dict[tuple[str, int], Sums],
    cell_key: tuple[str, int],
    *,
    booked: float,
    made: int,
    completed: int,
    no_shows: int,
    late: int,
) -> None:
    """A group's bookings in a bucket; no cell for a bucket without any."""
    if not (booked or made or late):
        return
    cell = cells[cell_key]
    cell.booked_hours += booked
    cell.bookings += made
    cell.completed += completed
    cell.no_shows += no_shows
    cell.late_cancellations += late


MS_PER_HOUR = 3_600_000.0


def _month_total_figures(
    session: Session,
    group_column: Any,
    conditions: list[Any],
    zone: ZoneInfo,
    buckets: dict[int, Bucket],
    cells: dict[tuple[str, int], Sums],
) -> None:
    """What :func:`_usage_figures` and :func:`_booking_figures` sum from the records, for
    consecutive buckets made of whole months: from the month totals the database keeps (a row
    per instrument and month instead of every record; the same figures, tests compare them).

    A record overlapping several months of one bucket is in each month's count; the months
    after the bucket's first subtract those that started before them, so it counts once."""
    totals = InstrumentMonth.__table__.c  # type: ignore[attr-defined]
    first_months = [bucket.start for bucket in buckets.values()]
    bucket_of = _bucket_of(
        totals.month, [(index, sa.literal(b.end, sa.Date)) for index, b in buckets.items()]
    )
    months = (
        sa.select(
            group_column.label("key"),
            bucket_of.label("idx"),
            *(
                totals[name]
                for name in (
                    "usage_ms",
                    "external_ms",
                    "training_ms",
                    "maintenance_ms",
                    "booked_ms",
                    "bookings_made",
                    "bookings_completed",
                    "no_shows",
                    "late_cancellations",
                )
            ),
            (
                totals.usage_records
                - sa.case((totals.month.in_(first_months), 0), else_=totals.usage_carried)
            ).label("usage_records"),
        )
        .select_from(InstrumentMonth.__table__)  # type: ignore[attr-defined]
        .join(Instrument, col(Instrument.id) == totals.instrument_id)
        .join(Facility, col(Facility.id) == Instrument.facility_id)
        .where(
            totals.zone == zone.key,
            totals.month >= min(first_months),
            totals.month < max(bucket.end for bucket in buckets.values()),
            *conditions,
        )
        .subquery("months")
    )
    names = [c.name for c in months.c][2:]
    query = sa.select(
        months.c.key, months.c.idx, *(sa.func.sum(months.c[name]) for name in names)
    ).group_by(months.c.key, months.c.idx)
    for key, index, *values in session.execute(query):
        # PostgreSQL sums bigints as numeric: Decimal there, int on SQLite.
        sums = {name: int(value or 0) for name, value in zip(names, values, strict=True)}
        cell_key = (_label_key(key), int(index))
        _add_usage(
            cells,
            cell_key,
            hours=sums["usage_ms"] / MS_PER_HOUR,
            external=sums["external_ms"] / MS_PER_HOUR,
            training=sums["training_ms"] / MS_PER_HOUR,
            maintenance=sums["maintenance_ms"] / MS_PER_HOUR,
            records=sums["usage_records"],
        )
        _add_bookings(
            cells,
            cell_key,
            booked=sums["booked_ms"] / MS_PER_HOUR,
            made=sums["bookings_made"],
            completed=sums["bookings_completed"],
            no_shows=sums["no_shows"],
            late=sums["late_cancellations"],
        )


def _service_pairs(group_by: GroupBy, scope: ReportScope, filters: ReportFilter) -> Any:
    """(testing service, group key) pairs: through linked instruments when the grouping or
    the filter is about instruments, else through the service's facility."""
    group_column = _group_column(group_by)
    if group_by in (GroupBy.INSTRUMENT, GroupBy.CATEGORY) or filters.by_instrument:
        return (
            sa.select(
                col(TestingServiceInstrument.testing_service_id).label("service_id"),
                group_column.label("key"),
            )
            .join(Instrument, col(Instrument.id) == TestingServiceInstrument.instrument_id)
            .join(Facility, col(Facility.id) == Instrument.facility_id)
            .where(*_conditions(scope, filters, instruments=True))
            .distinct()
            .subquery("service_group")
        )
    if group_by is GroupBy.FACILITY:
        group_column = col(Facility.id)
    return (
        sa.select(col(TestingService.id).label("service_id"), group_column.label("key"))
        .join(Facility, col(Facility.id) == TestingService.facility_id)
        .where(*_conditions(scope, filters, instruments=False))
        .subquery("service_group")
    )


def _testing_figures(
    session: Session,
    pairs: Any,
    buckets: Sequence[Bucket],
    availability_of: Any,
    zone: ZoneInfo,
    cells: dict[tuple[str, int], Sums],
) -> None:
    """Samples accepted (one GROUP BY) against daily capacity × open days of each service."""
    capacity = ServiceCapacityDay.__table__.c  # type: ignore[attr-defined]
    days = (
        sa.select(
            pairs.c.key,
            _bucket_of(
                capacity.day, [(i, sa.literal(b.end, sa.Date)) for i, b in enumerate(buckets)]
            ).label("idx"),
            capacity.testing_service_id,
            capacity.accepted_samples,
        )
        .select_from(ServiceCapacityDay.__table__)  # type: ignore[attr-defined]
        .join(pairs, pairs.c.service_id == capacity.testing_service_id)
        .where(capacity.day >= buckets[0].start, capacity.day < buckets[-1].end)
        .subquery("capacity_days")
    )
    accepted_query = sa.select(
        days.c.key,
        days.c.idx,
        days.c.testing_service_id,
        sa.func.sum(days.c.accepted_samples).label("accepted"),
    ).group_by(days.c.key, days.c.idx, days.c.testing_service_id)
    used_services: set[int] = set()
    for key, index, service_id, accepted in session.execute(accepted_query):
        cells[(_label_key(key), index)].samples_accepted += int(accepted or 0)
        if accepted:
            used_services.add(service_id)
    # Capacity: active services, and inactive ones that still accepted samples in the period.
    services = session.execute(
        sa.select(
            pairs.c.key,
            col(TestingService.id),
            col(TestingService.facility_id),
            col(TestingService.daily_sample_capacity),
            col(TestingService.is_active),
        ).join(TestingService, col(TestingService.id) == pairs.c.service_id)
    ).all()
    wanted = [row for row in services if row[4] or row[1] in used_services]
    if not wanted:
        return
    open_time = availability_of(sorted({row[2] for row in wanted}))
    dates_of: dict[int, list[date]] = {}
    shared: dict[int, list[date]] = {}  # facilities sharing one expansion share its days
    for facility_id, facility_open in open_time.items():
        if id(facility_open) not in shared:
            shared[id(facility_open)] = facility_open.open_dates(zone)
        dates_of[facility_id] = shared[id(facility_open)]
    for key, _, facility_id, daily_capacity, _ in wanted:
        for index, bucket_ in enumerate(buckets):
            open_days = rules.count_between(dates_of[facility_id], bucket_.start, bucket_.end)
            cells[(_label_key(key), index)].sample_capacity += daily_capacity * open_days


def _turnaround_medians(
    session: Session,
    pairs: Any,
    bounds: Sequence[tuple[datetime, datetime]],
    cells: dict[tuple[str, int], Sums],
    *,
    single_bucket: bool,
) -> dict[tuple[str | None, int | None], float]:
    """Median days from submission to report, per group and bucket, group, bucket and in all.

    Window functions (ROW_NUMBER and COUNT over a partition) pick the middle one or two values:
    the same SQL on SQLite, which has no median, and PostgreSQL."""
    request = ServiceRequest.__table__.c  # type: ignore[attr-defined]
    days = (hours_between(request.submitted_at, request.reported_at) / 24.0).label("days")
    bucket = _bucket_of(
        request.reported_at, [(i, _utc(end)) for i, (_, end) in enumerate(bounds)]
    ).label("idx")
    base = (
        sa.select(pairs.c.key, bucket, days, request.id.label("request_id"))
        .select_from(ServiceRequest.__table__)  # type: ignore[attr-defined]
        .join(pairs, pairs.c.service_id == request.testing_service_id)
        .where(
            request.reported_at.is_not(None),
            request.reported_at >= bounds[0][0],
            request.reported_at < bounds[-1][1],
        )
        .subquery("reported")
    )
    medians: dict[tuple[str | None, int | None], float] = {}
    partitions = [(True, True), (True, False), (False, True), (False, False)]
    if single_bucket:
        # One bucket: a group's median over the period is its median in the bucket, and the
        # bucket's is the overall one; two window passes instead of four.
        partitions = [(True, True), (False, False)]
    for by_key, by_bucket in partitions:
        partition = [c for c, wanted in ((base.c.key, by_key), (base.c.idx, by_bucket)) if wanted]
        source = base
        if not by_key:
            # One request linked through two instruments counts once in the totals.
            source = (
                sa.select(base.c.idx, base.c.request_id, sa.func.min(base.c.days).label("days"))
                .group_by(base.c.idx, base.c.request_id)
                .subquery("reported_once")
            )
            partition = [source.c.idx] if by_bucket else []
        ranked = sa.select(
            *partition,
            source.c.days,
            sa.func.row_number()
            .over(partition_by=partition or None, order_by=source.c.days)
            .label("position"),
            sa.func.count().over(partition_by=partition or None).label("n"),
        ).subquery("ranked")
        keys = [ranked.c[c.name] for c in partition]
        query = (
            sa.select(*keys, sa.func.avg(ranked.c.days), sa.func.max(ranked.c.n))
            # The middle one (odd count) or two (even count): integer division.
            .where(ranked.c.position.in_([(ranked.c.n + 1) // 2, (ranked.c.n + 2) // 2]))
            .group_by(*keys)
        )
        for row in session.execute(query):
            *names, median, count = row
            if median is None:
                # No reported request at all: an ungrouped aggregate still answers one row.
                continue
            key = _label_key(names.pop(0)) if by_key else None
            index = names.pop(0) if by_bucket else None
            medians[(key, index)] = float(median)
            if single_bucket:
                medians[(key, None if by_key else 0)] = float(median)
            if by_key and by_bucket:
                cells[(key or "", index or 0)].reports_issued += int(count)
    return medians


def utilization_report(
    session: Session,
    *,
    start: date,
    end: date,
    group_by: GroupBy,
    period: PeriodKind,
    scope: ReportScope,
    zone: ZoneInfo,
    filters: ReportFilter | None = None,
) -> UtilizationReport:
    """Every metric of DESIGN.md for ``[start, end)`` (local dates in ``zone``), grouped by
    ``group_by``, per ``period``; only the facilities in ``scope``.

    About a dozen queries whatever the number of instruments, rows or buckets; two more for
    each run of cut buckets summed from the records (at most ``BUCKETS_PER_SCAN`` per scan).
    Raises 422 for a bad period, 404 for a filter naming what the caller may not see.
    """
    rules_problems = rules.period_problems(start, end)
    if rules_problems:
        raise RuleViolation(rules_problems)
    filters = filters or ReportFilter()
    check_filters_visible(session, scope, filters)
    buckets = rules.buckets(start, end, period)
    utc_start, utc_end = local_midnight(start, zone), local_midnight(end, zone)
    group_column = _group_column(group_by)
    conditions = _conditions(scope, filters, instruments=True)

    instruments, labels = _instruments(
        session, group_by=group_by, scope=scope, filters=filters, zone=zone
    )
    cells: dict[tuple[str, int], Sums] = defaultdict(Sums)
    availability = _availability(
        session, sorted({i.facility_id for i in instruments}), utc_start, utc_end
    )
    _calendar_figures(instruments, availability, buckets, zone, cells)
    months = month_totals.coverage(session, zone)
    from_totals = {
        index: bucket
        for index, bucket in enumerate(buckets)
        if months is not None and months.covers(bucket.start, bucket.end)
    }
    if from_totals:
        _month_total_figures(session, group_column, conditions, zone, from_totals, cells)
    # Months cut by the period's ends (or a zone without totals): from the records.
    spans = _spans(buckets, zone, [i for i in range(len(buckets)) if i not in from_totals])
    if spans:
        with _parallel_scans(session):
            for span in spans:
                _usage_figures(session, group_column, conditions, span, cells)
                _booking_figures(session, group_column, conditions, span, cells)

    pairs = _service_pairs(group_by, scope, filters)

    def facility_open_time(facility_ids: list[int]) -> dict[int, OpenTime]:
        missing = [f for f in facility_ids if f not in availability.opening]
        if missing:
            extra = _availability(session, missing, utc_start, utc_end)
            availability.opening.update(extra.opening)
            availability.facility_outages.update(extra.facility_outages)
        return {f: availability.facility_open(f) for f in facility_ids}

    _testing_figures(session, pairs, buckets, facility_open_time, zone, cells)
    turnaround = _turnaround_medians(
        session,
        pairs,
        [bucket.utc_range(zone) for bucket in buckets],
        cells,
        single_bucket=len(buckets) == 1,
    )
    if group_by not in (GroupBy.INSTRUMENT, GroupBy.CATEGORY):
        _add_facility_labels(session, group_by, scope, filters, labels, cells)

    per_group: dict[str, Sums] = defaultdict(Sums)
    per_bucket: dict[int, Sums] = defaultdict(Sums)
    total = Sums()
    for (key, index), sums in cells.items():
        per_group[key].add(sums)
        per_bucket[index].add(sums)
        total.add(sums)
    # Instrument counts are a head count, not summed over buckets.
    for group in per_group.values():
        group.instruments = group.large_instruments = 0
    for bucket_sums in per_bucket.values():
        bucket_sums.instruments = bucket_sums.large_instruments = 0
    total.instruments = len(instruments)
    total.large_instruments = sum(1 for i in instruments if i.is_large)
    for instrument in instruments:
        per_group[instrument.key].instruments += 1
        per_group[instrument.key].large_instruments += int(instrument.is_large)
    for index in range(len(buckets)):
        per_bucket[index].instruments = total.instruments
        per_bucket[index].large_instruments = total.large_instruments
    for (key, _), sums in cells.items():
        sums.instruments = per_group[key].instruments
        sums.large_instruments = per_group[key].large_instruments
    for key in list(per_group):
        labels.setdefault(key, GroupLabel(key, key, ""))
    return UtilizationReport(
        start=start,
        end=end,
        group_by=group_by,
        period=period,
        buckets=buckets,
        labels=labels,
        cells=dict(cells),
        per_group=dict(per_group),
        per_bucket=dict(per_bucket),
        total=total,
        turnaround=turnaround,
    )


def _add_facility_labels(
    session: Session,
    group_by: GroupBy,
    scope: ReportScope,
    filters: ReportFilter,
    labels: dict[str, GroupLabel],
    cells: dict[tuple[str, int], Sums],
) -> None:
    """Labels of groups that only testing services reached (a facility without instruments)."""
    keys = {key for key, _ in cells} - set(labels)
    if not keys:
        return
    for row in session.execute(
        sa.select(
            col(Facility.id).label("facility_id"),
            col(Facility.name).label("facility_name"),
            col(Facility.name_en).label("facility_name_en"),
            col(Facility.organisation_id),
            col(Facility.cluster),
            col(Facility.district),
            col(Organisation.name).label("organisation_name"),
            col(Organisation.name_en).label("organisation_name_en"),
        )
        .join(Organisation, col(Organisation.id) == Facility.organisation_id)
        .where(*_conditions(scope, filters, instruments=False))
    ).mappings():
        label = _group_label(group_by, row)
        if label.key in keys:
            labels.setdefault(label.key, label)


# --- Low use ---------------------------------------------------------------------------------


def low_use_instruments(
    session: Session,
    *,
    start: date,
    end: date,
    scope: ReportScope,
    zone: ZoneInfo,
    low_use: LowUseRules | None = None,
    filters: ReportFilter | None = None,
) -> list[dict[str, Any]]:
    """Instruments (not retired) whose utilization is below the threshold in ``[start, end)``,
    lowest first, each with its figures, its reasons and whether it is a large instrument."""
    low_use = low_use or LowUseRules()
    if problems := low_use.problems():
        raise RuleViolation(problems)
    by_instrument = utilization_report(
        session,
        start=start,
        end=end,
        group_by=GroupBy.INSTRUMENT,
        period=PeriodKind.YEAR,
        scope=scope,
        zone=zone,
        filters=filters,
    )
    return low_use_in(by_instrument, low_use)


def low_use_in(report: UtilizationReport, low_use: LowUseRules) -> list[dict[str, Any]]:
    """The low-use instruments of a report already grouped by instrument (any period kind:
    a group's figures are over the whole period), so a page showing both computes it once."""
    if report.group_by is not GroupBy.INSTRUMENT:
        raise ValueError("low use is read from a report grouped by instrument")
    if problems := low_use.problems():
        raise RuleViolation(problems)
    days = (report.end - report.start).days
    found = []
    for group in report.groups():
        if group["status"] == InstrumentStatus.RETIRED.value:
            continue
        if not rules.is_low_use(group["utilization"], low_use):
            continue
        sums = report.per_group[group["key"]]
        reasons = rules.low_use_reasons(
            LowUseFacts(
                utilization=group["utilization"],
                opening_hours=sums.opening_hours,
                outage_hours=sums.outage_hours,
                bookings=sums.bookings,
                no_shows=sums.no_shows,
                completed=sums.completed,
                period_days=days,
            ),
            low_use,
        )
        found.append(group | {"reasons": reasons, "threshold": low_use.threshold})
    found.sort(key=lambda item: (item["utilization"], item["name"]))
    return found


# --- Usage-record export ---------------------------------------------------------------------


@dataclass(frozen=True)
class UsageExportHeader:
    instrument_id: int
    asset_code: str
    instrument_name: str
    facility_name: str
    organisation_name: str
    zone: ZoneInfo


def usage_export_header(
    session: Session, *, instrument_id: int, scope: ReportScope
) -> UsageExportHeader:
    """The instrument an export is about; 404 when the caller may not read its facility."""
    row = session.execute(
        sa.select(
            col(Instrument.id),
            col(Instrument.asset_code),
            col(Instrument.name),
            col(Facility.id),
            col(Facility.name),
            col(Facility.timezone),
            col(Organisation.name),
        )
        .join(Facility, col(Facility.id) == Instrument.facility_id)
        .join(Organisation, col(Organisation.id) == Facility.organisation_id)
        .where(col(Instrument.id) == instrument_id)
    ).first()
    if row is None or not scope.sees(row[3]):
        raise NotFound("Instrument")
    return UsageExportHeader(row[0], row[1], row[2], row[4], row[6], ZoneInfo(row[5]))


def usage_export_rows(
    session: Session,
    *,
    instrument_id: int,
    start: datetime,
    end: datetime,
    batch_size: int = 2000,
) -> Iterator[Any]:
    """The instrument's usage records that started in ``[start, end)``, oldest first, each with
    its user, the user's organisation then, whether internal, and the booking's purpose.

    Streamed in batches from the database (constant memory however many there are)."""
    usage = UsageRecord.__table__.c  # type: ignore[attr-defined]
    user_organisation = sa.orm.aliased(Organisation, name="user_organisation")
    query = (
        sa.select(
            usage.id,
            usage.started_at,
            usage.ended_at,
            usage.samples,
            usage.kind,
            usage.note,
            col(User.name).label("user_name"),
            col(user_organisation.name).label("user_organisation"),
            sa.case(
                (usage.organisation_id == col(Facility.organisation_id), True), else_=False
            ).label("internal"),
            col(Booking.purpose).label("purpose"),
            col(Booking.operated_by).label("operated_by"),
        )
        .select_from(UsageRecord.__table__)  # type: ignore[attr-defined]
        .join(Instrument, col(Instrument.id) == usage.instrument_id)
        .join(Facility, col(Facility.id) == Instrument.facility_id)
        .join(User, col(User.id) == usage.user_id)
        .outerjoin(user_organisation, col(user_organisation.id) == usage.organisation_id)
        .outerjoin(Booking, col(Booking.id) == usage.booking_id)
        .where(
            usage.instrument_id == instrument_id, usage.started_at >= start, usage.started_at < end
        )
        .order_by(usage.started_at, usage.id)
        .execution_options(yield_per=batch_size)
    )
    yield from session.execute(query)


def count_usage_records(
    session: Session, *, instrument_id: int, start: datetime, end: datetime
) -> int:
    usage = UsageRecord.__table__.c  # type: ignore[attr-defined]
    return int(
        session.execute(
            sa.select(sa.func.count()).where(
                usage.instrument_id == instrument_id,
                usage.started_at >= start,
                usage.started_at < end,
            )
        ).scalar_one()
    )
