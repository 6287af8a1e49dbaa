"""The notification centre, e-mail preferences, webhooks, and the admin's delivery tools."""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, EmailStr, Field, HttpUrl
from sqlmodel import col, func, select

from core import audit
from core.accounts.schemas import StrictModel
from core.errors import DomainError
from instruments import service as instruments
from notifications import email, rules
from notifications import service as notifications
from notifications.models import (
    Delivery,
    DeliveryStatus,
    Notification,
    NotificationPreference,
    WebhookEndpoint,
)
from web.api.schemas import Paginated
from web.deps import ApiPrincipal, AppSettings, DbSession, ObjectId, Pagination
from web.routing import TransactionalRoute

router = APIRouter(prefix="/api/v1", tags=["notifications"], route_class=TransactionalRoute)


class NotificationRead(BaseModel):
    id: int
    topic: str
    data: dict[str, Any]
    created_at: datetime
    read_at: datetime | None


class NotificationList(Paginated[NotificationRead]):
    unread: int


@router.get("/notifications", response_model=NotificationList)
def my_notifications(
    principal: ApiPrincipal,
    session: DbSession,
    page: Pagination,
    unread_only: Annotated[bool, Query()] = False,
) -> NotificationList:
    """Your notices, newest first, with the unread count."""
    query = select(Notification).where(Notification.user_id == principal.user_id)
    if unread_only:
        query = query.where(col(Notification.read_at).is_(None))
    total = session.exec(select(func.count()).select_from(query.subquery())).one()
    unread = session.exec(
        select(func.count())
        .select_from(Notification)
        .where(Notification.user_id == principal.user_id, col(Notification.read_at).is_(None))
    ).one()
    rows = session.exec(
        query.order_by(col(Notification.id).desc()).offset(page.offset).limit(page.page_size)
    ).all()
    return NotificationList(
        items=[NotificationRead.model_validate(n, from_attributes=True) for n in rows],
        total=total,
        unread=unread,
    )


@router.post("/notifications/{notification_id}/read", status_code=204)
def read_one(notification_id: ObjectId, principal: ApiPrincipal, session: DbSession) -> Response:
    notifications.mark_read(session, user_id=principal.user_id, notification_id=notification_id)
    return Response(status_code=204)


@router.post("/notifications/read-all", status_code=204)
def read_all(principal: ApiPrincipal, session: DbSession) -> Response:
    notifications.mark_read(session, user_id=principal.user_id)
    return Response(status_code=204)


class EmailPreference(StrictModel):
    topic: str
    email: bool


@router.get("/me/notification-preferences", response_model=list[EmailPreference])
def my_preferences(principal: ApiPrincipal, session: DbSession) -> list[EmailPreference]:
    """The optional e-mails and whether you get them."""
    chosen = {
        p.topic: p.email
        for p in session.exec(
            select(NotificationPreference).where(
                NotificationPreference.user_id == principal.user_id
            )
        ).all()
    }
    return [
        EmailPreference(topic=t, email=chosen.get(t, True))
        for t in sorted(rules.OPTIONAL_EMAIL_TOPICS)
    ]


@router.put("/me/notification-preferences", response_model=list[EmailPreference])
def set_preferences(
    data: list[EmailPreference], principal: ApiPrincipal, session: DbSession
) -> list[EmailPreference]:
    for preference in data:
        notifications.set_email_preference(
            session, user_id=principal.user_id, topic=preference.topic, email_on=preference.email
        )
    return my_preferences(principal, session)


class WebhookCreate(StrictModel):
    facility_id: int
    url: HttpUrl
    topics: list[str] = Field(default_factory=list, description="Empty: every event.")


class WebhookRead(BaseModel):
    id: int
    facility_id: int
    url: str
    topics: list[str]
    is_active: bool


class WebhookCreated(WebhookRead):
    secret: str = Field(description="Shown once: verify X-Labshare-Signature with it.")


@router.post("/webhooks", response_model=WebhookCreated, status_code=201)
def create_webhook(
    data: WebhookCreate, principal: ApiPrincipal, session: DbSession
) -> WebhookCreated:
    """Send this facility's events to a system of its own, signed (lab managers)."""
    instruments.managed_facility(
        session, actor=principal, facility_id=data.facility_id, action="add webhooks"
    )
    endpoint = WebhookEndpoint(
        facility_id=data.facility_id,
        url=str(data.url),
        secret=secrets.token_urlsafe(32),
        topics=data.topics,
    )
    session.add(endpoint)
    session.flush()
    audit.record(
        session,
        actor_id=principal.user_id,
        action="webhook.created",
        subject_type="webhook_endpoint",
        subject_id=endpoint.id or 0,
        data={"url": endpoint.url},
    )
    return WebhookCreated(
        **WebhookRead.model_validate(endpoint, from_attributes=True).model_dump(),
        secret=endpoint.secret,
    )


@router.delete("/webhooks/{endpoint_id}", status_code=204)
def delete_webhook(endpoint_id: ObjectId, principal: ApiPrincipal, session: DbSession) -> Response:
    endpoint = session.get(WebhookEndpoint, endpoint_id)
    facility_id = endpoint.facility_id if endpoint else 0
    instruments.managed_facility(
        session, actor=principal, facility_id=facility_id, action="remove webhooks"
    )
    assert endpoint is not None
    endpoint.is_active = False
    session.add(endpoint)
    return Response(status_code=204)


class DeliveryRead(BaseModel):
    id: int
    event_id: int
    channel: str
    recipient: str
    status: DeliveryStatus
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    delivered_at: datetime | None


@router.get("/admin/deliveries", response_model=Paginated[DeliveryRead], tags=["admin"])
def list_deliveries(
    principal: ApiPrincipal,
    session: DbSession,
    page: Pagination,
    status: DeliveryStatus | None = DeliveryStatus.FAILED,
) -> Paginated[DeliveryRead]:
    """Deliveries (failed ones by default), for admins."""
    principal.require_admin("see deliveries")
    query = select(Delivery)
    if status is not None:
        query = query.where(Delivery.status == status)
    total = session.exec(select(func.count()).select_from(query.subquery())).one()
    rows = session.exec(
        query.order_by(col(Delivery.id).desc()).offset(page.offset).limit(page.page_size)
    ).all()
    return Paginated(
        items=[DeliveryRead.model_validate(d, from_attributes=True) for d in rows], total=total
    )


@router.post("/admin/deliveries/{delivery_id}/retry", response_model=DeliveryRead, tags=["admin"])
def retry_delivery(
    delivery_id: ObjectId, principal: ApiPrincipal, session: DbSession
) -> DeliveryRead:
    principal.require_admin("retry deliveries")
    delivery = notifications.retry_failed(
        session, actor_id=principal.user_id, delivery_id=delivery_id
    )
    return DeliveryRead.model_validate(delivery, from_attributes=True)


class TestEmail(StrictModel):
    __test__ = False

    to: EmailStr


class TestEmailResult(BaseModel):
    __test__ = False

    ok: bool
    answer: str


@router.post("/admin/test-email", response_model=TestEmailResult, tags=["admin"])
def send_test_email(
    data: TestEmail, principal: ApiPrincipal, settings: AppSettings
) -> TestEmailResult:
    """Send a test e-mail now and report what the SMTP server answered (admins)."""
    principal.require_admin("send test e-mails")
    if not settings.smtp_host:
        raise DomainError("E-mail is off: set LABSHARE_SMTP_HOST.", "email_off", status_code=409)
    mail = email.OutgoingMail(
        to=str(data.to),
        subject="labshare 测试邮件 / test e-mail",
        text="这是一封测试邮件。\nThis is a test e-mail.",
        html="<p>这是一封测试邮件。</p><p>This is a test e-mail.</p>",
    )
    domain = settings.smtp_from.rsplit("@", 1)[-1].rstrip(">")
    try:
        answer = email.send(
            settings, email.build_message(mail, sender=settings.smtp_from, domain=domain)
        )
    except (email.PermanentFailure, email.TemporaryFailure) as exc:
        return TestEmailResult(ok=False, answer=str(exc))
    return TestEmailResult(ok=True, answer=answer)
