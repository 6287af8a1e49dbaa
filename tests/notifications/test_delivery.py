"""Delivering events: e-mail in the recipient's language, retries, parking, reminders, webhooks."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any, ClassVar

import pytest
from sqlmodel import Session, col, select

from booking import service as bookings
from booking.rules import OperatedBy
from booking.schemas import BookingCreate
from booking.service import BookingPolicy
from core import events
from core.accounts.rules import Role, ScopeKind
from core.accounts.schemas import RoleGrant
from core.auth.principal import load_principal
from core.clock import frozen
from core.db import Database
from core.events import OutboxEvent
from core.settings import Settings
from instruments.rules import ApprovalMode
from notifications import rules, webhooks
from notifications import service as notifications
from notifications.models import Delivery, DeliveryStatus, Notification, WebhookEndpoint
from tests.factories import make_user
from tests.instruments.factories import make_facility, make_instrument
from tests.notifications.smtp import SmtpServer, free_port
from web import worker

NOW = datetime(2026, 11, 30, 1, tzinfo=UTC)  # Monday 09:00 in Chongqing
POLICY = BookingPolicy.from_settings(Settings())


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    server = SmtpServer()
    server.start()
    yield server
    server.stop()


def settings_for(smtp: SmtpServer, **changes: Any) -> Settings:
    return Settings(
        **({"smtp_host": "127.0.0.1", "smtp_port": smtp.port, "smtp_timeout_s": 2} | changes)
    )


@pytest.fixture
def lab(session: Session) -> dict:
    facility = make_facility(session)
    manual = make_instrument(
        session,
        facility=facility,
        name="透射电镜",
        approval_mode=ApprovalMode.MANUAL,
        requires_qualification=False,
        min_notice_minutes=0,
    )
    automatic = make_instrument(
        session,
        facility=facility,
        name="扫描电镜",
        requires_qualification=False,
        min_notice_minutes=0,
    )
    manager = make_user(
        session,
        password=None,
        email="manager@lab.cn",
        locale="en",
        roles=[
            RoleGrant(role=Role.LAB_MANAGER, scope_kind=ScopeKind.FACILITY, scope_id=facility.id)
        ],
    )
    researcher = make_user(session, password=None, email="wang@lab.cn", roles=[Role.RESEARCHER])
    return {"manual": manual, "automatic": automatic, "manager": manager, "researcher": researcher}


def book(session: Session, lab: dict, instrument_key: str, start: datetime):
    return bookings.create_booking(
        session,
        actor=load_principal(session, lab["researcher"]),
        policy=POLICY,
        data=BookingCreate(
            instrument_id=lab[instrument_key].id,
            start=start,
            end=start + timedelta(hours=1),
            operated_by=OperatedBy.SELF,
            purpose="形貌观察",
        ),
    )


def run_worker(session: Session, database: Database, settings: Settings) -> int:
    notifications.dispatch_events(session, settings)
    session.flush()
    return notifications.deliver_due(database, settings, worker="test-worker")


def test_a_confirmation_reaches_the_booker_in_chinese_with_the_booking_details(
    session: Session, database: Database, smtp: SmtpServer, lab: dict
) -> None:
    with frozen(NOW):
        booking = book(session, lab, "automatic", NOW + timedelta(days=1))
        assert run_worker(session, database, settings_for(smtp)) == 1
    [mail] = smtp.received
    assert mail.recipients == ["wang@lab.cn"]
    subject = str(mail.message["Subject"])
    assert "预约已确认" in email_header(subject)
    body = plain_text(mail.message)
    assert "扫描电镜" in body
    assert "Asia/Shanghai" in body
    assert "形貌观察" in body
    assert body.endswith(f"\nhttp://127.0.0.1:8000/my/bookings/{booking.id}")


def test_a_request_reaches_the_facilitys_managers_in_their_language(
    session: Session, database: Database, smtp: SmtpServer, lab: dict
) -> None:
    with frozen(NOW):
        book(session, lab, "manual", NOW + timedelta(days=1))
        run_worker(session, database, settings_for(smtp))
    by_recipient = {m.recipients[0]: email_header(str(m.message["Subject"])) for m in smtp.received}
    assert by_recipient["manager@lab.cn"].startswith("Booking request to approve")
    assert by_recipient["wang@lab.cn"].startswith("预约申请待审核")
    links = {m.recipients[0]: plain_text(m.message).rsplit("/", 2)[-2:] for m in smtp.received}
    assert links["manager@lab.cn"] == ["manage", "approvals"]  # where managers decide
    assert links["wang@lab.cn"][0] == "bookings"
    notices = session.exec(select(Notification.user_id)).all()
    assert set(notices) == {lab["manager"].id, lab["researcher"].id}


def test_nothing_is_lost_while_the_mail_server_is_down(
    session: Session, database: Database, smtp: SmtpServer, lab: dict
) -> None:
    settings = settings_for(smtp)
    smtp.stop()
    with frozen(NOW):
        book(session, lab, "automatic", NOW + timedelta(days=1))
        assert run_worker(session, database, settings) == 0
    delivery = session.exec(select(Delivery)).one()
    session.refresh(delivery)
    assert (delivery.status, delivery.attempts) == (DeliveryStatus.PENDING, 1)
    assert delivery.next_attempt_at == NOW + rules.backoff(1)
    smtp.start()
    with frozen(NOW + timedelta(seconds=10)):  # not due yet
        assert notifications.deliver_due(database, settings, worker="w") == 0
    with frozen(NOW + timedelta(minutes=1)):
        assert notifications.deliver_due(database, settings, worker="w") == 1
        assert notifications.deliver_due(database, settings, worker="w") == 0
    assert len(smtp.received) == 1


def test_a_refused_address_is_parked_at_once_and_an_admin_can_retry_it(
    session: Session, database: Database, smtp: SmtpServer, lab: dict
) -> None:
    smtp.handler.refused.add("wang@lab.cn")
    with frozen(NOW):
        book(session, lab, "automatic", NOW + timedelta(days=1))
        run_worker(session, database, settings_for(smtp))
    delivery = session.exec(select(Delivery)).one()
    session.refresh(delivery)
    assert delivery.status is DeliveryStatus.FAILED
    assert "refused" in (delivery.last_error or "")
    notifications.retry_failed(session, actor_id=None, delivery_id=delivery.id)
    assert delivery.status is DeliveryStatus.PENDING


def test_after_too_many_failures_a_delivery_is_parked(
    session: Session, database: Database, smtp: SmtpServer, lab: dict
) -> None:
    settings = settings_for(smtp, delivery_max_attempts=3)
    smtp.stop()
    moment = NOW
    with frozen(moment):
        book(session, lab, "automatic", NOW + timedelta(days=1))
        notifications.dispatch_events(session, settings)
    for _ in range(3):
        with frozen(moment):
            notifications.deliver_due(database, settings, worker="w")
        moment += timedelta(hours=2)
    delivery = session.exec(select(Delivery)).one()
    session.refresh(delivery)
    assert (delivery.status, delivery.attempts) == (DeliveryStatus.FAILED, 3)


def test_a_mail_server_that_hangs_times_out_and_the_worker_goes_on(
    session: Session, database: Database, smtp: SmtpServer, lab: dict
) -> None:
    smtp.handler.delay_s = 5
    settings = settings_for(smtp, smtp_timeout_s=0.5)
    with frozen(NOW):
        book(session, lab, "automatic", NOW + timedelta(days=1))
        started = time.monotonic()
        assert run_worker(session, database, settings) == 0
    assert time.monotonic() - started < 4
    delivery = session.exec(select(Delivery)).one()
    session.refresh(delivery)
    assert delivery.status is DeliveryStatus.PENDING
    assert delivery.attempts == 1


def test_reminders_are_announced_once_and_not_for_a_cancelled_booking(
    session: Session, database: Database, smtp: SmtpServer, lab: dict
) -> None:
    settings = settings_for(smtp)
    with frozen(NOW):
        kept = book(session, lab, "automatic", NOW + timedelta(hours=24))  # Tuesday 09:00
        dropped = book(session, lab, "automatic", NOW + timedelta(hours=25))
        bookings.cancel(
            session, actor=load_principal(session, lab["researcher"]), booking_id=dropped.id
        )
        assert notifications.emit_reminders(session, settings) == 1  # the 24-hour one, for `kept`
        assert notifications.emit_reminders(session, settings) == 0
    with frozen(NOW + timedelta(hours=1, minutes=30)):
        assert notifications.emit_reminders(session, settings) == 0  # `dropped` is cancelled
    with frozen(NOW + timedelta(hours=23, minutes=30)):
        assert notifications.emit_reminders(session, settings) == 1  # the 1-hour one
    reminders = session.exec(
        select(OutboxEvent).where(OutboxEvent.topic == "booking.reminder")
    ).all()
    assert [e.payload["booking_id"] for e in reminders] == [kept.id, kept.id]


def test_a_user_may_turn_reminder_emails_off_but_keeps_the_notice(
    session: Session, database: Database, smtp: SmtpServer, lab: dict
) -> None:
    settings = settings_for(smtp)
    notifications.set_email_preference(
        session, user_id=lab["researcher"].id, topic="booking.reminder", email_on=False
    )
    with frozen(NOW):
        book(session, lab, "automatic", NOW + timedelta(hours=24))
        notifications.emit_reminders(session, settings)
        run_worker(session, database, settings)
    topics = [email_header(str(m.message["Subject"])) for m in smtp.received]
    assert len(topics) == 1  # the confirmation, not the reminder
    assert "booking.reminder" in session.exec(select(Notification.topic)).all()


def test_two_workers_send_each_delivery_exactly_once(
    session: Session, database: Database, smtp: SmtpServer, lab: dict
) -> None:
    settings = settings_for(smtp)
    with frozen(NOW):
        for n in range(10):
            book(session, lab, "automatic", NOW + timedelta(days=1 + n // 8, hours=n % 8))
        notifications.dispatch_events(session, settings)
        session.flush()
        first = notifications.deliver_due(database, settings, worker="a", limit=6)
        second = notifications.deliver_due(database, settings, worker="b", limit=6)
        third = notifications.deliver_due(database, settings, worker="a", limit=6)
    assert first + second + third == 10
    assert len(smtp.received) == 10


def test_a_killed_workers_claims_are_taken_over_when_the_lease_runs_out(
    session: Session, database: Database, smtp: SmtpServer, lab: dict
) -> None:
    settings = settings_for(smtp, delivery_lease_s=60)
    with frozen(NOW):
        book(session, lab, "automatic", NOW + timedelta(days=1))
        notifications.dispatch_events(session, settings)
        session.flush()
        with database.transaction() as claiming:
            assert len(notifications.claim(claiming, worker="dead", settings=settings)) == 1
        assert notifications.deliver_due(database, settings, worker="alive") == 0
    with frozen(NOW + timedelta(seconds=61)):
        assert notifications.deliver_due(database, settings, worker="alive") == 1


class _Receiver(BaseHTTPRequestHandler):
    answers: ClassVar[list[int]] = []
    seen: ClassVar[list[tuple[dict[str, str], bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).seen.append((dict(self.headers), body))
        self.send_response(type(self).answers.pop(0) if type(self).answers else 200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_webhooks_are_signed_and_retried_after_an_error(
    session: Session, database: Database, lab: dict
) -> None:
    port = free_port()
    _Receiver.answers, _Receiver.seen = [500], []
    server = HTTPServer(("127.0.0.1", port), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        endpoint = WebhookEndpoint(
            facility_id=lab["automatic"].facility_id,
            url=f"http://127.0.0.1:{port}/hook",
            secret="s3cret",
        )
        session.add(endpoint)
        session.flush()
        settings = Settings()  # e-mail off: only the webhook goes out
        with frozen(NOW):
            book(session, lab, "automatic", NOW + timedelta(days=1))
            assert run_worker(session, database, settings) == 0  # the facility answered 500
        with frozen(NOW + timedelta(minutes=1)):
            assert notifications.deliver_due(database, settings, worker="w") == 1
    finally:
        server.shutdown()
    headers, body = _Receiver.seen[-1]
    assert headers["X-Labshare-Signature"] == webhooks.signature(
        "s3cret", headers["X-Labshare-Timestamp"], body
    )
    assert json.loads(body)["topic"] == "booking.confirmed"
    assert session.exec(select(Delivery).where(col(Delivery.channel) == "email")).all() == []


def test_a_webhook_endpoint_that_hangs_times_out_and_is_retried_later(
    session: Session, database: Database, lab: dict
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts, never answers
        session.add(
            WebhookEndpoint(
                facility_id=lab["automatic"].facility_id,
                url=f"http://127.0.0.1:{silent.getsockname()[1]}/hook",
                secret="s3cret",
            )
        )
        session.flush()
        settings = Settings(webhook_timeout_s=0.5)  # e-mail off: only the webhook goes out
        with frozen(NOW):
            book(session, lab, "automatic", NOW + timedelta(days=1))
            book(session, lab, "automatic", NOW + timedelta(days=2))
            started = time.monotonic()
            assert run_worker(session, database, settings) == 0
            elapsed = time.monotonic() - started
    assert elapsed < 2  # one wait for the endpoint, not one per event
    hooks = session.exec(select(Delivery)).all()
    assert len(hooks) == 2
    for delivery in hooks:
        session.refresh(delivery)
        assert (delivery.status, delivery.attempts) == (DeliveryStatus.PENDING, 1)
        assert "Timeout" in (delivery.last_error or "")


@pytest.mark.parametrize(
    ("topic", "payload", "for_booker", "path"),
    [
        ("booking.confirmed", {"booking_id": 7}, True, "/my/bookings/7"),
        ("booking.requested", {"booking_id": 7}, False, "/manage/approvals"),
        ("service_request.accepted", {"service_request_id": 3}, True, "/my/service-requests/3"),
        (
            "service_request.submitted",
            {"service_request_id": 3},
            False,
            "/manage/service-requests/3",
        ),
        ("something.else", {}, True, "/notifications"),
    ],
)
def test_an_email_links_to_the_page_where_its_reader_acts(
    topic: str, payload: dict[str, Any], for_booker: bool, path: str
) -> None:
    assert rules.link_path(topic, payload, for_booker=for_booker) == path


@pytest.mark.parametrize(
    ("locale", "expected"),
    [("en", "Reminder: {instrument} {start}"), ("fr", "预约提醒：{instrument} {start}")],
)
def test_a_missing_translation_falls_back_to_the_other_language(locale: str, expected: str) -> None:
    assert rules.subject_template("booking.reminder", locale)[0] == expected


def email_header(value: str) -> str:
    from email.header import decode_header, make_header

    return str(make_header(decode_header(value)))


def plain_text(message: Any) -> str:
    for part in message.walk():
        if part.get_content_type() == "text/plain":
            return part.get_payload(decode=True).decode()
    raise AssertionError("no text part")


def test_a_confirmation_invites_and_a_cancellation_cancels_the_same_calendar_event(
    session: Session, database: Database, smtp: SmtpServer, lab: dict
) -> None:
    import icalendar

    settings = settings_for(smtp)
    with frozen(NOW):
        booking = book(session, lab, "automatic", NOW + timedelta(days=1))
        run_worker(session, database, settings)
        bookings.cancel(
            session, actor=load_principal(session, lab["researcher"]), booking_id=booking.id
        )
        run_worker(session, database, settings)
    invitation, cancellation = (calendar_of(m.message) for m in smtp.received)
    assert str(invitation["METHOD"]) == "REQUEST"
    assert str(cancellation["METHOD"]) == "CANCEL"
    first, second = (next(iter(c.walk("VEVENT"))) for c in (invitation, cancellation))
    assert first["UID"] == second["UID"] == f"booking-{booking.id}@127.0.0.1"
    for vevent in (first, second):  # RFC 5546: who organizes, and who is invited
        assert str(vevent["ORGANIZER"]) == "mailto:noreply@labshare.local"
        assert str(vevent["ATTENDEE"]) == "mailto:wang@lab.cn"
    assert int(second["SEQUENCE"]) > int(first["SEQUENCE"])
    assert str(second["STATUS"]) == "CANCELLED"
    assert first["DTSTART"].dt == NOW + timedelta(days=1)
    assert isinstance(icalendar.Calendar.from_ical(invitation.to_ical()), icalendar.Calendar)


def calendar_of(message: Any) -> Any:
    import icalendar

    for part in message.walk():
        if part.get_content_type() == "text/calendar":
            return icalendar.Calendar.from_ical(part.get_payload(decode=True))
    raise AssertionError("no calendar part")


def test_an_address_with_a_line_break_is_parked_and_the_rest_of_the_batch_goes_out(
    session: Session, database: Database, smtp: SmtpServer, lab: dict
) -> None:
    researcher = lab["researcher"]
    researcher.email = "wang@lab.cn\r\nBcc: everyone@example.cn"
    session.add(researcher)
    session.flush()
    with frozen(NOW):
        book(session, lab, "manual", NOW + timedelta(days=1))  # the booker and the manager
        assert run_worker(session, database, settings_for(smtp)) == 1
    assert [m.recipients for m in smtp.received] == [["manager@lab.cn"]]
    broken = session.exec(select(Delivery).where(Delivery.user_id == researcher.id)).one()
    session.refresh(broken)
    assert broken.status is DeliveryStatus.FAILED
    assert "line break" in (broken.last_error or "")


def test_one_recipients_mails_arrive_in_order_over_several_connections(
    session: Session, database: Database, smtp: SmtpServer, lab: dict
) -> None:
    settings = settings_for(smtp)
    starts = [NOW + timedelta(days=1, hours=n) for n in range(8)]
    with frozen(NOW):
        for start in starts:
            book(session, lab, "manual", start)  # to the booker and to the manager, each
        notifications.dispatch_events(session, settings)
        session.flush()
        assert notifications.deliver_due(database, settings, worker="w", connections=4) == 16
    for recipient in ("wang@lab.cn", "manager@lab.cn"):
        mine = [m for m in smtp.received if m.recipients == [recipient]]
        times = [plain_text(m.message).split("\n")[2] for m in mine]
        assert len(times) == 8
        assert times == sorted(times)


def test_a_worker_round_sends_the_whole_backlog_not_one_batch(
    session: Session, database: Database, smtp: SmtpServer, lab: dict
) -> None:
    settings = settings_for(smtp)
    for n in range(250):  # two and a half batches
        events.emit(session, "service_request.rejected", {"user_id": lab["researcher"].id, "n": n})
    notifications.dispatch_events(session, settings, limit=1000)
    session.flush()

    assert worker.deliver_backlog(database, settings, worker="w") == 250
    assert len(smtp.received) == 250
    assert worker.deliver_backlog(database, settings, worker="w") == 0
