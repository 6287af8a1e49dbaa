"""Lab manager pages: instruments (rules, prices, status), opening hours and closures, outages,
qualifications, testing services and sample service requests.

A lab manager sees its facilities only (another facility's objects answer 404), an admin sees
all, anyone else gets 403. The pages parse form text (yuan, local times of the facility's zone)
and hand typed input to the catalogue's and the booking package's services, which validate it
as the API does; their problems come back next to the fields.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any, TypeVar
from urllib.parse import quote, urlencode
from zoneinfo import ZoneInfo

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import RedirectResponse, Response
from pydantic import BaseModel, ValidationError
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select
from starlette.datastructures import FormData

from booking import outages as booking_outages
from booking import queries as booking_queries
from booking import requests as service_requests
from booking.models import ServiceRequestFile, ServiceRequestStatus
from booking.rules import HELD_STATUSES, BookingStatus
from core.accounts.models import User
from core.accounts.rules import Role, normalise_email
from core.auth.principal import Principal
from core.clock import now
from core.errors import Conflict, DomainError, NotFound, PermissionDenied, RuleViolation
from core.money import MoneyError, fen_to_yuan, format_yuan, yuan_to_fen
from instruments import queries, rules, service
from instruments.models import (
    Facility,
    FacilityClosure,
    Instrument,
    Outage,
    Qualification,
    TestingService,
)
from instruments.rules import (
    CATEGORY_NAMES,
    ApprovalMode,
    InstrumentStatus,
    OperationMode,
    OutageKind,
)
from instruments.schemas import (
    ClosureIn,
    FacilityUpdate,
    InstrumentCreate,
    InstrumentUpdate,
    OpeningSpanIn,
    OutageCreate,
    QualificationGrant,
    TestingServiceCreate,
    TestingServiceUpdate,
)
from web.deps import AppSettings, DbSession, ObjectId
from web.messages import N_
from web.pages.deps import CsrfChecked, PagePrincipal, errors_by_field, parse_id, within_calendar
from web.pages.form_keys import answered, claim_form, form_action, new_form_key
from web.retry import commit_with_retries
from web.routing import TransactionalRoute
from web.templating import locale_for, render

router = APIRouter(route_class=TransactionalRoute, include_in_schema=False)

PAGE_SIZE = 25
# A page number past any list's end (a larger one would overflow the database's OFFSET).
MAX_PAGE = 10_000
# The report upload of these pages; the app gives it the API's upload limit when it lists this
# pattern among the larger bodies (else the general body limit applies, which the page states).
REPORT_UPLOAD_PATH = r"^/manage/service-requests/\d+/report$"
FORM_TOKEN_PATTERN = re.compile(r"^[A-Za-z0-9_-]{16,100}$")
WEEKDAYS = (
    N_("Monday"),
    N_("Tuesday"),
    N_("Wednesday"),
    N_("Thursday"),
    N_("Friday"),
    N_("Saturday"),
    N_("Sunday"),
)
STATUS_LABELS = {
    InstrumentStatus.ACTIVE: N_("Active"),
    InstrumentStatus.MAINTENANCE: N_("Under maintenance"),
    InstrumentStatus.RETIRED: N_("Retired"),
}
OPERATION_MODE_LABELS = {
    OperationMode.SELF_OPERATED: N_("Self-operated"),
    OperationMode.STAFF_OPERATED: N_("Staff-operated"),
    OperationMode.BOTH: N_("Self- or staff-operated"),
}
APPROVAL_MODE_LABELS = {
    ApprovalMode.AUTOMATIC_FOR_QUALIFIED: N_("Automatic for qualified users"),
    ApprovalMode.MANUAL: N_("Always approved by a manager"),
}
OUTAGE_KIND_LABELS = {
    OutageKind.MAINTENANCE: N_("Maintenance"),
    OutageKind.CALIBRATION: N_("Calibration"),
    OutageKind.REPAIR: N_("Repair"),
    OutageKind.OTHER: N_("Other"),
}
REQUEST_STATUS_LABELS = {
    ServiceRequestStatus.SUBMITTED: N_("Submitted"),
    ServiceRequestStatus.ACCEPTED: N_("Accepted"),
    ServiceRequestStatus.IN_PROGRESS: N_("In progress"),
    ServiceRequestStatus.REPORTED: N_("Reported"),
    ServiceRequestStatus.COMPLETED: N_("Completed"),
    ServiceRequestStatus.REJECTED: N_("Rejected"),
    ServiceRequestStatus.CANCELLED: N_("Cancelled"),
}
BOOKING_STATUS_LABELS = {
    BookingStatus.OFFERED: N_("Offered"),
    BookingStatus.PENDING: N_("Pending"),
    BookingStatus.CONFIRMED: N_("Confirmed"),
    BookingStatus.IN_USE: N_("In use"),
    BookingStatus.CANCELLED: N_("Cancelled"),
}
OUTAGE_ACTION_TEXT = {
    "flag": N_(
        "These bookings stay as they are and are flagged for your attention: decide each of them."
    ),
    "cancel": N_(
        "These bookings will be cancelled with the outage as the reason (a booking in use is "
        "only flagged)."
    ),
}
# Problems of pydantic's validation, as message ids the pages translate.
VALIDATION_MESSAGES = {
    "missing": N_("Required."),
    "greater_than_equal": N_("The value is too small."),
    "greater_than": N_("The value is too small."),
    "less_than_equal": N_("The value is too large."),
    "less_than": N_("The value is too large."),
    "string_too_short": N_("Too short."),
    "string_too_long": N_("Too long."),
    "string_pattern_mismatch": N_("Invalid format."),
    "enum": N_("Choose one of the options."),
    "literal_error": N_("Choose one of the options."),
    "int_parsing": N_("Enter a whole number."),
    "int_from_float": N_("Enter a whole number."),
    "date_from_datetime_parsing": N_("Enter a date (YYYY-MM-DD)."),
    "date_parsing": N_("Enter a date (YYYY-MM-DD)."),
    "url_parsing": N_("Enter a full web address (https://…)."),
    "url_scheme": N_("Enter a full web address (https://…)."),
}
INVALID_VALUE = N_("Invalid value.")
REQUIRED = N_("Required.")
NEGATIVE = N_("Must not be negative.")
BAD_WHOLE_NUMBER = N_("Enter a whole number.")
BAD_AMOUNT = N_("Enter an amount in yuan with at most two decimals.")
BAD_DATE = N_("Enter a date (YYYY-MM-DD).")
BAD_DATETIME = N_("Enter a date and time.")
OUT_OF_CALENDAR = N_("Choose a date between the years 2000 and 2100.")
BAD_TIME = N_("Use times like 08:30 (24:00 is midnight).")
HALF_SPAN = N_("Give both a start and an end.")
CONCURRENT_CHANGE = N_("The same record was saved at the same moment elsewhere: reload and check.")
SAVED_MESSAGES = {
    "saved": N_("Saved."),
    "created": N_("Created."),
    "granted": N_("Qualification granted."),
    "revoked": N_("Qualification revoked."),
    "deleted": N_("Deleted."),
    "closure_added": N_("Closure added."),
    "closure_removed": N_("Closure removed."),
    "accepted": N_("Request accepted."),
    "rejected": N_("Request rejected."),
    "started": N_("Work started."),
    "reported": N_("Report uploaded."),
    "completed": N_("Request completed."),
}

# Problems whose domain message carries values: shown by their code instead.
PROBLEM_MESSAGES = {
    "file_type": N_("Files may be PDF, PNG, JPEG, ZIP, XLSX, DOCX or CSV, of that real type."),
    "file_too_large": N_("The file is too large."),
    "over_capacity": N_("More samples than the service takes in a day."),
    "unknown_instrument": N_("Choose instruments of this facility."),
}
CONFLICT_MESSAGES = {
    "capacity_full": N_("No room for these samples on that day: choose another day."),
    "wrong_status": N_("The request's status does not allow this any more."),
    "already_revoked": N_("The qualification is already revoked."),
}

ModelT = TypeVar("ModelT", bound=BaseModel)


# --- Who may, and small helpers ------------------------------------------------------------


def require_manager(principal: Principal) -> list[int] | None:
    """The facilities the caller manages (None: all, for an admin); 403 for other roles."""
    if not principal.has_role(Role.LAB_MANAGER, Role.ADMIN):
        raise PermissionDenied(N_("Only a lab manager or an admin may open the management pages."))
    return None if principal.is_admin else sorted(principal.managed_facility_ids)


# The service names the refused action in English words; a page shows a whole, translated
# sentence per action instead.
NOT_MANAGER_OF = {
    "change it": N_("Only a lab manager of this facility or an admin may change this instrument."),
    "manage it": N_("Only a lab manager of this facility or an admin may manage this facility."),
    "record outages": N_("Only a lab manager of this facility or an admin may record outages."),
    "grant qualifications": N_(
        "Only a lab manager of this facility or an admin may grant qualifications."
    ),
}


def managed_instrument(
    session: Session, principal: Principal, instrument_id: int, action: str
) -> Instrument:
    try:
        return service.managed_instrument(
            session, actor=principal, instrument_id=instrument_id, action=action
        )
    except PermissionDenied as exc:
        raise PermissionDenied(NOT_MANAGER_OF[action], code=exc.code) from None


def managed_facility_of(
    session: Session, principal: Principal, facility_id: int, action: str
) -> Facility:
    try:
        return service.managed_facility(
            session, actor=principal, facility_id=facility_id, action=action
        )
    except PermissionDenied as exc:
        raise PermissionDenied(NOT_MANAGER_OF[action], code=exc.code) from None


def page_of(request: Request, name: str = "page") -> int:
    value = request.query_params.get(name, "1")
    number = parse_id(value)
    return min(number, MAX_PAGE) if number is not None else 1


def pages(total: int, page: int) -> dict[str, int]:
    return {"page": page, "pages": max(1, -(-total // PAGE_SIZE)), "total": total}


def redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def once(
    session: Session,
    principal: Principal,
    entered: Mapping[str, Any],
    create: Callable[[], str],
) -> Response:
    """Run a creating form once per form token (in ``entered``, the values as sent): a repeat
    is sent where the first one went, the token sent again with other values is refused.

    A refused form answers 4xx and commits nothing, so its token stays free for the corrected
    form. Any other unique-key collision of the work is a change made meanwhile: 409.
    """
    token = str(entered.get("form_token") or "")
    record, earlier = claim_form(
        session,
        user_id=principal.user_id,
        form_key=token if FORM_TOKEN_PATTERN.match(token) else "",
        action=form_action("manage-instruments", entered),
    )
    if earlier is not None:
        return redirect(earlier)
    try:
        location = create()
    except IntegrityError:
        session.rollback()
        raise Conflict(CONCURRENT_CHANGE, code="concurrent_change") from None
    return redirect(answered(session, record, location))


def validation_errors(
    exc: ValidationError, rename: Mapping[str, str] | None = None
) -> dict[str, str | list[str]]:
    """pydantic's problems as field → message id (the first problem of each field)."""
    errors: dict[str, str | list[str]] = {}
    for error in exc.errors():
        loc = [str(part) for part in error.get("loc", ())]
        name = loc[0] if loc else ""
        name = (rename or {}).get(name, name)
        kind = str(error.get("type", ""))
        message = VALIDATION_MESSAGES.get(kind)
        if message is None:
            message = REQUIRED if error.get("input") is None else INVALID_VALUE
        if kind in ("greater_than_equal", "greater_than") and error.get("ctx", {}).get("ge") == 0:
            message = NEGATIVE
        if kind == "string_too_short" and not error.get("input"):
            message = REQUIRED
        if name:
            errors.setdefault(name, message)
        else:
            errors.setdefault("", []).append(message)  # type: ignore[union-attr]
    return errors


def validate(
    model: type[ModelT], data: dict[str, Any], rename: Mapping[str, str] | None = None
) -> tuple[ModelT | None, dict[str, str | list[str]]]:
    try:
        return model.model_validate(data), {}
    except ValidationError as exc:
        return None, validation_errors(exc, rename)


def domain_errors(
    exc: DomainError, rename: Mapping[str, str] | None = None
) -> dict[str, str | list[str]]:
    """A service's problems next to the form's fields; a message built with values is shown
    by its problem's code."""
    errors = errors_by_field(exc)
    for problem in exc.problems:
        if problem.field and problem.code in PROBLEM_MESSAGES:
            errors[problem.field] = PROBLEM_MESSAGES[problem.code]
    if rename:
        errors = {rename.get(key, key): value for key, value in errors.items()}
    return errors


def text(form: FormData, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def checked(form: FormData, name: str) -> bool:
    return form.get(name) is not None


def whole_number(raw: str, name: str, errors: dict[str, Any]) -> int | None:
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        errors[name] = BAD_WHOLE_NUMBER
        return None


def fen(raw: str, name: str, errors: dict[str, Any]) -> int | None:
    """Yuan as typed (up to two decimals, Decimal arithmetic) to fen."""
    if not raw:
        return None
    try:
        return yuan_to_fen(raw)
    except MoneyError:
        errors[name] = BAD_AMOUNT
        return None


def yuan(amount_fen: int | None) -> str:
    return "" if amount_fen is None else str(fen_to_yuan(amount_fen))


def day(raw: str, name: str, errors: dict[str, Any]) -> date | None:
    if not raw:
        return None
    try:
        parsed = date.fromisoformat(raw)
    except ValueError:
        errors[name] = BAD_DATE
        return None
    if not within_calendar(parsed):
        errors[name] = OUT_OF_CALENDAR
        return None
    return parsed


def local_moment(raw: str, zone: ZoneInfo, name: str, errors: dict[str, Any]) -> datetime | None:
    """A datetime-local field's value, read in the facility's zone."""
    if not raw:
        errors[name] = REQUIRED
        return None
    try:
        parsed = datetime.fromisoformat(raw)
    except ValueError:
        errors[name] = BAD_DATETIME
        return None
    if not within_calendar(parsed):
        errors[name] = OUT_OF_CALENDAR
        return None
    if parsed.tzinfo is not None:
        return parsed
    return parsed.replace(tzinfo=zone)


def choices_of(labels: Mapping[Any, str]) -> list[tuple[str, str]]:
    return [(str(value), label) for value, label in labels.items()]


def common_context(request: Request) -> dict[str, Any]:
    done = request.query_params.get("done", "")
    return {"done_message": SAVED_MESSAGES.get(done)}


# --- Instruments ---------------------------------------------------------------------------

TEXT_FIELDS = (
    "asset_code",
    "name",
    "name_en",
    "keywords",
    "model",
    "manufacturer",
    "country_of_origin",
    "location",
    "description",
    "specifications",
    "photo_url",
)
REQUIRED_NUMBERS = (
    "slot_minutes",
    "min_duration_minutes",
    "max_duration_minutes",
    "max_advance_days",
    "min_notice_minutes",
    "buffer_minutes",
    "cancellation_deadline_hours",
    "late_cancel_charge_percent",
    "no_show_charge_percent",
    "min_billing_minutes",
)
OPTIONAL_NUMBERS = (
    "rated_annual_hours",
    "user_weekly_hours_limit",
    "user_future_bookings_limit",
    "organisation_weekly_hours_limit",
)
MONEY_FIELDS = (
    "purchase_value_fen",
    "price_internal_fen",
    "price_external_academic_fen",
    "price_enterprise_fen",
    "staff_surcharge_fen",
    "min_charge_fen",
)
CHOICE_FIELDS = ("facility_id", "category", "operation_mode", "status", "approval_mode")
FLAGS = ("special_purpose", "unattended_runs_allowed", "requires_qualification")
# Money is typed in yuan: the form's field names say so.
YUAN_NAME = {name: name.removesuffix("_fen") + "_yuan" for name in MONEY_FIELDS}


def instrument_form_values(instrument: Instrument | None) -> dict[str, Any]:
    """What the form shows: the instrument's values as text, or the defaults of a new one."""
    if instrument is None:
        defaults = InstrumentCreate.model_fields
        values: dict[str, Any] = {
            name: field.default
            for name, field in defaults.items()
            if not field.is_required() and field.default is not None
        }
        values = {k: (v.value if hasattr(v, "value") else v) for k, v in values.items()}
        for name in MONEY_FIELDS:
            values[YUAN_NAME[name]] = yuan(values.pop(name, None))
        values["form_token"] = new_form_key()
        return values
    values = {name: getattr(instrument, name) for name in (*TEXT_FIELDS, *REQUIRED_NUMBERS)}
    values |= {name: getattr(instrument, name) for name in (*OPTIONAL_NUMBERS, *FLAGS)}
    values |= {name: str(getattr(instrument, name)) for name in CHOICE_FIELDS}
    values |= {YUAN_NAME[name]: yuan(getattr(instrument, name)) for name in MONEY_FIELDS}
    values["purchase_date"] = (
        instrument.purchase_date.isoformat() if instrument.purchase_date else ""
    )
    return values


def parse_instrument_form(form: FormData) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(typed input for the schema, the text as entered, problems of the text itself)."""
    errors: dict[str, Any] = {}
    entered: dict[str, Any] = {}
    data: dict[str, Any] = {}
    for name in (*TEXT_FIELDS, *CHOICE_FIELDS):
        entered[name] = data[name] = text(form, name)
    data["photo_url"] = data["photo_url"] or None
    data["facility_id"] = whole_number(data["facility_id"], "facility_id", errors)
    for name in (*REQUIRED_NUMBERS, *OPTIONAL_NUMBERS):
        entered[name] = text(form, name)
        data[name] = whole_number(entered[name], name, errors)
    for name in MONEY_FIELDS:
        entered[YUAN_NAME[name]] = text(form, YUAN_NAME[name])
        data[name] = fen(entered[YUAN_NAME[name]], YUAN_NAME[name], errors)
    for name in (*REQUIRED_NUMBERS, *MONEY_FIELDS, "facility_id"):
        shown = YUAN_NAME.get(name, name)
        if data[name] is None and name != "purchase_value_fen":
            errors.setdefault(shown, REQUIRED)
    entered["purchase_date"] = text(form, "purchase_date")
    data["purchase_date"] = day(entered["purchase_date"], "purchase_date", errors)
    for name in FLAGS:
        entered[name] = data[name] = checked(form, name)
    entered["form_token"] = text(form, "form_token")
    return data, entered, errors


def instrument_form_context(
    session: Session,
    request: Request,
    scope: list[int] | None,
    *,
    instrument: Instrument | None,
    values: dict[str, Any],
    errors: dict[str, Any],
) -> dict[str, Any]:
    facilities, _ = queries.list_facilities(session, ids=scope, include_inactive=True, limit=500)
    return {
        "instrument": instrument,
        "values": values,
        "errors": errors,
        "facility_choices": [(str(f.id), f.name) for f in facilities],
        "category_choices": [
            (str(c), zh if locale_for(request) == "zh-CN" else en)
            for c, (zh, en) in CATEGORY_NAMES.items()
        ],
        "status_choices": choices_of(STATUS_LABELS),
        "operation_mode_choices": choices_of(OPERATION_MODE_LABELS),
        "approval_mode_choices": choices_of(APPROVAL_MODE_LABELS),
        **common_context(request),
    }


@router.get("/manage/instruments")
def instrument_list(request: Request, principal: PagePrincipal, session: DbSession) -> Response:
    scope = require_manager(principal)
    page = page_of(request)
    facility_filter = request.query_params.get("facility_id", "")
    status_filter = request.query_params.get("status", "")
    facility_id = parse_id(facility_filter)
    if facility_filter and facility_id is None:
        raise NotFound("Facility")
    status = InstrumentStatus(status_filter) if status_filter in STATUS_LABELS else None
    if facility_id is not None and scope is not None and facility_id not in scope:
        raise NotFound("Facility")
    rows, total = queries.managed_instrument_rows(
        session,
        facility_ids=scope,
        facility_id=facility_id,
        status=status,
        offset=(page - 1) * PAGE_SIZE,
        limit=PAGE_SIZE,
    )
    facilities, _ = queries.list_facilities(session, ids=scope, include_inactive=True, limit=500)
    query = {k: v for k, v in (("facility_id", facility_filter), ("status", status_filter)) if v}
    return render(
        request,
        "manage_instruments/instruments.html",
        {
            "rows": rows,
            "facilities": facilities,
            "facility_filter": facility_filter,
            "status_filter": status_filter,
            "status_labels": STATUS_LABELS,
            "filter_query": urlencode(query),
            "format_yuan": format_yuan,
            **pages(total, page),
            **common_context(request),
        },
    )


@router.get("/manage/instruments/new")
def new_instrument_form(request: Request, principal: PagePrincipal, session: DbSession) -> Response:
    scope = require_manager(principal)
    values = instrument_form_values(None)
    wanted = request.query_params.get("facility_id", "")
    if parse_id(wanted) is not None:
        values["facility_id"] = wanted
    return render(
        request,
        "manage_instruments/instrument_form.html",
        instrument_form_context(session, request, scope, instrument=None, values=values, errors={}),
    )


@router.post("/manage/instruments/new")
async def create_instrument(
    request: Request, _csrf: CsrfChecked, principal: PagePrincipal, session: DbSession
) -> Response:
    scope = require_manager(principal)
    form = await request.form()
    data, entered, errors = parse_instrument_form(form)
    for name in ("rated_annual_hours", "purchase_value_fen", "purchase_date"):
        if data[name] is None:
            del data[name]  # the schema's default applies
    created, problems = validate(InstrumentCreate, data, YUAN_NAME)
    errors = problems | errors

    def answer(errors: dict[str, Any], status_code: int) -> Response:
        return render(
            request,
            "manage_instruments/instrument_form.html",
            instrument_form_context(
                session, request, scope, instrument=None, values=entered, errors=errors
            ),
            status_code=status_code,
        )

    if created is None or errors:
        return answer(errors, 422)

    def make() -> str:
        instrument = service.create_instrument(session, actor=principal, data=created)
        return f"/manage/instruments/{instrument.id}/edit?done=created"

    try:
        return once(session, principal, entered, make)
    except (RuleViolation, Conflict) as exc:
        return answer(domain_errors(exc, YUAN_NAME), exc.status_code)


@router.get("/manage/instruments/{instrument_id}/edit")
def edit_instrument_form(
    instrument_id: ObjectId, request: Request, principal: PagePrincipal, session: DbSession
) -> Response:
    scope = require_manager(principal)
    instrument = managed_instrument(session, principal, instrument_id, "change it")
    return render(
        request,
        "manage_instruments/instrument_form.html",
        instrument_form_context(
            session,
            request,
            scope,
            instrument=instrument,
            values=instrument_form_values(instrument),
            errors={},
        ),
    )


@router.post("/manage/instruments/{instrument_id}/edit")
async def update_instrument(
    instrument_id: ObjectId,
    request: Request,
    _csrf: CsrfChecked,
    principal: PagePrincipal,
    session: DbSession,
) -> Response:
    scope = require_manager(principal)
    instrument = managed_instrument(session, principal, instrument_id, "change it")
    form = await request.form()
    data, entered, errors = parse_instrument_form(form)
    if data["rated_annual_hours"] is None and "rated_annual_hours" not in errors:
        data["rated_annual_hours"] = rules.default_rated_hours(data["special_purpose"])
    # Only what changed goes to the service: the audit log and the price history stay exact.
    changes = {
        name: value
        for name, value in data.items()
        if name not in errors
        and YUAN_NAME.get(name) not in errors
        and value != _current(instrument, name)
    }
    update, problems = validate(InstrumentUpdate, changes, YUAN_NAME)
    errors = problems | errors

    def answer(errors: dict[str, Any], status_code: int) -> Response:
        return render(
            request,
            "manage_instruments/instrument_form.html",
            instrument_form_context(
                session, request, scope, instrument=instrument, values=entered, errors=errors
            ),
            status_code=status_code,
        )

    if update is None or errors:
        return answer(errors, 422)
    try:
        service.update_instrument(
            session, actor=principal, instrument_id=instrument_id, data=update
        )
    except (RuleViolation, Conflict) as exc:
        return answer(domain_errors(exc, YUAN_NAME), exc.status_code)
    return redirect(f"/manage/instruments/{instrument_id}/edit?done=saved")


def _current(instrument: Instrument, name: str) -> Any:
    value = getattr(instrument, name)
    if name == "photo_url":
        return value or None
    return value


# --- Facilities: opening hours, closures ---------------------------------------------------


def _hhmm(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


def hours_context(
    session: Session,
    request: Request,
    facility: Facility,
    *,
    week: list[list[tuple[str, str]]] | None = None,
    opens_on_holidays: bool | None = None,
    errors: dict[str, Any] | None = None,
    closure_values: dict[str, Any] | None = None,
    closure_errors: dict[str, Any] | None = None,
) -> dict[str, Any]:
    facility_id = facility.id or 0
    if week is None:
        week = [[] for _ in range(7)]
        for span in queries.opening_spans_by_facility(session, [facility_id]).get(facility_id, []):
            week[span.weekday].append((_hhmm(span.start_minute), _hhmm(span.end_minute)))
    return {
        "facility": facility,
        "days": [
            {"index": index, "name": WEEKDAYS[index], "spans": [*spans, ("", "")]}
            for index, spans in enumerate(week)
        ],
        "opens_on_holidays": (
            facility.opens_on_holidays if opens_on_holidays is None else opens_on_holidays
        ),
        "errors": errors or {},
        "closures": queries.closures_of(session, facility_id),
        "closure_values": closure_values or {"form_token": new_form_key()},
        "closure_errors": closure_errors or {},
        **common_context(request),
    }


def managed_facility(session: Session, principal: Principal, facility_id: int) -> Facility:
    require_manager(principal)
    return managed_facility_of(session, principal, facility_id, "manage it")


@router.get("/manage/facilities")
def facility_list(request: Request, principal: PagePrincipal, session: DbSession) -> Response:
    scope = require_manager(principal)
    page = page_of(request)
    facilities, total = queries.list_facilities(
        session,
        ids=scope,
        include_inactive=True,
        offset=(page - 1) * PAGE_SIZE,
        limit=PAGE_SIZE,
    )
    return render(
        request,
        "manage_instruments/facilities.html",
        {"facilities": facilities, **pages(total, page)},
    )


@router.get("/manage/facilities/{facility_id}/hours")
def opening_hours_page(
    facility_id: ObjectId, request: Request, principal: PagePrincipal, session: DbSession
) -> Response:
    facility = managed_facility(session, principal, facility_id)
    return render(
        request, "manage_instruments/hours.html", hours_context(session, request, facility)
    )


@router.post("/manage/facilities/{facility_id}/hours")
async def save_opening_hours(
    facility_id: ObjectId,
    request: Request,
    _csrf: CsrfChecked,
    principal: PagePrincipal,
    session: DbSession,
) -> Response:
    facility = managed_facility(session, principal, facility_id)
    form = await request.form()
    week: list[list[tuple[str, str]]] = []
    spans: list[OpeningSpanIn] = []
    weekday_of: list[int] = []
    errors: dict[str, Any] = {}
    for weekday in range(7):
        starts = [str(v).strip() for v in form.getlist(f"start_{weekday}")]
        ends = [str(v).strip() for v in form.getlist(f"end_{weekday}")]
        pairs = [(s, e) for s, e in zip(starts, ends, strict=False) if s or e]
        week.append(pairs)
        for start, end in pairs:
            if not (start and end):
                errors.setdefault(f"day_{weekday}", HALF_SPAN)
                continue
            try:
                spans.append(OpeningSpanIn(weekday=weekday, start=start, end=end))
                weekday_of.append(weekday)
            except ValidationError:
                errors.setdefault(f"day_{weekday}", BAD_TIME)
    opens_on_holidays = checked(form, "opens_on_holidays")

    def answer(errors: dict[str, Any]) -> Response:
        return render(
            request,
            "manage_instruments/hours.html",
            hours_context(
                session,
                request,
                facility,
                week=week,
                opens_on_holidays=opens_on_holidays,
                errors=errors,
            ),
            status_code=422,
        )

    if errors:
        return answer(errors)
    try:
        service.set_opening_hours(session, actor=principal, facility_id=facility_id, spans=spans)
    except RuleViolation as exc:
        for problem in exc.problems:
            index = (problem.field or "").rpartition(".")[2]
            number = parse_id(index) if index != "0" else 0
            key = (
                f"day_{weekday_of[number]}"
                if number is not None and number < len(weekday_of)
                else ""
            )
            if key:
                errors.setdefault(key, problem.message)
            else:
                errors.setdefault("", []).append(problem.message)
        return answer(errors)
    if opens_on_holidays != facility.opens_on_holidays:
        service.update_facility(
            session,
            actor=principal,
            facility_id=facility_id,
            data=FacilityUpdate(opens_on_holidays=opens_on_holidays),
        )
    return redirect(f"/manage/facilities/{facility_id}/hours?done=saved")


@router.post("/manage/facilities/{facility_id}/closures")
async def add_closure(
    facility_id: ObjectId,
    request: Request,
    _csrf: CsrfChecked,
    principal: PagePrincipal,
    session: DbSession,
) -> Response:
    facility = managed_facility(session, principal, facility_id)
    form = await request.form()
    entered = {
        name: text(form, name) for name in ("start_date", "end_date", "reason", "form_token")
    }
    errors: dict[str, Any] = {}
    data = {
        "start_date": day(entered["start_date"], "start_date", errors),
        "end_date": day(entered["end_date"], "end_date", errors),
        "reason": entered["reason"],
    }
    closure, problems = validate(ClosureIn, data)
    errors = problems | errors

    def answer(errors: dict[str, Any], status_code: int = 422) -> Response:
        return render(
            request,
            "manage_instruments/hours.html",
            hours_context(
                session, request, facility, closure_values=entered, closure_errors=errors
            ),
            status_code=status_code,
        )

    if closure is None or errors:
        return answer(errors)

    def make() -> str:
        service.add_closure(session, actor=principal, facility_id=facility_id, data=closure)
        return f"/manage/facilities/{facility_id}/hours?done=closure_added#closures"

    try:
        return once(session, principal, entered, make)
    except RuleViolation as exc:
        return answer(domain_errors(exc))


@router.post("/manage/facilities/{facility_id}/closures/{closure_id}/delete")
def remove_closure(
    facility_id: ObjectId,
    closure_id: ObjectId,
    _csrf: CsrfChecked,
    principal: PagePrincipal,
    session: DbSession,
) -> Response:
    managed_facility(session, principal, facility_id)
    closure = session.get(FacilityClosure, closure_id)
    if closure is None:
        # Removed already (a second click on the same button): land where the first went.
        return redirect(f"/manage/facilities/{facility_id}/hours?done=closure_removed#closures")
    if closure.facility_id != facility_id:
        raise NotFound("Closure")
    service.remove_closure(session, actor=principal, closure_id=closure_id)
    return redirect(f"/manage/facilities/{facility_id}/hours?done=closure_removed#closures")


# --- Testing services ------------------------------------------------------------------------

SERVICE_TEXT_FIELDS = ("name", "name_en", "method_standard", "description")
SERVICE_MONEY_FIELDS = ("price_internal_fen", "price_external_academic_fen", "price_enterprise_fen")
SERVICE_NUMBERS = ("turnaround_days", "daily_sample_capacity")
SERVICE_FLAGS = ("cma_accredited", "cnas_accredited")
SERVICE_YUAN_NAME = {name: name.removesuffix("_fen") + "_yuan" for name in SERVICE_MONEY_FIELDS}


def service_form_values(row: TestingService | None, instrument_ids: list[int]) -> dict[str, Any]:
    if row is None:
        return {
            "turnaround_days": 5,
            "daily_sample_capacity": 10,
            "is_active": True,
            "instrument_ids": [],
            "form_token": new_form_key(),
            **{SERVICE_YUAN_NAME[name]: "" for name in SERVICE_MONEY_FIELDS},
        }
    values: dict[str, Any] = {
        name: getattr(row, name)
        for name in (*SERVICE_TEXT_FIELDS, *SERVICE_NUMBERS, *SERVICE_FLAGS, "is_active")
    }
    values |= {SERVICE_YUAN_NAME[name]: yuan(getattr(row, name)) for name in SERVICE_MONEY_FIELDS}
    values["instrument_ids"] = instrument_ids
    return values


def parse_service_form(form: FormData) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    errors: dict[str, Any] = {}
    entered: dict[str, Any] = {name: text(form, name) for name in SERVICE_TEXT_FIELDS}
    data: dict[str, Any] = dict(entered)
    for name in SERVICE_NUMBERS:
        entered[name] = text(form, name)
        data[name] = whole_number(entered[name], name, errors)
    for name in SERVICE_MONEY_FIELDS:
        entered[SERVICE_YUAN_NAME[name]] = text(form, SERVICE_YUAN_NAME[name])
        data[name] = fen(entered[SERVICE_YUAN_NAME[name]], SERVICE_YUAN_NAME[name], errors)
    for name in (*SERVICE_FLAGS, "is_active"):
        entered[name] = data[name] = checked(form, name)
    ids = [str(v) for v in form.getlist("instrument_ids")]
    data["instrument_ids"] = [n for n in map(parse_id, ids) if n is not None]
    if len(data["instrument_ids"]) != len(ids):
        errors["instrument_ids"] = INVALID_VALUE
    entered["instrument_ids"] = data["instrument_ids"]
    entered["form_token"] = text(form, "form_token")
    return data, entered, errors


def service_form_context(
    session: Session,
    request: Request,
    facility: Facility,
    *,
    row: TestingService | None,
    values: dict[str, Any],
    errors: dict[str, Any],
) -> dict[str, Any]:
    return {
        "facility": facility,
        "row": row,
        "values": values,
        "errors": errors,
        "instruments": queries.instrument_choices(session, facility_ids=[facility.id or 0]),
        **common_context(request),
    }


def facility_service(session: Session, facility_id: int, service_id: int) -> TestingService:
    row = session.get(TestingService, service_id)
    if row is None or row.facility_id != facility_id:
        raise NotFound("Testing service")
    return row


@router.get("/manage/facilities/{facility_id}/services")
def service_list(
    facility_id: ObjectId, request: Request, principal: PagePrincipal, session: DbSession
) -> Response:
    facility = managed_facility(session, principal, facility_id)
    page = page_of(request)
    rows, total = queries.list_testing_services(
        session,
        facility_id=facility_id,
        include_inactive=True,
        offset=(page - 1) * PAGE_SIZE,
        limit=PAGE_SIZE,
    )
    names = {
        i: name
        for i, name, _, _ in queries.instrument_choices(
            session, facility_ids=[facility_id], include_retired=True
        )
    }
    return render(
        request,
        "manage_instruments/services.html",
        {
            "facility": facility,
            "rows": [(row, [names.get(i, str(i)) for i in ids]) for row, ids in rows],
            "yuan": yuan,
            **pages(total, page),
            **common_context(request),
        },
    )


@router.get("/manage/facilities/{facility_id}/services/new")
def new_service_form(
    facility_id: ObjectId, request: Request, principal: PagePrincipal, session: DbSession
) -> Response:
    facility = managed_facility(session, principal, facility_id)
    return render(
        request,
        "manage_instruments/service_form.html",
        service_form_context(
            session, request, facility, row=None, values=service_form_values(None, []), errors={}
        ),
    )


@router.post("/manage/facilities/{facility_id}/services/new")
async def create_service(
    facility_id: ObjectId,
    request: Request,
    _csrf: CsrfChecked,
    principal: PagePrincipal,
    session: DbSession,
) -> Response:
    facility = managed_facility(session, principal, facility_id)
    form = await request.form()
    data, entered, errors = parse_service_form(form)
    data.pop("is_active")
    data["facility_id"] = facility_id
    created, problems = validate(TestingServiceCreate, data, SERVICE_YUAN_NAME)
    errors = problems | errors

    def answer(errors: dict[str, Any], status_code: int = 422) -> Response:
        return render(
            request,
            "manage_instruments/service_form.html",
            service_form_context(
                session, request, facility, row=None, values=entered, errors=errors
            ),
            status_code=status_code,
        )

    if created is None or errors:
        return answer(errors)

    def make() -> str:
        service.create_testing_service(session, actor=principal, data=created)
        return f"/manage/facilities/{facility_id}/services?done=created"

    try:
        return once(session, principal, entered, make)
    except (RuleViolation, Conflict) as exc:
        return answer(domain_errors(exc, SERVICE_YUAN_NAME), exc.status_code)


@router.get("/manage/facilities/{facility_id}/services/{service_id}/edit")
def edit_service_form(
    facility_id: ObjectId,
    service_id: ObjectId,
    request: Request,
    principal: PagePrincipal,
    session: DbSession,
) -> Response:
    facility = managed_facility(session, principal, facility_id)
    row = facility_service(session, facility_id, service_id)
    linked = queries.list_testing_services(
        session, facility_id=facility_id, include_inactive=True, limit=500
    )[0]
    ids = next((ids for found, ids in linked if found.id == service_id), [])
    return render(
        request,
        "manage_instruments/service_form.html",
        service_form_context(
            session, request, facility, row=row, values=service_form_values(row, ids), errors={}
        ),
    )


@router.post("/manage/facilities/{facility_id}/services/{service_id}/edit")
async def update_service(
    facility_id: ObjectId,
    service_id: ObjectId,
    request: Request,
    _csrf: CsrfChecked,
    principal: PagePrincipal,
    session: DbSession,
) -> Response:
    facility = managed_facility(session, principal, facility_id)
    row = facility_service(session, facility_id, service_id)
    form = await request.form()
    data, entered, errors = parse_service_form(form)
    update, problems = validate(TestingServiceUpdate, data, SERVICE_YUAN_NAME)
    errors = problems | errors

    def answer(errors: dict[str, Any], status_code: int = 422) -> Response:
        return render(
            request,
            "manage_instruments/service_form.html",
            service_form_context(
                session, request, facility, row=row, values=entered, errors=errors
            ),
            status_code=status_code,
        )

    if update is None or errors:
        return answer(errors)
    try:
        service.update_testing_service(session, actor=principal, service_id=service_id, data=update)
    except (RuleViolation, Conflict) as exc:
        return answer(domain_errors(exc, SERVICE_YUAN_NAME), exc.status_code)
    return redirect(f"/manage/facilities/{facility_id}/services?done=saved")


# --- Outages ------------------------------------------------------------------------------


def outage_targets(session: Session, scope: list[int] | None) -> list[dict[str, Any]]:
    """The choices of the outage form: each facility, then its instruments."""
    facilities, _ = queries.list_facilities(session, ids=scope, include_inactive=True, limit=500)
    instruments = queries.instrument_choices(session, facility_ids=scope)
    return [
        {
            "facility": facility,
            "instruments": [
                (i, name, code) for i, name, code, f in instruments if f == facility.id
            ],
        }
        for facility in facilities
    ]


def outages_context(
    session: Session,
    request: Request,
    scope: list[int] | None,
    *,
    values: dict[str, Any] | None = None,
    errors: dict[str, Any] | None = None,
) -> dict[str, Any]:
    upcoming_page, past_page = page_of(request, "upcoming"), page_of(request, "past")
    current = now()
    upcoming, upcoming_total = queries.outage_rows(
        session,
        facility_ids=scope,
        upcoming=True,
        at=current,
        offset=(upcoming_page - 1) * PAGE_SIZE,
        limit=PAGE_SIZE,
    )
    past, past_total = queries.outage_rows(
        session,
        facility_ids=scope,
        upcoming=False,
        at=current,
        offset=(past_page - 1) * PAGE_SIZE,
        limit=PAGE_SIZE,
    )
    return {
        "targets": outage_targets(session, scope),
        "kind_choices": choices_of(OUTAGE_KIND_LABELS),
        "kind_labels": OUTAGE_KIND_LABELS,
        "values": values or {"form_token": new_form_key(), "kind": "maintenance"},
        "errors": errors or {},
        "upcoming": upcoming,
        "upcoming_paging": pages(upcoming_total, upcoming_page),
        "past": past,
        "past_paging": pages(past_total, past_page),
        **common_context(request),
    }


@router.get("/manage/outages")
def outage_list(request: Request, principal: PagePrincipal, session: DbSession) -> Response:
    scope = require_manager(principal)
    return render(
        request, "manage_instruments/outages.html", outages_context(session, request, scope)
    )


@router.post("/manage/outages")
async def create_outage(
    request: Request,
    _csrf: CsrfChecked,
    principal: PagePrincipal,
    session: DbSession,
    settings: AppSettings,
) -> Response:
    """First a preview of the bookings the outage falls on; the confirmed form records it."""
    scope = require_manager(principal)
    form = await request.form()
    entered = {
        name: text(form, name) for name in ("target", "start", "end", "kind", "note", "form_token")
    }
    errors: dict[str, Any] = {}
    kind, _, raw_id = entered["target"].partition(":")
    instrument: Instrument | None = None
    target_id = parse_id(raw_id)
    if kind == "instrument" and target_id is not None:
        instrument = managed_instrument(session, principal, target_id, "record outages")
        facility = queries.get_facility(session, instrument.facility_id)
    elif kind == "facility" and target_id is not None:
        facility = managed_facility_of(session, principal, target_id, "record outages")
    else:
        errors["target"] = N_("Choose an instrument or a whole facility.")
        return render(
            request,
            "manage_instruments/outages.html",
            outages_context(session, request, scope, values=entered, errors=errors),
            status_code=422,
        )
    zone = ZoneInfo(facility.timezone)
    data = {
        "instrument_id": instrument.id if instrument else None,
        "facility_id": facility.id,
        "start_at": local_moment(entered["start"], zone, "start", errors),
        "end_at": local_moment(entered["end"], zone, "end", errors),
        "kind": entered["kind"],
        "note": entered["note"],
    }
    rename = {"start_at": "start", "end_at": "end", "instrument_id": "target"}
    outage, problems = validate(OutageCreate, data, rename)
    errors = problems | errors
    if outage is not None and not errors and outage.end_at <= outage.start_at:
        errors["end"] = N_("The outage must end after it starts.")
    if outage is None or errors:
        return render(
            request,
            "manage_instruments/outages.html",
            outages_context(session, request, scope, values=entered, errors=errors),
            status_code=422,
        )
    if not checked(form, "confirm"):
        affected = booking_queries.bookings_overlapping(
            session,
            facility_id=facility.id or 0,
            instrument_id=outage.instrument_id,
            start=outage.start_at,
            end=outage.end_at,
        )
        return render(
            request,
            "manage_instruments/outage_preview.html",
            {
                "values": entered,
                "outage": outage,
                "facility": facility,
                "instrument": instrument,
                "affected": affected,
                "action_text": OUTAGE_ACTION_TEXT[settings.outage_bookings_action],
                "kind_labels": OUTAGE_KIND_LABELS,
                "booking_status_labels": BOOKING_STATUS_LABELS,
            },
        )

    def make() -> str:
        created = service.create_outage(session, actor=principal, data=outage)
        booking_outages.apply_outage(
            session,
            actor=principal,
            outage_id=created.id or 0,
            action=booking_outages.OutageAction(settings.outage_bookings_action),
        )
        return f"/manage/outages/{created.id}?done=created"

    try:
        return once(session, principal, entered, make)
    except RuleViolation as exc:
        return render(
            request,
            "manage_instruments/outages.html",
            outages_context(
                session, request, scope, values=entered, errors=domain_errors(exc, rename)
            ),
            status_code=422,
        )


@router.get("/manage/outages/{outage_id}")
def outage_detail(
    outage_id: ObjectId, request: Request, principal: PagePrincipal, session: DbSession
) -> Response:
    require_manager(principal)
    outage = session.get(Outage, outage_id)
    if outage is None or not principal.manages_facility(outage.facility_id):
        raise NotFound("Outage")
    facility = queries.get_facility(session, outage.facility_id)
    instrument = session.get(Instrument, outage.instrument_id) if outage.instrument_id else None
    bookings = booking_queries.bookings_overlapping(
        session,
        facility_id=outage.facility_id,
        instrument_id=outage.instrument_id,
        start=outage.start_at,
        end=outage.end_at,
        statuses=(*HELD_STATUSES, BookingStatus.CANCELLED),
    )
    return render(
        request,
        "manage_instruments/outage.html",
        {
            "outage": outage,
            "facility": facility,
            "instrument": instrument,
            "bookings": bookings,
            "kind_labels": OUTAGE_KIND_LABELS,
            "booking_status_labels": BOOKING_STATUS_LABELS,
            **common_context(request),
        },
    )


@router.post("/manage/outages/{outage_id}/delete")
def delete_outage(
    outage_id: ObjectId, _csrf: CsrfChecked, principal: PagePrincipal, session: DbSession
) -> Response:
    require_manager(principal)
    if session.get(Outage, outage_id) is None:
        # Deleted already (a second click on the same button): land where the first went.
        return redirect("/manage/outages?done=deleted")
    service.delete_outage(session, actor=principal, outage_id=outage_id)
    return redirect("/manage/outages?done=deleted")


# --- Qualifications ------------------------------------------------------------------------


def user_by_email(session: Session, email: str) -> User | None:
    if not email:
        return None
    return session.exec(select(User).where(User.email == normalise_email(email))).first()


def valid_through(expires_at: datetime | None, timezone: str) -> date | None:
    """The last day a qualification holds, in the facility's zone: it expires at the midnight
    after the day the manager chose, so that midnight itself reads one day late."""
    if expires_at is None:
        return None
    moment = expires_at if expires_at.tzinfo else expires_at.replace(tzinfo=UTC)
    return (moment.astimezone(ZoneInfo(timezone)) - timedelta(microseconds=1)).date()


def qualifications_context(
    session: Session,
    request: Request,
    scope: list[int] | None,
    *,
    values: dict[str, Any] | None = None,
    errors: dict[str, Any] | None = None,
) -> dict[str, Any]:
    page = page_of(request)
    instrument_filter = request.query_params.get("instrument_id", "")
    email_filter = request.query_params.get("email", "").strip()
    instrument_id = parse_id(instrument_filter)
    if instrument_filter and instrument_id is None:
        raise NotFound("Instrument")
    user = user_by_email(session, email_filter)
    rows: list[dict[str, Any]] = []
    total = 0
    if not email_filter or user is not None:
        rows, total = queries.qualification_rows(
            session,
            facility_ids=scope,
            instrument_id=instrument_id,
            user_id=user.id if user else None,
            offset=(page - 1) * PAGE_SIZE,
            limit=PAGE_SIZE,
        )
    for row in rows:
        row["valid_through"] = valid_through(row["expires_at"], row["timezone"])
    query = {k: v for k, v in (("instrument_id", instrument_filter), ("email", email_filter)) if v}
    return {
        "rows": rows,
        "instruments": queries.instrument_choices(session, facility_ids=scope),
        "instrument_filter": instrument_filter,
        "email_filter": email_filter,
        "unknown_email": bool(email_filter) and user is None,
        "filter_query": urlencode(query),
        "values": values or {"form_token": new_form_key()},
        "errors": errors or {},
        **pages(total, page),
        **common_context(request),
    }


@router.get("/manage/qualifications")
def qualification_list(request: Request, principal: PagePrincipal, session: DbSession) -> Response:
    scope = require_manager(principal)
    return render(
        request,
        "manage_instruments/qualifications.html",
        qualifications_context(session, request, scope),
    )


@router.post("/manage/qualifications")
async def grant_qualification(
    request: Request, _csrf: CsrfChecked, principal: PagePrincipal, session: DbSession
) -> Response:
    scope = require_manager(principal)
    form = await request.form()
    entered = {
        name: text(form, name)
        for name in ("email", "instrument_id", "expires_on", "note", "form_token")
    }
    errors: dict[str, Any] = {}

    def answer(errors: dict[str, Any], status_code: int = 422) -> Response:
        return render(
            request,
            "manage_instruments/qualifications.html",
            qualifications_context(session, request, scope, values=entered, errors=errors),
            status_code=status_code,
        )

    user = user_by_email(session, entered["email"])
    if user is None:
        errors["email"] = N_("No user has this e-mail address.") if entered["email"] else REQUIRED
    wanted_instrument = parse_id(entered["instrument_id"])
    if wanted_instrument is None:
        errors["instrument_id"] = N_("Choose an instrument.")
        return answer(errors)
    instrument = managed_instrument(session, principal, wanted_instrument, "grant qualifications")
    zone = ZoneInfo(queries.get_facility(session, instrument.facility_id).timezone)
    expires_on = day(entered["expires_on"], "expires_on", errors)
    # Valid through the chosen day, in the facility's zone.
    expires_at = (
        datetime.combine(expires_on + timedelta(days=1), time(), tzinfo=zone)
        if expires_on
        else None
    )
    grant, problems = validate(
        QualificationGrant,
        {
            "user_id": user.id if user else 0,
            "instrument_id": instrument.id,
            "expires_at": expires_at,
            "note": entered["note"],
        },
        {"expires_at": "expires_on", "user_id": "email"},
    )
    errors = problems | errors
    if grant is None or errors:
        return answer(errors)

    def make() -> str:
        service.grant_qualification(session, actor=principal, data=grant)
        return f"/manage/qualifications?instrument_id={instrument.id}&done=granted"

    try:
        return once(session, principal, entered, make)
    except RuleViolation as exc:
        return answer(domain_errors(exc, {"expires_at": "expires_on", "user_id": "email"}))


@router.post("/manage/qualifications/{qualification_id}/revoke")
async def revoke_qualification(
    qualification_id: ObjectId,
    request: Request,
    _csrf: CsrfChecked,
    principal: PagePrincipal,
    session: DbSession,
    reason: Annotated[str, Form(max_length=300)] = "",
) -> Response:
    scope = require_manager(principal)
    if not reason.strip():
        return render(
            request,
            "manage_instruments/qualifications.html",
            qualifications_context(
                session,
                request,
                scope,
                errors={f"reason_{qualification_id}": N_("Give a reason.")},
            ),
            status_code=422,
        )
    try:
        revoked = service.revoke_qualification(
            session, actor=principal, qualification_id=qualification_id, reason=reason.strip()
        )
    except Conflict as exc:
        if exc.code == "already_revoked":
            # A second click on the same button: the first revoked it, land where it went.
            earlier = session.get(Qualification, qualification_id)
            where = f"instrument_id={earlier.instrument_id}&" if earlier is not None else ""
            return redirect(f"/manage/qualifications?{where}done=revoked")
        return render(
            request,
            "manage_instruments/qualifications.html",
            qualifications_context(
                session, request, scope, errors={"": [CONFLICT_MESSAGES.get(exc.code, exc.detail)]}
            ),
            status_code=exc.status_code,
        )
    return redirect(f"/manage/qualifications?instrument_id={revoked.instrument_id}&done=revoked")


# --- Sample service requests ---------------------------------------------------------------


@router.get("/manage/service-requests")
def service_request_list(
    request: Request, principal: PagePrincipal, session: DbSession
) -> Response:
    scope = require_manager(principal)
    page = page_of(request)
    status_filter = request.query_params.get("status", "")
    status = status_filter if status_filter in REQUEST_STATUS_LABELS else None
    rows, total, counts = booking_queries.facility_service_request_rows(
        session,
        facility_ids=scope,
        status=status,
        offset=(page - 1) * PAGE_SIZE,
        limit=PAGE_SIZE,
    )
    return render(
        request,
        "manage_instruments/service_requests.html",
        {
            "rows": rows,
            "counts": counts,
            "all_count": sum(counts.values()),
            "status_filter": status or "",
            "status_labels": REQUEST_STATUS_LABELS,
            **pages(total, page),
        },
    )


def managed_request(session: Session, principal: Principal, request_id: int) -> Any:
    require_manager(principal)
    found = service_requests.visible_request(session, actor=principal, request_id=request_id)
    if not principal.manages_facility(found.facility_id):
        raise NotFound("Service request")
    return found


def request_detail(
    session: Session,
    request: Request,
    principal: Principal,
    request_id: int,
    *,
    errors: dict[str, Any] | None = None,
    values: dict[str, Any] | None = None,
    status_code: int = 200,
) -> Response:
    found = managed_request(session, principal, request_id)
    testing_service = session.get(TestingService, found.testing_service_id)
    requester = session.get(User, found.user_id)
    facility = queries.get_facility(session, found.facility_id)
    return render(
        request,
        "manage_instruments/service_request.html",
        {
            "item": found,
            "testing_service": testing_service,
            "requester": requester,
            "facility": facility,
            "files": service_requests.files_of(session, actor=principal, request_id=request_id),
            "status_labels": REQUEST_STATUS_LABELS,
            "errors": errors or {},
            "values": values or {},
            "upload_limit_mb": report_upload_limit(request) // (1024 * 1024),
            **common_context(request),
        },
        status_code=status_code,
    )


def report_upload_limit(request: Request) -> int:
    """The API's upload limit (web/app.py gives this page's bodies the same allowance)."""
    return int(request.app.state.settings.max_upload_bytes)


@router.get("/manage/service-requests/{request_id}")
def service_request_page(
    request_id: ObjectId, request: Request, principal: PagePrincipal, session: DbSession
) -> Response:
    return request_detail(session, request, principal, request_id)


def request_action(
    session: Session,
    request: Request,
    principal: Principal,
    request_id: int,
    done: str,
    act: Callable[[], object],
    reached: ServiceRequestStatus | None = None,
) -> Response:
    managed_request(session, principal, request_id)
    try:
        act()
    except (RuleViolation, Conflict) as exc:
        session.rollback()
        if (
            reached is not None
            and managed_request(session, principal, request_id).status == reached
        ):
            # A second click on the same button: the first already did it, land where it went.
            return redirect(f"/manage/service-requests/{request_id}?done={done}")
        errors: dict[str, Any] = {}
        for problem in exc.problems:
            message = PROBLEM_MESSAGES.get(problem.code, problem.message)
            if problem.field:
                errors.setdefault(problem.field, message)
            else:
                errors.setdefault("", []).append(message)
        if not exc.problems:
            errors[""] = [CONFLICT_MESSAGES.get(exc.code, exc.detail)]
        return request_detail(
            session, request, principal, request_id, errors=errors, status_code=exc.status_code
        )
    return redirect(f"/manage/service-requests/{request_id}?done={done}")


@router.post("/manage/service-requests/{request_id}/accept")
def accept_service_request(
    request_id: ObjectId,
    request: Request,
    _csrf: CsrfChecked,
    principal: PagePrincipal,
    session: DbSession,
    accept_day: Annotated[str, Form(alias="day", max_length=20)] = "",
) -> Response:
    errors: dict[str, Any] = {}
    chosen = day(accept_day.strip(), "day", errors)
    if errors:
        return request_detail(
            session, request, principal, request_id, errors=errors, status_code=422
        )
    return request_action(
        session,
        request,
        principal,
        request_id,
        "accepted",
        lambda: commit_with_retries(
            session,
            lambda: service_requests.accept(
                session, actor=principal, request_id=request_id, day=chosen
            ),
        ),
        ServiceRequestStatus.ACCEPTED,
    )


@router.post("/manage/service-requests/{request_id}/reject")
def reject_service_request(
    request_id: ObjectId,
    request: Request,
    _csrf: CsrfChecked,
    principal: PagePrincipal,
    session: DbSession,
    reason: Annotated[str, Form(max_length=1000)] = "",
) -> Response:
    if not reason.strip():
        managed_request(session, principal, request_id)
        return request_detail(
            session,
            request,
            principal,
            request_id,
            errors={"reason": N_("Give a reason.")},
            values={"reason": reason},
            status_code=422,
        )
    return request_action(
        session,
        request,
        principal,
        request_id,
        "rejected",
        lambda: service_requests.reject(
            session, actor=principal, request_id=request_id, reason=reason.strip()
        ),
        ServiceRequestStatus.REJECTED,
    )


@router.post("/manage/service-requests/{request_id}/start")
def start_service_request(
    request_id: ObjectId,
    request: Request,
    _csrf: CsrfChecked,
    principal: PagePrincipal,
    session: DbSession,
) -> Response:
    return request_action(
        session,
        request,
        principal,
        request_id,
        "started",
        lambda: service_requests.start(session, actor=principal, request_id=request_id),
        ServiceRequestStatus.IN_PROGRESS,
    )


@router.post("/manage/service-requests/{request_id}/complete")
def complete_service_request(
    request_id: ObjectId,
    request: Request,
    _csrf: CsrfChecked,
    principal: PagePrincipal,
    session: DbSession,
) -> Response:
    return request_action(
        session,
        request,
        principal,
        request_id,
        "completed",
        lambda: service_requests.complete(session, actor=principal, request_id=request_id),
        ServiceRequestStatus.COMPLETED,
    )


@router.post("/manage/service-requests/{request_id}/report")
def upload_report(
    request_id: ObjectId,
    request: Request,
    _csrf: CsrfChecked,
    principal: PagePrincipal,
    session: DbSession,
    file: Annotated[UploadFile | None, File()] = None,
) -> Response:
    """The result report (the same file checks and size limit as the API); marks it reported."""
    if file is None or not file.filename:
        managed_request(session, principal, request_id)
        return request_detail(
            session,
            request,
            principal,
            request_id,
            errors={"file": N_("Choose a file.")},
            status_code=422,
        )
    limit = report_upload_limit(request)
    content = file.file.read(limit + 1)
    found = managed_request(session, principal, request_id)
    if (
        found.status == ServiceRequestStatus.REPORTED
        and session.exec(
            select(ServiceRequestFile.id).where(
                ServiceRequestFile.service_request_id == request_id,
                ServiceRequestFile.kind == "report",
                ServiceRequestFile.sha256 == hashlib.sha256(content).hexdigest(),
            )
        ).first()
    ):
        # The same report sent twice (a double click): the first stored it, land where it went.
        return redirect(f"/manage/service-requests/{request_id}?done=reported")
    return request_action(
        session,
        request,
        principal,
        request_id,
        "reported",
        lambda: service_requests.attach(
            session,
            actor=principal,
            request_id=request_id,
            kind="report",
            filename=file.filename or "report",
            content=content,
            max_bytes=limit,
        ),
    )


@router.get("/manage/service-requests/{request_id}/files/{file_id}")
def download_file(
    request_id: ObjectId, file_id: ObjectId, principal: PagePrincipal, session: DbSession
) -> Response:
    managed_request(session, principal, request_id)
    stored = service_requests.read_file(
        session, actor=principal, request_id=request_id, file_id=file_id
    )
    return Response(
        stored.content,
        media_type=stored.content_type,
        headers={
            "Content-Disposition": f"attachment; filename*=UTF-8''{quote(stored.filename)}",
            "Cache-Control": "private, no-store",
        },
    )


# Problems the services report that these pages show, translated by the templates.
DOMAIN_MESSAGES = [
    N_("Already registered."),
    N_("May not be emptied."),
    N_("The minimum billing unit must be a multiple or a divisor of the slot."),
    N_("The slot must be at least 5 minutes and divide a day evenly."),
    N_("The minimum duration must be a whole number of slots."),
    N_("The maximum duration must be a whole number of slots."),
    N_("The maximum duration is below the minimum."),
    N_("Bookings may open 1 to 730 days ahead."),
    N_("A charge is 0 to 100 percent."),
    N_("Use a time from 00:00 to 24:00."),
    N_("Opening times must lie within the day (00:00–24:00)."),
    N_("An opening interval must end after it starts."),
    N_("Opening intervals of one day must not overlap."),
    N_("The last day is before the first."),
    N_("The expiry must be in the future."),
    N_("The qualification is already revoked."),
    N_("The file is empty."),
    N_("That day has passed."),
]
