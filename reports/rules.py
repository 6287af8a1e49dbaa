"""Pure rules of the utilization reports: periods, groupings, definitions, rated hours, ratios,
who may read which facilities, and why an instrument is on the low-use list.

Invariants owned here: a report period is a half-open range of local dates ``[from, to)`` in the
platform's zone, neither empty nor inverted nor longer than ten years; its buckets (months,
quarters or years) tile it exactly, the first and last clipped to it; every interval a metric
sums is clipped to its bucket, so a use crossing midnight at the end of a month counts in both
months, each with its own part. A ratio whose denominator is zero is ``None`` (not 0, not
infinity): "no data" and "no use" are different answers.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from itertools import accumulate
from zoneinfo import ZoneInfo

from booking.rules import BookingStatus
from core.accounts.rules import Role
from core.auth.principal import Principal
from core.errors import PermissionDenied, Problem
from instruments.rules import Interval, merge

MAX_REPORT_YEARS = 10
DEFAULT_LOW_USE_THRESHOLD = 0.5  # utilization (effective / rated hours) below this is low use
# Reasons an instrument is on the low-use list (all configurable per call).
LONG_OUTAGE_SHARE = 0.2  # outages took at least this share of the opening hours
FEW_BOOKINGS_PER_30_DAYS = 4.0  # fewer bookings than this per 30 days of the period
MANY_NO_SHOWS_RATE = 0.2  # at least this no-show rate …
MANY_NO_SHOWS_MIN = 2  # … and at least this many no-shows


class GroupBy(StrEnum):
    INSTRUMENT = "instrument"
    FACILITY = "facility"
    ORGANISATION = "organisation"
    CATEGORY = "category"
    CLUSTER = "cluster"
    DISTRICT = "district"


class PeriodKind(StrEnum):
    MONTH = "month"
    QUARTER = "quarter"
    YEAR = "year"


class ReportFormat(StrEnum):
    JSON = "json"
    CSV = "csv"
    XLSX = "xlsx"


class UsageKind(StrEnum):
    """What a usage record was for; only ``use`` is effective time (有效机时)."""

    USE = "use"
    TRAINING = "training"
    MAINTENANCE = "maintenance"


NOT_EFFECTIVE_KINDS = (UsageKind.TRAINING.value, UsageKind.MAINTENANCE.value)
# Bookings whose time counts as booked hours.
BOOKED_STATUSES = (
    BookingStatus.CONFIRMED.value,
    BookingStatus.IN_USE.value,
    BookingStatus.COMPLETED.value,
)
# Bookings made for a period: what "few bookings" counts (cancelled and refused ones are not).
MADE_STATUSES = (*BOOKED_STATUSES, BookingStatus.NO_SHOW.value)


# --- Definitions (shown in docs/metrics.md, the API and the dashboard's footnotes) ----------

METRIC_DEFINITIONS: dict[str, dict[str, str]] = {
    "available_hours": {
        "unit": "h",
        "zh": "可用机时：所属平台的开放时间（法定节假日不开放，除非平台选择开放；调休上班日开放；"
        "平台自定闭馆日不开放）减去停机（仪器及整个平台的维护、校准、维修），均截取到统计期内；"
        "仪器投入使用之前不计。",
        "en": "Available hours: the facility's opening hours (closed on statutory holidays unless "
        "the facility opens on them; open on make-up working days; closed on its own closure "
        "days) minus outages of the instrument or the whole facility, clipped to the period; "
        "nothing before the instrument entered service.",
    },
    "outage_hours": {
        "unit": "h",
        "zh": "停机机时：开放时间中因停机而不可用的部分（开放时间 − 可用机时）。",
        "en": "Outage hours: opening hours lost to outages (opening hours − available hours).",
    },
    "rated_hours": {
        "unit": "h",
        "zh": "额定机时：仪器的年额定机时（通用仪器默认 1400 小时，专用仪器 800 小时）"
        "× 统计期占全年的"
        "比例（按天计，闰年 366 天）；年中新增的仪器自投入使用之日（购置日期，"
        "未填则为上平台日期）起算。",
        "en": "Rated hours (额定机时): the instrument's rated annual hours (default 1,400; 800 for "
        "special-purpose instruments) × the period's share of its year (in days, 366 in a leap "
        "year); an instrument added during the year counts from the day it entered service "
        "(its purchase date, else the day it was listed on the platform).",
    },
    "booked_hours": {
        "unit": "h",
        "zh": "预约机时：已确认、使用中和已完成预约的时长之和（截取到统计期内）。",
        "en": "Booked hours: the durations of confirmed, in-use and completed bookings, clipped "
        "to the period.",
    },
    "effective_hours": {
        "unit": "h",
        "zh": "有效机时：机时记录（上机至下机，含预热、测量和必要的后处理）"
        "时长之和，截取到统计期内；"
        "培训和维护记录不计入，单独列出。",
        "en": "Effective hours (有效机时): the durations of usage records (check-in to check-out: "
        "warm-up, measurement and necessary post-processing), clipped to the period; training "
        "and maintenance records are not included and are reported apart.",
    },
    "external_hours": {
        "unit": "h",
        "zh": "对外服务机时：仪器所属单位以外用户（按使用时所在单位；无单位的个人也算外部）"
        "的有效机时。",
        "en": "External service hours (对外服务机时): effective hours of users from organisations "
        "other than the instrument's owner (their organisation at the time of use; a user "
        "without an organisation counts as external).",
    },
    "training_hours": {
        "unit": "h",
        "zh": "培训机时：类型为培训的机时记录时长之和，不计入有效机时。",
        "en": "Training hours: usage records of the kind training; not effective hours.",
    },
    "maintenance_hours": {
        "unit": "h",
        "zh": "维护机时：类型为维护的机时记录时长之和，不计入有效机时（与停机不同："
        "停机是计划的不可用时段）。",
        "en": "Maintenance hours: usage records of the kind maintenance; not effective hours "
        "(an outage is planned unavailability, this is recorded work on the instrument).",
    },
    "utilization": {
        "unit": "%",
        "zh": "使用率（国家考核口径）= 有效机时 ÷ 额定机时。",
        "en": "Utilization (使用率, the national measure) = effective hours ÷ rated hours.",
    },
    "occupancy": {
        "unit": "%",
        "zh": "预约占用率 = 预约机时 ÷ 可用机时。",
        "en": "Occupancy = booked hours ÷ available hours.",
    },
    "sharing_rate": {
        "unit": "%",
        "zh": "共享率 = 对外服务机时 ÷ 有效机时。",
        "en": "Sharing rate (共享率) = external service hours ÷ effective hours.",
    },
    "no_show_rate": {
        "unit": "%",
        "zh": "爽约率 = 爽约 ÷（已完成 + 爽约），按预约开始时间计入统计期。",
        "en": "No-show rate = no-shows ÷ (completed + no-shows), counted by booking start.",
    },
    "late_cancel_rate": {
        "unit": "%",
        "zh": "逾期取消率 = 逾期取消 ÷（已完成 + 爽约 + 逾期取消）；改期（取消并由新预约替代）"
        "不算取消。",
        "en": "Late-cancel rate = late cancellations ÷ (completed + no-shows + late "
        "cancellations); moves (a booking cancelled and replaced by a new one) are excluded.",
    },
    "testing_capacity_use": {
        "unit": "%",
        "zh": "检测能力利用率 = 已受理样品数 ÷（每日样品容量 × 开放天数）；开放天数为平台有开放时间"
        "（扣除整个平台的停机）的日期数。",
        "en": "Testing capacity use = samples accepted ÷ (daily sample capacity × open days); "
        "open days are the days the facility has opening hours left after facility-wide "
        "outages.",
    },
    "turnaround_days": {
        "unit": "d",
        "zh": "检测周期：送样申请从提交到出具报告的天数中位数，按报告日期计入统计期。",
        "en": "Service turnaround: the median number of days from submission to the report, "
        "counted in the period the report was issued.",
    },
}


def definitions() -> dict[str, dict[str, str]]:
    """Every metric's unit and its definition in Chinese and English."""
    return {name: dict(text) for name, text in METRIC_DEFINITIONS.items()}


# --- Periods and buckets ---------------------------------------------------------------------


@dataclass(frozen=True)
class Bucket:
    """One month, quarter or year of a report, clipped to the report's period."""

    label: str
    start: date  # inclusive local date
    end: date  # exclusive local date

    def utc_range(self, zone: ZoneInfo) -> Interval:
        return local_midnight(self.start, zone), local_midnight(self.end, zone)


def local_midnight(day: date, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC)


def _add_years(day: date, years: int) -> date:
    try:
        return day.replace(year=day.year + years)
    except ValueError:  # 29 February
        return day.replace(year=day.year + years, day=28)


def period_problems(start: date | None, end: date | None) -> list[Problem]:
    """Every problem of a report period ``[start, end)`` of local dates."""
    problems = []
    if start is None:
        problems.append(Problem("required", "Give the first day of the period.", "from"))
    if end is None:
        problems.append(Problem("required", "Give the day after the period.", "to"))
    if start is None or end is None:
        return problems
    if end < start:
        problems.append(
            Problem("inverted_period", "The period ends before it starts: swap from and to.", "to")
        )
    elif end == start:
        problems.append(
            Problem(
                "empty_period",
                "The period is empty: 'to' is the first day after the period, "
                "e.g. from=2026-01-01&to=2027-01-01 for the year 2026.",
                "to",
            )
        )
    elif end > _add_years(start, MAX_REPORT_YEARS):
        problems.append(
            Problem(
                "period_too_long",
                f"Ask for at most {MAX_REPORT_YEARS} years at a time.",
                "to",
            )
        )
    return problems


def _next_boundary(day: date, kind: PeriodKind) -> date:
    if kind is PeriodKind.YEAR:
        return date(day.year + 1, 1, 1)
    months = 3 if kind is PeriodKind.QUARTER else 1
    first_month = (day.month - 1) // months * months + 1  # the bucket's first month
    month = first_month + months
    return date(day.year + (month - 1) // 12, (month - 1) % 12 + 1, 1)


def _label(day: date, kind: PeriodKind) -> str:
    if kind is PeriodKind.YEAR:
        return f"{day.year}"
    if kind is PeriodKind.QUARTER:
        return f"{day.year}-Q{(day.month - 1) // 3 + 1}"
    return f"{day.year}-{day.month:02d}"


def buckets(start: date, end: date, kind: PeriodKind) -> list[Bucket]:
    """The months, quarters or years of ``[start, end)``, the first and last clipped to it."""
    result = []
    day = start
    while day < end:
        boundary = min(_next_boundary(day, kind), end)
        result.append(Bucket(_label(day, kind), day, boundary))
        day = boundary
    return result


# --- Rated hours -----------------------------------------------------------------------------


def in_service_date(purchase_date: date | None, listed_at: datetime, zone: ZoneInfo) -> date:
    """When an instrument's rated (and available) hours start to count.

    Its purchase date when the owner recorded one (an instrument long owned and listed late
    still counts for the whole period), else the local day it was listed on the platform.
    """
    if purchase_date is not None:
        return purchase_date
    return listed_at.astimezone(zone).date()


def _days_in_year(year: int) -> int:
    return (date(year + 1, 1, 1) - date(year, 1, 1)).days


def rated_hours(annual_hours: float, start: date, end: date, in_service: date) -> float:
    """``annual_hours`` × the share of the year(s) that ``[start, end)`` covers in service."""
    start = max(start, in_service)
    total = 0.0
    while start < end:
        year_end = min(date(start.year + 1, 1, 1), end)
        total += annual_hours * (year_end - start).days / _days_in_year(start.year)
        start = year_end
    return total


# --- Open time -------------------------------------------------------------------------------


@dataclass(frozen=True)
class OpenTime:
    """Sorted disjoint intervals with running totals: the hours open within any range in
    O(log n), so every instrument and bucket reuses its facility's one expansion."""

    intervals: tuple[Interval, ...]
    _ends_before: tuple[float, ...] = field(repr=False, default=())

    @classmethod
    def of(cls, intervals: Sequence[Interval]) -> OpenTime:
        merged = tuple(merge(intervals))
        hours = [(e - s).total_seconds() / 3600 for s, e in merged]
        return cls(merged, (0.0, *accumulate(hours)))

    def _up_to(self, moment: datetime) -> float:
        """Open hours before ``moment``."""
        index = bisect_right(self.intervals, moment, key=lambda interval: interval[0])
        if index == 0:
            return 0.0
        start, end = self.intervals[index - 1]
        partial = (min(moment, end) - start).total_seconds() / 3600
        return self._ends_before[index - 1] + partial

    def hours(self, start: datetime, end: datetime) -> float:
        if end <= start:
            return 0.0
        return self._up_to(end) - self._up_to(start)

    def hours_within(self, holes: Sequence[Interval], start: datetime, end: datetime) -> float:
        """Open hours in ``[start, end)`` that ``holes`` (merged here) cover."""
        return sum(
            self.hours(max(s, start), min(e, end)) for s, e in merge(holes) if s < end and e > start
        )

    def open_dates(self, zone: ZoneInfo) -> list[date]:
        """The local days with any open time, in order."""
        days: set[date] = set()
        for start, end in self.intervals:
            day = start.astimezone(zone).date()
            last = (end - timedelta(microseconds=1)).astimezone(zone).date()
            while day <= last:
                days.add(day)
                day += timedelta(days=1)
        return sorted(days)


def count_between(ordered_days: Sequence[date], start: date, end: date) -> int:
    """How many of ``ordered_days`` fall in ``[start, end)``."""
    return bisect_left(ordered_days, end) - bisect_left(ordered_days, start)


# --- Ratios ----------------------------------------------------------------------------------


def ratio(numerator: float, denominator: float) -> float | None:
    return None if denominator <= 0 else numerator / denominator


# --- Who reads what --------------------------------------------------------------------------


@dataclass(frozen=True)
class ReportScope:
    """Facilities whose figures a caller may read; ``None``: every facility."""

    facility_ids: frozenset[int] | None

    @property
    def everything(self) -> bool:
        return self.facility_ids is None

    def sees(self, facility_id: int) -> bool:
        return self.facility_ids is None or facility_id in self.facility_ids


def report_scope(principal: Principal) -> ReportScope:
    """Planners and admins read every facility, a lab manager its own; anyone else is refused."""
    if principal.reads_everything:
        return ReportScope(None)
    if principal.has_role(Role.LAB_MANAGER) and principal.managed_facility_ids:
        return ReportScope(principal.managed_facility_ids)
    raise PermissionDenied(
        "Utilization reports are for planners, admins and the lab managers of a facility.",
        "reports_not_allowed",
    )


# --- Low use ---------------------------------------------------------------------------------


class LowUseReason(StrEnum):
    LONG_OUTAGES = "long_outages"
    FEW_BOOKINGS = "few_bookings"
    MANY_NO_SHOWS = "many_no_shows"


LOW_USE_REASON_TEXT: dict[LowUseReason, dict[str, str]] = {
    LowUseReason.LONG_OUTAGES: {
        "zh": "停机时间长：停机占开放时间的 {share:.0%}",
        "en": "Long outages: {share:.0%} of the opening hours",
    },
    LowUseReason.FEW_BOOKINGS: {
        "zh": "预约少：统计期内 {bookings} 次预约",
        "en": "Few bookings: {bookings} in the period",
    },
    LowUseReason.MANY_NO_SHOWS: {
        "zh": "爽约多：{no_shows} 次，爽约率 {rate:.0%}",
        "en": "Many no-shows: {no_shows}, a no-show rate of {rate:.0%}",
    },
}


@dataclass(frozen=True)
class LowUseRules:
    threshold: float = DEFAULT_LOW_USE_THRESHOLD
    long_outage_share: float = LONG_OUTAGE_SHARE
    few_bookings_per_30_days: float = FEW_BOOKINGS_PER_30_DAYS
    many_no_shows_rate: float = MANY_NO_SHOWS_RATE
    many_no_shows_min: int = MANY_NO_SHOWS_MIN

    def problems(self) -> list[Problem]:
        if not 0 < self.threshold <= 10:
            return [
                Problem(
                    "out_of_range",
                    "The threshold is a utilization between 0 and 10 (0.5 = 50 %).",
                    "threshold",
                )
            ]
        return []


@dataclass(frozen=True)
class LowUseFacts:
    utilization: float | None
    opening_hours: float
    outage_hours: float
    bookings: int
    no_shows: int
    completed: int
    period_days: int


def is_low_use(utilization: float | None, rules: LowUseRules) -> bool:
    """Below the threshold; an instrument with no rated hours in the period has no measure."""
    return utilization is not None and utilization < rules.threshold


def low_use_reasons(facts: LowUseFacts, rules: LowUseRules) -> list[dict[str, object]]:
    """Why a low-use instrument may be little used, each reason with its figures and texts."""
    reasons: list[dict[str, object]] = []
    outage_share = ratio(facts.outage_hours, facts.opening_hours)
    if outage_share is not None and outage_share >= rules.long_outage_share:
        reasons.append(_reason(LowUseReason.LONG_OUTAGES, share=outage_share))
    expected = rules.few_bookings_per_30_days * facts.period_days / 30
    if facts.bookings < expected:
        reasons.append(_reason(LowUseReason.FEW_BOOKINGS, bookings=facts.bookings))
    no_show_rate = ratio(facts.no_shows, facts.no_shows + facts.completed)
    if (
        no_show_rate is not None
        and facts.no_shows >= rules.many_no_shows_min
        and no_show_rate >= rules.many_no_shows_rate
    ):
        reasons.append(
            _reason(LowUseReason.MANY_NO_SHOWS, no_shows=facts.no_shows, rate=no_show_rate)
        )
    return reasons


def _reason(code: LowUseReason, **figures: float) -> dict[str, object]:
    texts = LOW_USE_REASON_TEXT[code]
    return {
        "code": code.value,
        "figures": figures,
        "zh": texts["zh"].format(**figures),
        "en": texts["en"].format(**figures),
    }
