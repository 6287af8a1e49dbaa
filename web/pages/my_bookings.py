"""Researcher pages: my bookings (cancel, move, check in and out, hand over, the calendar
feed), the waitlist and sample service requests.

Only the user's own objects appear here: another user's booking, waitlist entry or service
request answers 404 whatever the user's roles (lab managers act on other people's bookings from
the manage pages). Every form carries the CSRF token and a one-time form key, so a
double-clicked submit takes effect once and the second click lands where the first one led.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError
from sqlmodel import Session

from booking import queries, requests, service, waitlist
from booking.models import Booking, ServiceRequest
from booking.queries import OwnBooking
from booking.requests import ServiceRequestCreate
from booking.rules import BookingStatus, OperatedBy
from booking.service import BookingPolicy
from core.auth.principal import Principal
from core.clock import now
from core.errors import DomainError, NotFound, Problem, RuleViolation
from instruments import queries as catalogue
from instruments.rules import OutageKind
from notifications import feeds
from notifications.models import FeedKind
from web.deps import MAX_ID, AppSettings, DbSession, ObjectId
from web.messages import N_
from web.pages.deps import (
    EARLIEST_YEAR,
    LATEST_YEAR,
    CsrfChecked,
    PagePrincipal,
    parse_id,
    parse_samples,
    safe_next,
    within_calendar,
)
from web.pages.form_keys import answered, claim_form, new_form_key
from web.retry import commit_with_retries
from web.routing import TransactionalRoute
from web.templating import render

# The new-request form carries a file: web/app.py lets its bodies be as large as an upload.
SERVICE_REQUEST_UPLOAD_PATH = r"^/my/service-requests/new$"

router = APIRouter(route_class=TransactionalRoute, include_in_schema=False)

PAGE_SIZE = 20
PageNumber = Annotated[int, Query(ge=1, le=100_000)]

BOOKING_STATUS = {
    BookingStatus.OFFERED: N_("Offered from the waitlist"),
    BookingStatus.PENDING: N_("Awaiting approval"),
    BookingStatus.CONFIRMED: N_("Confirmed"),
    BookingStatus.IN_USE: N_("In use"),
    BookingStatus.COMPLETED: N_("Completed"),
    BookingStatus.NO_SHOW: N_("No-show"),
    BookingStatus.CANCELLED: N_("Cancelled"),
    BookingStatus.REJECTED: N_("Rejected"),
    BookingStatus.EXPIRED: N_("Expired"),
}
MOVED = N_("Moved")
CANCELLED_LATE = N_("Cancelled late")

WAITLIST_STATUS = {
    "waiting": N_("Waiting"),
    "offered": N_("Offered"),
    "accepted": N_("Offer accepted"),
    "expired": N_("Expired"),
    "cancelled": N_("Left"),
}

SERVICE_REQUEST_STATUS = {
    "submitted": N_("Submitted"),
    "accepted": N_("Accepted"),
    "in_progress": N_("In progress"),
    "reported": N_("Report ready"),
    "completed": N_("Completed"),
    "rejected": N_("Rejected"),
    "cancelled": N_("Cancelled"),
}

HISTORY_ACTIONS = {
    "booking.requested": N_("Requested"),
    "booking.confirmed": N_("Confirmed"),
    "booking.rejected": N_("Rejected"),
    "booking.cancelled": N_("Cancelled"),
    "booking.moved": N_("Moved to a new time"),
    "booking.rescheduled": N_("Created by a move"),
    "booking.handed_over": N_("Handed over"),
    "booking.checked_in": N_("Checked in"),
    "booking.completed": N_("Checked out"),
    "booking.no_show": N_("No-show"),
    "booking.expired": N_("Expired"),
    "booking.offer_expired": N_("Offer lapsed"),
    "booking.flagged": N_("Affected by an outage"),
    "waitlist.offered": N_("Offered from the waitlist"),
    "service_request.submitted": N_("Submitted"),
    "service_request.accepted": N_("Accepted"),
    "service_request.rejected": N_("Rejected"),
    "service_request.cancelled": N_("Cancelled"),
    "service_request.in_progress": N_("In progress"),
    "service_request.reported": N_("Report ready"),
    "service_request.completed": N_("Completed"),
}

OUTAGE_KINDS = {
    OutageKind.MAINTENANCE: N_("Maintenance"),
    OutageKind.CALIBRATION: N_("Calibration"),
    OutageKind.REPAIR: N_("Repair"),
    OutageKind.OTHER: N_("Other"),
}

# The domain's messages are English and some carry values; pages show a translated message
# chosen by the problem's code, and the English text only for a code not listed here.
PROBLEM_MESSAGES = {
    "wrong_status": N_("This cannot be done in the current status."),
    "overlap": N_("The instrument is already booked at that time."),
    "not_aligned": N_("Start and end on the instrument's time slots."),
    "too_short": N_("The booking is shorter than the instrument allows."),
    "too_long": N_("The booking is longer than the instrument allows."),
    "too_short_notice": N_("This is too short notice for the instrument."),
    "too_far_ahead": N_("This is too far ahead for the instrument."),
    "during_outage": N_("The instrument is out of service then."),
    "outside_opening_hours": N_("The instrument is not open for the whole time."),
    "in_past": N_("The time has passed."),
    "end_not_after_start": N_("The end must be after the start."),
    "quota_user_hours": N_("This exceeds the hours you may hold a week on this instrument."),
    "quota_organisation_hours": N_(
        "This exceeds the hours your organisation may hold a week on this instrument."
    ),
    "quota_future_bookings": N_(
        "You hold as many upcoming bookings on this instrument as allowed."
    ),
    "suspended": N_("Your booking rights are suspended after repeated no-shows."),
    "not_qualified": N_("Operating this instrument yourself needs a valid qualification."),
    "not_colleague": N_("Hand a booking only to an active colleague of the same organisation."),
    "too_early": N_("Check-in opens shortly before the start."),
    "too_late": N_("The booking is over."),
    "instrument_busy": N_("The instrument is still in use; check in at your start time."),
    "time_is_free": N_("That time is free: book it instead of waiting."),
    "already_waiting": N_("You are already waiting for this time."),
    "offer_lapsed": N_("The offer has lapsed."),
    "over_capacity": N_("More samples than the service takes in a day; split the request."),
    "file_type": N_("This kind of file is not accepted: PDF, PNG, JPEG, ZIP, XLSX, DOCX or CSV."),
    "file_too_large": N_("The file is too large."),
    "empty_file": N_("The file is empty."),
    "not_bookable": N_("The instrument cannot be booked now."),
    "booking_rate": N_("Too many booking requests; wait a minute."),
    "staff_only": N_("Only the facility's staff operate this instrument."),
    "self_only": N_("This instrument is operated by its users."),
    "invalid_time": N_("Enter a date and time."),
    "time_out_of_range": N_("Choose a time between the years 2000 and 2100."),
    "invalid_number": N_("Enter a whole number."),
    "invalid_choice": N_("Choose one of the options."),
    "unknown_instrument": N_("Choose an instrument."),
    "unknown_testing_service": N_("Choose a testing service."),
    "invalid_date": N_("Enter a date."),
    "too_long_text": N_("The text is too long."),
    "form_reused": N_("This form was already sent. Reload the page and try again."),
    "request_expired": N_("The request has expired."),
    "move_deadline": N_(
        "Too close to the start to move the booking: cancel it (a late cancellation) or ask "
        "the facility."
    ),
    "started": N_("The booking has started and can no longer be moved."),
    "unchanged": N_("The booking is already at this time."),
    "same_user": N_("The booking is already this colleague's."),
}

# The same rule read from the other side: handing over, it is the colleague who needs it.
HAND_OVER_MESSAGES = {
    **PROBLEM_MESSAGES,
    "not_qualified": N_("Your colleague is not qualified on this instrument."),
    "quota_user_hours": N_(
        "Your colleague already holds the hours allowed a week on this instrument."
    ),
    "quota_future_bookings": N_(
        "Your colleague holds as many upcoming bookings on this instrument as allowed."
    ),
    "suspended": N_("Your colleague's booking rights are suspended after repeated no-shows."),
}

# --- Helpers shared by the pages -----------------------------------------------------------


def status_label(booking: Booking) -> str:
    """The message id of a booking's status as people read it (a move is not a cancellation)."""
    if booking.status == BookingStatus.CANCELLED and booking.replaced_by_id is not None:
        return MOVED
    if booking.status == BookingStatus.CANCELLED and booking.late_cancellation:
        return CANCELLED_LATE
    return BOOKING_STATUS[BookingStatus(booking.status)]


def time_span(start: datetime, end: datetime, zone: str) -> str:
    """``2026-12-01 10:00–12:00 (Asia/Shanghai)``, in the facility's zone, with the zone named."""
    tz = ZoneInfo(zone)
    local_start, local_end = start.astimezone(tz), end.astimezone(tz)
    until = (
        local_end.strftime("%H:%M")
        if local_end.date() == local_start.date()
        else local_end.strftime("%Y-%m-%d %H:%M")
    )
    return f"{local_start.strftime('%Y-%m-%d %H:%M')}–{until} ({tz.key})"


def local_input(moment: datetime | None, zone: str) -> str:
    """A time as a ``datetime-local`` field shows it, in the facility's zone."""
    return moment.astimezone(ZoneInfo(zone)).strftime("%Y-%m-%dT%H:%M") if moment else ""


def parse_time(text: str, zone: str, field: str) -> datetime:
    """A form's time: ISO 8601 with an offset, or a wall-clock time in the facility's zone."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise RuleViolation([Problem("invalid_time", "Enter a date and time.", field)]) from None
    if not within_calendar(moment):
        # Year 1 or 9999 would overflow on the way to UTC; no booking lies that far anyway.
        raise RuleViolation(
            [
                Problem(
                    "time_out_of_range",
                    f"Choose a time between the years {EARLIEST_YEAR} and {LATEST_YEAR}.",
                    field,
                )
            ]
        )
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=ZoneInfo(zone))
    return moment.astimezone(ZoneInfo("UTC"))


def form_errors(
    exc: DomainError, fields: Mapping[str, str], messages: Mapping[str, str] = PROBLEM_MESSAGES
) -> dict[str, str | list[str]]:
    """A domain error's problems next to the form's fields (``fields``: the domain's field name
    → the form's); problems of other fields are listed above the form. ``messages``: the
    translated message per problem code."""
    errors: dict[str, str | list[str]] = {}
    general: list[str] = []
    for problem in exc.problems:
        message = messages.get(problem.code, problem.message)
        field = fields.get(problem.field or "")
        if field and field not in errors:
            errors[field] = message
        elif not field and message not in general:
            general.append(message)
    if not exc.problems:
        general.append(messages.get(exc.code, exc.detail))
    if general:
        errors[""] = general
    return errors


def run_once(session: Session, work: Callable[[], str]) -> str:
    """Run a form's work in a savepoint and commit (retried after a deadlock); a domain error
    takes back everything the work wrote and leaves the rest of the session as it was, so the
    page can be shown again with the reasons."""

    def in_savepoint() -> str:
        with session.begin_nested():
            return work()

    return commit_with_retries(session, in_savepoint)


def redirect(location: str) -> RedirectResponse:
    return RedirectResponse(location, status_code=303)


def page_number(page: int) -> int:
    return max(1, page)


def _own_booking(session: Session, principal: Principal, booking_id: int) -> Booking:
    booking = service.visible_booking(session, actor=principal, booking_id=booking_id)
    if booking.user_id != principal.user_id:
        raise NotFound("Booking")
    return booking


def _with_facility(session: Session, booking: Booking) -> OwnBooking:
    instrument, facility = catalogue.instrument_with_facility(session, booking.instrument_id)
    return OwnBooking(
        booking,
        instrument.name,
        facility.name,
        facility.timezone,
        instrument.cancellation_deadline_hours,
        instrument.late_cancel_charge_percent,
    )


def _actions(row: OwnBooking, settings: AppSettings) -> queries.BookingActions:
    return queries.actions_now(
        row.booking,
        cancellation_deadline_hours=row.cancellation_deadline_hours,
        grace=BookingPolicy.from_settings(settings).grace,
        at=now(),
    )


def _helpers() -> dict[str, Any]:
    return {
        "status_label": status_label,
        "time_span": time_span,
        "local_input": local_input,
        "new_form_key": new_form_key,
    }


# --- My bookings ---------------------------------------------------------------------------


@router.get("/my/bookings")
def my_bookings(
    request: Request,
    principal: PagePrincipal,
    session: DbSession,
    settings: AppSettings,
    when: str = "upcoming",
    page: PageNumber = 1,
    created: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
) -> Response:
    upcoming = when != "past"
    page = page_number(page)
    rows, total = queries.own_bookings(
        session,
        user_id=principal.user_id,
        upcoming=upcoming,
        at=now(),
        offset=(page - 1) * PAGE_SIZE,
        limit=PAGE_SIZE,
    )
    user_feeds = [
        (feed, *feeds.feed_urls(settings.base_url, feed.token))
        for feed in feeds.list_feeds(session, actor=principal)
        if feed.kind == FeedKind.USER
    ]
    return render(
        request,
        "my/bookings.html",
        {
            **_helpers(),
            "rows": [(row, _actions(row, settings)) for row in rows],
            "total": total,
            "page": page,
            "pages": max(1, -(-total // PAGE_SIZE)),
            "when": "upcoming" if upcoming else "past",
            "created": created,
            "feeds": user_feeds,
        },
    )


def _booking_page(
    request: Request,
    session: Session,
    principal: Principal,
    settings: AppSettings,
    booking_id: int,
    *,
    form: str = "",
    errors: Mapping[str, Any] | None = None,
    values: Mapping[str, Any] | None = None,
    status_code: int = 200,
) -> Response:
    row = _with_facility(session, _own_booking(session, principal, booking_id))
    earlier = queries.replaced_booking_id(session, booking_id=booking_id)
    history = queries.history(
        session,
        subject_type="booking",
        subject_ids=[booking_id] if earlier is None else [earlier, booking_id],
    )
    recorded = [row.booking.reason, *(str(e.data.get("reason") or "") for e in history)]
    reasons = queries.explain_reasons(session, row.booking, [r for r in recorded if r])
    return render(
        request,
        "my/booking.html",
        {
            **_helpers(),
            "row": row,
            "reasons": reasons,
            "outage_kinds": OUTAGE_KINDS,
            "actions": _actions(row, settings),
            "history": history,
            "history_actions": HISTORY_ACTIONS,
            "replaced_booking_id": earlier,
            "form": form,
            "errors": dict(errors or {}),
            "values": dict(values or {}),
        },
        status_code=status_code,
    )


@router.get("/my/bookings/{booking_id}")
def booking_detail(
    request: Request,
    booking_id: ObjectId,
    principal: PagePrincipal,
    session: DbSession,
    settings: AppSettings,
) -> Response:
    return _booking_page(request, session, principal, settings, booking_id)


def _act_on_booking(
    request: Request,
    session: Session,
    principal: Principal,
    settings: AppSettings,
    booking_id: int,
    *,
    form: str,
    form_key: str,
    values: Mapping[str, Any],
    fields: Mapping[str, str],
    work: Callable[[], str],
    messages: Mapping[str, str] = PROBLEM_MESSAGES,
) -> Response:
    """Run one action on the user's own booking once, then show where it led (303); a rule
    it breaks re-renders the booking with the problems next to the form's fields."""

    def once() -> str:
        record, earlier = claim_form(
            session, user_id=principal.user_id, form_key=form_key, action=f"{form}:{booking_id}"
        )
        if earlier:
            return earlier
        _own_booking(session, principal, booking_id)  # someone else's: 404, nothing done
        return answered(session, record, work())

    try:
        return redirect(run_once(session, once))
    except DomainError as exc:
        if exc.status_code == 404:
            raise
        if exc.code == "wrong_status":
            # Changed meanwhile (another tab, a second click without the form key): show it.
            booking = _own_booking(session, principal, booking_id)
            target = booking.replaced_by_id or booking_id
            return redirect(f"/my/bookings/{target}?changed=1")
        return _booking_page(
            request,
            session,
            principal,
            settings,
            booking_id,
            form=form,
            errors=form_errors(exc, fields, messages),
            values=values,
            status_code=exc.status_code,
        )


@router.post("/my/bookings/{booking_id}/cancel")
def cancel_booking(
    request: Request,
    booking_id: ObjectId,
    _csrf: CsrfChecked,
    principal: PagePrincipal,
    session: DbSession,
    settings: AppSettings,
    reason: Annotated[str, Form()] = "",
    form_key: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "",
) -> Response:
    values = {"reason": reason}

    def work() -> str:
        if len(reason) > 1000:
            raise RuleViolation([Problem("too_long_text", "At most 1000 characters.", "reason")])
        service.cancel(session, actor=principal, booking_id=booking_id, reason=reason.strip())
        return safe_next(next) if next else f"/my/bookings/{booking_id}?done=cancelled"

    return _act_on_booking(
        request,
        session,
        principal,
        settings,
        booking_id,
        form="cancel",
        form_key=form_key,
        values=values,
        fields={"reason": "reason"},
        work=work,
    )


@router.post("/my/bookings/{booking_id}/move")
def move_booking(
    request: Request,
    booking_id: ObjectId,
    _csrf: CsrfChecked,
    principal: PagePrincipal,
    session: DbSession,
    settings: AppSettings,
    start: Annotated[str, Form()] = "",
    end: Annotated[str, Form()] = "",
    form_key: Annotated[str, Form()] = "",
) -> Response:
    values = {"start": start, "end": end}

    def work() -> str:
        zone = _with_facility(session, _own_booking(session, principal, booking_id)).timezone
        problems = []
        times: dict[str, datetime] = {}
        for name, text in values.items():
            try:
                times[name] = parse_time(text, zone, name)
            except RuleViolation as exc:
                problems += exc.problems
        if problems:
            raise RuleViolation(problems)
        moved = service.move(
            session,
            actor=principal,
            booking_id=booking_id,
            start=times["start"],
            end=times["end"],
            override=[],
            policy=BookingPolicy.from_settings(settings),
        )
        return f"/my/bookings/{moved.id}?done=moved"

    return _act_on_booking(
        request,
        session,
        principal,
        settings,
        booking_id,
        form="move",
        form_key=form_key,
        values=values,
        fields={"start": "start", "end": "end"},
        work=work,
    )


@router.post("/my/bookings/{booking_id}/check-in")
def check_in(
    request: Request,
    booking_id: ObjectId,
    _csrf: CsrfChecked,
    principal: PagePrincipal,
    session: DbSession,
    settings: AppSettings,
    form_key: Annotated[str, Form()] = "",
) -> Response:
    def work() -> str:
        service.check_in(
            session,
            actor=principal,
            booking_id=booking_id,
            policy=BookingPolicy.from_settings(settings),
        )
        return f"/my/bookings/{booking_id}?done=checked_in"

    return _act_on_booking(
        request,
        session,
        principal,
        settings,
        booking_id,
        form="check_in",
        form_key=form_key,
        values={},
        fields={},
        work=work,
    )


@router.post("/my/bookings/{booking_id}/check-out")
def check_out(
    request: Request,
    booking_id: ObjectId,
    _csrf: CsrfChecked,
    principal: PagePrincipal,
    session: DbSession,
    settings: AppSettings,
    samples: Annotated[str, Form()] = "",
    form_key: Annotated[str, Form()] = "",
) -> Response:
    values = {"samples": samples}

    def work() -> str:
        problems: list[Problem] = []
        count = parse_samples(samples, "samples", problems)
        if problems:
            raise RuleViolation(problems)
        service.check_out(session, actor=principal, booking_id=booking_id, samples=count)
        return f"/my/bookings/{booking_id}?done=checked_out"

    return _act_on_booking(
        request,
        session,
        principal,
        settings,
        booking_id,
        form="check_out",
        form_key=form_key,
        values=values,
        fields={"samples": "samples"},
        work=work,
    )


@router.post("/my/bookings/{booking_id}/hand-over")
def hand_over(
    request: Request,
    booking_id: ObjectId,
    _csrf: CsrfChecked,
    principal: PagePrincipal,
    session: DbSession,
    settings: AppSettings,
    email: Annotated[str, Form()] = "",
    form_key: Annotated[str, Form()] = "",
) -> Response:
    values = {"email": email}

    def work() -> str:
        # An unknown address gets the same answer as a stranger's: who is registered stays private.
        colleague_id = queries.active_user_id_by_email(session, email) or 0
        service.hand_over(
            session,
            actor=principal,
            booking_id=booking_id,
            to_user_id=colleague_id,
            policy=BookingPolicy.from_settings(settings),
        )
        return "/my/bookings?handed_over=1"

    return _act_on_booking(
        request,
        session,
        principal,
        settings,
        booking_id,
        form="hand_over",
        form_key=form_key,
        values=values,
        fields={"user_id": "email"},
        work=work,
        messages=HAND_OVER_MESSAGES,
    )


# --- Calendar feed -------------------------------------------------------------------------


def _feed_action(
    session: Session, principal: Principal, form_key: str, action: str, work: Callable[[], None]
) -> Response:
    def once() -> str:
        record, earlier = claim_form(
            session, user_id=principal.user_id, form_key=form_key, action=action
        )
        if earlier:
            return earlier
        work()
        return answered(session, record, "/my/bookings?feed=1#calendar-feed")

    return redirect(run_once(session, once))


@router.post("/my/calendar-feed")
def create_feed(
    _csrf: CsrfChecked,
    principal: PagePrincipal,
    session: DbSession,
    form_key: Annotated[str, Form()] = "",
) -> Response:
    def work() -> None:
        feeds.create_feed(session, actor=principal, kind=FeedKind.USER, subject_id=None)

    return _feed_action(session, principal, form_key, "feed:create", work)


@router.post("/my/calendar-feed/{feed_id}/regenerate")
def regenerate_feed(
    feed_id: ObjectId,
    _csrf: CsrfChecked,
    principal: PagePrincipal,
    session: DbSession,
    form_key: Annotated[str, Form()] = "",
) -> Response:
    def work() -> None:
        feeds.regenerate_feed(session, actor=principal, feed_id=feed_id)

    return _feed_action(session, principal, form_key, f"feed:regenerate:{feed_id}", work)


@router.post("/my/calendar-feed/{feed_id}/revoke")
def revoke_feed(
    feed_id: ObjectId,
    _csrf: CsrfChecked,
    principal: PagePrincipal,
    session: DbSession,
    form_key: Annotated[str, Form()] = "",
) -> Response:
    def work() -> None:
        feeds.revoke_feed(session, actor=principal, feed_id=feed_id)

    return _feed_action(session, principal, form_key, f"feed:revoke:{feed_id}", work)


# --- Waitlist ------------------------------------------------------------------------------


def _waitlist_page(
    request: Request,
    session: Session,
    principal: Principal,
    *,
    page: PageNumber = 1,
    errors: Mapping[str, Any] | None = None,
    values: Mapping[str, Any] | None = None,
    status_code: int = 200,
) -> Response:
    page = page_number(page)
    rows, total = queries.own_waitlist(
        session, user_id=principal.user_id, offset=(page - 1) * PAGE_SIZE, limit=PAGE_SIZE
    )
    shown = dict(values or {})
    instrument_name, zone = None, str(request.app.state.settings.timezone)
    instrument_id = str(shown.get("instrument_id") or "")
    chosen_instrument = parse_id(instrument_id.strip())
    if errors and chosen_instrument is not None:
        with contextlib.suppress(NotFound):  # an unknown instrument: its field says so already
            instrument, facility = catalogue.instrument_with_facility(session, chosen_instrument)
            instrument_name, zone = instrument.name, facility.timezone
        for name in ("start", "end"):  # as the datetime-local fields show them
            with contextlib.suppress(RuleViolation):
                shown[name] = local_input(parse_time(str(shown.get(name, "")), zone, name), zone)
    return render(
        request,
        "my/waitlist.html",
        {
            **_helpers(),
            "rows": rows,
            "total": total,
            "page": page,
            "pages": max(1, -(-total // PAGE_SIZE)),
            "now": now(),
            "waitlist_status": WAITLIST_STATUS,
            "errors": dict(errors or {}),
            "values": shown,
            "instrument_name": instrument_name,
            "zone": zone,
        },
        status_code=status_code,
    )


@router.get("/my/waitlist")
def my_waitlist(
    request: Request, principal: PagePrincipal, session: DbSession, page: PageNumber = 1
) -> Response:
    return _waitlist_page(request, session, principal, page=page)


@router.post("/my/waitlist")
def join_waitlist(
    request: Request,
    _csrf: CsrfChecked,
    principal: PagePrincipal,
    session: DbSession,
    instrument_id: Annotated[str, Form()] = "",
    start: Annotated[str, Form()] = "",
    end: Annotated[str, Form()] = "",
    form_key: Annotated[str, Form()] = "",
) -> Response:
    values = {"instrument_id": instrument_id, "start": start, "end": end}

    def once() -> str:
        chosen_instrument = parse_id(instrument_id.strip())
        if chosen_instrument is None:
            raise RuleViolation(
                [Problem("unknown_instrument", "Choose an instrument.", "instrument_id")]
            )
        record, earlier = claim_form(
            session, user_id=principal.user_id, form_key=form_key, action="waitlist:join"
        )
        if earlier:
            return earlier
        try:
            zone = catalogue.instrument_with_facility(session, chosen_instrument)[1].timezone
        except NotFound:
            raise RuleViolation(
                [Problem("unknown_instrument", "Choose an instrument.", "instrument_id")]
            ) from None
        problems = []
        times: dict[str, datetime] = {}
        for name in ("start", "end"):
            try:
                times[name] = parse_time(values[name], zone, name)
            except RuleViolation as exc:
                problems += exc.problems
        if problems:
            raise RuleViolation(problems)
        entry = waitlist.join(
            session,
            actor=principal,
            instrument_id=chosen_instrument,
            start=times["start"],
            end=times["end"],
        )
        return answered(session, record, f"/my/waitlist?joined={entry.id}")

    try:
        return redirect(run_once(session, once))
    except DomainError as exc:
        fields = {"instrument_id": "instrument_id", "start": "start", "end": "end"}
        return _waitlist_page(
            request,
            session,
            principal,
            errors=form_errors(exc, fields),
            values=values,
            status_code=exc.status_code,
        )


@router.post("/my/waitlist/{entry_id}/leave")
def leave_waitlist(
    request: Request,
    entry_id: ObjectId,
    _csrf: CsrfChecked,
    principal: PagePrincipal,
    session: DbSession,
    form_key: Annotated[str, Form()] = "",
) -> Response:
    def once() -> str:
        record, earlier = claim_form(
            session,
            user_id=principal.user_id,
            form_key=form_key,
            action=f"waitlist:leave:{entry_id}",
        )
        if earlier:
            return earlier
        waitlist.leave(session, actor=principal, entry_id=entry_id)
        return answered(session, record, "/my/waitlist?left=1")

    try:
        return redirect(run_once(session, once))
    except DomainError as exc:
        if exc.code == "wrong_status":
            return redirect("/my/waitlist?changed=1")
        raise


@router.post("/my/waitlist/offers/{booking_id}/accept")
def accept_offer(
    request: Request,
    booking_id: ObjectId,
    _csrf: CsrfChecked,
    principal: PagePrincipal,
    session: DbSession,
    settings: AppSettings,
    operated_by: Annotated[str, Form()] = OperatedBy.SELF.value,
    form_key: Annotated[str, Form()] = "",
) -> Response:
    values = {"operated_by": operated_by}

    def work() -> str:
        if operated_by not in {o.value for o in OperatedBy}:
            raise RuleViolation([Problem("invalid_choice", "Choose who operates.", "operated_by")])
        waitlist.accept(
            session,
            actor=principal,
            booking_id=booking_id,
            operated_by=OperatedBy(operated_by),
            policy=BookingPolicy.from_settings(settings),
        )
        return f"/my/bookings/{booking_id}?done=accepted"

    return _act_on_booking(
        request,
        session,
        principal,
        settings,
        booking_id,
        form="accept",
        form_key=form_key,
        values=values,
        fields={"operated_by": "operated_by"},
        work=work,
    )


# --- Sample service requests ---------------------------------------------------------------


@router.get("/my/service-requests")
def my_service_requests(
    request: Request, principal: PagePrincipal, session: DbSession, page: PageNumber = 1
) -> Response:
    page = page_number(page)
    rows, total = queries.own_service_requests(
        session, user_id=principal.user_id, offset=(page - 1) * PAGE_SIZE, limit=PAGE_SIZE
    )
    return render(
        request,
        "my/service_requests.html",
        {
            **_helpers(),
            "rows": rows,
            "total": total,
            "page": page,
            "pages": max(1, -(-total // PAGE_SIZE)),
            "request_status": SERVICE_REQUEST_STATUS,
        },
    )


def upload_limit(settings: AppSettings) -> int:
    """The largest file this page takes (web/app.py gives the form the upload body limit)."""
    return settings.max_upload_bytes


def _request_form(
    request: Request,
    session: Session,
    settings: AppSettings,
    *,
    values: Mapping[str, Any],
    errors: Mapping[str, Any] | None = None,
    status_code: int = 200,
) -> Response:
    choices = queries.service_choices(session)
    return render(
        request,
        "my/service_request_form.html",
        {
            **_helpers(),
            "options": [("", "—")]
            + [
                (
                    s.id,
                    f"{s.name} · {facility}"
                    + (f" ({s.method_standard})" if s.method_standard else ""),
                )
                for s, facility in choices
            ],
            "values": dict(values),
            "errors": dict(errors or {}),
            "max_bytes": upload_limit(settings),
            "max_mb": max(1, upload_limit(settings) // (1024 * 1024)),
            "form_key": values.get("form_key") or new_form_key(),
        },
        status_code=status_code,
    )


@router.get("/my/service-requests/new")
def new_service_request(
    request: Request,
    principal: PagePrincipal,
    session: DbSession,
    settings: AppSettings,
    service_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
) -> Response:
    return _request_form(
        request, session, settings, values={"testing_service_id": service_id, "sample_count": 1}
    )


def _service_request_data(
    testing_service_id: str, sample_count: str, description: str, preferred_date: str
) -> ServiceRequestCreate:
    if parse_id(testing_service_id.strip()) is None:
        testing_service_id = ""  # refused below, with the other fields' problems
    try:
        return ServiceRequestCreate.model_validate(
            {
                "testing_service_id": testing_service_id,
                "sample_count": sample_count,
                "description": description,
                "preferred_date": preferred_date or None,
            }
        )
    except ValidationError as exc:
        messages = {
            "testing_service_id": ("unknown_testing_service", "Choose a testing service."),
            "sample_count": ("invalid_number", "Enter a whole number."),
            "description": ("too_long_text", "The text is too long."),
            "preferred_date": ("invalid_date", "Enter a date."),
        }
        fields = dict.fromkeys(str(e["loc"][0]) for e in exc.errors() if e.get("loc"))
        raise RuleViolation([Problem(*messages[f], f) for f in fields if f in messages]) from None


@router.post("/my/service-requests/new")
def submit_service_request(
    request: Request,
    _csrf: CsrfChecked,
    principal: PagePrincipal,
    session: DbSession,
    settings: AppSettings,
    testing_service_id: Annotated[str, Form()] = "",
    sample_count: Annotated[str, Form()] = "",
    description: Annotated[str, Form()] = "",
    preferred_date: Annotated[str, Form()] = "",
    form_key: Annotated[str, Form()] = "",
    file: Annotated[UploadFile | None, File()] = None,
) -> Response:
    values = {
        "testing_service_id": testing_service_id,
        "sample_count": sample_count,
        "description": description,
        "preferred_date": preferred_date,
        "form_key": form_key,
    }
    limit = upload_limit(settings)
    content = file.file.read(limit + 1) if file is not None and file.filename else b""

    def once() -> str:
        data = _service_request_data(testing_service_id, sample_count, description, preferred_date)
        record, earlier = claim_form(
            session, user_id=principal.user_id, form_key=form_key, action="service_request:new"
        )
        if earlier:
            return earlier
        try:
            submitted = requests.submit(session, actor=principal, data=data)
        except NotFound:
            raise RuleViolation(
                [
                    Problem(
                        "unknown_testing_service", "Choose a testing service.", "testing_service_id"
                    )
                ]
            ) from None
        if file is not None and file.filename:
            requests.attach(
                session,
                actor=principal,
                request_id=submitted.id or 0,
                kind="attachment",
                filename=file.filename,
                content=content,
                max_bytes=limit,
            )
        return answered(session, record, f"/my/service-requests/{submitted.id}?created=1")

    try:
        return redirect(run_once(session, once))
    except DomainError as exc:
        # Nothing half-written: the savepoint took the request back with its refused file.
        fields = {
            f: f
            for f in ("testing_service_id", "sample_count", "description", "preferred_date", "file")
        }
        return _request_form(
            request,
            session,
            settings,
            values=values,
            errors=form_errors(exc, fields),
            status_code=exc.status_code,
        )


def _own_request(session: Session, principal: Principal, request_id: int) -> ServiceRequest:
    found = requests.visible_request(session, actor=principal, request_id=request_id)
    if found.user_id != principal.user_id:
        raise NotFound("Service request")
    return found


def _request_page(
    request: Request,
    session: Session,
    principal: Principal,
    request_id: int,
    *,
    errors: Mapping[str, Any] | None = None,
    values: Mapping[str, Any] | None = None,
    status_code: int = 200,
) -> Response:
    found = _own_request(session, principal, request_id)
    testing_service, facility_name, zone = queries.service_with_facility(
        session, testing_service_id=found.testing_service_id
    )
    return render(
        request,
        "my/service_request.html",
        {
            **_helpers(),
            "sr": found,
            "service": testing_service,
            "facility_name": facility_name,
            "zone": zone,
            "files": requests.files_of(session, actor=principal, request_id=request_id),
            "history": queries.history(
                session, subject_type="service_request", subject_ids=[request_id]
            ),
            "history_actions": HISTORY_ACTIONS,
            "request_status": SERVICE_REQUEST_STATUS,
            "can_cancel": found.status in requests.FROM["cancel"],
            "errors": dict(errors or {}),
            "values": dict(values or {}),
        },
        status_code=status_code,
    )


@router.get("/my/service-requests/{request_id}")
def service_request_detail(
    request: Request, request_id: ObjectId, principal: PagePrincipal, session: DbSession
) -> Response:
    return _request_page(request, session, principal, request_id)


@router.post("/my/service-requests/{request_id}/cancel")
def cancel_service_request(
    request: Request,
    request_id: ObjectId,
    _csrf: CsrfChecked,
    principal: PagePrincipal,
    session: DbSession,
    reason: Annotated[str, Form()] = "",
    form_key: Annotated[str, Form()] = "",
) -> Response:
    _own_request(session, principal, request_id)

    def once() -> str:
        record, earlier = claim_form(
            session,
            user_id=principal.user_id,
            form_key=form_key,
            action=f"service_request:cancel:{request_id}",
        )
        if earlier:
            return earlier
        if len(reason) > 1000:
            raise RuleViolation([Problem("too_long_text", "At most 1000 characters.", "reason")])
        requests.cancel(session, actor=principal, request_id=request_id, reason=reason.strip())
        return answered(session, record, f"/my/service-requests/{request_id}?done=cancelled")

    try:
        return redirect(run_once(session, once))
    except DomainError as exc:
        if exc.code == "wrong_status":
            return redirect(f"/my/service-requests/{request_id}?changed=1")
        if exc.status_code == 404:
            raise
        return _request_page(
            request,
            session,
            principal,
            request_id,
            errors=form_errors(exc, {"reason": "reason"}),
            values={"reason": reason},
            status_code=exc.status_code,
        )


def content_disposition(filename: str) -> str:
    """``attachment`` with an ASCII fallback name and the real one (RFC 6266 / 5987): no quote,
    backslash, control character or path of the stored name reaches the header."""
    name = filename.replace("\\", "/").rsplit("/", 1)[-1] or "download"
    fallback = "".join(
        c if c.isascii() and c.isprintable() and c not in '"\\;' else "_" for c in name
    )
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


@router.get("/my/service-requests/{request_id}/files/{file_id}")
def download_file(
    request_id: ObjectId, file_id: ObjectId, principal: PagePrincipal, session: DbSession
) -> Response:
    _own_request(session, principal, request_id)
    stored = requests.read_file(session, actor=principal, request_id=request_id, file_id=file_id)
    return Response(
        stored.content,
        media_type=stored.content_type,
        headers={
            "Content-Disposition": content_disposition(stored.filename),
            "Cache-Control": "private, no-store",
        },
    )
