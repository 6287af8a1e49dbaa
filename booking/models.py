"""Tables: booking (the plan), usage_record (what happened), idempotency_record."""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from booking.rules import HELD_STATUSES, BookingStatus, OperatedBy
from core.clock import now
from core.db import enum_type, utc_column

HELD_SQL = "status IN ('offered', 'pending', 'confirmed', 'in_use')"


def is_held(status: Any) -> Any:
    """``status`` (a booking's status column, or an expression of it) is a held one; not
    IN (…): a list is an expanding parameter, which a hot statement cannot bind."""
    return sa.or_(*(status == value for value in HELD_STATUSES))


class Booking(SQLModel, table=True):
    __tablename__ = "booking"
    __table_args__ = (
        sa.CheckConstraint("end_at > start_at", name="time_order"),
        sa.CheckConstraint("held_until >= end_at", name="held_after_end"),
        sa.Index("ix_booking_instrument_held", "instrument_id", "start_at", "held_until"),
        sa.Index("ix_booking_user_created", "user_id", "created_at"),
        # The per-user rate limit and the no-show suspension read these on every request.
        sa.Index("ix_booking_created_by_created", "created_by_id", "created_at"),
        sa.Index("ix_booking_user_status_start", "user_id", "status", "start_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    instrument_id: int = Field(foreign_key="instrument.id")
    facility_id: int = Field(foreign_key="facility.id", index=True)
    user_id: int = Field(foreign_key="app_user.id", index=True)
    organisation_id: int | None = Field(
        default=None, foreign_key="organisation.id", index=True, description="The booker's, then."
    )
    start_at: datetime = Field(sa_column=utc_column(index=True))
    end_at: datetime = Field(sa_column=utc_column())
    held_until: datetime = Field(
        sa_column=utc_column(), description="End plus the instrument's buffer: the held range end."
    )
    status: BookingStatus = Field(sa_type=enum_type(BookingStatus, 20), index=True)
    operated_by: OperatedBy = Field(sa_type=enum_type(OperatedBy, 10))
    purpose: str = Field(default="", max_length=1000)
    charge_account: str = Field(
        default="", max_length=200, description="经费卡 or payer, free text"
    )
    sample_count: int | None = None
    version: int = Field(default=0, description="Raised on every change (calendar SEQUENCE).")
    overrides: list[str] = Field(
        default_factory=list, sa_type=sa.JSON, description="Rule codes a manager overrode."
    )
    expires_at: datetime | None = Field(
        default=None, sa_column=utc_column(nullable=True), description="A pending request's."
    )
    decided_by_id: int | None = Field(default=None, foreign_key="app_user.id")
    decided_at: datetime | None = Field(default=None, sa_column=utc_column(nullable=True))
    reason: str = Field(default="", max_length=1000, description="Why rejected or cancelled.")
    late_cancellation: bool = False
    replaced_by_id: int | None = Field(default=None, foreign_key="booking.id")
    series_id: int | None = Field(default=None, foreign_key="booking_series.id", index=True)
    calendar_uid: str | None = Field(
        default=None,
        max_length=100,
        description="A moved booking keeps its first booking's calendar UID; empty: booking-{id}.",
    )
    attention: str = Field(
        default="", max_length=300, description="Why a manager should look, e.g. a new outage."
    )
    offer_expires_at: datetime | None = Field(
        default=None, sa_column=utc_column(nullable=True), description="A waitlist offer's."
    )
    checked_in_at: datetime | None = Field(default=None, sa_column=utc_column(nullable=True))
    created_by_id: int | None = Field(default=None, foreign_key="app_user.id")
    created_at: datetime = Field(default_factory=now, sa_column=utc_column())
    updated_at: datetime = Field(default_factory=now, sa_column=utc_column())


class BookingSeries(SQLModel, table=True):
    """Recurring bookings: occurrences share a series (cancel one, or the rest)."""

    __tablename__ = "booking_series"

    id: int | None = Field(default=None, primary_key=True)
    instrument_id: int = Field(foreign_key="instrument.id", index=True)
    user_id: int = Field(foreign_key="app_user.id", index=True)
    frequency: str = Field(max_length=10, description="daily or weekly")
    interval: int = Field(default=1, description="Every N days or weeks.")
    occurrences: int = Field(description="How many were asked for.")
    created_at: datetime = Field(default_factory=now, sa_column=utc_column())


class WaitlistStatus(StrEnum):
    WAITING = "waiting"
    OFFERED = "offered"
    ACCEPTED = "accepted"
    EXPIRED = "expired"
    CANCELLED = "cancelled"


class WaitlistEntry(SQLModel, table=True):
    """Someone waiting for a taken interval; offered it, first come first served, once free."""

    __tablename__ = "waitlist_entry"
    __table_args__ = (sa.Index("ix_waitlist_entry_instrument_status", "instrument_id", "status"),)

    id: int | None = Field(default=None, primary_key=True)
    instrument_id: int = Field(foreign_key="instrument.id")
    user_id: int = Field(foreign_key="app_user.id", index=True)
    start_at: datetime = Field(sa_column=utc_column())
    end_at: datetime = Field(sa_column=utc_column())
    status: WaitlistStatus = Field(
        default=WaitlistStatus.WAITING, sa_type=enum_type(WaitlistStatus, 20)
    )
    offered_booking_id: int | None = Field(default=None, foreign_key="booking.id")
    created_at: datetime = Field(default_factory=now, sa_column=utc_column())
    updated_at: datetime = Field(default_factory=now, sa_column=utc_column())


class UsageRecord(SQLModel, table=True):
    """What actually happened on an instrument (机时记录): the source of charges and hours."""

    __tablename__ = "usage_record"
    __table_args__ = (sa.CheckConstraint("ended_at > started_at", name="time_order"),)

    id: int | None = Field(default=None, primary_key=True)
    booking_id: int | None = Field(default=None, foreign_key="booking.id", unique=True)
    instrument_id: int = Field(foreign_key="instrument.id", index=True)
    user_id: int = Field(foreign_key="app_user.id", index=True)
    organisation_id: int | None = Field(default=None, foreign_key="organisation.id", index=True)
    operator_id: int | None = Field(
        default=None, foreign_key="app_user.id", description="Who ran it (staff-operated)."
    )
    started_at: datetime = Field(sa_column=utc_column(index=True))
    ended_at: datetime = Field(sa_column=utc_column())
    samples: int | None = None
    kind: str = Field(default="use", max_length=20, description="use, training or maintenance")
    note: str = Field(default="", max_length=1000)
    corrected_by_id: int | None = Field(default=None, foreign_key="app_user.id")
    corrected_at: datetime | None = Field(default=None, sa_column=utc_column(nullable=True))
    created_at: datetime = Field(default_factory=now, sa_column=utc_column())


class IdempotencyRecord(SQLModel, table=True):
    """The first answer to a request sent with an Idempotency-Key, replayed to its retries."""

    __tablename__ = "idempotency_record"
    __table_args__ = (sa.UniqueConstraint("user_id", "key", name="uq_idempotency_record_user_key"),)

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="app_user.id")
    key: str = Field(max_length=200)
    request_hash: str = Field(max_length=64)
    status_code: int
    response: dict[str, Any] = Field(default_factory=dict, sa_type=sa.JSON)
    created_at: datetime = Field(default_factory=now, sa_column=utc_column())


class ServiceRequestStatus(StrEnum):
    SUBMITTED = "submitted"
    ACCEPTED = "accepted"
    IN_PROGRESS = "in_progress"
    REPORTED = "reported"
    COMPLETED = "completed"
    REJECTED = "rejected"
    CANCELLED = "cancelled"


class ServiceRequest(SQLModel, table=True):
    """Samples sent for a testing service (送样检测), from submission to the report."""

    __tablename__ = "service_request"

    id: int | None = Field(default=None, primary_key=True)
    testing_service_id: int = Field(foreign_key="testing_service.id", index=True)
    facility_id: int = Field(foreign_key="facility.id", index=True)
    user_id: int = Field(foreign_key="app_user.id", index=True)
    organisation_id: int | None = Field(default=None, foreign_key="organisation.id", index=True)
    sample_count: int
    description: str = Field(default="", max_length=4000)
    status: ServiceRequestStatus = Field(
        default=ServiceRequestStatus.SUBMITTED,
        sa_type=enum_type(ServiceRequestStatus, 20),
        index=True,
    )
    scheduled_date: date | None = Field(
        default=None, description="The day its samples count against the daily capacity."
    )
    reason: str = Field(default="", max_length=1000)
    decided_by_id: int | None = Field(default=None, foreign_key="app_user.id")
    version: int = 0
    submitted_at: datetime = Field(default_factory=now, sa_column=utc_column())
    accepted_at: datetime | None = Field(default=None, sa_column=utc_column(nullable=True))
    started_at: datetime | None = Field(default=None, sa_column=utc_column(nullable=True))
    reported_at: datetime | None = Field(default=None, sa_column=utc_column(nullable=True))
    completed_at: datetime | None = Field(default=None, sa_column=utc_column(nullable=True))
    updated_at: datetime = Field(default_factory=now, sa_column=utc_column())


class ServiceCapacityDay(SQLModel, table=True):
    """Samples accepted per testing service and day; never above the daily capacity."""

    __tablename__ = "service_capacity_day"

    testing_service_id: int = Field(foreign_key="testing_service.id", primary_key=True)
    day: date = Field(primary_key=True)
    accepted_samples: int = 0


class ServiceRequestFile(SQLModel, table=True):
    """A file of a service request: the requester's attachment or the facility's report.

    Kept in the database: it commits or rolls back with the request, and every app process on
    every machine sees it."""

    __tablename__ = "service_request_file"

    id: int | None = Field(default=None, primary_key=True)
    service_request_id: int = Field(foreign_key="service_request.id", index=True)
    kind: str = Field(max_length=20, description="attachment or report")
    filename: str = Field(max_length=255)
    content_type: str = Field(max_length=100)
    size: int
    sha256: str = Field(max_length=64)
    content: bytes = Field(sa_type=sa.LargeBinary)
    uploaded_by_id: int | None = Field(default=None, foreign_key="app_user.id")
    uploaded_at: datetime = Field(default_factory=now, sa_column=utc_column())
