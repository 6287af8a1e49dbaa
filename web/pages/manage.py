"""Lab manager pages: the dashboard of its facilities, the approval queue, the facility calendar
and usage record corrections.

A lab manager sees its own facilities only (an admin sees all, with a facility filter); a
facility or booking of someone else's is 404, a page for managers opened by anyone else 403.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Annotated, Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from pydantic import ValidationError

from booking import queries as bookings
from booking import service as booking_service
from booking.models import Booking
from booking.rules import HELD_STATUSES, BookingStatus
from booking.schemas import UsageRecordCorrection, UsageRecordCreate
from core.auth.principal import Principal
from core.clock import now
from core.errors import DomainError, NotFound, PermissionDenied, Problem, RuleViolation
from instruments import queries as catalogue
from instruments import service as instruments
from instruments.models import Facility, Instrument
from web.deps import MAX_ID, AppSettings, DbSession, ObjectId
from web.i18n import gettext
from web.messages import N_
from web.pages.deps import (
    CsrfChecked,
    PagePrincipal,
    errors_by_field,
    parse_samples,
    within_calendar,
)
from web.pages.form_keys import answered, claim_form, form_action, new_form_key
from web.routing import TransactionalRoute
from web.templating import render

router = APIRouter(route_class=TransactionalRoute, include_in_schema=False)

PAGE_SIZE = 50
FACILITY_LIMIT = 500  # an admin's facility filter lists at most this many
CALENDAR_MAX_DAYS = 62
TODAY_STATUSES = (
    BookingStatus.PENDING,
    BookingStatus.CONFIRMED,
    BookingStatus.IN_USE,
    BookingStatus.COMPLETED,
    BookingStatus.NO_SHOW,
)
CALENDAR_STATUSES = (*sorted(HELD_STATUSES), BookingStatus.COMPLETED, BookingStatus.NO_SHOW)

STATUS_LABELS = {
    BookingStatus.OFFERED: N_("Offered"),
    BookingStatus.PENDING: N_("Awaiting approval"),
    BookingStatus.CONFIRMED: N_("Confirmed"),
    BookingStatus.IN_USE: N_("In use"),
    BookingStatus.COMPLETED: N_("Completed"),
    BookingStatus.NO_SHOW: N_("No-show"),
    BookingStatus.CANCELLED: N_("Cancelled"),
    BookingStatus.REJECTED: N_("Rejected"),
    BookingStatus.EXPIRED: N_("Expired"),
}
OPERATED_BY_LABELS = {"self": N_("Self-operated"), "staff": N_("Operated by staff")}
QUALIFICATION_LABELS = {
    "not_required": N_("No qualification needed"),
    "valid": N_("Qualified"),
    "expires_before_end": N_("Qualification expires before the booking ends"),
    "missing": N_("Not qualified"),
}
# Why a request in a batch cannot be decided (codes of booking.queries.check_decisions).
BLOCKED_LABELS = {
    "request_expired": N_("the request has expired; the booker may ask again"),
    "already_confirmed": N_("already approved"),
    "already_rejected": N_("already rejected"),
    "cancelled": N_("cancelled by the booker"),
    "expired": N_("expired unanswered"),
    "not_pending": N_("no longer waiting for a decision"),
}
OUT_OF_SERVICE_LABELS = {
    "maintenance": N_("Maintenance"),
    "calibration": N_("Calibration"),
    "repair": N_("Repair"),
    "other": N_("Outage"),
}
# Booking rules a lab manager may override for a booking (codes of booking.rules).
OVERRIDE_LABELS = {
    "too_short": N_("shorter than the minimum"),
    "too_long": N_("longer than the maximum"),
    "too_short_notice": N_("booked at short notice"),
    "too_far_ahead": N_("booked too far ahead"),
    "outside_opening_hours": N_("outside the opening hours"),
}
USAGE_KINDS = (("use", N_("Use")), ("training", N_("Training")), ("maintenance", N_("Maintenance")))
# Messages of the booking service the manager pages show (English ids, translated when shown).
SERVICE_MESSAGES = [
    N_("The booking changed meanwhile; reload and try again."),
    N_("The request has expired; the booker may ask again."),
    N_("The use must end after it starts."),
    N_("Record a use once it has happened."),
    N_("Another use of the instrument is recorded for part of this time."),
    N_("One use lasts at most 31 days; record a longer run in parts."),
    N_("No such user."),
    N_("Booking not found."),
    N_("Facility not found."),
    N_("Instrument not found."),
    N_("Usage record not found."),
]


# --- Who manages what ----------------------------------------------------------------------


def manager_scope(principal: Principal) -> list[int] | None:
    """The facilities the caller manages (None: an admin, every facility); 403 for others."""
    if principal.is_admin:
        return None
    managed = sorted(principal.managed_facility_ids)
    if not managed:
        raise PermissionDenied(N_("Only a lab manager or an admin may open the manager pages."))
    return managed


def narrowed_scope(
    principal: Principal, scope: list[int] | None, facility_id: int | None
) -> list[int] | None:
    """The scope narrowed to one facility on request; a facility not managed is 404."""
    if facility_id is None:
        return scope
    if not principal.manages_facility(facility_id):
        raise NotFound("Facility")
    return [facility_id]


def facilities_in(session: DbSession, scope: list[int] | None) -> list[Facility]:
    found, _ = catalogue.list_facilities(
        session, ids=scope, include_inactive=True, limit=FACILITY_LIMIT
    )
    return found


def local_day(day: date, zone: str) -> tuple[datetime, datetime]:
    """``[midnight, next midnight)`` of a local date, as aware datetimes."""
    tz = ZoneInfo(zone)
    start = datetime.combine(day, time(), tzinfo=tz)
    return start, datetime.combine(day + timedelta(days=1), time(), tzinfo=tz)


def today_in(zone: str) -> date:
    return now().astimezone(ZoneInfo(zone)).date()


@dataclass(frozen=True)
class Today:
    """Today at a set of facilities, each in its own zone: the window covering all of them."""

    day: date
    zone: str | None  # the one zone of them all, or None when they lie in several zones
    start: datetime
    end: datetime

    def holds(self, row: bookings.BookingRow) -> bool:
        """Whether a booking overlaps today in its own facility's zone."""
        start, end = local_day(today_in(row.zone), row.zone)
        return row.booking.start_at < end and row.booking.end_at > start


def today_at(facilities: list[Facility], default_zone: str) -> Today:
    zones = sorted({f.timezone for f in facilities}) or [default_zone]
    spans = [local_day(today_in(zone), zone) for zone in zones]
    return Today(
        day=today_in(zones[0]),
        zone=zones[0] if len(zones) == 1 else None,
        start=min(start for start, _ in spans),
        end=max(end for _, end in spans),
    )


OUT_OF_RANGE_DAY = N_("Choose a day between the years 2000 and 2100.")


def checked_day(day: date | None, field: str) -> date | None:
    """A day asked for in the query; far outside the years planned for it is refused (422)."""
    if day is not None and not within_calendar(day):
        raise RuleViolation([Problem("out_of_range", OUT_OF_RANGE_DAY, field)])
    return day


@dataclass(frozen=True)
class Pager:
    page: int
    total: int
    size: int = PAGE_SIZE

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.size

    @property
    def pages(self) -> int:
        return max(1, math.ceil(self.total / self.size))


def page_link(request: Request, page: int) -> str:
    """The current page's URL with another page number (filters kept)."""
    params = dict(request.query_params)
    params["page"] = str(page)
    return f"{request.url.path}?{urlencode(params)}"


Page = Annotated[int, Query(ge=1, le=100_000)]
# An id filter in the query or a form: beyond MAX_ID it names nothing, answered 422 (not a 500).
QueryId = Annotated[int | None, Query(ge=1, le=MAX_ID)]
FormId = Annotated[int | None, Form(ge=1, le=MAX_ID)]


# --- Dashboard -----------------------------------------------------------------------------


@router.get("/manage")
def dashboard(
    request: Request,
    principal: PagePrincipal,
    session: DbSession,
    settings: AppSettings,
    facility_id: QueryId = None,
    page: Page = 1,
) -> Response:
    scope = manager_scope(principal)
    shown = narrowed_scope(principal, scope, facility_id)
    facilities = facilities_in(session, scope)
    shown_facilities = [f for f in facilities if shown is None or f.id in shown]
    window = today_at(shown_facilities, settings.timezone)
    today, total = bookings.facility_bookings(
        session,
        facility_ids=shown,
        start=window.start,
        end=window.end,
        statuses=TODAY_STATUSES,
        offset=(page - 1) * PAGE_SIZE,
        limit=PAGE_SIZE,
    )
    pending = bookings.pending_counts(session, facility_ids=shown)
    unavailable = catalogue.out_of_service(session, facility_ids=shown, at=now())
    return render(
        request,
        "manage/dashboard.html",
        {
            "facilities": facilities,
            "shown_facilities": shown_facilities,
            "facility_names": {f.id: f.name for f in facilities},
            "facility_id": facility_id,
            "today": [row for row in today if window.holds(row)],
            "pager": Pager(page, total),
            "page_link": lambda n: page_link(request, n),
            "pending": pending,
            "pending_total": sum(pending.values()),
            "unavailable": unavailable,
            "day": window.day,
            "day_zone": window.zone,
            "facility_zones": {f.id: f.timezone for f in facilities},
            "status_labels": STATUS_LABELS,
            "out_labels": OUT_OF_SERVICE_LABELS,
        },
    )


# --- Approval queue ------------------------------------------------------------------------


def render_queue(
    request: Request,
    session: DbSession,
    principal: Principal,
    *,
    facility_id: int | None,
    instrument_id: int | None,
    page: int = 1,
    status_code: int = 200,
    errors: dict[str, Any] | None = None,
    values: dict[str, Any] | None = None,
    selected: set[int] | None = None,
    blocked: list[tuple[Booking, str]] | None = None,
) -> Response:
    scope = manager_scope(principal)
    shown = narrowed_scope(principal, scope, facility_id)
    rows, total = bookings.approval_queue(
        session,
        facility_ids=shown,
        instrument_id=instrument_id,
        offset=(page - 1) * PAGE_SIZE,
        limit=PAGE_SIZE,
    )
    choices = catalogue.instruments_at(session, facility_ids=shown) if shown is not None else []
    return render(
        request,
        "manage/approvals.html",
        {
            "rows": rows,
            "pager": Pager(page, total),
            "page_link": lambda n: page_link(request, n),
            "facilities": facilities_in(session, scope) if scope is None or len(scope) > 1 else [],
            "facility_id": facility_id,
            "instruments": choices,
            "instrument_id": instrument_id,
            "errors": errors or {},
            "values": values or {},
            "selected": selected or set(),
            "blocked": blocked or [],
            "done": request.query_params.get("done"),
            "done_count": request.query_params.get("count"),
            "status_labels": STATUS_LABELS,
            "operated_labels": OPERATED_BY_LABELS,
            "qualification_labels": QUALIFICATION_LABELS,
            "blocked_labels": BLOCKED_LABELS,
            "override_labels": OVERRIDE_LABELS,
            "facility_zones": {f.id: f.timezone for f in facilities_in(session, shown)}
            if blocked
            else {},
        },
        status_code=status_code,
    )


@router.get("/manage/approvals")
def approval_queue(
    request: Request,
    principal: PagePrincipal,
    session: DbSession,
    facility_id: QueryId = None,
    instrument_id: QueryId = None,
    page: Page = 1,
) -> Response:
    return render_queue(
        request,
        session,
        principal,
        facility_id=facility_id,
        instrument_id=instrument_id,
        page=page,
    )


@router.post("/manage/approvals")
def decide(
    request: Request,
    _csrf: CsrfChecked,
    principal: PagePrincipal,
    session: DbSession,
    action: Annotated[str, Form(max_length=10)] = "",
    booking_id: Annotated[list[int], Form(max_length=200)] = [],  # noqa: B006 (FastAPI copies)
    reason: Annotated[str, Form(max_length=1000)] = "",
    row: Annotated[int | None, Form(ge=0, le=MAX_ID)] = None,  # the booking id of a row
    facility_id: FormId = None,
    instrument_id: FormId = None,
) -> Response:
    """Approve or reject the chosen requests, all of them or none (one transaction)."""
    manager_scope(principal)
    if any(not 1 <= i <= MAX_ID for i in booking_id):
        raise RuleViolation([Problem("not_found", N_("No such request."), "booking_id")])
    ids = list(dict.fromkeys(booking_id))

    def again(status: int, selected: set[int] | None = None, **context: Any) -> Response:
        return render_queue(
            request,
            session,
            principal,
            facility_id=facility_id,
            instrument_id=instrument_id,
            status_code=status,
            values={"reason": reason, "action": action},
            selected=set(ids) if selected is None else selected,
            **context,
        )

    if action not in ("approve", "reject"):
        return again(422, errors={"": [N_("Choose to approve or to reject.")]})
    if not ids:
        return again(422, errors={"": [N_("Choose at least one request.")]})
    outcome = BookingStatus.CONFIRMED if action == "approve" else BookingStatus.REJECTED
    check = bookings.check_decisions(session, actor=principal, booking_ids=ids, outcome=outcome)
    if action == "reject" and not reason.strip():
        field = f"reason-{row}" if row is not None else "reason"
        return again(422, errors={field: N_("Say why the requests are rejected.")})
    if check.blocked:
        # Still selected: those that can be decided, so the manager sends them again at once.
        return again(409, selected={b.id or 0 for b in check.to_decide}, blocked=check.blocked)
    try:
        for booking in check.to_decide:
            if action == "approve":
                booking_service.approve(session, actor=principal, booking_id=booking.id or 0)
            else:
                booking_service.reject(
                    session, actor=principal, booking_id=booking.id or 0, reason=reason.strip()
                )
    except DomainError as exc:
        # Someone decided one of them meanwhile: undo the others too, and show the queue anew.
        session.rollback()
        return again(exc.status_code, errors={"": [exc.detail]})
    query = {"done": action, "count": str(len(check.to_decide) + len(check.already_done))}
    if facility_id is not None:
        query["facility_id"] = str(facility_id)
    if instrument_id is not None:
        query["instrument_id"] = str(instrument_id)
    return RedirectResponse(f"/manage/approvals?{urlencode(query)}", status_code=303)


# --- Facility calendar ---------------------------------------------------------------------

QUARTERS_PER_HOUR = 4


@dataclass(frozen=True)
class Block:
    """A booking or outage placed on a day lane: quarter-hour columns, 1-based, end exclusive."""

    first: int
    last: int
    label: str
    kind: str  # a booking status, or "outage"
    row: bookings.BookingRow | None = None


def _column(moment: datetime, day_start: datetime, first_hour: int) -> int:
    quarters = (moment - day_start).total_seconds() / 900
    return int(quarters) - first_hour * QUARTERS_PER_HOUR + 1


def day_lanes(
    lanes: list[Instrument],
    rows: list[bookings.BookingRow],
    outages: list[Any],
    day_start: datetime,
    day_end: datetime,
) -> tuple[int, int, dict[int, list[Block]]]:
    """Hours shown (at least 08–18, widened to every booking) and each instrument's blocks."""
    zone = day_start.tzinfo
    first_hour, last_hour = 8, 18
    for row in rows:
        start = max(row.booking.start_at, day_start).astimezone(zone)
        end = min(row.booking.end_at, day_end).astimezone(zone)
        first_hour = min(first_hour, start.hour)
        last_hour = max(
            last_hour, 24 if end.date() > start.date() else math.ceil(end.hour + end.minute / 60)
        )
    columns = (last_hour - first_hour) * QUARTERS_PER_HOUR
    by_instrument: dict[int, list[Block]] = {i.id or 0: [] for i in lanes}

    def place(start: datetime, end: datetime) -> tuple[int, int]:
        first = max(1, _column(max(start, day_start), day_start, first_hour))
        last = min(columns + 1, _column(min(end, day_end), day_start, first_hour))
        return first, max(last, first + 1)

    for outage in outages:
        first, last = place(outage.start_at, outage.end_at)
        targets = [outage.instrument_id] if outage.instrument_id else list(by_instrument)
        for instrument_id in targets:
            if instrument_id in by_instrument:
                by_instrument[instrument_id].append(Block(first, last, str(outage.kind), "outage"))
    for row in rows:
        if row.booking.instrument_id in by_instrument:
            first, last = place(row.booking.start_at, row.booking.end_at)
            by_instrument[row.booking.instrument_id].append(
                Block(first, last, row.user_name, str(row.booking.status), row)
            )
    return first_hour, last_hour, by_instrument


@router.get("/manage/facilities/{facility_id}/calendar")
def facility_calendar(
    request: Request,
    facility_id: ObjectId,
    principal: PagePrincipal,
    session: DbSession,
    day: date | None = None,
) -> Response:
    facility = instruments.managed_facility(
        session, actor=principal, facility_id=facility_id, action="see the facility calendar"
    )
    shown_day = checked_day(day, "day") or today_in(facility.timezone)
    day_start, day_end = local_day(shown_day, facility.timezone)
    lanes = catalogue.instruments_at(session, facility_ids=[facility_id])
    rows, _ = bookings.facility_bookings(
        session,
        facility_ids=[facility_id],
        start=day_start,
        end=day_end,
        statuses=CALENDAR_STATUSES,
        limit=1000,
    )
    outages, _ = catalogue.list_outages(
        session, facility_ids=[facility_id], start=day_start, end=day_end
    )
    first_hour, last_hour, blocks = day_lanes(lanes, rows, outages, day_start, day_end)
    return render(
        request,
        "manage/calendar.html",
        {
            "facility": facility,
            "day": shown_day,
            "previous_day": shown_day - timedelta(days=1),
            "next_day": shown_day + timedelta(days=1),
            "lanes": lanes,
            "blocks": blocks,
            "hours": list(range(first_hour, last_hour)),
            "columns": (last_hour - first_hour) * QUARTERS_PER_HOUR,
            "status_labels": STATUS_LABELS,
            "out_labels": OUT_OF_SERVICE_LABELS,
        },
    )


def _calendar_time(text: str, zone: ZoneInfo, field: str) -> datetime:
    """FullCalendar's window bounds: ISO 8601, a date alone or a naive time meaning local."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise RuleViolation(
            [Problem("invalid_time", gettext(N_("Give the time as ISO 8601.")), field)]
        ) from None
    if not within_calendar(moment):
        raise RuleViolation([Problem("out_of_range", gettext(OUT_OF_RANGE_DAY), field)])
    return moment if moment.tzinfo else moment.replace(tzinfo=zone)


@router.get("/manage/facilities/{facility_id}/calendar.json")
def facility_calendar_events(
    request: Request,
    facility_id: ObjectId,
    principal: PagePrincipal,
    session: DbSession,
    start: Annotated[str, Query(max_length=40)],
    end: Annotated[str, Query(max_length=40)],
    instrument_id: QueryId = None,
) -> Response:
    """The facility's bookings (who, what for, status) and outages for FullCalendar."""
    facility = instruments.managed_facility(
        session, actor=principal, facility_id=facility_id, action="see the facility calendar"
    )
    zone = ZoneInfo(facility.timezone)
    window_start = _calendar_time(start, zone, "start")
    window_end = _calendar_time(end, zone, "end")
    if window_end <= window_start or window_end - window_start > timedelta(days=CALENDAR_MAX_DAYS):
        raise RuleViolation(
            [Problem("bad_window", gettext(N_("Ask for 1 to 62 days at a time.")), "end")]
        )
    if instrument_id is not None:
        instrument = instruments.get_instrument(session, instrument_id)
        if instrument.facility_id != facility_id:
            raise NotFound("Instrument")
    rows, _ = bookings.facility_bookings(
        session,
        facility_ids=[facility_id],
        start=window_start,
        end=window_end,
        statuses=CALENDAR_STATUSES,
        instrument_id=instrument_id,
        limit=2000,
    )
    outages, _ = catalogue.list_outages(
        session,
        facility_ids=[facility_id],
        instrument_id=instrument_id,
        start=window_start,
        end=window_end,
    )
    events: list[dict[str, Any]] = [
        {
            "id": f"booking-{row.booking.id}",
            # The status is named in words too: its colour alone tells nothing to some readers.
            "title": f"{row.instrument_name} · {row.user_name} · "
            f"{gettext(STATUS_LABELS[row.booking.status])}",
            "start": row.booking.start_at.isoformat(),
            "end": row.booking.end_at.isoformat(),
            "className": f"booking booking-{row.booking.status}",
            "extendedProps": {
                "booking_id": row.booking.id,
                "instrument_id": row.booking.instrument_id,
                "instrument": row.instrument_name,
                "user": row.user_name,
                "email": row.user_email,
                "organisation": row.organisation_name,
                "status": str(row.booking.status),
                "status_label": gettext(STATUS_LABELS[row.booking.status]),
                "operated_by": str(row.booking.operated_by),
                "purpose": row.booking.purpose,
            },
        }
        for row in rows
    ]
    events += [
        {
            "id": f"outage-{outage.id}",
            "start": outage.start_at.isoformat(),
            "end": outage.end_at.isoformat(),
            "title": gettext(OUT_OF_SERVICE_LABELS.get(str(outage.kind), N_("Outage"))),
            "display": "background",
            "className": "outage",
            "extendedProps": {
                "kind": str(outage.kind),
                "kind_label": gettext(OUT_OF_SERVICE_LABELS.get(str(outage.kind), N_("Outage"))),
                "instrument_id": outage.instrument_id,
            },
        }
        for outage in outages
    ]
    return JSONResponse(events, headers={"Cache-Control": "private, no-cache"})


# --- Usage records -------------------------------------------------------------------------

LOCAL_INPUT = "%Y-%m-%dT%H:%M"


def local_input(moment: datetime | None, zone: str) -> str:
    """A UTC time as a datetime-local field shows it, in the facility's zone."""
    return moment.astimezone(ZoneInfo(zone)).strftime(LOCAL_INPUT) if moment else ""


def parse_local(text: str, zone: str, field: str, problems: list[Problem]) -> datetime | None:
    """A datetime-local field's value, in the facility's zone; a problem if it is not one."""
    if not text.strip():
        return None
    try:
        return datetime.strptime(text.strip(), LOCAL_INPUT).replace(tzinfo=ZoneInfo(zone))
    except ValueError:
        problems.append(Problem("invalid_time", N_("Enter a date and time."), field))
        return None


def render_usage(
    request: Request,
    session: DbSession,
    principal: Principal,
    *,
    instrument_id: QueryId = None,
    facility_id: QueryId = None,
    from_date: date | None = None,
    to_date: date | None = None,
    page: int = 1,
    status_code: int = 200,
    errors: dict[str, Any] | None = None,
    values: dict[str, Any] | None = None,
    error_record_id: int | None = None,
    zone: str = "Asia/Shanghai",
) -> Response:
    scope = manager_scope(principal)
    shown = narrowed_scope(principal, scope, facility_id)
    single_zone = today_at(facilities_in(session, shown), zone).zone
    zone = single_zone or zone  # the facilities' own zone when they share one
    start = local_day(from_date, zone)[0] if from_date else None
    end = local_day(to_date, zone)[1] if to_date else None
    rows, total = bookings.facility_usage(
        session,
        facility_ids=shown,
        instrument_id=instrument_id,
        start=start,
        end=end,
        offset=(page - 1) * PAGE_SIZE,
        limit=PAGE_SIZE,
    )
    choices = catalogue.instruments_at(session, facility_ids=shown)[:FACILITY_LIMIT]
    return render(
        request,
        "manage/usage.html",
        {
            "rows": rows,
            "pager": Pager(page, total),
            "page_link": lambda n: page_link(request, n),
            "instruments": choices,
            "instrument_id": instrument_id,
            "facilities": facilities_in(session, scope) if scope is None or len(scope) > 1 else [],
            "facility_id": facility_id,
            "from_date": from_date,
            "to_date": to_date,
            "zone": zone,
            "single_zone": single_zone,
            "errors": errors or {},
            "values": values or {},
            "error_record_id": error_record_id,
            "local_input": local_input,
            "instrument_options": [(i.id, f"{i.name} ({i.asset_code})") for i in choices],
            "kind_options": USAGE_KINDS,
            "kind_labels": dict(USAGE_KINDS),
            "form_key": new_form_key(),
            "saved": request.query_params.get("saved"),
        },
        status_code=status_code,
    )


@router.get("/manage/usage")
def usage_records(
    request: Request,
    principal: PagePrincipal,
    session: DbSession,
    settings: AppSettings,
    instrument_id: QueryId = None,
    facility_id: QueryId = None,
    from_date: Annotated[date | None, Query(alias="from")] = None,
    to_date: Annotated[date | None, Query(alias="to")] = None,
    page: Page = 1,
) -> Response:
    return render_usage(
        request,
        session,
        principal,
        instrument_id=instrument_id,
        facility_id=facility_id,
        from_date=checked_day(from_date, "from"),
        to_date=checked_day(to_date, "to"),
        page=page,
        zone=settings.timezone,
    )


@router.post("/manage/usage/{usage_id}/correct")
def correct_usage(
    request: Request,
    usage_id: ObjectId,
    _csrf: CsrfChecked,
    principal: PagePrincipal,
    session: DbSession,
    settings: AppSettings,
    started_at: Annotated[str, Form(max_length=40)] = "",
    ended_at: Annotated[str, Form(max_length=40)] = "",
    samples: Annotated[str, Form(max_length=10)] = "",
    note: Annotated[str, Form(max_length=1000)] = "",
) -> Response:
    """Correct a usage record's times or samples; the reason is required and audited."""
    zone = _usage_zone(session, principal, usage_id)
    problems: list[Problem] = []
    data: dict[str, Any] = {
        "started_at": parse_local(started_at, zone, "started_at", problems),
        "ended_at": parse_local(ended_at, zone, "ended_at", problems),
        "note": note.strip(),
    }
    if samples.strip():
        data["samples"] = parse_samples(samples, "samples", problems)
    if not data["note"]:
        problems.append(Problem("required", N_("Say why the record is corrected."), "note"))
    values = {"started_at": started_at, "ended_at": ended_at, "samples": samples, "note": note}
    try:
        if problems:
            raise RuleViolation(problems)
        correction = UsageRecordCorrection.model_validate(data)
        booking_service.correct_usage(session, actor=principal, usage_id=usage_id, data=correction)
    except ValidationError as exc:
        return render_usage(
            request,
            session,
            principal,
            status_code=422,
            errors=_validation_errors(exc),
            values=values,
            error_record_id=usage_id,
            zone=settings.timezone,
        )
    except DomainError as exc:
        if exc.status_code in (403, 404):
            raise
        session.rollback()
        return render_usage(
            request,
            session,
            principal,
            status_code=exc.status_code,
            errors=errors_by_field(exc),
            values=values,
            error_record_id=usage_id,
            zone=settings.timezone,
        )
    return RedirectResponse(f"/manage/usage?saved={usage_id}", status_code=303)


def _usage_zone(session: DbSession, principal: Principal, usage_id: int) -> str:
    """The zone of the facility whose record this is; 404 unless the caller manages it."""
    rows, _ = bookings.facility_usage(
        session, facility_ids=manager_scope(principal), record_id=usage_id, limit=1
    )
    if not rows:
        raise NotFound("Usage record")
    return rows[0].zone


INVALID_VALUE = N_("This value is not accepted; correct it and send the form again.")


def _validation_errors(exc: ValidationError) -> dict[str, Any]:
    """The fields a schema refused, each with a message the page translates.

    Pydantic's own texts are English sentences with values in them; they are not shown.
    """
    errors: dict[str, Any] = {}
    for error in exc.errors():
        field = str(error["loc"][0]) if error.get("loc") else ""
        errors.setdefault(field, INVALID_VALUE)
    return errors


@router.post("/manage/usage/walk-in")
def record_walk_in(
    request: Request,
    _csrf: CsrfChecked,
    principal: PagePrincipal,
    session: DbSession,
    settings: AppSettings,
    instrument_id: FormId = None,
    email: Annotated[str, Form(max_length=254)] = "",
    started_at: Annotated[str, Form(max_length=40)] = "",
    ended_at: Annotated[str, Form(max_length=40)] = "",
    samples: Annotated[str, Form(max_length=10)] = "",
    kind: Annotated[str, Form(max_length=20)] = "use",
    note: Annotated[str, Form(max_length=1000)] = "",
    form_key: Annotated[str, Form(max_length=64)] = "",
) -> Response:
    """Record a use without a booking; a repeated submission of one form records it once."""
    manager_scope(principal)
    values = {
        "instrument_id": instrument_id,
        "email": email,
        "started_at": started_at,
        "ended_at": ended_at,
        "samples": samples,
        "kind": kind,
        "note": note,
    }
    problems: list[Problem] = []
    zone = settings.timezone
    if instrument_id is None:
        problems.append(Problem("required", N_("Choose the instrument."), "instrument_id"))
    else:
        instrument, facility = catalogue.instrument_with_facility(session, instrument_id)
        if not principal.manages_facility(instrument.facility_id):
            raise NotFound("Instrument")
        zone = facility.timezone
    user_id = bookings.active_user_id_by_email(session, email) if email.strip() else None
    if user_id is None:
        problems.append(Problem("unknown_user", N_("No user has this e-mail address."), "email"))
    start = parse_local(started_at, zone, "started_at", problems)
    end = parse_local(ended_at, zone, "ended_at", problems)
    if start is None and not any(p.field == "started_at" for p in problems):
        problems.append(Problem("required", N_("Enter a date and time."), "started_at"))
    if end is None and not any(p.field == "ended_at" for p in problems):
        problems.append(Problem("required", N_("Enter a date and time."), "ended_at"))
    count = parse_samples(samples, "samples", problems)
    if kind not in dict(USAGE_KINDS):
        problems.append(Problem("invalid_kind", N_("Choose a kind of use."), "kind"))
    try:
        if problems:
            raise RuleViolation(problems)
        data = UsageRecordCreate(
            instrument_id=instrument_id or 0,
            user_id=user_id or 0,
            started_at=start,
            ended_at=end,
            samples=count,
            kind=kind,
            note=note.strip(),
        )
        claimed, earlier = claim_form(
            session,
            user_id=principal.user_id,
            form_key=form_key,
            action=form_action("walk-in", values),
            reused=FORM_REUSED,
        )
        if earlier:
            return RedirectResponse(earlier, status_code=303)
        booking_service.record_walk_in(session, actor=principal, data=data)
        answered(session, claimed, "/manage/usage?saved=walk-in")
    except ValidationError as exc:
        return render_usage(
            request,
            session,
            principal,
            status_code=422,
            errors=_validation_errors(exc),
            values=values,
            zone=settings.timezone,
        )
    except DomainError as exc:
        if exc.status_code in (403, 404):
            raise
        session.rollback()
        return render_usage(
            request,
            session,
            principal,
            status_code=exc.status_code,
            errors=errors_by_field(exc),
            values=values,
            zone=settings.timezone,
        )
    return RedirectResponse("/manage/usage?saved=walk-in", status_code=303)


FORM_REUSED = N_("This form was already used; reload the page to record another use.")
