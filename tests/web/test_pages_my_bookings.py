"""The researcher's own pages: my bookings (cancel, move, check in and out, hand over, the
calendar feed), the waitlist and sample service requests; on SQLite and PostgreSQL."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, col, select

from booking import requests, service
from booking.models import Booking, ServiceRequest, ServiceRequestFile, UsageRecord, WaitlistEntry
from booking.rules import BookingStatus, OperatedBy
from booking.schemas import BookingCreate
from booking.service import BookingPolicy
from core.accounts.models import Organisation, User
from core.accounts.rules import Role, ScopeKind
from core.accounts.schemas import RoleGrant
from core.audit import AuditEntry
from core.auth.principal import Principal, load_principal
from core.clock import frozen
from core.db import ConnectionBoundDatabase
from core.settings import Settings
from instruments import service as instruments
from instruments.models import Facility, Instrument, TestingService
from instruments.schemas import QualificationGrant
from notifications.models import CalendarFeed
from tests.factories import csrf_from, login_page, make_organisation, make_user
from tests.instruments.factories import make_facility, make_instrument, make_testing_service
from tests.querycount import counted_statements

SHANGHAI = ZoneInfo("Asia/Shanghai")
POLICY = BookingPolicy.from_settings(Settings())
PDF = b"%PDF-1.4\n% a small test file\n"


def at(local: str) -> datetime:
    """A Shanghai wall-clock time such as "2026-12-01 10:00", as aware UTC."""
    return datetime.fromisoformat(local).replace(tzinfo=SHANGHAI).astimezone(UTC)


NOW = at("2026-11-30 09:00")  # a Monday; the facility opens 09:00–17:00 on weekdays


@pytest.fixture(autouse=True)
def frozen_now() -> Iterator[None]:
    with frozen(NOW):
        yield


@dataclass
class Lab:
    organisation: Organisation
    facility: Facility
    instrument: Instrument
    manager: User
    researcher: User
    colleague: User  # same organisation, qualified
    stranger: User  # another organisation


def qualify(session: Session, user: User, instrument: Instrument) -> None:
    instruments.grant_qualification(
        session,
        actor=None,
        data=QualificationGrant(user_id=user.id or 0, instrument_id=instrument.id or 0),
    )


@pytest.fixture
def lab(session: Session) -> Lab:
    university = make_organisation(session)
    facility = make_facility(session, organisation=university)
    instrument = make_instrument(session, facility=facility)
    manager = make_user(
        session,
        organisation=university,
        roles=[
            RoleGrant(role=Role.LAB_MANAGER, scope_kind=ScopeKind.FACILITY, scope_id=facility.id)
        ],
    )
    found = Lab(
        organisation=university,
        facility=facility,
        instrument=instrument,
        manager=manager,
        researcher=make_user(session, organisation=university, roles=[Role.RESEARCHER]),
        colleague=make_user(session, organisation=university, roles=[Role.RESEARCHER]),
        stranger=make_user(
            session, organisation=make_organisation(session), roles=[Role.RESEARCHER]
        ),
    )
    for user in (found.researcher, found.colleague, found.stranger):
        qualify(session, user, instrument)
    return found


def principal(session: Session, user: User) -> Principal:
    return load_principal(session, user)


def book(session: Session, lab: Lab, user: User, start: str, end: str, **fields: Any) -> Booking:
    """A booking requested through the booking service, in Shanghai wall-clock times."""
    return service.create_booking(
        session,
        actor=principal(session, user),
        data=BookingCreate(
            instrument_id=lab.instrument.id or 0, start=at(start), end=at(end), **fields
        ),
        policy=POLICY,
    )


def booking_in(
    session: Session, lab: Lab, user: User, status: BookingStatus, start: datetime, **fields: Any
) -> Booking:
    """A booking that earlier operations left in ``status`` (written directly, for set-up)."""
    booking = Booking(
        instrument_id=lab.instrument.id or 0,
        facility_id=lab.facility.id or 0,
        user_id=user.id or 0,
        organisation_id=user.organisation_id,
        start_at=start,
        end_at=start + timedelta(hours=1),
        held_until=start + timedelta(hours=1),
        status=status,
        operated_by=OperatedBy.SELF,
        checked_in_at=start if status in (BookingStatus.IN_USE, BookingStatus.COMPLETED) else None,
        created_by_id=user.id,
        **fields,
    )
    session.add(booking)
    session.flush()
    return booking


def row_ids(html: str) -> set[int]:
    return {int(i) for i in re.findall(r'data-booking-id="(\d+)"', html)}


def status_of(html: str, booking_id: int) -> str:
    """The data-status of the status element inside the booking's element."""
    block = html.split(f'data-booking-id="{booking_id}"', 1)[1]
    found = re.search(r'class="status[^"]*" data-status="([a-z_]+)"', block)
    assert found, block[:500]
    return found.group(1)


def form_key_for(html: str, action: str) -> str:
    """The one-time form key of the form posting to ``action``."""
    form = html.split(f'action="{action}"', 1)[1].split("</form>", 1)[0]
    return form.split('name="form_key" value="', 1)[1].split('"', 1)[0]


def post(
    client: TestClient, path: str, data: dict[str, Any] | None = None, page: str = "/my/bookings"
) -> httpx.Response:
    """Submit a form with the CSRF token of ``page`` (and the form's key when it has one)."""
    html = client.get(page).text
    fields = {"csrf_token": csrf_from(html), **(data or {})}
    if f'action="{path}"' in html and "form_key" not in fields:
        fields["form_key"] = form_key_for(html, path)
    return client.post(path, data=fields, follow_redirects=False)


def audit_actions(session: Session, subject_type: str, subject_id: int) -> list[tuple[str, Any]]:
    return [
        (e.action, e.actor_id)
        for e in session.exec(
            select(AuditEntry)
            .where(
                AuditEntry.subject_type == subject_type, AuditEntry.subject_id == str(subject_id)
            )
            .order_by(col(AuditEntry.id))
        ).all()
    ]


# --- The list and the detail page ----------------------------------------------------------


def test_my_bookings_lists_only_my_own_split_into_upcoming_and_past(
    client: TestClient, session: Session, lab: Lab
) -> None:
    upcoming = book(session, lab, lab.researcher, "2026-12-01 10:00", "2026-12-01 11:00")
    past = booking_in(session, lab, lab.researcher, BookingStatus.COMPLETED, at("2026-11-27 10:00"))
    others = book(session, lab, lab.stranger, "2026-12-02 10:00", "2026-12-02 11:00")
    login_page(client, lab.researcher.email)

    page = client.get("/my/bookings")
    earlier = client.get("/my/bookings?when=past")

    assert page.status_code == 200
    assert row_ids(page.text) == {upcoming.id}
    assert status_of(page.text, upcoming.id or 0) == "confirmed"
    assert "已确认" in page.text
    assert lab.instrument.name in page.text
    assert lab.facility.name in page.text
    assert "2026-12-01 10:00–11:00 (Asia/Shanghai)" in page.text
    assert row_ids(earlier.text) == {past.id}
    assert client.get(f"/my/bookings/{others.id}").status_code == 404
    assert client.get("/my/bookings/999999").status_code == 404
    assert client.get(f"/my/bookings/{upcoming.id}").status_code == 200


def test_a_lab_manager_does_not_see_the_researchers_booking_on_its_own_pages(
    client: TestClient, session: Session, lab: Lab
) -> None:
    theirs = book(session, lab, lab.researcher, "2026-12-01 10:00", "2026-12-01 11:00")
    login_page(client, lab.manager.email)

    assert theirs.id not in row_ids(client.get("/my/bookings").text)
    assert client.get(f"/my/bookings/{theirs.id}").status_code == 404
    assert post(client, f"/my/bookings/{theirs.id}/cancel", {"reason": "x"}).status_code == 404
    session.refresh(theirs)
    assert theirs.status == BookingStatus.CONFIRMED


def test_the_booking_form_lands_on_a_confirmation(
    client: TestClient, session: Session, lab: Lab
) -> None:
    login_page(client, lab.researcher.email)
    book_path = f"/instruments/{lab.instrument.id}/book"
    start, end = at("2026-12-01 10:00"), at("2026-12-01 11:00")
    form_page = client.get(
        book_path,
        params={"start": start.astimezone(SHANGHAI).isoformat(), "end": end.isoformat()},
    )
    form = form_page.text.split(f'action="{book_path}"', 1)[1].split("</form>", 1)[0]
    fields = dict(re.findall(r'<input[^>]*name="([^"]+)"[^>]*value="([^"]*)"', form))
    fields["operated_by"] = re.findall(r'name="operated_by" value="(\w+)" checked', form)[0]

    sent = client.post(book_path, data={**fields, "purpose": "形貌观察"}, follow_redirects=False)
    booking = session.exec(select(Booking).where(Booking.user_id == lab.researcher.id)).one()
    detail = client.get(sent.headers["location"])

    assert sent.status_code == 303
    assert sent.headers["location"] == f"/my/bookings/{booking.id}?created=1"
    assert (booking.start_at, booking.end_at) == (start, end)
    assert "预约申请已发送" in detail.text
    assert status_of(detail.text, booking.id or 0) == "confirmed"
    assert "预约申请已发送" in client.get(f"/my/bookings?created={booking.id}").text


def test_the_pages_need_a_login(client: TestClient) -> None:
    for path in ("/my/bookings", "/my/waitlist", "/my/service-requests", "/my/bookings/1"):
        answer = client.get(path, follow_redirects=False)
        assert answer.status_code == 303
        assert answer.headers["location"].startswith("/login?next=")


# --- Cancel --------------------------------------------------------------------------------


def test_cancelling_through_the_page_cancels_once_and_is_audited(
    client: TestClient, session: Session, lab: Lab
) -> None:
    booking = book(session, lab, lab.researcher, "2026-12-03 10:00", "2026-12-03 11:00")
    login_page(client, lab.researcher.email)
    page = client.get("/my/bookings").text
    path = f"/my/bookings/{booking.id}/cancel"
    form = {"csrf_token": csrf_from(page), "form_key": form_key_for(page, path), "reason": "病了"}

    assert "免费取消截止" in page  # before the deadline: free, and said so
    first = client.post(path, data=form, follow_redirects=False)
    twin = client.post(path, data=form, follow_redirects=False)  # the double click
    again = post(client, path, {"reason": "again"})  # a stale second tab, with a new key

    assert first.status_code == twin.status_code == 303
    assert twin.headers["location"] == first.headers["location"]
    assert again.status_code == 303
    assert again.headers["location"] == f"/my/bookings/{booking.id}?changed=1"
    shown = client.get(again.headers["location"])
    assert shown.status_code == 200
    assert status_of(shown.text, booking.id or 0) == "cancelled"
    session.refresh(booking)
    assert booking.status == BookingStatus.CANCELLED
    assert booking.reason == "病了"
    assert not booking.late_cancellation
    cancelled = [a for a in audit_actions(session, "booking", booking.id or 0) if "cancel" in a[0]]
    assert cancelled == [("booking.cancelled", lab.researcher.id)]


def test_cancelling_after_the_deadline_warns_of_the_charge_and_counts_as_late(
    client: TestClient, session: Session, lab: Lab
) -> None:
    # Starts in five hours; the instrument's deadline is 24 hours before the start.
    soon = booking_in(session, lab, lab.researcher, BookingStatus.CONFIRMED, at("2026-11-30 14:00"))
    later = book(session, lab, lab.researcher, "2026-12-04 10:00", "2026-12-04 11:00")
    login_page(client, lab.researcher.email)

    page = client.get("/my/bookings").text
    soon_block = page.split(f'data-booking-id="{soon.id}"', 1)[1].split("</li>", 1)[0]
    later_block = page.split(f'data-booking-id="{later.id}"', 1)[1].split("</li>", 1)[0]
    assert "取消截止时间（2026-11-29 14:00 (Asia/Shanghai)）已过" in soon_block
    assert "50 %" in soon_block
    assert "已过" not in later_block

    assert post(client, f"/my/bookings/{soon.id}/cancel").status_code == 303
    session.refresh(soon)
    assert soon.status == BookingStatus.CANCELLED
    assert soon.late_cancellation
    assert status_of(client.get("/my/bookings?when=past").text, soon.id or 0) == "cancelled"


def test_the_pages_speak_english_to_an_english_speaking_user(
    client: TestClient, session: Session, lab: Lab
) -> None:
    english = make_user(session, organisation=lab.organisation, locale="en")
    qualify(session, english, lab.instrument)
    booking_in(session, lab, english, BookingStatus.CONFIRMED, at("2026-11-30 14:00"))
    login_page(client, english.email)

    page = client.get("/my/bookings").text

    assert "Upcoming" in page
    assert "Confirmed" in page
    assert (
        "The cancellation deadline (2026-11-29 14:00 (Asia/Shanghai)) has passed: "
        "a late-cancellation charge of 50 % of the price may apply."
    ) in page
    assert "Calendar subscription" in page


def test_a_form_without_its_csrf_token_is_refused(
    client: TestClient, session: Session, lab: Lab
) -> None:
    booking = book(session, lab, lab.researcher, "2026-12-03 10:00", "2026-12-03 11:00")
    login_page(client, lab.researcher.email)
    client.get("/my/bookings")

    for path, data in [
        (f"/my/bookings/{booking.id}/cancel", {"reason": ""}),
        (
            f"/my/bookings/{booking.id}/move",
            {"start": "2026-12-03T12:00", "end": "2026-12-03T13:00"},
        ),
        (f"/my/bookings/{booking.id}/hand-over", {"email": lab.colleague.email}),
        ("/my/calendar-feed", {}),
        ("/my/waitlist", {"instrument_id": lab.instrument.id}),
        ("/my/service-requests/new", {"sample_count": "1"}),
    ]:
        assert client.post(path, data=data, follow_redirects=False).status_code == 403, path
    session.refresh(booking)
    assert booking.status == BookingStatus.CONFIRMED
    assert session.exec(select(CalendarFeed)).all() == []


def test_a_tampered_id_of_someone_elses_booking_is_not_found(
    client: TestClient, session: Session, lab: Lab
) -> None:
    mine = book(session, lab, lab.researcher, "2026-12-03 10:00", "2026-12-03 11:00")
    others = book(session, lab, lab.stranger, "2026-12-03 12:00", "2026-12-03 13:00")
    login_page(client, lab.researcher.email)
    page = client.get("/my/bookings").text
    key = form_key_for(page, f"/my/bookings/{mine.id}/cancel")

    for action, data in [
        ("cancel", {"reason": ""}),
        ("move", {"start": "2026-12-03T14:00", "end": "2026-12-03T15:00"}),
        ("check-in", {}),
        ("check-out", {}),
        ("hand-over", {"email": lab.colleague.email}),
    ]:
        answer = client.post(
            f"/my/bookings/{others.id}/{action}",
            data={"csrf_token": csrf_from(page), "form_key": key, **data},
            follow_redirects=False,
        )
        assert answer.status_code == 404, action
    session.refresh(others)
    assert (others.status, others.user_id) == (BookingStatus.CONFIRMED, lab.stranger.id)
    accept = post(client, f"/my/waitlist/offers/{others.id}/accept", {"operated_by": "self"})
    assert accept.status_code == 404


# --- Move, check in and out, hand over -----------------------------------------------------


def test_moving_replaces_the_booking_and_is_no_cancellation(
    client: TestClient, session: Session, lab: Lab
) -> None:
    old = book(session, lab, lab.researcher, "2026-12-03 10:00", "2026-12-03 11:00")
    login_page(client, lab.researcher.email)

    answer = post(
        client,
        f"/my/bookings/{old.id}/move",
        {"start": "2026-12-03T14:00", "end": "2026-12-03T15:30"},
        page=f"/my/bookings/{old.id}",
    )

    assert answer.status_code == 303
    session.refresh(old)
    new = session.get(Booking, old.replaced_by_id)
    assert new is not None
    assert answer.headers["location"] == f"/my/bookings/{new.id}?done=moved"
    assert (new.start_at, new.end_at, new.status) == (
        at("2026-12-03 14:00"),
        at("2026-12-03 15:30"),
        BookingStatus.CONFIRMED,
    )
    assert old.status == BookingStatus.CANCELLED
    assert not old.late_cancellation
    new_page = client.get(answer.headers["location"]).text
    assert "2026-12-03 14:00–15:30 (Asia/Shanghai)" in new_page
    assert f'href="/my/bookings/{old.id}"' in new_page  # moved from
    assert "改到新时间" in new_page  # the history includes the move of the old booking
    assert status_of(client.get("/my/bookings?when=past").text, old.id or 0) == "cancelled"
    assert "已改期" in client.get("/my/bookings?when=past").text  # shown as moved
    assert ("booking.moved", lab.researcher.id) in audit_actions(session, "booking", old.id or 0)


def test_a_move_that_breaks_the_rules_shows_why_next_to_the_fields(
    client: TestClient, session: Session, lab: Lab
) -> None:
    booking = book(session, lab, lab.researcher, "2026-12-03 10:00", "2026-12-03 11:00")
    book(session, lab, lab.stranger, "2026-12-03 14:00", "2026-12-03 15:00")
    login_page(client, lab.researcher.email)
    path = f"/my/bookings/{booking.id}/move"

    backwards = post(client, path, {"start": "2026-12-03T12:00", "end": "2026-12-03T11:00"})
    taken = post(client, path, {"start": "2026-12-03T14:00", "end": "2026-12-03T15:00"})
    nonsense = post(client, path, {"start": "tomorrow", "end": ""})

    assert backwards.status_code == 422
    assert "结束时间必须晚于开始时间" in backwards.text
    assert 'value="2026-12-03T12:00"' in backwards.text  # the entered values are kept
    assert taken.status_code == 409
    assert "该时间段仪器已被预约" in taken.text
    assert nonsense.status_code == 422
    assert "请输入日期和时间" in nonsense.text
    session.refresh(booking)
    assert booking.status == BookingStatus.CONFIRMED
    assert booking.replaced_by_id is None


def test_checking_in_and_out_through_the_page_records_the_use(
    client: TestClient, session: Session, lab: Lab
) -> None:
    booking = booking_in(
        session,
        lab,
        lab.researcher,
        BookingStatus.CONFIRMED,
        NOW + timedelta(minutes=10),
        sample_count=4,
    )
    login_page(client, lab.researcher.email)
    page = client.get(f"/my/bookings/{booking.id}").text
    assert f'action="/my/bookings/{booking.id}/check-in"' in page
    assert f'action="/my/bookings/{booking.id}/check-out"' not in page

    checked_in = post(
        client, f"/my/bookings/{booking.id}/check-in", page=f"/my/bookings/{booking.id}"
    )
    assert checked_in.status_code == 303
    page = client.get(checked_in.headers["location"]).text
    assert status_of(page, booking.id or 0) == "in_use"
    assert 'name="samples"' in page
    assert 'value="4"' in page

    bad = post(
        client,
        f"/my/bookings/{booking.id}/check-out",
        {"samples": "-2"},
        page=f"/my/bookings/{booking.id}",
    )
    assert bad.status_code == 422
    assert "请输入整数" in bad.text
    checked_out = post(
        client,
        f"/my/bookings/{booking.id}/check-out",
        {"samples": "3"},
        page=f"/my/bookings/{booking.id}",
    )
    assert checked_out.status_code == 303
    session.refresh(booking)
    assert booking.status == BookingStatus.COMPLETED
    usage = session.exec(select(UsageRecord).where(UsageRecord.booking_id == booking.id)).one()
    assert usage.samples == 3
    actions = [a for a, _ in audit_actions(session, "booking", booking.id or 0)]
    assert actions[-2:] == ["booking.checked_in", "booking.completed"]


def test_check_in_is_offered_only_when_it_is_allowed(
    client: TestClient, session: Session, lab: Lab
) -> None:
    tomorrow = book(session, lab, lab.researcher, "2026-12-01 10:00", "2026-12-01 11:00")
    login_page(client, lab.researcher.email)

    page = client.get(f"/my/bookings/{tomorrow.id}").text
    early = post(client, f"/my/bookings/{tomorrow.id}/check-in", page=f"/my/bookings/{tomorrow.id}")

    assert f"/my/bookings/{tomorrow.id}/check-in" not in page
    assert early.status_code == 409
    assert "开始前不久才能签到" in early.text


def test_handing_over_to_a_colleague_by_email(
    client: TestClient, session: Session, lab: Lab
) -> None:
    booking = book(session, lab, lab.researcher, "2026-12-03 10:00", "2026-12-03 11:00")
    login_page(client, lab.researcher.email)
    path = f"/my/bookings/{booking.id}/hand-over"

    stranger = post(client, path, {"email": lab.stranger.email})
    unknown = post(client, path, {"email": "nobody@example.cn"})
    assert stranger.status_code == unknown.status_code == 422
    assert "只能转给本单位在职的同事" in stranger.text
    assert f'value="{lab.stranger.email}"' in stranger.text
    assert stranger.text.count("只能转给本单位在职的同事") == unknown.text.count(
        "只能转给本单位在职的同事"
    )  # an unknown address and a stranger's look the same

    handed = post(client, path, {"email": lab.colleague.email.upper()})
    assert handed.status_code == 303
    session.refresh(booking)
    assert booking.user_id == lab.colleague.id
    assert ("booking.handed_over", lab.researcher.id) in audit_actions(
        session, "booking", booking.id or 0
    )
    assert client.get(f"/my/bookings/{booking.id}").status_code == 404
    assert booking.id not in row_ids(client.get("/my/bookings").text)


# --- Calendar feed -------------------------------------------------------------------------


def test_the_calendar_feed_link_is_created_regenerated_and_revoked(
    client: TestClient, session: Session, lab: Lab
) -> None:
    login_page(client, lab.researcher.email)
    assert "webcal://" not in client.get("/my/bookings").text

    created = post(client, "/my/calendar-feed")
    assert created.status_code == 303
    page = client.get("/my/bookings").text
    feed = session.exec(
        select(CalendarFeed).where(CalendarFeed.owner_id == lab.researcher.id)
    ).one()
    first_token = feed.token
    assert f"webcal://127.0.0.1:8000/calendar/{first_token}.ics" in page
    assert f"http://127.0.0.1:8000/calendar/{first_token}.ics" in page
    assert client.get(f"/calendar/{first_token}.ics").status_code == 200

    assert post(client, f"/my/calendar-feed/{feed.id}/regenerate").status_code == 303
    session.refresh(feed)
    assert feed.token != first_token
    page = client.get("/my/bookings").text
    assert first_token not in page
    assert f"/calendar/{feed.token}.ics" in page
    assert client.get(f"/calendar/{first_token}.ics").status_code == 404

    assert post(client, f"/my/calendar-feed/{feed.id}/revoke").status_code == 303
    assert "webcal://" not in client.get("/my/bookings").text
    assert client.get(f"/calendar/{feed.token}.ics").status_code == 404


def test_another_users_feed_cannot_be_regenerated(
    client: TestClient, session: Session, lab: Lab
) -> None:
    login_page(client, lab.stranger.email)
    post(client, "/my/calendar-feed")
    theirs = session.exec(select(CalendarFeed)).one()
    client.cookies.clear()
    login_page(client, lab.researcher.email)

    assert post(client, f"/my/calendar-feed/{theirs.id}/regenerate").status_code == 404
    assert post(client, f"/my/calendar-feed/{theirs.id}/revoke").status_code == 404


# --- Waitlist ------------------------------------------------------------------------------


def test_joining_leaving_and_accepting_from_the_waitlist(
    client: TestClient, session: Session, lab: Lab
) -> None:
    held = book(session, lab, lab.stranger, "2026-12-03 10:00", "2026-12-03 11:00")
    login_page(client, lab.researcher.email)
    join = {
        "instrument_id": lab.instrument.id,
        "start": "2026-12-03T10:00",
        "end": "2026-12-03T11:00",
    }

    joined = post(client, "/my/waitlist", join, page="/my/waitlist")
    duplicate = post(client, "/my/waitlist", join, page="/my/waitlist")

    assert joined.status_code == 303
    assert duplicate.status_code == 409
    assert "您已在等候此时间段" in duplicate.text
    entry = session.exec(
        select(WaitlistEntry).where(WaitlistEntry.user_id == lab.researcher.id)
    ).one()
    page = client.get("/my/waitlist").text
    assert f'data-entry-id="{entry.id}"' in page
    assert "等候中" in page

    # The holder cancels: the time is offered to the researcher, who accepts it.
    service.cancel(session, actor=principal(session, lab.stranger), booking_id=held.id or 0)
    session.refresh(entry)
    assert entry.offered_booking_id is not None
    page = client.get("/my/waitlist").text
    assert "为您保留至 2026-11-30 21:00 (Asia/Shanghai)" in page
    accepted = post(
        client,
        f"/my/waitlist/offers/{entry.offered_booking_id}/accept",
        {"operated_by": "self"},
        page="/my/waitlist",
    )
    assert accepted.status_code == 303
    offer = session.get(Booking, entry.offered_booking_id)
    assert offer is not None
    session.refresh(offer)
    assert (offer.status, offer.user_id) == (BookingStatus.CONFIRMED, lab.researcher.id)
    assert offer.id in row_ids(client.get("/my/bookings").text)

    # Waiting for another taken time, then leaving.
    book(session, lab, lab.stranger, "2026-12-04 10:00", "2026-12-04 11:00")
    post(
        client,
        "/my/waitlist",
        {**join, "start": "2026-12-04T10:00", "end": "2026-12-04T11:00"},
        page="/my/waitlist",
    )
    waiting = session.exec(
        select(WaitlistEntry).where(
            WaitlistEntry.user_id == lab.researcher.id, WaitlistEntry.status == "waiting"
        )
    ).one()
    left = post(client, f"/my/waitlist/{waiting.id}/leave", page="/my/waitlist")
    again = post(client, f"/my/waitlist/{waiting.id}/leave", {"form_key": "x"}, page="/my/waitlist")
    assert left.status_code == 303
    assert again.status_code == 303
    session.refresh(waiting)
    assert waiting.status == "cancelled"


def test_bad_waitlist_input_is_shown_with_reasons(
    client: TestClient, session: Session, lab: Lab
) -> None:
    login_page(client, lab.researcher.email)

    backwards = post(
        client,
        "/my/waitlist",
        {
            "instrument_id": lab.instrument.id,
            "start": "2026-12-03T11:00",
            "end": "2026-12-03T10:00",
        },
        page="/my/waitlist",
    )
    free = post(
        client,
        "/my/waitlist",
        {
            "instrument_id": lab.instrument.id,
            "start": "2026-12-03T10:00",
            "end": "2026-12-03T11:00",
        },
        page="/my/waitlist",
    )
    unknown = post(
        client,
        "/my/waitlist",
        {"instrument_id": "999999", "start": "x", "end": "y"},
        page="/my/waitlist",
    )

    assert backwards.status_code == 422
    assert "结束时间必须晚于开始时间" in backwards.text
    assert 'value="2026-12-03T11:00"' in backwards.text
    assert free.status_code == 409
    assert "该时间段空闲" in free.text
    assert unknown.status_code == 422
    assert "请选择仪器" in unknown.text
    assert session.exec(select(WaitlistEntry)).all() == []


def test_someone_elses_waitlist_entry_cannot_be_left(
    client: TestClient, session: Session, lab: Lab
) -> None:
    book(session, lab, lab.researcher, "2026-12-03 10:00", "2026-12-03 11:00")
    login_page(client, lab.stranger.email)
    post(
        client,
        "/my/waitlist",
        {
            "instrument_id": lab.instrument.id,
            "start": "2026-12-03T10:00",
            "end": "2026-12-03T11:00",
        },
        page="/my/waitlist",
    )
    theirs = session.exec(select(WaitlistEntry)).one()
    client.cookies.clear()
    login_page(client, lab.researcher.email)

    assert post(client, f"/my/waitlist/{theirs.id}/leave", page="/my/waitlist").status_code == 404
    assert f'data-entry-id="{theirs.id}"' not in client.get("/my/waitlist").text


# --- Sample service requests ---------------------------------------------------------------


@pytest.fixture
def testing_service(session: Session, lab: Lab) -> TestingService:
    return make_testing_service(
        session, facility=lab.facility, instruments=[lab.instrument], daily_sample_capacity=10
    )


def submit_form(
    client: TestClient,
    data: dict[str, Any],
    files: dict[str, Any] | None = None,
    page: str = "/my/service-requests/new",
) -> httpx.Response:
    html = client.get(page).text
    fields = {
        "csrf_token": csrf_from(html),
        "form_key": html.split('name="form_key" value="', 1)[1].split('"', 1)[0],
    }
    fields.update(data)
    return client.post("/my/service-requests/new", data=fields, files=files, follow_redirects=False)


def test_a_service_request_with_a_file_is_sent_once_and_its_report_downloaded(
    client: TestClient, session: Session, lab: Lab, testing_service: TestingService
) -> None:
    login_page(client, lab.researcher.email)
    form = client.get(f"/my/service-requests/new?service_id={testing_service.id}").text
    assert re.search(rf'<option value="{testing_service.id}" selected>', form)

    fields = {
        "csrf_token": csrf_from(form),
        "form_key": form.split('name="form_key" value="', 1)[1].split('"', 1)[0],
        "testing_service_id": str(testing_service.id),
        "sample_count": "3",
        "description": "三个粉末样品",
    }
    files = {"file": ("样品清单.pdf", PDF, "application/pdf")}
    first = client.post(
        "/my/service-requests/new", data=fields, files=files, follow_redirects=False
    )
    twin = client.post("/my/service-requests/new", data=fields, files=files, follow_redirects=False)

    assert first.status_code == twin.status_code == 303
    assert first.headers["location"] == twin.headers["location"]
    submitted = session.exec(select(ServiceRequest)).all()
    assert len(submitted) == 1
    request = submitted[0]
    assert (request.user_id, request.sample_count, request.status) == (
        lab.researcher.id,
        3,
        "submitted",
    )
    attachment = session.exec(select(ServiceRequestFile)).one()
    assert (attachment.kind, attachment.filename, attachment.content) == (
        "attachment",
        "样品清单.pdf",
        PDF,
    )

    listed = client.get("/my/service-requests").text
    assert f'data-request-id="{request.id}"' in listed
    assert "已提交" in listed

    # The facility accepts, works and reports.
    manager = principal(session, lab.manager)
    requests.accept(session, actor=manager, request_id=request.id or 0)
    requests.start(session, actor=manager, request_id=request.id or 0)
    report = requests.attach(
        session,
        actor=manager,
        request_id=request.id or 0,
        kind="report",
        filename='报告 "最终".pdf',
        content=PDF + b"report",
        max_bytes=1024 * 1024,
    )
    detail = client.get(f"/my/service-requests/{request.id}").text
    assert "报告已出" in detail
    assert "下载检测报告" in detail
    assert f"/my/service-requests/{request.id}/files/{report.id}" in detail
    assert "已受理" in detail  # the status history

    download = client.get(f"/my/service-requests/{request.id}/files/{report.id}")
    assert download.status_code == 200
    assert download.content == PDF + b"report"
    disposition = download.headers["content-disposition"]
    assert disposition.startswith('attachment; filename="')
    assert "filename*=UTF-8''%E6%8A%A5%E5%91%8A%20%22%E6%9C%80%E7%BB%88%22.pdf" in disposition
    assert disposition.count('"') == 2  # the stored name's quotes never reach the header raw

    # Another researcher sees neither the request nor its report.
    client.cookies.clear()
    login_page(client, lab.stranger.email)
    assert client.get(f"/my/service-requests/{request.id}").status_code == 404
    assert client.get(f"/my/service-requests/{request.id}/files/{report.id}").status_code == 404
    assert f'data-request-id="{request.id}"' not in client.get("/my/service-requests").text


def test_a_bad_service_request_is_shown_again_with_reasons_and_nothing_is_saved(
    client: TestClient, session: Session, lab: Lab, testing_service: TestingService
) -> None:
    login_page(client, lab.researcher.email)

    no_count = submit_form(
        client,
        {"testing_service_id": str(testing_service.id), "sample_count": "0", "description": "笔记"},
    )
    too_many = submit_form(
        client, {"testing_service_id": str(testing_service.id), "sample_count": "11"}
    )
    no_service = submit_form(client, {"testing_service_id": "", "sample_count": "1"})
    bad_file = submit_form(
        client,
        {"testing_service_id": str(testing_service.id), "sample_count": "2"},
        files={"file": ("virus.exe", b"MZ\x90\x00", "application/octet-stream")},
    )
    fake_pdf = submit_form(
        client,
        {"testing_service_id": str(testing_service.id), "sample_count": "2"},
        files={"file": ("report.pdf", b"not a pdf", "application/pdf")},
    )

    assert no_count.status_code == 422
    assert "请输入整数" in no_count.text
    assert "笔记" in no_count.text  # the entered description is kept
    assert too_many.status_code == 422
    assert "超过该服务每天能接收的样品数" in too_many.text
    assert no_service.status_code == 422
    assert "请选择一项检测服务" in no_service.text
    assert bad_file.status_code == 422
    assert "不接受这种文件" in bad_file.text
    assert fake_pdf.status_code == 422
    assert session.exec(select(ServiceRequest)).all() == []  # no request without its file


def test_a_service_request_is_cancelled_once_while_allowed(
    client: TestClient, session: Session, lab: Lab, testing_service: TestingService
) -> None:
    login_page(client, lab.researcher.email)
    sent = submit_form(client, {"testing_service_id": str(testing_service.id), "sample_count": "2"})
    request_id = int(sent.headers["location"].split("/")[-1].split("?")[0])
    page = f"/my/service-requests/{request_id}"

    first = post(client, f"{page}/cancel", {"reason": "不需要了"}, page=page)
    second = post(client, f"{page}/cancel", {"reason": "again", "form_key": "new"}, page=page)

    assert first.status_code == 303
    assert second.status_code == 303
    assert second.headers["location"] == f"{page}?changed=1"
    request = session.get(ServiceRequest, request_id)
    assert request is not None
    session.refresh(request)
    assert (request.status, request.reason) == ("cancelled", "不需要了")
    assert f'action="{page}/cancel"' not in client.get(page).text


# --- No N+1 --------------------------------------------------------------------------------


def test_my_bookings_reads_the_same_number_of_statements_for_2_or_20_bookings(
    client: TestClient, session: Session, lab: Lab, database: ConnectionBoundDatabase
) -> None:
    login_page(client, lab.researcher.email)
    post(client, "/my/calendar-feed")

    made = 0

    def add_bookings(count: int) -> None:
        nonlocal made
        for n in range(made, made + count):
            start = NOW + timedelta(days=1 + n // 8, hours=n % 8)
            booking_in(session, lab, lab.researcher, BookingStatus.CONFIRMED, start)
        made += count

    def statements() -> int:
        with counted_statements(database) as seen:
            assert client.get("/my/bookings").status_code == 200
        return len(seen)

    add_bookings(2)
    with_two = statements()
    add_bookings(18)
    with_twenty = statements()

    assert len(row_ids(client.get("/my/bookings").text)) == 20
    assert with_twenty == with_two


def test_ids_and_pages_out_of_range_are_refused_not_crashed(
    client: TestClient, session: Session, lab: Lab
) -> None:
    login_page(client, lab.researcher.email)
    huge = 2**40

    assert client.get(f"/my/bookings/{huge}").status_code == 422
    assert client.get(f"/my/service-requests/{huge}").status_code == 422
    assert client.get(f"/my/bookings?page={huge}").status_code == 422
    assert client.get("/my/bookings?page=0").status_code == 422
    assert client.get("/my/service-requests/new?service_id=-1").status_code == 422
    joined = post(
        client,
        "/my/waitlist",
        {"instrument_id": str(huge), "start": "2026-12-03T10:00", "end": "2026-12-03T11:00"},
        page="/my/waitlist",
    )
    assert joined.status_code == 422
    sent = submit_form(client, {"testing_service_id": str(huge), "sample_count": "1"})
    assert sent.status_code == 422
    assert "请选择一项检测服务" in sent.text


# --- Review fixes: times out of range, hand-over wording, outage history ---------------------


@pytest.mark.parametrize("moment", ["0001-01-01T00:00", "9999-12-31T23:00"])
def test_moving_to_a_time_outside_the_calendar_is_refused_on_its_field(
    client: TestClient, session: Session, lab: Lab, moment: str
) -> None:
    booking = book(session, lab, lab.researcher, "2026-12-03 10:00", "2026-12-03 11:00")
    login_page(client, lab.researcher.email)

    answer = post(
        client, f"/my/bookings/{booking.id}/move", {"start": moment, "end": "2026-12-03T11:00"}
    )

    assert answer.status_code == 422
    assert "请选择 2000 年至 2100 年之间的时间" in answer.text
    assert f'value="{moment}"' in answer.text  # shown next to the field it was typed in
    session.refresh(booking)
    assert booking.replaced_by_id is None


def test_handing_over_to_an_unqualified_colleague_names_the_colleague(
    client: TestClient, session: Session, lab: Lab
) -> None:
    unqualified = make_user(session, organisation=lab.organisation, roles=[Role.RESEARCHER])
    booking = book(session, lab, lab.researcher, "2026-12-03 10:00", "2026-12-03 11:00")
    login_page(client, lab.researcher.email)

    answer = post(client, f"/my/bookings/{booking.id}/hand-over", {"email": unqualified.email})

    assert answer.status_code in (403, 409, 422)
    assert "您的同事尚未取得该仪器的上机资格" in answer.text
    session.refresh(booking)
    assert booking.user_id == lab.researcher.id


@pytest.mark.parametrize("action", ["flag", "cancel"])
def test_an_outage_on_my_booking_is_explained_in_my_language_and_the_facilitys_zone(
    client: TestClient, session: Session, lab: Lab, action: str
) -> None:
    from booking.outages import OutageAction, apply_outage
    from instruments.models import Outage
    from instruments.rules import OutageKind

    booking = book(session, lab, lab.researcher, "2026-12-03 10:00", "2026-12-03 11:00")
    outage = Outage(
        facility_id=lab.facility.id or 0,
        instrument_id=lab.instrument.id,
        start_at=at("2026-12-03 09:30"),
        end_at=at("2026-12-03 12:00"),
        kind=OutageKind.REPAIR,
    )
    session.add(outage)
    session.flush()
    apply_outage(session, actor=None, outage_id=outage.id or 0, action=OutageAction(action))
    login_page(client, lab.researcher.email)

    page = client.get(f"/my/bookings/{booking.id}").text

    assert "仪器停机（维修），从 2026-12-03 09:30 (Asia/Shanghai) 至 2026-12-03 12:00" in page
    assert "Outage (" not in page
    assert "repair" not in page
    if action == "flag":
        assert "受停机影响" in page  # the history names the flag in words
        assert "booking.flagged" not in page


def test_each_rows_buttons_name_their_booking_for_a_screen_reader(
    client: TestClient, session: Session, lab: Lab
) -> None:
    book(session, lab, lab.researcher, "2026-12-03 10:00", "2026-12-03 11:00")
    book(session, lab, lab.researcher, "2026-12-04 10:00", "2026-12-04 11:00")
    login_page(client, lab.researcher.email)

    page = client.get("/my/bookings").text

    buttons = [
        re.sub(r"<[^>]+>", "", b) for b in re.findall(r"<button[^>]*>(.*?)</button>", page, re.S)
    ]
    cancel_buttons = [b for b in buttons if "2026-12-0" in b and "取消" in b]
    assert len(cancel_buttons) == 2
    assert len(set(cancel_buttons)) == 2
