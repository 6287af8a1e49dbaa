"""Researcher pages: the instrument catalogue, an instrument's page with its availability
calendar, and the booking request form.

Times typed into forms are wall-clock times of the facility's zone (the zone is named next to
them); times from the calendar arrive as ISO 8601 with an offset. A booking form carries an
idempotency key made when it is shown, so a double-clicked submit makes one booking.
"""

from __future__ import annotations

import hashlib
import json
import math
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, TypeVar
from urllib.parse import urlencode
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from pydantic import ValidationError
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from booking import queries as bookings
from booking import service as booking_service
from booking.models import Booking, IdempotencyRecord
from booking.rules import OperatedBy
from booking.schemas import BookingCreate
from booking.service import BookingPolicy
from core.accounts.models import Organisation
from core.auth.principal import Principal
from core.clock import now
from core.errors import DomainError, NotFound
from core.money import format_yuan
from core.places import CLUSTER_NAMES, DISTRICTS, Cluster
from instruments import queries as catalogue
from instruments import service as instruments
from instruments.models import Facility, Instrument
from instruments.queries import InstrumentSearch, SearchSort
from instruments.rules import (
    CATEGORY_NAMES,
    Category,
    CustomerClass,
    InstrumentStatus,
    OperationMode,
    customer_class,
)
from web import i18n
from web.deps import AppSettings, DbSession
from web.errors import error_body
from web.messages import N_
from web.pages.deps import CsrfChecked, LoginRequired, OptionalPagePrincipal, PagePrincipal
from web.retry import commit_with_retries
from web.routing import TransactionalRoute
from web.templating import locale_for, render

router = APIRouter(route_class=TransactionalRoute, include_in_schema=False)

PAGE_SIZE = 20
BOOKING_FORM_KEY_PREFIX = "page:book:"
CALENDAR_DAYS_MAX = 62
LOCAL_INPUT_FORMAT = "%Y-%m-%dT%H:%M"
MIN_YEAR, MAX_YEAR = 2000, 2999

# A message id and its values, translated where it is shown: _(message, **values).
Message = tuple[str, dict[str, Any]]
Errors = dict[str, list[Message]]

CUSTOMER_CLASS_NAMES = {
    CustomerClass.INTERNAL: N_("internal user (the facility's own organisation)"),
    CustomerClass.EXTERNAL_ACADEMIC: N_("external academic user"),
    CustomerClass.ENTERPRISE: N_("enterprise user"),
}
OPERATION_MODE_NAMES = {
    OperationMode.SELF_OPERATED: N_("self-operated"),
    OperationMode.STAFF_OPERATED: N_("operated by staff"),
    OperationMode.BOTH: N_("self-operated or operated by staff"),
}
STATUS_NAMES = {
    InstrumentStatus.ACTIVE: N_("in service"),
    InstrumentStatus.MAINTENANCE: N_("under maintenance"),
    InstrumentStatus.RETIRED: N_("retired"),
}
SORT_NAMES = {
    SearchSort.RELEVANCE: N_("Relevance"),
    SearchSort.NAME: N_("Name"),
    SearchSort.PRICE: N_("Price, lowest first"),
    SearchSort.PRICE_DESC: N_("Price, highest first"),
    SearchSort.PURCHASE_VALUE_DESC: N_("Purchase value, highest first"),
    SearchSort.NEWEST: N_("Newest"),
}
# Domain messages these pages show through the catalogue.
SHOWN_DOMAIN_MESSAGES = (
    N_("Search for at least 2 characters."),
    N_("The lowest price is above the highest."),
    N_("Instrument not found."),
)
WEEKDAY_NAMES = (
    N_("Monday"),
    N_("Tuesday"),
    N_("Wednesday"),
    N_("Thursday"),
    N_("Friday"),
    N_("Saturday"),
    N_("Sunday"),
)


def _catalogue_reader(request: Request, principal: Principal | None) -> None:
    """The catalogue is public unless the platform turned that off."""
    if principal is None and not request.app.state.settings.catalogue_public:
        query = f"?{request.url.query}" if request.url.query else ""
        raise LoginRequired(request.url.path + query)


def _zone(facility: Facility) -> ZoneInfo:
    return ZoneInfo(facility.timezone)


def _local_input(moment: datetime | None, zone: ZoneInfo) -> str:
    return moment.astimezone(zone).strftime(LOCAL_INPUT_FORMAT) if moment else ""


def parse_time(value: str, zone: ZoneInfo) -> datetime:
    """A time from a page: ISO 8601 with an offset (the calendar), or a wall-clock time of
    ``zone`` as a datetime-local field sends it. Raises ValueError."""
    text = value.strip()
    if " " in text and "T" in text:
        text = text.replace(" ", "+")  # an unencoded "+" of an offset arrives as a space
    if not text:
        raise ValueError("empty")
    moment = datetime.fromisoformat(text)
    if not MIN_YEAR <= moment.year <= MAX_YEAR:  # nothing to book there; date arithmetic overflows
        raise ValueError("out of range")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone)
    return moment.astimezone(UTC)


E = TypeVar("E", bound=StrEnum)


def _choice(kind: type[E], value: str, field: str, errors: Errors) -> E | None:
    if not value:
        return None
    try:
        return kind(value)
    except ValueError:
        errors[field] = [(N_("Choose one of the offered values."), {})]
        return None


def _positive_int(value: str, field: str, errors: Errors, *, upper: int) -> int | None:
    if not value.strip():
        return None
    try:
        number = int(value)
    except ValueError:
        number = 0
    if not 1 <= number <= upper:
        errors[field] = [(N_("Enter a whole number from 1 to %(max)s."), {"max": upper})]
        return None
    return number


# --- The catalogue ---------------------------------------------------------------------------


@dataclass
class FreeFilter:
    start: datetime
    end: datetime
    minutes: int


def _free_filter(
    free_from: str, free_to: str, free_minutes: str, zone: ZoneInfo, errors: Errors
) -> FreeFilter | None:
    if not (free_from.strip() or free_to.strip()):
        return None
    times: dict[str, datetime] = {}
    for field, value in (("free_from", free_from), ("free_to", free_to)):
        try:
            times[field] = parse_time(value, zone)
        except ValueError:
            errors[field] = [(N_("Enter a date and time."), {})]
    minutes = _positive_int(free_minutes or "60", "free_minutes", errors, upper=24 * 60 * 31)
    if errors or minutes is None:
        return None
    start, end = times["free_from"], times["free_to"]
    if end <= start:
        errors["free_to"] = [(N_("The end must be after the start."), {})]
    elif end - start > timedelta(days=bookings.MAX_WINDOW_DAYS):
        errors["free_to"] = [
            (N_("Ask for at most %(days)s days."), {"days": bookings.MAX_WINDOW_DAYS})
        ]
    return None if errors else FreeFilter(start, end, minutes)


@router.get("/instruments")
def catalogue_page(
    request: Request,
    principal: OptionalPagePrincipal,
    session: DbSession,
    settings: AppSettings,
    q: str = "",
    category: str = "",
    facility_id: str = "",
    cluster: str = "",
    district: str = "",
    large: str = "",
    operation_mode: str = "",
    status: str = "",
    sort: str = "",
    free_from: str = "",
    free_to: str = "",
    free_minutes: str = "",
    page: str = "1",
) -> Response:
    _catalogue_reader(request, principal)
    values = {
        "q": q[:100],
        "category": category,
        "facility_id": facility_id,
        "cluster": cluster,
        "district": district,
        "large": large,
        "operation_mode": operation_mode,
        "status": status,
        "sort": sort,
        "free_from": free_from,
        "free_to": free_to,
        "free_minutes": free_minutes,
    }
    errors: Errors = {}
    page_number = _positive_int(page, "page", errors, upper=10_000) or 1
    chosen_facility = _positive_int(facility_id, "facility_id", errors, upper=2**31 - 1)
    if district and district not in DISTRICTS:
        errors["district"] = [(N_("Choose one of the offered values."), {})]
    chosen_status = _choice(InstrumentStatus, status, "status", errors)
    if chosen_status is InstrumentStatus.RETIRED:
        errors["status"] = [(N_("Choose one of the offered values."), {})]
    search = InstrumentSearch(
        q=values["q"].strip() or None,
        category=_choice(Category, category, "category", errors),
        cluster=_choice(Cluster, cluster, "cluster", errors),
        district=district or None,
        facility_id=chosen_facility,
        operation_mode=_choice(OperationMode, operation_mode, "operation_mode", errors),
        is_large=True if large else None,
        status=chosen_status,
        sort=_choice(SearchSort, sort, "sort", errors) or SearchSort.RELEVANCE,
        price_class=_outside_class(session, principal),
    )
    free = _free_filter(free_from, free_to, free_minutes, ZoneInfo(settings.timezone), errors)
    errors.update({p.field or "": [(p.message, {})] for p in search.problems()})

    rows: list[dict[str, Any]] = []
    free_by_id: dict[int, list[tuple[datetime, datetime]]] = {}
    total = 0
    offset = (page_number - 1) * PAGE_SIZE
    if not errors:
        if free is not None:
            found, total = bookings.free_instruments(
                session,
                search,
                start=free.start,
                end=free.end,
                min_minutes=free.minutes,
                offset=offset,
                limit=PAGE_SIZE,
            )
            rows = [row for row, _ in found]
            free_by_id = {row["id"]: intervals for row, intervals in found}
        else:
            rows, total = catalogue.search_instruments(
                session, search, offset=offset, limit=PAGE_SIZE
            )
    prices = (
        catalogue.customer_prices(
            session,
            instrument_ids=[r["id"] for r in rows],
            user_organisation_id=principal.user.organisation_id,
        )
        if principal is not None
        else {}
    )
    pages = max(1, math.ceil(total / PAGE_SIZE))
    kept = {k: v for k, v in values.items() if v}
    context = {
        "values": values,
        "errors": errors,
        "rows": rows,
        "total": total,
        "prices": {i: (c, format_yuan(p)) for i, (c, p) in prices.items()},
        "free_by_id": free_by_id,
        "page": page_number,
        "pages": pages,
        "page_url": lambda n: "/instruments?" + urlencode({**kept, "page": n}),
        "zone": settings.timezone,
        "names": _names(request),
        "customer_class_names": CUSTOMER_CLASS_NAMES,
    }
    status_code = 422 if errors else 200
    if request.headers.get("hx-request") == "true":
        return render(request, "catalogue/_results.html", context, status_code=status_code)
    facilities, _ = catalogue.list_facilities(session, limit=500)
    context["facilities"] = facilities
    return render(request, "catalogue/search.html", context, status_code=status_code)


def _outside_class(session: Session, principal: Principal | None) -> CustomerClass:
    """The price list a user pays at other organisations' facilities: what a sort by price
    follows (at its own organisation's facilities the internal price applies)."""
    if principal is None:
        return CustomerClass.INTERNAL
    organisation_id = principal.user.organisation_id
    return customer_class(
        user_organisation_id=organisation_id,
        user_organisation_type=catalogue.organisation_type_of(session, organisation_id),
        facility_organisation_id=-1,
    )


def _names(request: Request) -> dict[str, Any]:
    """Names of categories and clusters in the page's language (they are data, not messages)."""
    chinese = locale_for(request) == "zh-CN"
    return {
        "categories": {c: zh if chinese else en for c, (zh, en) in CATEGORY_NAMES.items()},
        "clusters": {c: zh if chinese else en for c, (zh, en) in CLUSTER_NAMES.items()},
        "districts": DISTRICTS,
        "operation_modes": OPERATION_MODE_NAMES,
        "statuses": STATUS_NAMES,
        "sorts": SORT_NAMES,
        "weekdays": WEEKDAY_NAMES,
    }


# --- An instrument's page --------------------------------------------------------------------


def _opening_week(session: Session, facility: Facility) -> list[tuple[int, list[str]]]:
    spans = catalogue.opening_spans_by_facility(session, [facility.id or 0]).get(
        facility.id or 0, []
    )
    week: dict[int, list[str]] = {}
    for span in spans:
        week.setdefault(span.weekday, []).append(
            f"{span.start_minute // 60:02d}:{span.start_minute % 60:02d}–"
            f"{span.end_minute // 60:02d}:{span.end_minute % 60:02d}"
        )
    return sorted(week.items())


def _calendar_hours(week: list[tuple[int, list[str]]]) -> tuple[str, str]:
    """The part of the day the calendar shows: from the earliest opening to the latest close."""
    starts = [text.split("–")[0] for _, spans in week for text in spans]
    ends = [text.split("–")[1] for _, spans in week for text in spans]
    if not starts:
        return "00:00", "24:00"
    return min(starts), max(ends)


def _qualification_state(
    session: Session, principal: Principal | None, instrument: Instrument
) -> dict[str, Any]:
    if not instrument.requires_qualification:
        return {"required": False}
    if principal is None:
        return {"required": True, "known": False}
    held = instruments.valid_qualification(
        session, user_id=principal.user_id, instrument_id=instrument.id or 0
    )
    return {
        "required": True,
        "known": True,
        "valid": held is not None,
        "expires_at": held.expires_at if held else None,
    }


@router.get("/instruments/{instrument_id}")
def instrument_page(
    instrument_id: int, request: Request, principal: OptionalPagePrincipal, session: DbSession
) -> Response:
    _catalogue_reader(request, principal)
    instrument, facility = catalogue.listed_instrument(session, instrument_id)
    organisation = session.get(Organisation, facility.organisation_id)
    quote = (
        catalogue.price_quote(
            session,
            instrument=instrument,
            facility=facility,
            user_organisation_id=principal.user.organisation_id,
        )
        if principal is not None
        else None
    )
    services, _ = catalogue.list_testing_services(session, instrument_id=instrument_id, limit=100)
    week = _opening_week(session, facility)
    day_start, day_end = _calendar_hours(week)
    zone = _zone(facility)
    return render(
        request,
        "catalogue/instrument.html",
        {
            "instrument": instrument,
            "facility": facility,
            "organisation": organisation,
            "quote": quote,
            "yuan": format_yuan,
            "qualification": _qualification_state(session, principal, instrument),
            "services": [service for service, _ in services],
            "week": week,
            "day_start": day_start,
            "day_end": day_end,
            "zone": facility.timezone,
            "names": _names(request),
            "customer_class_names": CUSTOMER_CLASS_NAMES,
            "calendar_locale": "zh-cn" if locale_for(request) == "zh-CN" else "en",
            "today_input": now().astimezone(zone).strftime("%Y-%m-%d"),
            "bookable": instrument.status == InstrumentStatus.ACTIVE,
        },
    )


def _json_error(request: Request, status: int, detail: str, code: str, field: str) -> Response:
    errors = [{"field": field, "code": code, "message": detail}]
    return JSONResponse(error_body(request, detail, code, errors), status_code=status)


@router.get("/instruments/{instrument_id}/calendar.json")
def calendar_feed(
    instrument_id: int,
    request: Request,
    principal: OptionalPagePrincipal,
    session: DbSession,
    start: str = "",
    end: str = "",
    time_zone: Annotated[str, Query(alias="timeZone", max_length=64)] = "",
) -> Response:
    """Free time (background events) and busy time of a window; the caller's own bookings are
    labelled and linked, everyone else's are anonymous busy blocks."""
    if principal is None and not request.app.state.settings.catalogue_public:
        return _json_error(request, 404, "Instrument not found.", "not_found", "instrument_id")
    try:
        instrument, facility = catalogue.listed_instrument(session, instrument_id)
    except NotFound as exc:
        return _json_error(request, 404, exc.detail, exc.code, "instrument_id")
    zone = _zone(facility)
    if time_zone:
        try:
            zone = ZoneInfo(time_zone)
        except (ZoneInfoNotFoundError, ValueError):
            return _json_error(request, 422, "Unknown time zone.", "unknown_zone", "timeZone")
    window: dict[str, datetime] = {}
    for field, value in (("start", start), ("end", end)):
        try:
            window[field] = parse_time(value, zone)
        except ValueError:
            return _json_error(
                request, 422, "Give start and end as ISO 8601 times.", "invalid_time", field
            )
    try:
        free = bookings.requestable_free_time(
            session,
            instrument=instrument,
            zone=_zone(facility),
            start=window["start"],
            end=window["end"],
        )
        entries = bookings.calendar_entries(
            session,
            instrument_id=instrument_id,
            viewer_id=principal.user_id if principal else None,
            start=window["start"],
            end=window["end"],
        )
    except DomainError as exc:
        problem = exc.problems[0] if exc.problems else None
        return _json_error(
            request,
            exc.status_code,
            exc.detail,
            problem.code if problem else exc.code,
            (problem.field if problem else None) or "end",
        )
    i18n.current_locale.set(locale_for(request))
    events: list[dict[str, Any]] = [
        {
            "start": s.isoformat(),
            "end": e.isoformat(),
            "display": "background",
            "groupId": "free",
            "classNames": ["slot-free"],
        }
        for s, e in free
    ]
    for entry in entries:
        if entry.own_booking_id is None:
            events.append(
                {
                    "start": entry.start.isoformat(),
                    "end": entry.end.isoformat(),
                    "title": i18n.gettext(N_("Booked")),
                    "classNames": ["slot-busy"],
                }
            )
        else:
            events.append(
                {
                    "id": str(entry.own_booking_id),
                    "start": entry.start.isoformat(),
                    "end": entry.end.isoformat(),
                    "title": i18n.gettext(N_("Your booking"))
                    + f" ({i18n.gettext(str(entry.status))})",
                    "url": f"/my/bookings/{entry.own_booking_id}",
                    "classNames": ["slot-mine", f"status-{entry.status}"],
                }
            )
    return JSONResponse(events, headers={"Cache-Control": "no-store"})


BOOKING_STATUS_NAMES = [
    N_("offered"),
    N_("pending"),
    N_("confirmed"),
    N_("in_use"),
    N_("completed"),
]


# --- Booking: the confirmation step and the request --------------------------------------------


def _operated_by_choices(instrument: Instrument) -> list[OperatedBy]:
    if instrument.operation_mode == OperationMode.SELF_OPERATED:
        return [OperatedBy.SELF]
    if instrument.operation_mode == OperationMode.STAFF_OPERATED:
        return [OperatedBy.STAFF]
    return [OperatedBy.SELF, OperatedBy.STAFF]


def _default_operated_by(instrument: Instrument, qualification: dict[str, Any]) -> OperatedBy:
    choices = _operated_by_choices(instrument)
    if len(choices) == 1:
        return choices[0]
    if qualification.get("required") and not qualification.get("valid"):
        return OperatedBy.STAFF
    return OperatedBy.SELF


def _booking_form(
    request: Request,
    session: Session,
    principal: Principal,
    instrument: Instrument,
    facility: Facility,
    *,
    values: dict[str, Any],
    errors: Errors,
    start: datetime | None,
    end: datetime | None,
    status_code: int = 200,
    conflict: bool = False,
) -> Response:
    quote = catalogue.price_quote(
        session,
        instrument=instrument,
        facility=facility,
        user_organisation_id=principal.user.organisation_id,
    )
    estimates: dict[str, str] = {}
    if start is not None and end is not None and end > start:
        minutes = int((end - start).total_seconds() // 60)
        for choice in _operated_by_choices(instrument):
            estimates[choice] = format_yuan(
                quote.estimate_fen(minutes, staff_operated=choice is OperatedBy.STAFF)
            )
    qualification = _qualification_state(session, principal, instrument)
    values.setdefault("operated_by", _default_operated_by(instrument, qualification))
    return render(
        request,
        "catalogue/book.html",
        {
            "instrument": instrument,
            "facility": facility,
            "values": values,
            "errors": errors,
            "start": start,
            "end": end,
            "minutes": int((end - start).total_seconds() // 60) if start and end else None,
            "zone": facility.timezone,
            "quote": quote,
            "yuan": format_yuan,
            "estimates": estimates,
            "operated_by_choices": _operated_by_choices(instrument),
            "qualification": qualification,
            "accounts": bookings.recent_charge_accounts(session, user_id=principal.user_id),
            "idempotency_key": secrets.token_urlsafe(24),
            "waitlist_form_key": secrets.token_urlsafe(24),
            "customer_class_names": CUSTOMER_CLASS_NAMES,
            "conflict": conflict,
            "waitlist_start": start.astimezone(_zone(facility)).isoformat() if start else "",
            "waitlist_end": end.astimezone(_zone(facility)).isoformat() if end else "",
        },
        status_code=status_code,
    )


def _parse_times(
    start: str, end: str, zone: ZoneInfo, errors: Errors
) -> tuple[datetime | None, datetime | None]:
    parsed: list[datetime | None] = []
    for field, value in (("start", start), ("end", end)):
        try:
            parsed.append(parse_time(value, zone))
        except ValueError:
            errors[field] = [(N_("Enter a date and time."), {})]
            parsed.append(None)
    first, last = parsed
    if first is not None and last is not None and last <= first:
        errors["end"] = [(N_("The end must be after the start."), {})]
    return first, last


@router.get("/instruments/{instrument_id}/book")
def booking_confirmation(
    instrument_id: int,
    request: Request,
    principal: PagePrincipal,
    session: DbSession,
    start: str = "",
    end: str = "",
) -> Response:
    """The confirmation step: the chosen time, the price, and what the request needs."""
    instrument, facility = catalogue.listed_instrument(session, instrument_id)
    zone = _zone(facility)
    errors: Errors = {}
    first, last = (None, None)
    if start or end:
        first, last = _parse_times(start, end, zone, errors)
    values: dict[str, Any] = {
        "start": _local_input(first, zone) or start[:40],
        "end": _local_input(last, zone) or end[:40],
        "purpose": "",
        "charge_account": "",
        "sample_count": "",
    }
    return render_booking_form(
        request, session, principal, instrument, facility, values, errors, first, last
    )


def render_booking_form(
    request: Request,
    session: Session,
    principal: Principal,
    instrument: Instrument,
    facility: Facility,
    values: dict[str, Any],
    errors: Errors,
    start: datetime | None,
    end: datetime | None,
) -> Response:
    return _booking_form(
        request,
        session,
        principal,
        instrument,
        facility,
        values=values,
        errors=errors,
        start=start,
        end=end,
        status_code=422 if errors else 200,
    )


def _request_hash(data: BookingCreate) -> str:
    canonical = json.dumps(data.model_dump(mode="json"), sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _earlier_booking(
    session: Session, principal: Principal, key: str, request_hash: str
) -> int | None:
    """The booking this form already made, if a first click of it went through."""
    earlier = bookings.idempotency_record(session, user_id=principal.user_id, key=key)
    if earlier is None or earlier.request_hash != request_hash:
        return None
    booking_id = earlier.response.get("booking_id")
    return int(booking_id) if booking_id is not None else None


def _fmt(moment: datetime, zone: ZoneInfo) -> str:
    return f"{moment.astimezone(zone).strftime('%Y-%m-%d %H:%M')} ({zone.key})"


def _problem_messages(
    session: Session,
    exc: DomainError,
    instrument: Instrument,
    facility: Facility,
    start: datetime,
    end: datetime,
) -> Errors:
    """Every problem of a refused request as a message in words next to its field.

    Domain messages are English sentences with values inside; the page shows a translated
    message chosen by the problem's code, with the values of this instrument.
    """
    zone = _zone(facility)
    errors: Errors = {}

    def add(field: str | None, message: str, **values: Any) -> None:
        target = field if field in ("start", "end", "operated_by") else ""
        errors.setdefault(target, []).append((message, values))

    if exc.code == "not_qualified":
        add(
            "operated_by" if OperatedBy.STAFF in _operated_by_choices(instrument) else None,
            N_(
                "Operating this instrument yourself needs a valid qualification (training). "
                "Ask the facility for training, or choose operation by staff."
            ),
        )
        return errors
    if exc.code == "not_bookable":
        add(None, N_("This instrument cannot be booked at the moment."))
        return errors
    if exc.code == "booking_rate":
        add(None, N_("Too many booking requests; wait a minute."))
        return errors
    overlap_reported = False
    for problem in exc.problems:
        code = problem.code
        if code == "overlap":
            if overlap_reported:
                continue
            overlap_reported = True
            taken = booking_service.overlapping(
                session,
                instrument.id or 0,
                start,
                end + timedelta(minutes=instrument.buffer_minutes),
            )
            for booking in taken:
                add(
                    "start",
                    N_("The instrument is already booked from %(start)s to %(end)s."),
                    start=_fmt(booking.start_at, zone),
                    end=_fmt(booking.held_until, zone),
                )
            if not taken:
                add("start", N_("The time is already booked."))
        elif code == "not_aligned":
            add(
                problem.field,
                N_("Start on a %(minutes)s-minute slot boundary.")
                if problem.field == "start"
                else N_("End on a %(minutes)s-minute slot boundary."),
                minutes=instrument.slot_minutes,
            )
        elif code in RULE_MESSAGES:
            message, value_of = RULE_MESSAGES[code]
            add(problem.field, message, **value_of(instrument))
        else:
            add(problem.field, problem.message)
    if not errors:
        add(None, exc.detail)
    return errors


RULE_MESSAGES: dict[str, tuple[str, Any]] = {
    "end_not_after_start": (N_("The end must be after the start."), lambda i: {}),
    "in_past": (N_("The booking starts in the past."), lambda i: {}),
    "too_short": (
        N_("Book at least %(minutes)s minutes."),
        lambda i: {"minutes": i.min_duration_minutes},
    ),
    "too_long": (
        N_("Book at most %(minutes)s minutes."),
        lambda i: {"minutes": i.max_duration_minutes},
    ),
    "too_short_notice": (
        N_("Book at least %(minutes)s minutes ahead."),
        lambda i: {"minutes": i.min_notice_minutes},
    ),
    "too_far_ahead": (
        N_("Book at most %(days)s days ahead."),
        lambda i: {"days": i.max_advance_days},
    ),
    "during_outage": (N_("The instrument is out of service then."), lambda i: {}),
    "outside_opening_hours": (
        N_("The instrument is not open for the whole time."),
        lambda i: {},
    ),
    "quota_user_hours": (
        N_("You may hold %(hours)s h a week on this instrument."),
        lambda i: {"hours": i.user_weekly_hours_limit},
    ),
    "quota_organisation_hours": (
        N_("Your organisation may hold %(hours)s h a week on this instrument."),
        lambda i: {"hours": i.organisation_weekly_hours_limit},
    ),
    "quota_future_bookings": (
        N_("You may hold %(count)s upcoming bookings on this instrument."),
        lambda i: {"count": i.user_future_bookings_limit},
    ),
    "suspended": (
        N_("Your booking rights are suspended after repeated no-shows."),
        lambda i: {},
    ),
    "staff_only": (N_("Only the facility's staff operate this instrument."), lambda i: {}),
    "self_only": (N_("This instrument is operated by its users."), lambda i: {}),
}


@router.post("/instruments/{instrument_id}/book")
def request_booking(
    instrument_id: int,
    request: Request,
    _csrf: CsrfChecked,
    principal: PagePrincipal,
    session: DbSession,
    settings: AppSettings,
    start: Annotated[str, Form(max_length=40)] = "",
    end: Annotated[str, Form(max_length=40)] = "",
    purpose: Annotated[str, Form(max_length=4000)] = "",
    charge_account: Annotated[str, Form(max_length=1000)] = "",
    operated_by: Annotated[str, Form(max_length=20)] = "",
    sample_count: Annotated[str, Form(max_length=20)] = "",
    idempotency_key: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    """Send the request: confirmed or pending by the instrument's rules, else every problem
    in words next to its field, the entered values kept."""
    instrument, facility = catalogue.listed_instrument(session, instrument_id)
    zone = _zone(facility)
    values: dict[str, Any] = {
        "start": start,
        "end": end,
        "purpose": purpose,
        "charge_account": charge_account,
        "operated_by": operated_by,
        "sample_count": sample_count,
    }
    errors: Errors = {}
    first, last = _parse_times(start, end, zone, errors)
    choice = _choice(OperatedBy, operated_by, "operated_by", errors) if operated_by else None
    if choice is None and "operated_by" not in errors:
        choice = _default_operated_by(
            instrument, _qualification_state(session, principal, instrument)
        )
    samples = _positive_int(sample_count, "sample_count", errors, upper=100_000)
    # Namespaced: the API's Idempotency-Keys and other forms' keys share the table.
    key = BOOKING_FORM_KEY_PREFIX + idempotency_key.strip() if idempotency_key.strip() else ""
    if not key:
        errors.setdefault("", []).append(
            (N_("The form is incomplete. Reload the page and try again."), {})
        )
    data: BookingCreate | None = None
    if not errors:
        try:
            data = BookingCreate(
                instrument_id=instrument_id,
                start=first,
                end=last,
                purpose=purpose.strip(),
                charge_account=charge_account.strip(),
                operated_by=choice,
                sample_count=samples,
            )
        except ValidationError as exc:
            for error in exc.errors():
                field = str(error["loc"][0]) if error["loc"] else ""
                errors[field] = [(N_("This value is too long."), {})]
    if data is None or first is None or last is None:
        return render_booking_form(
            request, session, principal, instrument, facility, values, errors, first, last
        )
    request_hash = _request_hash(data)
    if (done := _earlier_booking(session, principal, key, request_hash)) is not None:
        return RedirectResponse(f"/my/bookings/{done}?created=1", status_code=303)

    def work() -> Booking:
        booking = booking_service.create_booking(
            session, actor=principal, data=data, policy=BookingPolicy.from_settings(settings)
        )
        session.add(
            IdempotencyRecord(
                user_id=principal.user_id,
                key=key,
                request_hash=request_hash,
                status_code=303,
                response={"booking_id": booking.id},
            )
        )
        session.flush()
        return booking

    try:
        booking = commit_with_retries(session, work)
    except (DomainError, IntegrityError) as exc:
        session.rollback()
        # A second click that raced the first: once the first committed, show its booking.
        if (done := _earlier_booking(session, principal, key, request_hash)) is not None:
            return RedirectResponse(f"/my/bookings/{done}?created=1", status_code=303)
        if not isinstance(exc, DomainError):
            raise
        return _booking_form(
            request,
            session,
            principal,
            instrument,
            facility,
            values=values,
            errors=_problem_messages(session, exc, instrument, facility, first, last),
            start=first,
            end=last,
            status_code=exc.status_code,
            conflict=exc.code == "overlap",
        )
    return RedirectResponse(f"/my/bookings/{booking.id}?created=1", status_code=303)
