"""A year of demo history: past bookings and what happened to them, outages, training and
maintenance, and sample requests, so the planner dashboard has a story to tell.

The booking service refuses past times, so the history is written straight into the tables in
bulk. It is shaped like what the services would have produced: a usage record only for a booking
that was checked in (completed), none for a no-show or a cancellation; a move is a cancelled
booking whose ``replaced_by_id`` names its replacement, which keeps the first one's calendar UID;
no two bookings of an instrument overlap (buffers included), and nothing falls in an outage or a
closed hour (holidays included) except the unattended runs some instruments allow. Audit entries,
outbox events and notifications are not written for history. Everything comes from one seeded
random generator, so the demo is the same on every build.
"""

from __future__ import annotations

import bisect
import random
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlmodel import Session, SQLModel, col, func, select

from booking.models import Booking, ServiceCapacityDay, ServiceRequest, UsageRecord
from booking.models import ServiceRequestStatus as S
from booking.rules import BookingStatus, OperatedBy
from core.accounts.models import Organisation, RoleAssignment, User
from core.accounts.rules import Role, ScopeKind
from core.clock import now
from instruments import queries as instrument_queries
from instruments.models import (
    Facility,
    Instrument,
    Outage,
    PriceChange,
    Qualification,
    TestingService,
)
from instruments.rules import ApprovalMode, OperationMode, OutageKind
from web.demo_catalogue import FACILITIES

SEED = 20260101
HISTORY_DAYS = 365
# The history stops this long before now, so nothing of it is still running.
SETTLE = timedelta(hours=2)


@dataclass(frozen=True)
class Profile:
    """How busy an instrument was and with whom."""

    load: float = 0.5  # share of open time that was booked
    utilization: float | None = None  # effective over rated hours aimed at; sets the load
    external: float = 0.3  # share of bookings by users of other organisations
    no_show: float = 0.05
    late_cancel: float = 0.03
    cancel: float = 0.05
    move: float = 0.04
    block_hours: tuple[float, float] = (1.0, 4.0)  # booking lengths
    repair_days: int = 0  # one long repair, in days
    since: datetime | None = None  # added during the year: no history before


@dataclass
class HistoryCounts:
    bookings: int = 0
    usage_records: int = 0
    outages: int = 0
    service_requests: int = 0
    users: int = 0
    by_status: dict[str, int] = field(default_factory=lambda: defaultdict(int))


@dataclass(frozen=True)
class _Instrument:
    id: int
    facility_id: int
    organisation_id: int
    zone: ZoneInfo
    mode: OperationMode
    approval: ApprovalMode
    slot: int
    min_minutes: int
    max_minutes: int
    buffer: int
    unattended: bool
    rated: int


def _insert(model: type[SQLModel]) -> sa.Insert:
    """A plain multi-row INSERT of the model's table (the ORM's bulk insert would split rows
    into many small batches by which of their values are empty)."""
    return sa.insert(model.__table__)  # type: ignore[attr-defined]


def _round_to(minutes: float, step: int) -> int:
    return max(step, round(minutes / step) * step)


def _local_at(day: date, at: time, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, at, tzinfo=zone).astimezone(ZoneInfo("UTC"))


def _load_instruments(session: Session, ids: Sequence[int]) -> dict[int, _Instrument]:
    rows = session.execute(
        sa.select(
            col(Instrument.id),
            col(Instrument.facility_id),
            col(Facility.organisation_id),
            col(Facility.timezone),
            col(Instrument.operation_mode),
            col(Instrument.approval_mode),
            col(Instrument.slot_minutes),
            col(Instrument.min_duration_minutes),
            col(Instrument.max_duration_minutes),
            col(Instrument.buffer_minutes),
            col(Instrument.unattended_runs_allowed),
            col(Instrument.rated_annual_hours),
        )
        .join(Facility, col(Facility.id) == Instrument.facility_id)
        .where(col(Instrument.id).in_(list(ids)))
    ).all()
    return {
        row[0]: _Instrument(
            row[0],
            row[1],
            row[2],
            ZoneInfo(row[3]),
            OperationMode(row[4]),
            ApprovalMode(row[5]),
            row[6],
            row[7],
            row[8],
            row[9],
            bool(row[10]),
            row[11],
        )
        for row in rows
    }


def _outages(
    rng: random.Random, inst: _Instrument, profile: Profile, start: datetime, end: datetime
) -> list[dict[str, object]]:
    """Quarterly maintenance mornings, a yearly calibration day and, for some, a long repair."""
    rows: list[dict[str, object]] = []
    first = max(start, profile.since or start)
    span_days = (end - first).days
    if span_days < 10:
        return rows

    def on_weekday(offset_days: int) -> date:
        day = (first + timedelta(days=offset_days)).astimezone(inst.zone).date()
        while day.weekday() >= 5:
            day += timedelta(days=1)
        return day

    def add(kind: OutageKind, begin: datetime, finish: datetime, note: str) -> None:
        if finish <= end:
            rows.append(
                {
                    "facility_id": inst.facility_id,
                    "instrument_id": inst.id,
                    "start_at": begin,
                    "end_at": finish,
                    "kind": kind,
                    "note": note,
                    "created_at": begin - timedelta(days=7),
                }
            )

    for quarter in range(0, span_days - 5, 91):
        day = on_weekday(quarter + rng.randrange(5, 60))
        add(
            OutageKind.MAINTENANCE,
            _local_at(day, time(9), inst.zone),
            _local_at(day, time(12), inst.zone),
            "季度例行维护保养",
        )
    day = on_weekday(rng.randrange(0, max(1, span_days - 3)))
    add(
        OutageKind.CALIBRATION,
        _local_at(day, time(8), inst.zone),
        _local_at(day, time(18), inst.zone),
        "年度计量校准",
    )
    if profile.repair_days:
        begin_day = on_weekday(min(span_days - profile.repair_days - 2, rng.randrange(90, 200)))
        add(
            OutageKind.REPAIR,
            _local_at(begin_day, time(8), inst.zone),
            _local_at(begin_day + timedelta(days=profile.repair_days), time(8), inst.zone),
            "主要部件故障，返厂维修",
        )
    return rows


@dataclass
class _People:
    """Who books: users by organisation; demo logins are kept out of no-shows and late
    cancellations so their booking rights are never suspended by history."""

    by_org: dict[int | None, list[int]]
    quiet: frozenset[int]
    qualified: dict[int, set[int]]  # instrument → demo logins already trained on it
    org_of: dict[int, int | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.org_of = {u: org for org, members in self.by_org.items() for u in members}

    def pick(
        self, rng: random.Random, inst: _Instrument, external: bool, self_operated: bool
    ) -> int | None:
        if external:
            orgs = [o for o in self.by_org if o != inst.organisation_id and self.by_org[o]]
            if not orgs:
                return None
            pool = self.by_org[rng.choice(orgs)]
        else:
            pool = self.by_org.get(inst.organisation_id, [])
        if self_operated:
            allowed = self.qualified.get(inst.id, set())
            pool = [u for u in pool if u not in self.quiet or u in allowed]
        return rng.choice(pool) if pool else None

    def staff(self, inst: _Instrument) -> int | None:
        pool = [u for u in self.by_org.get(inst.organisation_id, []) if u not in self.quiet]
        return pool[0] if pool else None


def build_history(
    session: Session,
    *,
    profiles: dict[int, Profile],
    users: Iterable[tuple[int, int | None]],
    quiet_user_ids: Iterable[int] = (),
    end: datetime | None = None,
    days: int = HISTORY_DAYS,
    seed: int = SEED,
) -> HistoryCounts:
    """Write ``days`` of past bookings, usage, outages, training and maintenance for the
    instruments in ``profiles``, booked by ``users`` (id, organisation id)."""
    rng = random.Random(seed)
    end = (end or now()) - SETTLE
    start = end - timedelta(days=days)
    counts = HistoryCounts()
    instruments = _load_instruments(session, sorted(profiles))
    by_org: dict[int | None, list[int]] = defaultdict(list)
    for user_id, org_id in sorted(users):
        by_org[org_id].append(user_id)
    quiet = frozenset(quiet_user_ids)
    qualified: dict[int, set[int]] = defaultdict(set)
    for user_id, instrument_id in session.execute(
        sa.select(col(Qualification.user_id), col(Qualification.instrument_id)).where(
            col(Qualification.user_id).in_(list(quiet)), col(Qualification.revoked_at).is_(None)
        )
    ).all():
        qualified[instrument_id].add(user_id)
    people = _People(dict(by_org), quiet, dict(qualified))

    outage_rows = [
        row
        for instrument_id in sorted(instruments)
        for row in _outages(rng, instruments[instrument_id], profiles[instrument_id], start, end)
    ]
    if outage_rows:
        session.execute(_insert(Outage), outage_rows)
        session.flush()
    counts.outages = len(outage_rows)

    calendars = instrument_queries.load_calendars(
        session, instrument_ids=sorted(instruments), start=start, end=end
    )
    next_id = int(session.execute(sa.select(func.max(col(Booking.id)))).scalar() or 0) + 1
    bookings: list[dict[str, object]] = []
    usage: list[dict[str, object]] = []
    first_use: dict[tuple[int, int], datetime] = {}

    for instrument_id in sorted(instruments):
        inst = instruments[instrument_id]
        profile = profiles[instrument_id]
        calendar = calendars.get(instrument_id)
        if calendar is None:
            continue
        begin = max(start, profile.since or start)
        open_intervals = calendar.open_intervals(begin, end)
        if profile.utilization is not None:
            profile = replace(profile, load=_load_for(profile, inst, open_intervals, begin, end))
        blocks, chores = _blocks(rng, inst, profile, open_intervals, end)
        # A use may overrun its booking, but not into whatever comes next on the instrument.
        starts = sorted([b[0] for b in blocks] + [c[0] for c in chores] + [end])
        chore_ends = sorted(c[1] for c in chores)
        last_use_end = begin
        for block_start, block_end in blocks:
            following = starts[bisect.bisect_right(starts, block_start)]
            before = bisect.bisect_right(chore_ends, block_start)
            free_from = max(last_use_end, chore_ends[before - 1] if before else begin)
            next_id = _booking_rows(
                rng,
                inst,
                profile,
                people,
                block_start,
                block_end,
                following,
                (begin, end),
                free_from,
                next_id,
                bookings,
                usage,
                first_use,
                counts,
            )
            latest = usage[-1] if usage else {}
            if latest.get("instrument_id") == inst.id and isinstance(latest["ended_at"], datetime):
                last_use_end = max(last_use_end, latest["ended_at"])
        for chore_start, chore_end, kind in chores:
            worker = (
                people.staff(inst)
                if kind == "maintenance"
                else people.pick(rng, inst, external=False, self_operated=False)
            )
            if worker is None:
                continue
            usage.append(
                {
                    "booking_id": None,
                    "instrument_id": inst.id,
                    "user_id": worker,
                    "organisation_id": inst.organisation_id,
                    "operator_id": people.staff(inst),
                    "started_at": chore_start,
                    "ended_at": chore_end,
                    "samples": None,
                    "kind": kind,
                    "note": "上机培训" if kind == "training" else "日常维护保养",
                    "created_at": chore_end,
                }
            )

    # Bookings refer to their replacements, which come earlier in the list.
    if bookings:
        session.execute(_insert(Booking), bookings)
    if usage:
        session.execute(_insert(UsageRecord), usage)
    _qualify(session, first_use, quiet)
    if session.get_bind().dialect.name == "postgresql":
        session.execute(
            sa.text(
                "SELECT setval(pg_get_serial_sequence('booking', 'id'), "
                "(SELECT COALESCE(MAX(id), 1) FROM booking))"
            )
        )
    session.flush()
    counts.bookings = len(bookings)
    counts.usage_records = len(usage)
    return counts


# Of booked time, about this share becomes effective hours (no-shows, cancellations, early ends).
EFFECTIVE_SHARE = 0.8


def _load_for(
    profile: Profile,
    inst: _Instrument,
    open_intervals: Sequence[tuple[datetime, datetime]],
    begin: datetime,
    end: datetime,
) -> float:
    """The booked share of open time that gives ``profile.utilization`` of the rated hours.
    Runs of a day or more go on around the clock, so their share is of all the time."""
    assert profile.utilization is not None
    wanted = profile.utilization * inst.rated * (end - begin).total_seconds() / (365 * 86400)
    if profile.block_hours[0] >= 24:
        basis = (end - begin).total_seconds() / 3600
    else:
        basis = sum((b - a).total_seconds() for a, b in open_intervals) / 3600
    if basis <= 0:
        return 0.0
    return min(0.95, max(0.02, wanted / basis / EFFECTIVE_SHARE))


def _on_slot(moment: datetime, origin: datetime, slot: int) -> datetime:
    """The first slot boundary (counted from ``origin``, an opening time) at or after ``moment``."""
    step = timedelta(minutes=slot)
    return origin + step * -((origin - moment) // step)


def _blocks(
    rng: random.Random,
    inst: _Instrument,
    profile: Profile,
    open_intervals: Sequence[tuple[datetime, datetime]],
    end: datetime,
) -> tuple[list[tuple[datetime, datetime]], list[tuple[datetime, datetime, str]]]:
    """Booked blocks laid along the open time, and training or maintenance sessions in gaps.

    At each point a block is booked with probability ``load``, else a gap of the same kind of
    length follows; so about ``load`` of the open time ends up booked. Only unattended
    instruments run past closing time."""
    blocks: list[tuple[datetime, datetime]] = []
    chores: list[tuple[datetime, datetime, str]] = []
    busy_until = datetime.min.replace(tzinfo=ZoneInfo("UTC"))
    low, high = profile.block_hours
    for open_start, open_end in open_intervals:
        cursor = _on_slot(max(open_start, busy_until), open_start, inst.slot)
        while cursor < open_end:
            minutes = _round_to(rng.uniform(low, high) * 60, inst.slot)
            minutes = min(max(minutes, inst.min_minutes), inst.max_minutes)
            finish = cursor + timedelta(minutes=minutes)
            if finish > open_end and not inst.unattended:
                finish = open_end
            if rng.random() >= profile.load:
                # An idle stretch as long as a run would have been (runs may cross closing).
                gap_end = finish if inst.unattended else min(finish, open_end)
                busy_until = max(busy_until, gap_end)
                chore_end = min(gap_end, open_end, cursor + timedelta(hours=2))
                roll = rng.random()
                if chore_end - cursor >= timedelta(hours=1) and roll < 0.035:
                    chores.append((cursor, chore_end, "training" if roll < 0.02 else "maintenance"))
                cursor = gap_end
                continue
            if finish - cursor < timedelta(minutes=inst.min_minutes) or finish > end:
                cursor = finish
                continue
            blocks.append((cursor, finish))
            busy_until = finish + timedelta(minutes=inst.buffer)
            cursor = _on_slot(busy_until, open_start, inst.slot)
    return blocks, chores


MOVE_SHIFTS = (-3, -2, -1, 1, 2, 3, 4, 5)  # days between a moved booking's old and new time


def _booking_rows(
    rng: random.Random,
    inst: _Instrument,
    profile: Profile,
    people: _People,
    block_start: datetime,
    block_end: datetime,
    following: datetime,
    window: tuple[datetime, datetime],
    free_from: datetime,
    next_id: int,
    bookings: list[dict[str, object]],
    usage: list[dict[str, object]],
    first_use: dict[tuple[int, int], datetime],
    counts: HistoryCounts,
) -> int:
    """One block of booked time: the booking, what became of it, and its usage record."""
    if inst.mode is OperationMode.SELF_OPERATED:
        operated_by = OperatedBy.SELF
    elif inst.mode is OperationMode.STAFF_OPERATED:
        operated_by = OperatedBy.STAFF
    else:
        operated_by = OperatedBy.SELF if rng.random() < 0.6 else OperatedBy.STAFF
    self_operated = operated_by is OperatedBy.SELF
    user_id = people.pick(
        rng, inst, external=rng.random() < profile.external, self_operated=self_operated
    )
    if user_id is None:
        return next_id
    organisation_id = people.org_of[user_id]
    quiet = user_id in people.quiet
    booked_at = block_start - timedelta(hours=rng.randrange(26, 24 * 21))
    roll = rng.random()
    manual = inst.approval is ApprovalMode.MANUAL
    outcome = BookingStatus.COMPLETED
    late = False
    if manual and roll < 0.03:
        outcome = BookingStatus.REJECTED
    elif manual and roll < 0.04:
        outcome = BookingStatus.EXPIRED
    elif roll < 0.04 + profile.no_show and not quiet:
        outcome = BookingStatus.NO_SHOW
    elif roll < 0.04 + profile.no_show + profile.late_cancel and not quiet:
        outcome, late = BookingStatus.CANCELLED, True
    elif roll < 0.04 + profile.no_show + profile.late_cancel + profile.cancel:
        outcome = BookingStatus.CANCELLED
    moved = outcome is BookingStatus.COMPLETED and rng.random() < profile.move
    staff = people.staff(inst)
    booking_id = next_id
    next_id += 1
    samples = rng.randint(1, 12) if not self_operated else None
    decided_at = booked_at + timedelta(hours=rng.randint(1, 20)) if manual else None
    changed_at = {
        BookingStatus.COMPLETED: block_end,
        BookingStatus.NO_SHOW: block_start + timedelta(minutes=30),
        BookingStatus.REJECTED: booked_at + timedelta(hours=rng.randint(2, 30)),
        BookingStatus.EXPIRED: booked_at + timedelta(hours=48),
        BookingStatus.CANCELLED: block_start
        - (timedelta(hours=rng.randint(2, 20)) if late else timedelta(days=rng.randint(2, 10))),
    }[outcome]
    changed_at = min(max(changed_at, booked_at + timedelta(minutes=5)), block_end)
    row: dict[str, object] = {
        "id": booking_id,
        "instrument_id": inst.id,
        "facility_id": inst.facility_id,
        "user_id": user_id,
        "organisation_id": organisation_id,
        "start_at": block_start,
        "end_at": block_end,
        "held_until": block_end + timedelta(minutes=inst.buffer),
        "status": outcome,
        "operated_by": operated_by,
        "purpose": rng.choice(PURPOSES),
        "charge_account": "课题组经费卡" if organisation_id == inst.organisation_id else "对公转账",
        "sample_count": samples,
        "version": 2 if outcome is BookingStatus.COMPLETED else 1,
        "overrides": [],
        "expires_at": None,
        "decided_by_id": staff if manual and outcome is not BookingStatus.EXPIRED else None,
        "decided_at": decided_at if outcome is not BookingStatus.EXPIRED else None,
        "reason": {
            BookingStatus.REJECTED: "样品或实验方案不符合要求，请与管理员沟通",
            BookingStatus.CANCELLED: "实验计划调整",
        }.get(outcome, ""),
        "late_cancellation": late,
        "replaced_by_id": None,
        "series_id": None,
        "calendar_uid": None,
        "attention": "",
        "offer_expires_at": None,
        "checked_in_at": None,
        "created_by_id": user_id,
        "created_at": booked_at,
        "updated_at": changed_at,
    }
    bookings.append(row)
    counts.by_status[str(outcome)] += 1
    # First booked at the same hour on another day, then moved here before that day came.
    length = block_end - block_start
    candidates = (block_start + timedelta(days=shift) for shift in MOVE_SHIFTS) if moved else ()
    old_starts = [
        at
        for at in candidates
        if window[0] <= at and at + length <= window[1] and at > booked_at + timedelta(days=1)
    ]
    if old_starts:
        old_start = rng.choice(old_starts)
        old_row = dict(row)
        old_row.update(
            {
                "id": next_id,
                "start_at": old_start,
                "end_at": old_start + length,
                "held_until": old_start + length + timedelta(minutes=inst.buffer),
                "status": BookingStatus.CANCELLED,
                "reason": "moved",
                "replaced_by_id": booking_id,
                "version": 1,
                "created_at": booked_at - timedelta(days=3),
                "updated_at": booked_at,
            }
        )
        row.update({"calendar_uid": f"booking-{next_id}", "version": 3})
        next_id += 1
        bookings.append(old_row)
        counts.by_status["moved"] += 1
    if outcome is BookingStatus.COMPLETED:
        # Early check-in only once the instrument is free; a late start, an early end or an
        # overrun (recorded, never into what comes next) make durations vary.
        minutes = length.total_seconds() / 60
        delay = min(25.0, minutes / 3, max(-10.0, rng.gauss(4, 7)))
        started = max(block_start + timedelta(minutes=round(delay)), free_from)
        overrun = min(30.0, max(-0.4 * minutes, rng.gauss(-8, 18)))
        ended = min(block_end + timedelta(minutes=round(overrun)), following)
        ended = max(ended, started + timedelta(minutes=10))
        row["checked_in_at"] = started
        row["updated_at"] = ended
        usage.append(
            {
                "booking_id": booking_id,
                "instrument_id": inst.id,
                "user_id": user_id,
                "organisation_id": organisation_id,
                "operator_id": user_id if self_operated else staff,
                "started_at": started,
                "ended_at": ended,
                "samples": samples,
                "kind": "use",
                "note": "",
                "created_at": ended,
            }
        )
        if self_operated and not quiet:
            key = (user_id, inst.id)
            first_use[key] = min(first_use.get(key, started), started)
    return next_id


def _qualify(
    session: Session, first_use: dict[tuple[int, int], datetime], quiet: frozenset[int]
) -> None:
    """Who used an instrument on their own was trained on it first (history users only)."""
    rows = [
        {
            "user_id": user_id,
            "instrument_id": instrument_id,
            "granted_at": first - timedelta(days=14),
            "expires_at": first + timedelta(days=730),
            "note": "上机培训考核合格",
        }
        for (user_id, instrument_id), first in sorted(first_use.items())
        if user_id not in quiet
    ]
    if rows:
        session.execute(_insert(Qualification), rows)


PURPOSES = [
    "样品表征",
    "课题组常规测试",
    "新材料结构分析",
    "企业委托检测",
    "毕业论文实验",
    "国家自然科学基金项目实验",
    "产品研发验证",
    "工艺优化对比实验",
    "方法开发",
    "复测验证",
]


# ---- the demo's year ---------------------------------------------------------------------

# How used each facility's instruments were, relative to the rest, and how much of it served
# outsiders: 两江's testing centre lives from firms; 广阳湾's platforms are under-used.
FACILITY_USE = {
    "cqu-atc": 1.0, "cqu-em": 0.95, "cqu-hpc": 1.0, "swu-bio": 0.9, "cigit-nano": 0.85,
    "lj-testing": 1.05, "cqjtu-civil": 0.6, "cqupt-emc": 0.55, "cqnu-chem": 0.75,
}  # fmt: skip
FACILITY_EXTERNAL = {
    "cqu-atc": 0.25, "cqu-em": 0.3, "cqu-hpc": 0.1, "swu-bio": 0.2, "cigit-nano": 0.45,
    "lj-testing": 0.8, "cqjtu-civil": 0.35, "cqupt-emc": 0.6, "cqnu-chem": 0.15,
}  # fmt: skip
# The instruments the story is about (utilization = effective over rated hours).
STORY: dict[str, dict[str, object]] = {
    # Fully used (≥ 1,200 h a year): the NMR and the SEM everyone needs, the computing cluster,
    # the salt-spray chamber that runs for days, the testing centre's spectrometer.
    "CQU-ATC-001": {"utilization": 1.1, "block_hours": (2.0, 10.0)},
    "CQU-EM-001": {"utilization": 0.95},
    "CQU-HPC-001": {"utilization": 1.1, "block_hours": (8.0, 72.0), "no_show": 0.01},
    "CQU-HPC-002": {"utilization": 0.55, "block_hours": (8.0, 48.0)},
    "LJ-T-006": {"utilization": 1.6, "block_hours": (48.0, 168.0), "no_show": 0.01},
    "LJ-T-003": {"utilization": 0.92},
    # Under-used, each for a reason: a long repair, many no-shows, few bookings.
    "CQU-EM-003": {"utilization": 0.45, "repair_days": 70},
    "SWU-BIO-006": {"utilization": 0.4, "no_show": 0.3},
    "CQUPT-001": {"utilization": 0.35},
    "CQNU-004": {"utilization": 0.06},
    "CQUPT-005": {"utilization": 0.1},
    "CIGIT-006": {"utilization": 0.2, "no_show": 0.15},
    "CQJTU-005": {"utilization": 0.12},
    "CQU-ATC-011": {"utilization": 0.15},
}
# Bought during the year: its history starts then.
ADDED_MID_YEAR = "CQNU-006"
ADDED_DAYS_AGO = 150

SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何林罗高郑梁谢宋唐许韩冯邓曹彭曾萧田董袁潘"
GIVEN_NAMES = [
    "伟",
    "芳",
    "娜",
    "敏",
    "静",
    "磊",
    "强",
    "洋",
    "艳",
    "军",
    "杰",
    "涛",
    "明",
    "超",
    "霞",
    "平",
    "刚",
    "桂英",
    "文",
    "辉",
    "丽",
    "鹏",
    "宇航",
    "欣怡",
    "子涵",
    "浩然",
    "思远",
    "雨桐",
]
USERS_PER_ORGANISATION = {"university": 5, "institute": 4, "enterprise": 3, "government": 0}


def _profile_for(rng: random.Random, code: str, facility_key: str, rated: int) -> Profile:
    values: dict[str, object] = {
        "utilization": rng.uniform(0.45, 0.85) * FACILITY_USE.get(facility_key, 0.8),
        "external": FACILITY_EXTERNAL.get(facility_key, 0.3),
        "no_show": rng.uniform(0.02, 0.08),
    }
    if rated < 1000:  # special-purpose instruments run longer sessions
        values["block_hours"] = (2.0, 6.0)
    values.update(STORY.get(code, {}))
    return Profile(**values)  # type: ignore[arg-type]


def _history_users(session: Session, rng: random.Random, *, domain: str) -> list[int]:
    """Researchers of every organisation who booked during the year (they have no password:
    they are the past, not demo logins)."""
    organisations = session.exec(select(Organisation).order_by(col(Organisation.id))).all()
    current = now()
    rows: list[dict[str, object]] = []
    n = 0
    for organisation in organisations:
        for _ in range(USERS_PER_ORGANISATION.get(str(organisation.type), 2)):
            n += 1
            rows.append(
                {
                    "email": f"history{n:03d}@{domain}",
                    "name": rng.choice(SURNAMES) + rng.choice(GIVEN_NAMES),
                    "organisation_id": organisation.id,
                    "locale": "zh-CN",
                    "is_active": True,
                    "password_hash": None,
                    "created_at": current - timedelta(days=400),
                    "updated_at": current - timedelta(days=400),
                }
            )
    if not rows:
        return []
    session.execute(_insert(User), rows)
    ids = list(
        session.exec(select(User.id).where(col(User.email).like(f"history%@{domain}"))).all()
    )
    session.execute(
        _insert(RoleAssignment),
        [
            {
                "user_id": user_id,
                "role": Role.RESEARCHER,
                "scope_kind": ScopeKind.PLATFORM,
                "scope_id": None,
                "created_at": current - timedelta(days=400),
            }
            for user_id in ids
        ],
    )
    return [int(i) for i in ids if i is not None]


def seed_history(
    session: Session, *, domain: str, demo_logins: Iterable[str], seed: int = SEED
) -> HistoryCounts:
    """The demo's year: history users, per-instrument profiles, then the bookings, usage,
    outages and sample requests of :func:`build_history` and :func:`build_service_requests`."""
    rng = random.Random(seed)
    current = now()
    facility_keys = {f.name: f.key for f in FACILITIES}
    history_user_ids = _history_users(session, rng, domain=domain)
    login_emails = [f"{local}@{domain}" for local in demo_logins]
    quiet = [
        int(i)
        for i in session.exec(select(User.id).where(col(User.email).in_(login_emails))).all()
        if i is not None
    ]
    users = [
        (int(u), o)
        for u, o in session.execute(sa.select(col(User.id), col(User.organisation_id))).all()
        if u in set(history_user_ids) | set(quiet)
    ]
    added_at = current - timedelta(days=ADDED_DAYS_AGO)
    session.execute(
        sa.update(Instrument)
        .where(col(Instrument.asset_code) == ADDED_MID_YEAR)
        .values(created_at=added_at, purchase_date=added_at.date())
    )
    instruments = session.execute(
        sa.select(
            col(Instrument.id),
            col(Instrument.asset_code),
            col(Facility.name),
            col(Instrument.rated_annual_hours),
        )
        .join(Facility, col(Facility.id) == Instrument.facility_id)
        .order_by(col(Instrument.id))
    ).all()
    profiles: dict[int, Profile] = {}
    for instrument_id, code, facility_name, rated in instruments:
        profile = _profile_for(rng, code, facility_keys.get(facility_name, ""), rated)
        if code == ADDED_MID_YEAR:
            profile = Profile(**{**profile.__dict__, "since": added_at})
        profiles[int(instrument_id)] = profile
    # The prices applied all year (billing prices a use by the list in force then).
    history_start = current - timedelta(days=HISTORY_DAYS + 1)
    session.execute(
        sa.update(PriceChange)
        .where(col(PriceChange.instrument_id).in_(list(profiles)))
        .values(effective_at=history_start)
    )
    session.execute(
        sa.update(PriceChange)
        .where(
            col(PriceChange.instrument_id).in_(
                sa.select(col(Instrument.id)).where(col(Instrument.asset_code) == ADDED_MID_YEAR)
            )
        )
        .values(effective_at=added_at)
    )
    counts = build_history(
        session, profiles=profiles, users=users, quiet_user_ids=quiet, end=current, seed=seed
    )
    counts.service_requests = build_service_requests(session, users=users, end=current, seed=seed)
    counts.users = len(history_user_ids)
    return counts


def build_service_requests(
    session: Session,
    *,
    users: Iterable[tuple[int, int | None]],
    end: datetime | None = None,
    days: int = HISTORY_DAYS,
    seed: int = SEED,
) -> int:
    """A year of sample requests for every active testing service, each taken through the
    statuses it reached by now (submitted → accepted → in progress → reported → completed, or
    rejected / cancelled), never above a day's sample capacity."""
    rng = random.Random(seed + 1)
    end = (end or now()) - SETTLE
    start = end - timedelta(days=days)
    by_org: dict[int | None, list[int]] = defaultdict(list)
    for user_id, org_id in sorted(users):
        by_org[org_id].append(user_id)
    services = session.execute(
        sa.select(
            col(TestingService.id),
            col(TestingService.facility_id),
            col(TestingService.turnaround_days),
            col(TestingService.daily_sample_capacity),
            col(Facility.organisation_id),
            col(Facility.timezone),
        )
        .join(Facility, col(Facility.id) == TestingService.facility_id)
        .where(col(TestingService.is_active).is_(True))
        .order_by(col(TestingService.id))
    ).all()
    service_ids = [row[0] for row in services]
    org_of = {u: org for org, members in by_org.items() for u in members}
    taken: dict[tuple[int, date], int] = defaultdict(int)
    for service_id, day, samples in session.execute(
        sa.select(
            col(ServiceCapacityDay.testing_service_id),
            col(ServiceCapacityDay.day),
            col(ServiceCapacityDay.accepted_samples),
        ).where(col(ServiceCapacityDay.testing_service_id).in_(service_ids))
    ).all():
        taken[(service_id, day)] = samples
    existing_days = set(taken)
    rows: list[dict[str, object]] = []
    for service_id, facility_id, turnaround, capacity, owner_id, zone_name in services:
        zone = ZoneInfo(zone_name)
        insiders = by_org.get(owner_id, [])
        outsiders = [u for o, members in by_org.items() if o != owner_id for u in members]
        staff = insiders[0] if insiders else None
        rate = rng.uniform(0.25, 0.6)
        day = start.astimezone(zone).date()
        while True:
            day += timedelta(days=1)
            submitted = _local_at(day, time(9), zone) + timedelta(minutes=rng.randrange(0, 480))
            if submitted > end:
                break
            if day.weekday() >= 5 or rng.random() >= rate:
                continue
            pool = outsiders if (rng.random() < 0.6 or not insiders) else insiders
            if not pool:
                continue
            user_id = rng.choice(pool)
            samples = rng.randint(1, max(1, min(10, capacity)))
            row = _service_request(
                rng,
                service_id,
                facility_id,
                turnaround,
                capacity,
                zone,
                staff,
                user_id,
                org_of[user_id],
                samples,
                submitted,
                end,
                taken,
            )
            rows.append(row)
    if rows:
        session.execute(_insert(ServiceRequest), rows)
    if taken:
        if existing_days:
            session.execute(
                sa.delete(ServiceCapacityDay).where(
                    col(ServiceCapacityDay.testing_service_id).in_(service_ids)
                )
            )
        session.execute(
            _insert(ServiceCapacityDay),
            [
                {"testing_service_id": s, "day": d, "accepted_samples": n}
                for (s, d), n in sorted(taken.items())
            ],
        )
    session.flush()
    return len(rows)


def _service_request(
    rng: random.Random,
    service_id: int,
    facility_id: int,
    turnaround: int,
    capacity: int,
    zone: ZoneInfo,
    staff: int | None,
    user_id: int,
    organisation_id: int | None,
    samples: int,
    submitted: datetime,
    end: datetime,
    taken: dict[tuple[int, date], int],
) -> dict[str, object]:
    row: dict[str, object] = {
        "testing_service_id": service_id,
        "facility_id": facility_id,
        "user_id": user_id,
        "organisation_id": organisation_id,
        "sample_count": samples,
        "description": rng.choice(SAMPLE_DESCRIPTIONS),
        "status": S.SUBMITTED,
        "scheduled_date": None,
        "reason": "",
        "decided_by_id": None,
        "version": 0,
        "submitted_at": submitted,
        "accepted_at": None,
        "started_at": None,
        "reported_at": None,
        "completed_at": None,
        "updated_at": submitted,
    }

    def reach(status: S, at: datetime, **values: object) -> bool:
        if at > end:
            return False
        row.update(status=status, updated_at=at, version=int(row["version"]) + 1, **values)  # type: ignore[call-overload]
        return True

    decided = submitted + timedelta(hours=rng.randint(2, 30))
    roll = rng.random()
    if roll < 0.05:
        reach(S.REJECTED, decided, decided_by_id=staff, reason="样品状态不符合检测要求")
        return row
    if roll < 0.09:
        reach(S.CANCELLED, decided, reason="送样计划取消")
        return row
    day = decided.astimezone(zone).date()
    for _ in range(30):
        if day.weekday() < 5 and taken[(service_id, day)] + samples <= capacity:
            break
        day += timedelta(days=1)
    else:
        reach(S.REJECTED, decided, decided_by_id=staff, reason="检测排期已满")
        return row
    if not reach(S.ACCEPTED, decided, scheduled_date=day, accepted_at=decided, decided_by_id=staff):
        return row
    taken[(service_id, day)] += samples
    started = _local_at(day, time(9), zone) + timedelta(minutes=rng.randrange(0, 360))
    if not reach(S.IN_PROGRESS, max(started, decided + timedelta(minutes=5)), started_at=started):
        return row
    spent = max(1, turnaround + rng.choice((-2, -1, -1, 0, 0, 0, 1, 1, 2, 4)))
    reported = started + timedelta(days=spent, hours=rng.randint(0, 6))
    if not reach(S.REPORTED, reported, reported_at=reported):
        return row
    completed = reported + timedelta(days=rng.randint(1, 5))
    reach(S.COMPLETED, completed, completed_at=completed)
    return row


SAMPLE_DESCRIPTIONS = [
    "粉末样品，常温保存",
    "块状金属试样，已抛光",
    "溶液样品，4 ℃ 冷藏",
    "涂层试片 3 片",
    "汽车零部件送检",
    "混凝土试块，标准养护 28 天",
    "细胞悬液，需当天检测",
    "单晶样品，已挑选",
]
