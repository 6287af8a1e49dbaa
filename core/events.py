"""The event outbox: domains announce state changes as rows written in the same transaction.

A rolled-back change leaves no event; a committed one always has one. Delivery (e-mail,
calendars, webhooks) is the notifications package's job: it claims pending events, delivers
them and marks them delivered. ``dedupe_key`` makes an event that must happen once (a
reminder) impossible to write twice.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlmodel import Field, Session, SQLModel

from core.clock import now
from core.db import enum_type, utc_column


class EventStatus(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


class OutboxEvent(SQLModel, table=True):
    __tablename__ = "outbox_event"
    __table_args__ = (sa.Index("ix_outbox_event_status_available_at", "status", "available_at"),)

    id: int | None = Field(default=None, primary_key=True)
    topic: str = Field(max_length=80, index=True, description="e.g. booking.confirmed")
    payload: dict[str, Any] = Field(default_factory=dict, sa_type=sa.JSON)
    dedupe_key: str | None = Field(default=None, max_length=200, unique=True)
    status: EventStatus = Field(default=EventStatus.PENDING, sa_type=enum_type(EventStatus, 20))
    attempts: int = 0
    created_at: datetime = Field(default_factory=now, sa_column=utc_column())
    available_at: datetime = Field(default_factory=now, sa_column=utc_column())
    claimed_by: str | None = Field(default=None, max_length=100)
    lease_until: datetime | None = Field(default=None, sa_column=utc_column(nullable=True))
    delivered_at: datetime | None = Field(default=None, sa_column=utc_column(nullable=True))
    last_error: str | None = Field(default=None, max_length=2000)


def emit(
    session: Session, topic: str, payload: dict[str, Any], *, dedupe_key: str | None = None
) -> OutboxEvent | None:
    """Write an event into the current transaction; None if its dedupe key was already used."""
    event = OutboxEvent(topic=topic, payload=payload, dedupe_key=dedupe_key)
    if dedupe_key is None:
        session.add(event)
        session.flush()
        return event
    try:
        with session.begin_nested():
            session.add(event)
            session.flush()
    except IntegrityError:
        return None
    return event
