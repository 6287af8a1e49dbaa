"""The check-in desk and per-instrument QR codes: check-in and check-out at the instrument.

A lab manager checks people in and out at the desk; a researcher scans the instrument's QR
code, which opens ``/checkin/{instrument_id}``, and checks in to (or out of) its own booking.
Large instruments log their use this way, never by hand.
"""

from __future__ import annotations

import hashlib
import io
from typing import Annotated, Any
from urllib.parse import urlencode

import segno
from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import RedirectResponse, Response

from booking import queries as bookings
from booking import service as booking_service
from booking.models import Booking
from booking.rules import BookingStatus
from booking.service import BookingPolicy
from core.auth.principal import Principal
from core.errors import DomainError, NotFound, Problem
from instruments import queries as catalogue
from instruments import service as instruments
from web.deps import MAX_ID, AppSettings, DbSession, ObjectId
from web.messages import N_
from web.pages.deps import CsrfChecked, OptionalPagePrincipal, PagePrincipal, parse_samples
from web.pages.manage import (
    PAGE_SIZE,
    STATUS_LABELS,
    FormId,
    Page,
    Pager,
    QueryId,
    facilities_in,
    local_day,
    manager_scope,
    narrowed_scope,
    page_link,
    today_at,
    today_in,
)
from web.routing import TransactionalRoute
from web.templating import render

router = APIRouter(route_class=TransactionalRoute, include_in_schema=False)

DESK_STATUSES = (BookingStatus.CONFIRMED, BookingStatus.IN_USE, BookingStatus.COMPLETED)
QR_MAX_AGE_S = 7 * 24 * 3600
DESK_MESSAGES = [
    N_("You cannot check in this booking: its status is completed."),
    N_("The booking is over."),
    N_("The instrument is still in use; check in at your start time."),
    N_("Page not found."),
]


def checkin_url(settings: Any, instrument_id: int) -> str:
    """The absolute address an instrument's QR code opens."""
    return f"{settings.base_url.rstrip('/')}/checkin/{instrument_id}"


def problem_message(exc: DomainError) -> str:
    """A service refusal in words the page can translate (by code where the text has values)."""
    if exc.code == "too_early":
        return N_("Check-in opens shortly before the start. Come back a little later.")
    if exc.code == "wrong_status":
        return N_("The booking is no longer waiting for this step; the page shows it as it is.")
    return exc.detail


# --- The desk ------------------------------------------------------------------------------


def render_desk(
    request: Request,
    session: DbSession,
    principal: Principal,
    settings: Any,
    *,
    q: str = "",
    instrument_id: int | None = None,
    facility_id: int | None = None,
    page: int = 1,
    status_code: int = 200,
    message: str | None = None,
    errors: dict[int, str] | None = None,
    values: dict[int, str] | None = None,
) -> Response:
    scope = manager_scope(principal)
    shown = narrowed_scope(principal, scope, facility_id)
    facilities = facilities_in(session, scope)
    window = today_at([f for f in facilities if shown is None or f.id in shown], settings.timezone)
    rows, total = bookings.facility_bookings(
        session,
        facility_ids=shown,
        start=window.start,
        end=window.end,
        statuses=DESK_STATUSES,
        instrument_id=instrument_id,
        search=q or None,
        offset=(page - 1) * PAGE_SIZE,
        limit=PAGE_SIZE,
    )
    return render(
        request,
        "desk/desk.html",
        {
            "rows": [row for row in rows if window.holds(row)],
            "pager": Pager(page, total),
            "page_link": lambda n: page_link(request, n),
            "q": q,
            "instruments": catalogue.instruments_at(session, facility_ids=shown)
            if shown is not None
            else [],
            "instrument_id": instrument_id,
            "facilities": facilities if scope is None or len(scope) > 1 else [],
            "facility_id": facility_id,
            "status_labels": STATUS_LABELS,
            "message": message,
            "errors": errors or {},
            "values": values or {},
            "done": request.query_params.get("done"),
            "day": window.day,
            "day_zone": window.zone,
        },
        status_code=status_code,
    )


@router.get("/desk")
def desk(
    request: Request,
    principal: PagePrincipal,
    session: DbSession,
    settings: AppSettings,
    q: Annotated[str, Query(max_length=100)] = "",
    instrument_id: QueryId = None,
    facility_id: QueryId = None,
    page: Page = 1,
) -> Response:
    return render_desk(
        request,
        session,
        principal,
        settings,
        q=q.strip(),
        instrument_id=instrument_id,
        facility_id=facility_id,
        page=page,
    )


def _desk_return(q: str, instrument_id: int | None, facility_id: int | None, done: str) -> str:
    """Back to the desk as it was filtered, saying what was done."""
    params: dict[str, str | int] = {"done": done}
    if q:
        params["q"] = q
    if instrument_id is not None:
        params["instrument_id"] = instrument_id
    if facility_id is not None:
        params["facility_id"] = facility_id
    return f"/desk?{urlencode(params)}"


@router.post("/desk/bookings/{booking_id}/{step}")
def desk_step(
    request: Request,
    booking_id: ObjectId,
    step: str,
    _csrf: CsrfChecked,
    principal: PagePrincipal,
    session: DbSession,
    settings: AppSettings,
    samples: Annotated[str, Form(max_length=20)] = "",
    q: Annotated[str, Form(max_length=100)] = "",
    instrument_id: FormId = None,
    facility_id: FormId = None,
) -> Response:
    """Check a booking of the manager's facilities in or out at the desk."""
    manager_scope(principal)
    if step not in ("check-in", "check-out"):
        raise NotFound("Page")
    booking = booking_service.visible_booking(session, actor=principal, booking_id=booking_id)
    if not principal.manages_facility(booking.facility_id):
        raise NotFound("Booking")  # the manager's own booking elsewhere is not the desk's
    back = _desk_return(q, instrument_id, facility_id, step)
    if _already_done(booking, step):
        return RedirectResponse(back, status_code=303)  # a repeated click: nothing more to do

    def desk_again(status_code: int, **shown: Any) -> Response:
        """The desk as the manager left it, with why the step was refused."""
        return render_desk(
            request,
            session,
            principal,
            settings,
            q=q,
            instrument_id=instrument_id,
            facility_id=facility_id,
            status_code=status_code,
            **shown,
        )

    problems: list[Problem] = []
    count = parse_samples(samples, "samples", problems)
    if problems:
        return desk_again(
            422, errors={booking_id: problems[0].message}, values={booking_id: samples}
        )
    try:
        _apply(session, principal, settings, booking, step, count)
    except DomainError as exc:
        if exc.status_code in (403, 404):
            raise
        session.rollback()
        return desk_again(exc.status_code, message=problem_message(exc))
    return RedirectResponse(back, status_code=303)


def _already_done(booking: Booking, step: str) -> bool:
    done = BookingStatus.IN_USE if step == "check-in" else BookingStatus.COMPLETED
    return booking.status == done


def _apply(
    session: DbSession,
    principal: Principal,
    settings: Any,
    booking: Booking,
    step: str,
    samples: int | None,
) -> None:
    if step == "check-in":
        booking_service.check_in(
            session,
            actor=principal,
            booking_id=booking.id or 0,
            policy=BookingPolicy.from_settings(settings),
        )
    else:
        booking_service.check_out(
            session, actor=principal, booking_id=booking.id or 0, samples=samples
        )


# --- QR codes ------------------------------------------------------------------------------


@router.get("/manage/instruments/{instrument_id}/qr")
def qr_page(
    request: Request,
    instrument_id: ObjectId,
    principal: PagePrincipal,
    session: DbSession,
    settings: AppSettings,
) -> Response:
    """A printable sheet with the instrument's check-in QR code."""
    instrument = instruments.managed_instrument(
        session, actor=principal, instrument_id=instrument_id, action="print its QR code"
    )
    facility = catalogue.get_facility(session, instrument.facility_id)
    return render(
        request,
        "desk/qr.html",
        {
            "instrument": instrument,
            "facility": facility,
            "url": checkin_url(settings, instrument_id),
        },
    )


def qr_svg(url: str) -> bytes:
    """The QR code of ``url`` as a standalone SVG document."""
    buffer = io.BytesIO()
    segno.make(url, error="m").save(buffer, kind="svg", scale=8, border=4, title=url)
    return buffer.getvalue()


@router.get("/instruments/{instrument_id}/qr.svg")
def qr_image(
    request: Request,
    instrument_id: ObjectId,
    principal: OptionalPagePrincipal,
    session: DbSession,
    settings: AppSettings,
) -> Response:
    """The instrument's check-in QR code (it names nothing but a public address)."""
    if principal is None and not settings.catalogue_public:
        raise NotFound("Instrument")
    instruments.get_instrument(session, instrument_id)
    url = checkin_url(settings, instrument_id)
    etag = '"' + hashlib.sha256(url.encode()).hexdigest()[:32] + '"'
    headers = {"Cache-Control": f"public, max-age={QR_MAX_AGE_S}", "ETag": etag}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return Response(qr_svg(url), media_type="image/svg+xml", headers=headers)


# --- Check-in by QR code -------------------------------------------------------------------


def render_checkin(
    request: Request,
    session: DbSession,
    principal: Principal,
    instrument_id: int,
    *,
    status_code: int = 200,
    message: str | None = None,
    samples_error: str | None = None,
    samples_value: str | None = None,
) -> Response:
    instrument, facility = catalogue.instrument_with_facility(session, instrument_id)
    day_start, day_end = local_day(today_in(facility.timezone), facility.timezone)
    booking = bookings.booking_to_use_now(
        session,
        user_id=principal.user_id,
        instrument_id=instrument_id,
        day_start=day_start,
        day_end=day_end,
    )
    return render(
        request,
        "desk/checkin.html",
        {
            "instrument": instrument,
            "facility": facility,
            "booking": booking,
            "message": message,
            "samples_error": samples_error,
            "samples_value": samples_value,
            "done": request.query_params.get("done"),
            "status_labels": STATUS_LABELS,
        },
        status_code=status_code,
    )


@router.get("/checkin/{instrument_id}")
def checkin_page(
    request: Request, instrument_id: ObjectId, principal: PagePrincipal, session: DbSession
) -> Response:
    """What the instrument's QR code opens: the scanner's booking on it today, to use."""
    return render_checkin(request, session, principal, instrument_id)


@router.post("/checkin/{instrument_id}/{step}")
def checkin_step(
    request: Request,
    instrument_id: ObjectId,
    step: str,
    _csrf: CsrfChecked,
    principal: PagePrincipal,
    session: DbSession,
    settings: AppSettings,
    booking_id: Annotated[int, Form(ge=1, le=MAX_ID)],
    samples: Annotated[str, Form(max_length=20)] = "",
) -> Response:
    """Check in to or out of one's own booking on this instrument."""
    if step not in ("check-in", "check-out"):
        raise NotFound("Page")
    booking = booking_service.visible_booking(session, actor=principal, booking_id=booking_id)
    if booking.user_id != principal.user_id or booking.instrument_id != instrument_id:
        raise NotFound("Booking")
    back = f"/checkin/{instrument_id}?done={step}"
    if _already_done(booking, step):
        return RedirectResponse(back, status_code=303)
    problems: list[Problem] = []
    count = parse_samples(samples, "samples", problems)
    if problems:
        return render_checkin(
            request,
            session,
            principal,
            instrument_id,
            status_code=422,
            samples_error=problems[0].message,
            samples_value=samples,
        )
    try:
        _apply(session, principal, settings, booking, step, count)
    except DomainError as exc:
        if exc.status_code in (403, 404):
            raise
        session.rollback()
        return render_checkin(
            request,
            session,
            principal,
            instrument_id,
            status_code=exc.status_code,
            message=problem_message(exc),
        )
    return RedirectResponse(back, status_code=303)
