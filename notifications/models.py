"""Tables: delivery, notification, notification_preference, calendar_feed, webhook_endpoint."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from booking.models import Booking
from core.clock import now
from core.db import enum_type, utc_column


class Channel(StrEnum):
    EMAIL = "email"
    IN_APP = "in_app"
    WEBHOOK = "webhook"


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"  # parked after too many attempts; an admin may retry it


class Delivery(SQLModel, table=True):
    """One event delivered on one channel to one recipient, retried on its own."""

    __tablename__ = "delivery"
    __table_args__ = (
        sa.UniqueConstraint(
            "event_id", "channel", "recipient", name="uq_delivery_event_channel_recipient"
        ),
        sa.Index("ix_delivery_status_next_attempt_at", "status", "next_attempt_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    event_id: int = Field(foreign_key="outbox_event.id", index=True)
    channel: Channel = Field(sa_type=enum_type(Channel, 10))
    recipient: str = Field(max_length=300, description="An e-mail address, user id or endpoint id.")
    user_id: int | None = Field(default=None, foreign_key="app_user.id", index=True)
    status: DeliveryStatus = Field(
        default=DeliveryStatus.PENDING, sa_type=enum_type(DeliveryStatus, 20)
    )
    attempts: int = 0
    next_attempt_at: datetime = Field(default_factory=now, sa_column=utc_column())
    claimed_by: str | None = Field(default=None, max_length=100)
    lease_until: datetime | None = Field(default=None, sa_column=utc_column(nullable=True))
    last_error: str | None = Field(default=None, max_length=2000)
    delivered_at: datetime | None = Field(default=None, sa_column=utc_column(nullable=True))
    created_at: datetime = Field(default_factory=now, sa_column=utc_column())


class Notification(SQLModel, table=True):
    """An entry in a user's in-app notification centre."""

    __tablename__ = "notification"
    __table_args__ = (
        sa.UniqueConstraint("event_id", "user_id", name="uq_notification_event_user"),
        sa.Index("ix_notification_user_read", "user_id", "read_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    event_id: int = Field(foreign_key="outbox_event.id")
    user_id: int = Field(foreign_key="app_user.id")
    topic: str = Field(max_length=80)
    data: dict[str, Any] = Field(default_factory=dict, sa_type=sa.JSON)
    created_at: datetime = Field(default_factory=now, sa_column=utc_column())
    read_at: datetime | None = Field(default=None, sa_column=utc_column(nullable=True))


class NotificationPreference(SQLModel, table=True):
    """A user turned an optional e-mail off (or on again)."""

    __tablename__ = "notification_preference"

    user_id: int = Field(foreign_key="app_user.id", primary_key=True)
    topic: str = Field(max_length=80, primary_key=True)
    email: bool = True


class FeedKind(StrEnum):
    USER = "user"
    INSTRUMENT = "instrument"
    FACILITY = "facility"


class CalendarFeed(SQLModel, table=True):
    """A calendar subscription (/calendar/{token}.ics): the token is the only key to it."""

    __tablename__ = "calendar_feed"

    id: int | None = Field(default=None, primary_key=True)
    token: str = Field(max_length=64, unique=True)
    kind: FeedKind = Field(sa_type=enum_type(FeedKind, 20))
    subject_id: int = Field(description="The user's, instrument's or facility's id.")
    owner_id: int = Field(foreign_key="app_user.id", index=True)
    full_details: bool = Field(
        default=False, description="Managers' feeds show who booked; others show busy times only."
    )
    created_at: datetime = Field(default_factory=now, sa_column=utc_column())
    revoked_at: datetime | None = Field(default=None, sa_column=utc_column(nullable=True))


# The poll of an instrument's calendar feed (notifications.feeds.feed_state) aggregates its
# bookings of 13 months: this index holds every column that query reads, so both databases
# answer it from the index alone instead of visiting each booking row (10,000 bookings on
# SQLite: 7.8 → 3.3 ms). Declared here, beside the feeds that need it, on the booking table.
BOOKING_CALENDAR_INDEX = sa.Index(
    "ix_booking_instrument_calendar",
    *(
        Booking.__table__.c[name]  # type: ignore[attr-defined]
        for name in ("instrument_id", "start_at", "end_at", "updated_at", "version", "id")
    ),
)


class WebhookEndpoint(SQLModel, table=True):
    """A facility system that receives its events, signed with HMAC-SHA256."""

    __tablename__ = "webhook_endpoint"

    id: int | None = Field(default=None, primary_key=True)
    facility_id: int = Field(foreign_key="facility.id", index=True)
    url: str = Field(max_length=500)
    secret: str = Field(max_length=100)
    topics: list[str] = Field(default_factory=list, sa_type=sa.JSON, description="Empty: all.")
    is_active: bool = True
    created_at: datetime = Field(default_factory=now, sa_column=utc_column())
