"""Delivering what the domains announced: fan-out, claims, sending, retries, reminders.

Invariants: an outbox event is fanned out once into deliveries (one per channel and recipient,
unique) and in-app notices; several workers never send the same delivery twice (PostgreSQL:
``FOR UPDATE SKIP LOCKED``; SQLite: a conditional claim under the write lock; both with a
lease, so a killed worker's claims are taken over when it runs out); a failure waits longer
each time and after ``delivery_max_attempts`` is parked as failed for an admin to retry; a
reminder is emitted once per booking version and offset, and never for a booking that is no
longer confirmed or has changed since.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import timedelta
from email.utils import parseaddr
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from booking.models import Booking, ServiceRequest
from booking.rules import BookingStatus
from core import audit, events
from core.accounts.models import RoleAssignment, User
from core.accounts.rules import Role, ScopeKind
from core.clock import now
from core.db import Database
from core.errors import Conflict, NotFound
from core.events import EventStatus, OutboxEvent
from core.settings import Settings
from instruments.models import Facility, Instrument
from notifications import email, ics, rules, webhooks
from notifications.models import (
    Channel,
    Delivery,
    DeliveryStatus,
    Notification,
    NotificationPreference,
    WebhookEndpoint,
)

log = logging.getLogger("labshare.notifications")

# SMTP connections a batch is sent over at once. Each message waits for the server's answer to
# four commands; with a few connections that wait overlaps with building the next messages.
SMTP_CONNECTIONS = 4
RECORD_CHUNK = 500  # ids per UPDATE, well inside every database's limit on bound parameters


# --- Fan-out -------------------------------------------------------------------------------


def _facility_managers(session: Session, facility_id: int) -> list[int]:
    return list(
        session.exec(
            select(RoleAssignment.user_id).where(
                RoleAssignment.role == Role.LAB_MANAGER,
                RoleAssignment.scope_kind == ScopeKind.FACILITY,
                RoleAssignment.scope_id == facility_id,
            )
        ).all()
    )


def recipients_of(session: Session, event: OutboxEvent) -> list[int]:
    """The users an event concerns: the booker or requester, and managers where they decide."""
    if not rules.for_people(event.topic):
        return []
    people: list[int] = []
    if isinstance(event.payload.get("user_id"), int):
        people.append(event.payload["user_id"])
    if event.topic in rules.MANAGER_TOPICS and isinstance(event.payload.get("facility_id"), int):
        people += _facility_managers(session, event.payload["facility_id"])
    return list(dict.fromkeys(people))


def fan_out(session: Session, event: OutboxEvent, settings: Settings) -> int:
    """Turn one event into in-app notices and deliveries; the event is then dispatched."""
    made = 0
    people = recipients_of(session, event)
    users = (
        {u.id: u for u in session.exec(select(User).where(col(User.id).in_(people))).all()}
        if people
        else {}
    )
    preferences: dict[int, dict[str, bool]] = {}
    for preference in session.exec(
        select(NotificationPreference).where(col(NotificationPreference.user_id).in_(people))
    ).all():
        preferences.setdefault(preference.user_id, {})[preference.topic] = preference.email
    for user_id in people:
        user = users.get(user_id)
        if user is None or not user.is_active:
            continue
        session.add(
            Notification(
                event_id=event.id or 0, user_id=user_id, topic=event.topic, data=event.payload
            )
        )
        made += 1
        if settings.smtp_host and rules.wants_email(event.topic, preferences.get(user_id, {})):
            session.add(
                Delivery(
                    event_id=event.id or 0,
                    channel=Channel.EMAIL,
                    recipient=user.email,
                    user_id=user_id,
                )
            )
            made += 1
    facility_id = event.payload.get("facility_id")
    if isinstance(facility_id, int):
        for endpoint in session.exec(
            select(WebhookEndpoint).where(
                WebhookEndpoint.facility_id == facility_id, col(WebhookEndpoint.is_active).is_(True)
            )
        ).all():
            if not endpoint.topics or event.topic in endpoint.topics:
                session.add(
                    Delivery(
                        event_id=event.id or 0, channel=Channel.WEBHOOK, recipient=str(endpoint.id)
                    )
                )
                made += 1
    event.status = EventStatus.DELIVERED
    event.delivered_at = now()
    session.add(event)
    session.flush()
    return made


def dispatch_events(session: Session, settings: Settings, *, limit: int = 200) -> int:
    """Fan out pending events (each once, even with several workers)."""
    query = (
        select(OutboxEvent)
        .where(OutboxEvent.status == EventStatus.PENDING, col(OutboxEvent.available_at) <= now())
        .order_by(col(OutboxEvent.id))
        .limit(limit)
    )
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    done = 0
    for event in session.exec(query).all():
        fan_out(session, event, settings)
        done += 1
    return done


# --- Claims and sending --------------------------------------------------------------------


def claim(session: Session, *, worker: str, settings: Settings, limit: int = 50) -> list[int]:
    """Claim due deliveries for ``worker`` until its lease runs out; returns their ids."""
    current = now()
    due = (
        sa.select(col(Delivery.id))
        .where(
            col(Delivery.status) == DeliveryStatus.PENDING,
            col(Delivery.next_attempt_at) <= current,
            col(Delivery.lease_until).is_(None) | (col(Delivery.lease_until) < current),
        )
        .order_by(col(Delivery.id))
        .limit(limit)
    )
    if session.get_bind().dialect.name == "postgresql":
        due = due.with_for_update(skip_locked=True)
    ids = list(session.execute(due).scalars().all())
    if not ids:
        return []
    session.execute(
        sa.update(Delivery)
        .where(col(Delivery.id).in_(ids))
        .values(
            claimed_by=worker, lease_until=current + timedelta(seconds=settings.delivery_lease_s)
        )
        .execution_options(synchronize_session=False)
    )
    return ids


@dataclass(frozen=True)
class Outcome:
    delivery_id: int
    ok: bool
    permanent: bool = False
    detail: str = ""


@dataclass
class Loaded:
    """What a batch of deliveries refers to, read with one query per kind (no query per mail)."""

    events: dict[int, OutboxEvent] = field(default_factory=dict)
    users: dict[int, User] = field(default_factory=dict)
    bookings: dict[int, tuple[Booking, Instrument, Facility]] = field(default_factory=dict)
    service_requests: dict[int, ServiceRequest] = field(default_factory=dict)
    endpoints: dict[int, WebhookEndpoint] = field(default_factory=dict)


def load_for(session: Session, deliveries: Sequence[Delivery]) -> Loaded:
    """The events, recipients, bookings, service requests and endpoints of ``deliveries``."""
    loaded = Loaded()
    event_ids = {d.event_id for d in deliveries}
    if event_ids:
        loaded.events = _by_id(session, OutboxEvent, event_ids)
    user_ids = {d.user_id for d in deliveries if d.user_id}
    if user_ids:
        loaded.users = _by_id(session, User, user_ids)
    emails = [loaded.events[d.event_id] for d in deliveries if d.channel == Channel.EMAIL]
    booking_ids = {e.payload["booking_id"] for e in emails if _int(e.payload, "booking_id")}
    if booking_ids:
        for booking, instrument, facility in session.exec(
            select(Booking, Instrument, Facility)
            .join(Instrument, col(Instrument.id) == Booking.instrument_id)
            .join(Facility, col(Facility.id) == Booking.facility_id)
            .where(col(Booking.id).in_(booking_ids))
        ).all():
            loaded.bookings[booking.id or 0] = (booking, instrument, facility)
    request_ids = {
        e.payload["service_request_id"] for e in emails if _int(e.payload, "service_request_id")
    }
    if request_ids:
        loaded.service_requests = _by_id(session, ServiceRequest, request_ids)
    endpoint_ids = {int(d.recipient) for d in deliveries if d.channel == Channel.WEBHOOK}
    if endpoint_ids:
        loaded.endpoints = _by_id(session, WebhookEndpoint, endpoint_ids)
    return loaded


def _by_id(session: Session, model: Any, ids: set[int]) -> dict[int, Any]:
    return {row.id: row for row in session.exec(select(model).where(col(model.id).in_(ids)))}


def _int(payload: dict[str, Any], key: str) -> bool:
    return isinstance(payload.get(key), int)


def compose_email(
    delivery: Delivery, event: OutboxEvent, settings: Settings, loaded: Loaded
) -> email.OutgoingMail | None:
    """The e-mail for a delivery, in the recipient's language; None if it no longer applies."""
    user = loaded.users.get(delivery.user_id) if delivery.user_id else None
    locale = user.locale if user else settings.default_locale
    subject, fell_back = rules.subject_template(event.topic, locale)
    if fell_back:
        log.warning("no %s text for %s; using the other language", locale, event.topic)
    values: dict[str, Any] = {"instrument": "", "start": ""}
    lines: list[str] = []
    calendar: str | None = None
    method = rules.INVITATION_METHOD.get(event.topic)
    booking_id = event.payload.get("booking_id")
    if isinstance(booking_id, int):
        context = loaded.bookings.get(booking_id)
        if context is None:
            return None
        booking, instrument, facility = context
        if event.topic == "booking.reminder" and (
            booking.status != BookingStatus.CONFIRMED
            or booking.version != event.payload.get("version")
        ):
            return None  # cancelled or moved since: no reminder
        zone = ZoneInfo(facility.timezone)
        local_start, local_end = booking.start_at.astimezone(zone), booking.end_at.astimezone(zone)
        start_text = f"{local_start:%Y-%m-%d %H:%M}–{local_end:%H:%M} ({zone.key})"
        values = {
            "instrument": instrument.name
            if locale == "zh-CN" or not instrument.name_en
            else instrument.name_en,
            "start": start_text,
        }
        labels = {
            "zh-CN": ("仪器", "平台", "时间", "状态", "用途", "地点"),
            "en": ("Instrument", "Facility", "Time", "Status", "Purpose", "Location"),
        }[locale if locale in ("zh-CN", "en") else "en"]
        lines = [
            f"{labels[0]}: {values['instrument']} ({instrument.asset_code})",
            f"{labels[1]}: {facility.name}",
            f"{labels[2]}: {start_text}",
            f"{labels[3]}: {booking.status}",
            f"{labels[4]}: {booking.purpose or '-'}",
            f"{labels[5]}: {instrument.location or facility.address}",
        ]
        if booking.reason:
            lines.append(f"{'原因' if locale == 'zh-CN' else 'Reason'}: {booking.reason}")
        if method is not None:
            calendar = _invitation(
                booking,
                instrument,
                facility,
                locale,
                settings,
                method,
                attendee=delivery.recipient,
                instrument_name=str(values["instrument"]),
            )
    request_id = event.payload.get("service_request_id")
    if isinstance(request_id, int):
        request = loaded.service_requests.get(request_id)
        if request is None:
            return None
        lines = [
            f"#{request.id}: {request.sample_count} "
            f"{'个样品' if locale == 'zh-CN' else 'samples'}, {request.status}"
        ]
    for_booker = delivery.user_id is not None and delivery.user_id == event.payload.get("user_id")
    link = settings.base_url.rstrip("/") + rules.link_path(
        event.topic, event.payload, for_booker=for_booker
    )
    text = "\n".join([*lines, "", link])
    html = (
        "".join(f"<p>{_escape(line)}</p>" for line in lines)
        + f'<p><a href="{_escape(link)}">labshare</a></p>'
    )
    return email.OutgoingMail(
        to=delivery.recipient,
        subject=subject.format(**values),
        text=text,
        html=html,
        calendar=calendar,
        calendar_method=method,
    )


def _escape(text: str) -> str:
    return (
        text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
    )


def _invitation(
    booking: Booking,
    instrument: Instrument,
    facility: Facility,
    locale: str,
    settings: Settings,
    method: str,
    *,
    attendee: str,
    instrument_name: str,
) -> str:
    host = settings.base_url.split("://", 1)[-1].split("/", 1)[0].split(":", 1)[0]
    event = ics.booking_event(
        booking,
        instrument_name=instrument_name,
        location=instrument.location or facility.address,
        host=host,
        locale=locale,
        who="",
        timezone=facility.timezone,
    )
    # RFC 5546 wants an ORGANIZER on every REQUEST and CANCEL, and the invited ATTENDEE: the
    # platform's sending address organizes, the booker attends.
    organizer = parseaddr(settings.smtp_from)[1] or None
    event = replace(event, organizer_email=organizer, attendee_email=attendee)
    return ics.invitation(event, method=method)  # type: ignore[arg-type]


@dataclass(frozen=True)
class _Prepared:
    delivery_id: int
    channel: Channel
    mail: email.OutgoingMail | None
    endpoint: tuple[str, str] | None  # url, secret
    topic: str
    payload: dict[str, Any]

    @property
    def lane(self) -> str:
        """What must be sent in order: one recipient's mails, one endpoint's calls."""
        if self.mail is not None:
            return self.mail.to
        return self.endpoint[0] if self.endpoint is not None else ""


def _prepare(delivery: Delivery, settings: Settings, loaded: Loaded) -> _Prepared:
    event = loaded.events[delivery.event_id]
    mail = None
    endpoint = None
    if delivery.channel == Channel.EMAIL:
        mail = compose_email(delivery, event, settings, loaded)
    elif delivery.channel == Channel.WEBHOOK:
        found = loaded.endpoints.get(int(delivery.recipient))
        if found is not None and found.is_active:
            endpoint = (found.url, found.secret)
    return _Prepared(
        delivery.id or 0,
        Channel(delivery.channel),
        mail,
        endpoint,
        event.topic,
        dict(event.payload),
    )


def _send(
    prepared: _Prepared, mailer: email.Mailer, settings: Settings, unreachable: dict[str, str]
) -> Outcome:
    try:
        if prepared.endpoint is not None and prepared.endpoint[0] in unreachable:
            raise email.TemporaryFailure(unreachable[prepared.endpoint[0]])
        if prepared.mail is not None:
            domain = settings.smtp_from.rsplit("@", 1)[-1].rstrip(">")
            try:
                message = email.build_message(
                    prepared.mail, sender=settings.smtp_from, domain=domain
                )
            except ValueError as exc:  # e.g. a line break in the address: no retry mends it
                raise email.PermanentFailure(f"cannot write this e-mail: {exc}") from exc
            mailer.send(message)
        elif prepared.endpoint is not None:
            url, secret = prepared.endpoint
            webhooks.post(
                url,
                secret,
                topic=prepared.topic,
                delivery_id=prepared.delivery_id,
                payload=prepared.payload,
                timeout_s=settings.webhook_timeout_s,
            )
        # Otherwise nothing is left to send (a reminder for a booking since cancelled or moved).
        return Outcome(prepared.delivery_id, ok=True)
    except email.PermanentFailure as exc:
        return Outcome(prepared.delivery_id, ok=False, permanent=True, detail=str(exc))
    except email.TemporaryFailure as exc:
        if prepared.endpoint is not None:
            unreachable[prepared.endpoint[0]] = str(exc)  # spare the rest of the batch the wait
        return Outcome(prepared.delivery_id, ok=False, detail=str(exc))


def record_outcomes(
    session: Session, settings: Settings, outcomes: list[Outcome], *, worker: str
) -> None:
    """Mark what was sent as delivered (one statement per chunk), and schedule or park each
    failure; a delivery whose lease another worker took over is left to that worker."""
    current = now()
    sent = [outcome.delivery_id for outcome in outcomes if outcome.ok]
    for start in range(0, len(sent), RECORD_CHUNK):
        session.execute(
            sa.update(Delivery)
            .where(
                col(Delivery.id).in_(sent[start : start + RECORD_CHUNK]),
                col(Delivery.claimed_by) == worker,
            )
            .values(
                status=DeliveryStatus.DELIVERED,
                delivered_at=current,
                claimed_by=None,
                lease_until=None,
            )
            .execution_options(synchronize_session=False)
        )
    for outcome in outcomes:
        if outcome.ok:
            continue
        delivery = session.get(Delivery, outcome.delivery_id)
        if delivery is None or delivery.claimed_by != worker:
            continue  # our lease ran out and someone else took it over
        delivery.claimed_by, delivery.lease_until = None, None
        delivery.attempts += 1
        delivery.last_error = outcome.detail[:2000]
        if outcome.permanent or delivery.attempts >= settings.delivery_max_attempts:
            delivery.status = DeliveryStatus.FAILED
            log.warning("delivery %s parked as failed: %s", delivery.id, outcome.detail)
        else:
            delivery.next_attempt_at = current + rules.backoff(delivery.attempts)
        session.add(delivery)
    session.flush()


def send_all(
    batch: Sequence[_Prepared], settings: Settings, *, connections: int = SMTP_CONNECTIONS
) -> list[Outcome]:
    """Send a batch over up to ``connections`` SMTP connections at once, each in a thread of
    its own: while one waits for the server's answer, another builds its next message.
    Everything for one recipient (or one webhook endpoint) goes over one connection, in order,
    so a cancellation never overtakes the invitation it cancels."""
    lanes: list[list[_Prepared]] = [[] for _ in range(max(1, min(connections, len(batch))))]
    for prepared in batch:
        lanes[hash(prepared.lane) % len(lanes)].append(prepared)
    unreachable: dict[str, str] = {}  # webhook endpoints that failed in this batch, shared

    def send_lane(lane: list[_Prepared]) -> list[Outcome]:
        with email.Mailer(settings) as mailer:
            return [_send(prepared, mailer, settings, unreachable) for prepared in lane]

    if len(lanes) == 1:
        return send_lane(lanes[0])
    with ThreadPoolExecutor(max_workers=len(lanes), thread_name_prefix="send") as pool:
        return [outcome for outcomes in pool.map(send_lane, lanes) for outcome in outcomes]


def deliver_due(
    database: Database,
    settings: Settings,
    *,
    worker: str | None = None,
    limit: int = 100,
    connections: int = SMTP_CONNECTIONS,
) -> int:
    """Claim a batch of due deliveries, send them (outside any transaction, over a few
    connections at once), record the outcomes; returns how many were delivered."""
    worker = worker or f"worker-{uuid.uuid4().hex[:8]}"
    with database.transaction() as session:
        ids = claim(session, worker=worker, settings=settings, limit=limit)
    if not ids:
        return 0
    with database.transaction(write=False) as session:
        claimed = session.exec(
            select(Delivery).where(col(Delivery.id).in_(ids), Delivery.claimed_by == worker)
        ).all()
        loaded = load_for(session, claimed)
        batch = [_prepare(delivery, settings, loaded) for delivery in claimed]
    outcomes = send_all(batch, settings, connections=connections)
    with database.transaction() as session:
        record_outcomes(session, settings, outcomes, worker=worker)
    return sum(outcome.ok for outcome in outcomes)


# --- Reminders -----------------------------------------------------------------------------


def emit_reminders(session: Session, settings: Settings) -> int:
    """Announce each confirmed booking once per reminder offset as its start approaches."""
    current = now()
    emitted = 0
    for offset in settings.reminder_offsets_minutes:
        window_end = current + timedelta(minutes=offset)
        due = session.exec(
            select(Booking).where(
                Booking.status == BookingStatus.CONFIRMED,
                col(Booking.start_at) > current,
                col(Booking.start_at) <= window_end,
            )
        ).all()
        for booking in due:
            payload = {
                "booking_id": booking.id,
                "user_id": booking.user_id,
                "facility_id": booking.facility_id,
                "instrument_id": booking.instrument_id,
                "version": booking.version,
                "start": booking.start_at.isoformat(),
                "minutes_before": offset,
            }
            key = f"reminder:{booking.id}:{booking.version}:{offset}"
            if events.emit(session, "booking.reminder", payload, dedupe_key=key) is not None:
                emitted += 1
    return emitted


# --- Admin and the notification centre -----------------------------------------------------


def retry_failed(session: Session, *, actor_id: int | None, delivery_id: int) -> Delivery:
    delivery = session.get(Delivery, delivery_id)
    if delivery is None:
        raise NotFound("Delivery")
    if delivery.status != DeliveryStatus.FAILED:
        raise Conflict("Only a failed delivery is retried.", code="wrong_status")
    delivery.status, delivery.attempts, delivery.next_attempt_at = DeliveryStatus.PENDING, 0, now()
    delivery.claimed_by, delivery.lease_until = None, None
    session.add(delivery)
    session.flush()
    audit.record(
        session,
        actor_id=actor_id,
        action="delivery.retried",
        subject_type="delivery",
        subject_id=delivery_id,
    )
    return delivery


def mark_read(session: Session, *, user_id: int, notification_id: int | None = None) -> int:
    """Mark one of the user's notices read, or all of them; returns how many changed."""
    query = sa.update(Notification).where(
        col(Notification.user_id) == user_id, col(Notification.read_at).is_(None)
    )
    if notification_id is not None:
        notice = session.get(Notification, notification_id)
        if notice is None or notice.user_id != user_id:
            raise NotFound("Notification")
        query = query.where(col(Notification.id) == notification_id)
    result = session.execute(
        query.values(read_at=now()).execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def set_email_preference(session: Session, *, user_id: int, topic: str, email_on: bool) -> None:
    if topic not in rules.OPTIONAL_EMAIL_TOPICS:
        from core.errors import Problem, RuleViolation

        raise RuleViolation(
            [Problem("not_optional", f"{topic} e-mails cannot be turned off.", "topic")]
        )
    preference = session.get(NotificationPreference, (user_id, topic))
    if preference is None:
        preference = NotificationPreference(user_id=user_id, topic=topic, email=email_on)
    preference.email = email_on
    session.add(preference)
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError:
        # Another request saved this preference first; ours is the later word.
        saved = session.get(NotificationPreference, (user_id, topic))
        if saved is not None:
            saved.email = email_on
            session.add(saved)
            session.flush()
