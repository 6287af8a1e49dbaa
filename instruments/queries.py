"""Reads of the catalogue: search, details, facilities with hours, open intervals.

Lists are paginated and load related rows in batches (no query per row); search is one query
over a lower-cased ``search_text`` column with the filters, plus one count.
"""

from __future__ import annotations

import functools
import threading
from collections import OrderedDict, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlmodel import Session, col, func, select

from core.accounts.models import Organisation
from core.clock import now
from core.db import HotStatement
from core.errors import NotFound, Problem, RuleViolation
from core.money import round_fen
from core.places import Cluster
from instruments import holidays, rules
from instruments.models import (
    Facility,
    FacilityClosure,
    Instrument,
    OpeningSpan,
    Outage,
    Qualification,
    TestingService,
    TestingServiceInstrument,
)
from instruments.rules import Category, CustomerClass, InstrumentStatus, OperationMode

PRICE_COLUMN = {
    CustomerClass.INTERNAL: col(Instrument.price_internal_fen),
    CustomerClass.EXTERNAL_ACADEMIC: col(Instrument.price_external_academic_fen),
    CustomerClass.ENTERPRISE: col(Instrument.price_enterprise_fen),
}
SUMMARY_COLUMNS = (
    Instrument.id,
    Instrument.asset_code,
    Instrument.name,
    Instrument.name_en,
    Instrument.model,
    Instrument.manufacturer,
    Instrument.category,
    Instrument.status,
    Instrument.operation_mode,
    Instrument.is_large,
    Instrument.facility_id,
    Instrument.photo_url,
)
MIN_QUERY_LENGTH = 2


class SearchSort(StrEnum):
    RELEVANCE = "relevance"
    NAME = "name"
    PRICE = "price"
    PRICE_DESC = "-price"
    PURCHASE_VALUE_DESC = "-purchase_value"
    NEWEST = "-created"


@dataclass(frozen=True)
class InstrumentSearch:
    q: str | None = None
    category: Category | None = None
    cluster: Cluster | None = None
    district: str | None = None
    facility_id: int | None = None
    organisation_id: int | None = None
    operation_mode: OperationMode | None = None
    is_large: bool | None = None
    has_testing_service: bool | None = None
    status: InstrumentStatus | None = None
    include_retired: bool = False
    price_class: CustomerClass = CustomerClass.INTERNAL
    min_price_fen: int | None = None
    max_price_fen: int | None = None
    sort: SearchSort = SearchSort.RELEVANCE

    def problems(self) -> list[Problem]:
        problems = []
        if self.q is not None and len(self.q.strip()) < MIN_QUERY_LENGTH:
            problems.append(Problem("too_short", "Search for at least 2 characters.", "q"))
        if (
            self.min_price_fen is not None
            and self.max_price_fen is not None
            and self.min_price_fen > self.max_price_fen
        ):
            problems.append(
                Problem("inverted_range", "The lowest price is above the highest.", "min_price_fen")
            )
        return problems


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def search_instruments(
    session: Session, search: InstrumentSearch, *, offset: int = 0, limit: int = 50
) -> tuple[list[dict[str, Any]], int]:
    """Instruments matching the search, one page of them, and how many match in all."""
    if problems := search.problems():
        raise RuleViolation(problems)
    price = PRICE_COLUMN[search.price_class]
    has_service = (
        select(TestingServiceInstrument.instrument_id)
        .join(TestingService, col(TestingService.id) == TestingServiceInstrument.testing_service_id)
        .where(
            TestingServiceInstrument.instrument_id == Instrument.id,
            col(TestingService.is_active).is_(True),
        )
        .exists()
    )
    conditions: list[Any] = [col(Facility.is_active).is_(True)]
    words = [w for w in (search.q or "").lower().split() if w]
    for word in words:
        conditions.append(col(Instrument.search_text).like(f"%{_escape_like(word)}%", escape="\\"))
    if search.status is not None:
        conditions.append(Instrument.status == search.status)
    elif not search.include_retired:
        conditions.append(Instrument.status != InstrumentStatus.RETIRED)
    for column, value in (
        (Instrument.category, search.category),
        (Facility.cluster, search.cluster),
        (Facility.district, search.district),
        (Instrument.facility_id, search.facility_id),
        (Facility.organisation_id, search.organisation_id),
        (Instrument.is_large, search.is_large),
    ):
        if value is not None:
            conditions.append(column == value)
    if search.operation_mode is not None:
        # An instrument run both ways serves either kind of request.
        conditions.append(
            col(Instrument.operation_mode).in_([search.operation_mode, OperationMode.BOTH])
        )
    if search.has_testing_service is not None:
        conditions.append(has_service if search.has_testing_service else ~has_service)
    if search.min_price_fen is not None:
        conditions.append(price >= search.min_price_fen)
    if search.max_price_fen is not None:
        conditions.append(price <= search.max_price_fen)

    order: list[Any]
    if search.sort is SearchSort.NAME:
        order = [col(Instrument.name)]
    elif search.sort is SearchSort.PRICE:
        order = [price]
    elif search.sort is SearchSort.PRICE_DESC:
        order = [sa.desc(price)]
    elif search.sort is SearchSort.PURCHASE_VALUE_DESC:
        order = [sa.desc(func.coalesce(Instrument.purchase_value_fen, 0))]
    elif search.sort is SearchSort.NEWEST:
        order = [sa.desc(col(Instrument.created_at))]
    elif words:
        # Relevance: a match in the name first, then large instruments.
        order = [
            sa.case(
                (func.lower(Instrument.name).like(f"%{_escape_like(words[0])}%", escape="\\"), 0),
                else_=1,
            ),
            sa.desc(col(Instrument.is_large)),
        ]
    else:
        order = [sa.desc(col(Instrument.is_large)), col(Instrument.name)]
    rows = session.execute(
        sa.select(
            *(col(column) for column in SUMMARY_COLUMNS),
            col(Facility.name).label("facility_name"),
            col(Facility.organisation_id),
            col(Facility.cluster),
            col(Facility.district),
            has_service.label("has_testing_service"),
            price.label("price_fen"),
            # The total rides along with the page: one scan of the catalogue, not two.
            func.count().over().label("total"),
        )
        .join(Facility, col(Facility.id) == Instrument.facility_id)
        .where(*conditions)
        .order_by(*order, col(Instrument.id))
        .offset(offset)
        .limit(limit)
    ).mappings()
    items = [dict(row) for row in rows]
    if items:
        total = items[0]["total"]
    elif offset == 0:
        total = 0
    else:  # a page past the end still reports how many there are
        total = session.exec(
            select(func.count())
            .select_from(Instrument)
            .join(Facility, col(Facility.id) == Instrument.facility_id)
            .where(*conditions)
        ).one()
    for item in items:
        del item["total"]
    return items, int(total)


def instrument_with_facility(session: Session, instrument_id: int) -> tuple[Instrument, Facility]:
    row = session.exec(
        select(Instrument, Facility)
        .join(Facility, col(Facility.id) == Instrument.facility_id)
        .where(Instrument.id == instrument_id)
    ).first()
    if row is None:
        raise NotFound("Instrument")
    return row[0], row[1]


def testing_service_ids_of(session: Session, instrument_id: int) -> list[int]:
    return list(
        session.exec(
            select(TestingServiceInstrument.testing_service_id)
            .where(TestingServiceInstrument.instrument_id == instrument_id)
            .order_by(col(TestingServiceInstrument.testing_service_id))
        ).all()
    )


def organisation_type_of(session: Session, organisation_id: int | None) -> Any:
    if organisation_id is None:
        return None
    return session.exec(select(Organisation.type).where(Organisation.id == organisation_id)).first()


def list_facilities(
    session: Session,
    *,
    organisation_id: int | None = None,
    cluster: Cluster | None = None,
    district: str | None = None,
    ids: Sequence[int] | None = None,
    include_inactive: bool = False,
    offset: int = 0,
    limit: int = 50,
) -> tuple[list[Facility], int]:
    query = select(Facility)
    if organisation_id is not None:
        query = query.where(Facility.organisation_id == organisation_id)
    if cluster is not None:
        query = query.where(Facility.cluster == cluster)
    if district:
        query = query.where(Facility.district == district)
    if ids is not None:
        query = query.where(col(Facility.id).in_(list(ids)))
    if not include_inactive:
        query = query.where(col(Facility.is_active).is_(True))
    total = session.exec(select(func.count()).select_from(query.subquery())).one()
    rows = session.exec(query.order_by(col(Facility.id)).offset(offset).limit(limit)).all()
    return list(rows), int(total)


def opening_spans_by_facility(
    session: Session, facility_ids: Sequence[int]
) -> dict[int, list[OpeningSpan]]:
    grouped: dict[int, list[OpeningSpan]] = defaultdict(list)
    if not facility_ids:
        return grouped
    for span in session.exec(
        select(OpeningSpan)
        .where(col(OpeningSpan.facility_id).in_(list(facility_ids)))
        .order_by(col(OpeningSpan.weekday), col(OpeningSpan.start_minute))
    ).all():
        grouped[span.facility_id].append(span)
    return grouped


def get_facility(session: Session, facility_id: int) -> Facility:
    facility = session.get(Facility, facility_id)
    if facility is None:
        raise NotFound("Facility")
    return facility


def closures_of(session: Session, facility_id: int) -> list[FacilityClosure]:
    return list(
        session.exec(
            select(FacilityClosure)
            .where(FacilityClosure.facility_id == facility_id)
            .order_by(col(FacilityClosure.start_date))
        ).all()
    )


def list_outages(
    session: Session,
    *,
    facility_ids: Sequence[int] | None = None,
    instrument_id: int | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    offset: int = 0,
    limit: int = 500,
) -> tuple[list[Outage], int]:
    """Outages overlapping ``[start, end)``; an instrument's include its facility's."""
    query = select(Outage)
    if instrument_id is not None:
        instrument = session.get(Instrument, instrument_id)
        if instrument is None:
            raise NotFound("Instrument")
        query = query.where(
            (col(Outage.instrument_id) == instrument_id)
            | sa.and_(
                col(Outage.facility_id) == instrument.facility_id,
                col(Outage.instrument_id).is_(None),
            )
        )
    if facility_ids is not None:
        query = query.where(col(Outage.facility_id).in_(list(facility_ids)))
    if start is not None:
        query = query.where(col(Outage.end_at) > start)
    if end is not None:
        query = query.where(col(Outage.start_at) < end)
    total = session.exec(select(func.count()).select_from(query.subquery())).one()
    rows = session.exec(query.order_by(col(Outage.start_at)).offset(offset).limit(limit)).all()
    return list(rows), int(total)


MAX_OPEN_INTERVAL_DAYS = 366


@dataclass(frozen=True)
class FacilityCalendar:
    """A facility's week and closures: what rarely changes (cached by its calendar token)."""

    zone: ZoneInfo
    opens_on_holidays: bool
    weekly_hours: dict[int, list[tuple[int, int]]]
    closed_dates: tuple[tuple[date, date], ...]

    def open_intervals(self, start: datetime, end: datetime) -> list[rules.Interval]:
        """The facility's open time in ``[start, end)``: hours − holidays − closures."""
        return rules.open_intervals(
            start,
            end,
            zone=self.zone,
            weekly_hours=self.weekly_hours,
            day_kind=holidays.day_kind,
            opens_on_holidays=self.opens_on_holidays,
            closed_dates=self.closed_dates,
        )


@dataclass
class InstrumentCalendar:
    """What decides when an instrument is open, loaded for a period."""

    instrument_id: int
    facility_id: int
    bookable: bool  # active instrument in an active facility
    facility: FacilityCalendar
    slot_minutes: int  # bookable time starts and ends on these, in the facility's zone
    buffer_minutes: int  # kept free after each booking
    outages: list[rules.Interval] = field(default_factory=list)

    def open_intervals(
        self,
        start: datetime,
        end: datetime,
        *,
        facility_open: Sequence[rules.Interval] | None = None,
    ) -> list[rules.Interval]:
        """Open time in ``[start, end)``; ``facility_open`` is the facility's open time for
        the same period when the caller has it already (many instruments share a facility)."""
        if not self.bookable:
            return []
        if facility_open is None:
            facility_open = self.facility.open_intervals(start, end)
        if not self.outages:
            return list(facility_open)
        return rules.subtract(facility_open, self.outages)


def open_intervals_of(
    calendars: dict[int, InstrumentCalendar], start: datetime, end: datetime
) -> dict[int, list[rules.Interval]]:
    """Open time of many instruments in ``[start, end)``, each facility's week expanded once."""
    by_facility: dict[int, list[rules.Interval]] = {}
    result = {}
    for instrument_id, calendar in calendars.items():
        facility_open = by_facility.get(calendar.facility_id)
        if facility_open is None and calendar.bookable:
            facility_open = by_facility[calendar.facility_id] = calendar.facility.open_intervals(
                start, end
            )
        result[instrument_id] = calendar.open_intervals(start, end, facility_open=facility_open)
    return result


class _CalendarCache:
    """Facility calendars by (facility id, calendar token); a changed facility gets a new token,
    so every process sees the change on its next read without being told."""

    def __init__(self, size: int = 2048) -> None:
        self.size = size
        self.entries: OrderedDict[tuple[int, str], FacilityCalendar] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key: tuple[int, str]) -> FacilityCalendar | None:
        with self.lock:
            found = self.entries.get(key)
            if found is not None:
                self.entries.move_to_end(key)
            return found

    def put(self, key: tuple[int, str], calendar: FacilityCalendar) -> None:
        with self.lock:
            self.entries[key] = calendar
            while len(self.entries) > self.size:
                self.entries.popitem(last=False)


facility_calendars = _CalendarCache()


def _check_period(start: datetime, end: datetime) -> None:
    if end <= start:
        raise RuleViolation(
            [Problem("end_not_after_start", "The end must be after the start.", "end")]
        )
    if (end - start).days > MAX_OPEN_INTERVAL_DAYS:
        raise RuleViolation(
            [Problem("period_too_long", "Ask for at most a year at a time.", "end")]
        )


def _load_facility_calendars(
    session: Session, wanted: dict[int, tuple[str, str, bool]]
) -> dict[int, FacilityCalendar]:
    """Calendars of facilities (id → token, zone, opens on holidays): cached, else two queries."""
    found: dict[int, FacilityCalendar] = {}
    missing: list[int] = []
    for facility_id, (token, _, _) in wanted.items():
        cached = facility_calendars.get((facility_id, token))
        if cached is None:
            missing.append(facility_id)
        else:
            found[facility_id] = cached
    if not missing:
        return found
    weekly: dict[int, dict[int, list[tuple[int, int]]]] = {f: {} for f in missing}
    for facility_id, weekday, open_minute, close_minute in session.execute(
        sa.select(
            col(OpeningSpan.facility_id),
            col(OpeningSpan.weekday),
            col(OpeningSpan.start_minute),
            col(OpeningSpan.end_minute),
        )
        .where(col(OpeningSpan.facility_id).in_(missing))
        .order_by(col(OpeningSpan.start_minute))
    ):
        weekly[facility_id].setdefault(weekday, []).append((open_minute, close_minute))
    closed: dict[int, list[tuple[date, date]]] = {f: [] for f in missing}
    for facility_id, closed_from, closed_to in session.execute(
        sa.select(
            col(FacilityClosure.facility_id),
            col(FacilityClosure.start_date),
            col(FacilityClosure.end_date),
        ).where(col(FacilityClosure.facility_id).in_(missing))
    ):
        closed[facility_id].append((closed_from, closed_to))
    for facility_id in missing:
        token, zone, opens_on_holidays = wanted[facility_id]
        calendar = FacilityCalendar(
            zone=ZoneInfo(zone),
            opens_on_holidays=opens_on_holidays,
            weekly_hours=weekly[facility_id],
            closed_dates=tuple(closed[facility_id]),
        )
        facility_calendars.put((facility_id, token), calendar)
        found[facility_id] = calendar
    return found


@functools.cache
def calendar_rows(*, one_instrument: bool = False) -> sa.Select[Any]:
    """Instruments (``ids``; ``one_instrument``: ``instrument_id``) with their facility's
    calendar columns and, joined, the outages (their own and their facility's) overlapping
    ``[start, end)``: a row per outage, one if none; :func:`calendars_of_rows` reads them.
    Built once with bound parameters: building a statement costs more than running it. A
    caller may add columns and joins of its own. (A list parameter is expanded into the SQL
    on every run; one instrument, as every booking request has, needs no list.)"""
    instrument: sa.Table = Instrument.__table__  # type: ignore[attr-defined]
    facility: sa.Table = Facility.__table__  # type: ignore[attr-defined]
    outage: sa.Table = Outage.__table__  # type: ignore[attr-defined]
    i, f, o = instrument.c, facility.c, outage.c
    in_window = sa.and_(
        o.facility_id == i.facility_id,
        o.instrument_id.is_(None) | (o.instrument_id == i.id),
        o.end_at > sa.bindparam("start"),
        o.start_at < sa.bindparam("end"),
    )
    return (
        sa.select(
            i.id,
            i.status,
            i.facility_id,
            f.calendar_token,
            f.timezone,
            f.opens_on_holidays,
            f.is_active,
            i.slot_minutes,
            i.buffer_minutes,
            o.start_at.label("outage_start"),
            o.end_at.label("outage_end"),
        )
        .select_from(instrument)
        .join(facility, f.id == i.facility_id)
        .outerjoin(outage, in_window)
        .where(
            i.id == sa.bindparam("instrument_id")
            if one_instrument
            else i.id.in_(sa.bindparam("ids", expanding=True))
        )
    )


def load_calendars(
    session: Session, *, instrument_ids: Sequence[int], start: datetime, end: datetime
) -> dict[int, InstrumentCalendar]:
    """Calendars of many instruments for ``[start, end)``: one query when facilities' weeks
    are cached, three when not, however many instruments."""
    ids = list(dict.fromkeys(instrument_ids))
    if not ids:
        return {}
    if len(ids) == 1:  # an availability, or a check of one booking: no list to expand
        parameters: dict[str, Any] = {"instrument_id": ids[0], "start": start, "end": end}
        rows = _one_calendar_rows().rows(session.connection(), parameters)
    else:
        parameters = {"ids": ids, "start": start, "end": end}
        rows = list(session.connection().execute(calendar_rows(), parameters).all())
    return calendars_of_rows(session, rows)


@functools.cache
def _one_calendar_rows() -> HotStatement:
    return HotStatement(calendar_rows(one_instrument=True))


def calendars_of_rows(session: Session, rows: Sequence[Any]) -> dict[int, InstrumentCalendar]:
    """The calendars in rows of :func:`calendar_rows` (the facilities' weeks from the cache, or
    read)."""
    facilities = _load_facility_calendars(
        session,
        {
            row.facility_id: (row.calendar_token, row.timezone, row.opens_on_holidays)
            for row in rows
        },
    )
    calendars: dict[int, InstrumentCalendar] = {}
    for row in rows:
        calendar = calendars.get(row.id)
        if calendar is None:
            calendar = calendars[row.id] = InstrumentCalendar(
                instrument_id=row.id,
                facility_id=row.facility_id,
                bookable=row.status == InstrumentStatus.ACTIVE and row.is_active,
                facility=facilities[row.facility_id],
                slot_minutes=row.slot_minutes,
                buffer_minutes=row.buffer_minutes,
            )
        if row.outage_start is not None:
            calendar.outages.append((row.outage_start, row.outage_end))
    return calendars


def instrument_open_intervals(
    session: Session, *, instrument_id: int, start: datetime, end: datetime
) -> list[rules.Interval]:
    """When the instrument is open in ``[start, end)``: hours − holidays − closures − outages.

    A retired instrument, one in maintenance, or one in a closed facility is never open.
    """
    _check_period(start, end)
    calendar = load_calendars(session, instrument_ids=[instrument_id], start=start, end=end)
    if instrument_id not in calendar:
        raise NotFound("Instrument")
    return calendar[instrument_id].open_intervals(start, end)


def list_qualifications(
    session: Session,
    *,
    user_id: int | None = None,
    instrument_id: int | None = None,
    facility_ids: Sequence[int] | None = None,
    valid_only: bool = False,
    offset: int = 0,
    limit: int = 50,
) -> tuple[list[tuple[Qualification, bool]], int]:
    """Qualifications (with whether each is valid now), newest first."""
    current = now()
    query = select(Qualification)
    if user_id is not None:
        query = query.where(Qualification.user_id == user_id)
    if instrument_id is not None:
        query = query.where(Qualification.instrument_id == instrument_id)
    if facility_ids is not None:
        query = query.where(
            col(Qualification.instrument_id).in_(
                select(Instrument.id).where(col(Instrument.facility_id).in_(list(facility_ids)))
            )
        )
    if valid_only:
        query = query.where(
            col(Qualification.revoked_at).is_(None),
            col(Qualification.expires_at).is_(None) | (col(Qualification.expires_at) > current),
        )
    total = session.exec(select(func.count()).select_from(query.subquery())).one()
    rows = session.exec(
        query.order_by(col(Qualification.id).desc()).offset(offset).limit(limit)
    ).all()
    return [
        (q, q.revoked_at is None and (q.expires_at is None or q.expires_at > current)) for q in rows
    ], int(total)


def list_testing_services(
    session: Session,
    *,
    facility_id: int | None = None,
    instrument_id: int | None = None,
    include_inactive: bool = False,
    offset: int = 0,
    limit: int = 50,
) -> tuple[list[tuple[TestingService, list[int]]], int]:
    query = select(TestingService)
    if facility_id is not None:
        query = query.where(TestingService.facility_id == facility_id)
    if instrument_id is not None:
        query = query.where(
            col(TestingService.id).in_(
                select(TestingServiceInstrument.testing_service_id).where(
                    TestingServiceInstrument.instrument_id == instrument_id
                )
            )
        )
    if not include_inactive:
        query = query.where(col(TestingService.is_active).is_(True))
    total = session.exec(select(func.count()).select_from(query.subquery())).one()
    rows = list(
        session.exec(query.order_by(col(TestingService.id)).offset(offset).limit(limit)).all()
    )
    links: dict[int, list[int]] = defaultdict(list)
    if rows:
        for service_id, linked in session.exec(
            select(
                TestingServiceInstrument.testing_service_id, TestingServiceInstrument.instrument_id
            )
            .where(col(TestingServiceInstrument.testing_service_id).in_([r.id for r in rows]))
            .order_by(col(TestingServiceInstrument.instrument_id))
        ).all():
            links[service_id].append(linked)
    return [(row, links.get(row.id or 0, [])) for row in rows], int(total)


@dataclass(frozen=True)
class PriceQuote:
    """What one user pays on an instrument: its customer class and that class's prices."""

    customer_class: CustomerClass
    hourly_fen: int
    staff_surcharge_fen: int
    min_billing_minutes: int
    min_charge_fen: int

    def estimate_fen(self, minutes: int, *, staff_operated: bool) -> int:
        """A use of ``minutes`` billed in whole units at the hourly price (plus the staff
        surcharge when staff operate), never below the minimum charge; rounded once."""
        unit = max(self.min_billing_minutes, 1)
        billed_minutes = -(-max(minutes, 0) // unit) * unit
        hourly = self.hourly_fen + (self.staff_surcharge_fen if staff_operated else 0)
        return max(round_fen(Decimal(hourly) * billed_minutes / 60), self.min_charge_fen)


def _class_of(
    user_organisation_id: int | None, user_type: Any, facility_organisation_id: int
) -> CustomerClass:
    return rules.customer_class(
        user_organisation_id=user_organisation_id,
        user_organisation_type=user_type,
        facility_organisation_id=facility_organisation_id,
    )


def price_quote(
    session: Session,
    *,
    instrument: Instrument,
    facility: Facility,
    user_organisation_id: int | None,
) -> PriceQuote:
    """The price list that applies to a user of ``user_organisation_id`` on the instrument."""
    customer = _class_of(
        user_organisation_id,
        organisation_type_of(session, user_organisation_id),
        facility.organisation_id,
    )
    return PriceQuote(
        customer_class=customer,
        hourly_fen=getattr(instrument, f"price_{customer}_fen"),
        staff_surcharge_fen=instrument.staff_surcharge_fen,
        min_billing_minutes=instrument.min_billing_minutes,
        min_charge_fen=instrument.min_charge_fen,
    )


def customer_prices(
    session: Session, *, instrument_ids: Sequence[int], user_organisation_id: int | None
) -> dict[int, tuple[CustomerClass, int]]:
    """Each instrument's hourly price for one user (its class differs by the facility's owner):
    two queries, however many instruments."""
    if not instrument_ids:
        return {}
    user_type = organisation_type_of(session, user_organisation_id)
    prices: dict[int, tuple[CustomerClass, int]] = {}
    for instrument_id, owner_id, internal, academic, enterprise in session.execute(
        sa.select(
            col(Instrument.id),
            col(Facility.organisation_id),
            col(Instrument.price_internal_fen),
            col(Instrument.price_external_academic_fen),
            col(Instrument.price_enterprise_fen),
        )
        .join(Facility, col(Facility.id) == Instrument.facility_id)
        .where(col(Instrument.id).in_(list(instrument_ids)))
    ):
        customer = _class_of(user_organisation_id, user_type, owner_id)
        by_class = {
            CustomerClass.INTERNAL: internal,
            CustomerClass.EXTERNAL_ACADEMIC: academic,
            CustomerClass.ENTERPRISE: enterprise,
        }
        prices[instrument_id] = (customer, by_class[customer])
    return prices


# --- Reads for the lab manager pages ------------------------------------------------------


def managed_instrument_rows(
    session: Session,
    *,
    facility_ids: Sequence[int] | None,
    facility_id: int | None = None,
    status: InstrumentStatus | None = None,
    offset: int = 0,
    limit: int = 50,
) -> tuple[list[tuple[Instrument, Facility]], int]:
    """Instruments of the given facilities (all when None) with their facility, one page and
    the total: two queries, however many rows."""
    conditions: list[Any] = []
    if facility_ids is not None:
        conditions.append(col(Instrument.facility_id).in_(list(facility_ids)))
    if facility_id is not None:
        conditions.append(Instrument.facility_id == facility_id)
    if status is not None:
        conditions.append(Instrument.status == status)
    total = session.exec(select(func.count()).select_from(Instrument).where(*conditions)).one()
    rows = session.exec(
        select(Instrument, Facility)
        .join(Facility, col(Facility.id) == Instrument.facility_id)
        .where(*conditions)
        .order_by(col(Facility.name), col(Instrument.name), col(Instrument.id))
        .offset(offset)
        .limit(limit)
    ).all()
    return [(row[0], row[1]) for row in rows], int(total)


def instrument_choices(
    session: Session, *, facility_ids: Sequence[int] | None, include_retired: bool = False
) -> list[tuple[int, str, str, int]]:
    """(id, name, asset code, facility id) of the facilities' instruments, for select boxes."""
    query = sa.select(
        col(Instrument.id),
        col(Instrument.name),
        col(Instrument.asset_code),
        col(Instrument.facility_id),
    )
    if facility_ids is not None:
        query = query.where(col(Instrument.facility_id).in_(list(facility_ids)))
    if not include_retired:
        query = query.where(col(Instrument.status) != InstrumentStatus.RETIRED)
    return [
        (row[0], row[1], row[2], row[3])
        for row in session.execute(query.order_by(col(Instrument.name), col(Instrument.id)))
    ]


def outage_rows(
    session: Session,
    *,
    facility_ids: Sequence[int] | None,
    upcoming: bool,
    at: datetime,
    offset: int = 0,
    limit: int = 50,
) -> tuple[list[dict[str, Any]], int]:
    """Outages of the facilities that have not ended at ``at`` (soonest first) or have (latest
    first), with the instrument's and facility's names and the facility's zone."""
    conditions: list[Any] = [col(Outage.end_at) > at if upcoming else col(Outage.end_at) <= at]
    if facility_ids is not None:
        conditions.append(col(Outage.facility_id).in_(list(facility_ids)))
    total = session.exec(select(func.count()).select_from(Outage).where(*conditions)).one()
    order = col(Outage.start_at) if upcoming else sa.desc(col(Outage.start_at))
    rows = session.execute(
        sa.select(
            col(Outage.id),
            col(Outage.facility_id),
            col(Outage.instrument_id),
            col(Outage.start_at),
            col(Outage.end_at),
            col(Outage.kind),
            col(Outage.note),
            col(Facility.name).label("facility_name"),
            col(Facility.timezone),
            col(Instrument.name).label("instrument_name"),
        )
        .join(Facility, col(Facility.id) == Outage.facility_id)
        .outerjoin(Instrument, col(Instrument.id) == Outage.instrument_id)
        .where(*conditions)
        .order_by(order, col(Outage.id))
        .offset(offset)
        .limit(limit)
    ).mappings()
    return [dict(row) for row in rows], int(total)


def qualification_rows(
    session: Session,
    *,
    facility_ids: Sequence[int] | None,
    instrument_id: int | None = None,
    user_id: int | None = None,
    offset: int = 0,
    limit: int = 50,
) -> tuple[list[dict[str, Any]], int]:
    """Qualifications on the facilities' instruments, every record (the history), newest first,
    with the user's, instrument's and granter's names: two queries."""
    from sqlalchemy.orm import aliased

    from core.accounts.models import User

    holder = aliased(User)
    granter = aliased(User)
    conditions: list[Any] = []
    if facility_ids is not None:
        conditions.append(col(Instrument.facility_id).in_(list(facility_ids)))
    if instrument_id is not None:
        conditions.append(col(Qualification.instrument_id) == instrument_id)
    if user_id is not None:
        conditions.append(col(Qualification.user_id) == user_id)
    total = session.exec(
        select(func.count())
        .select_from(Qualification)
        .join(Instrument, col(Instrument.id) == Qualification.instrument_id)
        .where(*conditions)
    ).one()
    current = now()
    rows = session.execute(
        sa.select(
            col(Qualification.id),
            col(Qualification.user_id),
            col(Qualification.instrument_id),
            col(Qualification.granted_at),
            col(Qualification.expires_at),
            col(Qualification.revoked_at),
            col(Qualification.note),
            col(holder.name).label("user_name"),
            col(holder.email).label("user_email"),
            col(granter.name).label("granted_by_name"),
            col(Instrument.name).label("instrument_name"),
            col(Facility.timezone),
        )
        .join(Instrument, col(Instrument.id) == Qualification.instrument_id)
        .join(Facility, col(Facility.id) == Instrument.facility_id)
        .join(holder, col(holder.id) == Qualification.user_id)
        .outerjoin(granter, col(granter.id) == Qualification.granted_by_id)
        .where(*conditions)
        .order_by(sa.desc(col(Qualification.id)))
        .offset(offset)
        .limit(limit)
    ).mappings()
    items = []
    for row in rows:
        item = dict(row)
        item["is_valid"] = item["revoked_at"] is None and (
            item["expires_at"] is None or item["expires_at"] > current
        )
        items.append(item)
    return items, int(total)


def instruments_at(session: Session, *, facility_ids: Sequence[int] | None) -> list[Instrument]:
    """The facilities' instruments that are not retired (None: every facility), by name: the
    lanes of a facility calendar and the instrument filters of the manager pages."""
    query = select(Instrument).where(Instrument.status != InstrumentStatus.RETIRED)
    if facility_ids is not None:
        query = query.where(col(Instrument.facility_id).in_(list(facility_ids)))
    return list(session.exec(query.order_by(col(Instrument.name), col(Instrument.id))).all())


@dataclass(frozen=True)
class OutOfService:
    """An instrument in maintenance, or an outage going on now (of an instrument or, when
    ``instrument_id`` is empty, of a whole facility)."""

    facility_id: int
    instrument_id: int | None
    instrument_name: str | None
    reason: str  # the instrument's status "maintenance", or the outage's kind
    until: datetime | None
    note: str = ""


def out_of_service(
    session: Session, *, facility_ids: Sequence[int] | None, at: datetime
) -> list[OutOfService]:
    """What cannot be used at ``at`` in these facilities (None: all): two queries."""
    in_maintenance = select(Instrument).where(Instrument.status == InstrumentStatus.MAINTENANCE)
    outages = (
        select(Outage, Instrument.name)
        .outerjoin(Instrument, col(Instrument.id) == Outage.instrument_id)
        .where(col(Outage.start_at) <= at, col(Outage.end_at) > at)
    )
    if facility_ids is not None:
        in_maintenance = in_maintenance.where(col(Instrument.facility_id).in_(list(facility_ids)))
        outages = outages.where(col(Outage.facility_id).in_(list(facility_ids)))
    found = [
        OutOfService(i.facility_id, i.id, i.name, str(InstrumentStatus.MAINTENANCE), None)
        for i in session.exec(in_maintenance.order_by(col(Instrument.name))).all()
    ]
    found += [
        OutOfService(o.facility_id, o.instrument_id, name, str(o.kind), o.end_at, o.note)
        for o, name in session.exec(outages.order_by(col(Outage.end_at))).all()
    ]
    return found


def listed_instrument(session: Session, instrument_id: int) -> tuple[Instrument, Facility]:
    """An instrument as the public catalogue shows it: a retired one, or one of a closed
    facility, is not listed (404, as for a missing one)."""
    instrument, facility = instrument_with_facility(session, instrument_id)
    if instrument.status == InstrumentStatus.RETIRED or not facility.is_active:
        raise NotFound("Instrument")
    return instrument, facility
