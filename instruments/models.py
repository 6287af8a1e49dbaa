"""Tables: facility, opening_span, facility_closure, instrument, price_change, testing_service,
testing_service_instrument, outage, qualification."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from core.clock import now
from core.db import enum_type, utc_column
from core.places import Cluster
from instruments.rules import (
    ApprovalMode,
    Category,
    InstrumentStatus,
    OperationMode,
    OutageKind,
)


class Facility(SQLModel, table=True):
    """A lab, key facility or public service platform that shares instruments."""

    __tablename__ = "facility"

    id: int | None = Field(default=None, primary_key=True)
    organisation_id: int = Field(foreign_key="organisation.id", index=True)
    name: str = Field(max_length=200, unique=True)
    name_en: str | None = Field(default=None, max_length=200)
    description: str = Field(default="", max_length=4000)
    address: str = Field(default="", max_length=300)
    district: str = Field(max_length=40)
    cluster: Cluster = Field(sa_type=enum_type(Cluster, 40), index=True)
    contact_name: str = Field(default="", max_length=100)
    contact_phone: str = Field(default="", max_length=40)
    contact_email: str = Field(default="", max_length=254)
    timezone: str = Field(default="Asia/Shanghai", max_length=64)
    opens_on_holidays: bool = Field(
        default=False, description="Open on statutory holidays with the weekday's hours."
    )
    is_active: bool = True
    calendar_token: str = Field(
        default_factory=lambda: uuid.uuid4().hex,
        max_length=32,
        description="Changes with the opening hours, closures, zone or holiday choice (caches).",
    )
    created_at: datetime = Field(default_factory=now, sa_column=utc_column())
    updated_at: datetime = Field(default_factory=now, sa_column=utc_column())


class OpeningSpan(SQLModel, table=True):
    """One interval of a facility's weekly opening hours, in local wall-clock minutes."""

    __tablename__ = "opening_span"
    __table_args__ = (
        sa.CheckConstraint("weekday BETWEEN 0 AND 6", name="weekday_range"),
        sa.CheckConstraint(
            "start_minute >= 0 AND end_minute <= 1440 AND end_minute > start_minute",
            name="minute_range",
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    facility_id: int = Field(foreign_key="facility.id", index=True, ondelete="CASCADE")
    weekday: int = Field(description="0 = Monday … 6 = Sunday")
    start_minute: int = Field(description="Minutes after local midnight.")
    end_minute: int = Field(description="Minutes after local midnight; 1440 = midnight.")


class FacilityClosure(SQLModel, table=True):
    """Days a facility is closed beyond the statutory holidays (inclusive local dates)."""

    __tablename__ = "facility_closure"
    __table_args__ = (sa.CheckConstraint("end_date >= start_date", name="date_order"),)

    id: int | None = Field(default=None, primary_key=True)
    facility_id: int = Field(foreign_key="facility.id", index=True, ondelete="CASCADE")
    start_date: date
    end_date: date
    reason: str = Field(default="", max_length=300)


class Instrument(SQLModel, table=True):
    __tablename__ = "instrument"
    __table_args__ = (
        sa.CheckConstraint(
            "price_internal_fen >= 0 AND price_external_academic_fen >= 0 "
            "AND price_enterprise_fen >= 0 AND staff_surcharge_fen >= 0 AND min_charge_fen >= 0",
            name="prices_not_negative",
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    facility_id: int = Field(foreign_key="facility.id", index=True)
    asset_code: str = Field(
        max_length=60, unique=True, description="仪器编号: the owner's asset number; import key."
    )
    name: str = Field(max_length=200, description="Chinese name.")
    name_en: str = Field(default="", max_length=200)
    keywords: str = Field(
        default="", max_length=1000, description="Search words and abbreviations, e.g. 电镜 SEM."
    )
    model: str = Field(default="", max_length=200)
    manufacturer: str = Field(default="", max_length=200)
    country_of_origin: str = Field(default="", max_length=60)
    category: Category = Field(sa_type=enum_type(Category, 40), index=True)
    purchase_value_fen: int | None = Field(default=None, sa_type=sa.BigInteger, description="原值")
    purchase_date: date | None = None
    is_large: bool = Field(
        default=False, index=True, description="Purchase value ≥ 500,000 yuan (derived on save)."
    )
    location: str = Field(default="", max_length=300)
    description: str = Field(default="", max_length=8000)
    specifications: str = Field(default="", max_length=8000, description="主要技术指标")
    photo_url: str = Field(default="", max_length=500)
    status: InstrumentStatus = Field(
        default=InstrumentStatus.ACTIVE, sa_type=enum_type(InstrumentStatus, 20), index=True
    )
    operation_mode: OperationMode = Field(sa_type=enum_type(OperationMode, 20), index=True)
    special_purpose: bool = False
    rated_annual_hours: int = Field(default=1400, description="额定机时 per year.")
    # Booking rules.
    slot_minutes: int = 30
    min_duration_minutes: int = 30
    max_duration_minutes: int = 480
    max_advance_days: int = 60
    min_notice_minutes: int = 60
    buffer_minutes: int = 0
    approval_mode: ApprovalMode = Field(
        default=ApprovalMode.AUTOMATIC_FOR_QUALIFIED, sa_type=enum_type(ApprovalMode, 30)
    )
    cancellation_deadline_hours: int = 24
    late_cancel_charge_percent: int = 50
    no_show_charge_percent: int = 50
    unattended_runs_allowed: bool = Field(
        default=False, description="Bookings may run through closed hours (overnight NMR, …)."
    )
    requires_qualification: bool = Field(
        default=True, description="Self-operated use needs a valid qualification."
    )
    user_weekly_hours_limit: int | None = Field(
        default=None, description="Hours one user may hold per week; empty: no limit."
    )
    user_future_bookings_limit: int | None = Field(
        default=None, description="Upcoming bookings one user may hold; empty: no limit."
    )
    organisation_weekly_hours_limit: int | None = Field(
        default=None, description="Hours one organisation may hold per week; empty: no limit."
    )
    # Prices in force now; price_change keeps the history billing reads.
    price_internal_fen: int = Field(default=0, sa_type=sa.BigInteger, description="per hour")
    price_external_academic_fen: int = Field(
        default=0, sa_type=sa.BigInteger, description="per hour"
    )
    price_enterprise_fen: int = Field(default=0, sa_type=sa.BigInteger, description="per hour")
    staff_surcharge_fen: int = Field(
        default=0, sa_type=sa.BigInteger, description="per hour, for staff-operated use"
    )
    min_billing_minutes: int = Field(default=30, description="Usage is billed in these units.")
    min_charge_fen: int = Field(default=0, sa_type=sa.BigInteger)
    search_text: str = Field(
        default="", sa_type=sa.Text, description="Lower-cased names, keywords, model, maker, text."
    )
    created_at: datetime = Field(default_factory=now, sa_column=utc_column())
    updated_at: datetime = Field(default_factory=now, sa_column=utc_column())


class PriceChange(SQLModel, table=True):
    """Each price list an instrument has had, from when it applied (billing charges by use time)."""

    __tablename__ = "price_change"

    id: int | None = Field(default=None, primary_key=True)
    instrument_id: int = Field(foreign_key="instrument.id", index=True, ondelete="CASCADE")
    effective_at: datetime = Field(default_factory=now, sa_column=utc_column())
    prices: dict[str, Any] = Field(default_factory=dict, sa_type=sa.JSON)
    changed_by_id: int | None = Field(default=None, foreign_key="app_user.id")


class TestingService(SQLModel, table=True):
    """A priced, sample-based service of a facility (检测服务)."""

    __tablename__ = "testing_service"
    __test__ = False  # not a pytest test class, despite the name

    id: int | None = Field(default=None, primary_key=True)
    facility_id: int = Field(foreign_key="facility.id", index=True)
    name: str = Field(max_length=200)
    name_en: str = Field(default="", max_length=200)
    method_standard: str = Field(default="", max_length=300, description="e.g. GB/T 16594-2008")
    description: str = Field(default="", max_length=4000)
    price_internal_fen: int = Field(default=0, sa_type=sa.BigInteger, description="per sample")
    price_external_academic_fen: int = Field(default=0, sa_type=sa.BigInteger)
    price_enterprise_fen: int = Field(default=0, sa_type=sa.BigInteger)
    turnaround_days: int = 5
    daily_sample_capacity: int = 10
    cma_accredited: bool = False
    cnas_accredited: bool = False
    is_active: bool = True
    created_at: datetime = Field(default_factory=now, sa_column=utc_column())
    updated_at: datetime = Field(default_factory=now, sa_column=utc_column())


class TestingServiceInstrument(SQLModel, table=True):
    __tablename__ = "testing_service_instrument"

    testing_service_id: int = Field(
        foreign_key="testing_service.id", primary_key=True, ondelete="CASCADE"
    )
    instrument_id: int = Field(
        foreign_key="instrument.id", primary_key=True, index=True, ondelete="CASCADE"
    )


class Outage(SQLModel, table=True):
    """An instrument, or a whole facility when instrument_id is empty, is unavailable."""

    __tablename__ = "outage"
    __table_args__ = (sa.CheckConstraint("end_at > start_at", name="time_order"),)

    id: int | None = Field(default=None, primary_key=True)
    facility_id: int = Field(foreign_key="facility.id", index=True)
    instrument_id: int | None = Field(default=None, foreign_key="instrument.id", index=True)
    start_at: datetime = Field(sa_column=utc_column(index=True))
    end_at: datetime = Field(sa_column=utc_column(index=True))
    kind: OutageKind = Field(sa_type=enum_type(OutageKind, 20))
    note: str = Field(default="", max_length=1000)
    created_by_id: int | None = Field(default=None, foreign_key="app_user.id")
    created_at: datetime = Field(default_factory=now, sa_column=utc_column())


class Qualification(SQLModel, table=True):
    """A user's training on an instrument. Re-granting adds a row; history is never rewritten."""

    __tablename__ = "qualification"
    __table_args__ = (sa.Index("ix_qualification_user_instrument", "user_id", "instrument_id"),)

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="app_user.id", index=True)
    instrument_id: int = Field(foreign_key="instrument.id", index=True)
    granted_at: datetime = Field(default_factory=now, sa_column=utc_column())
    granted_by_id: int | None = Field(default=None, foreign_key="app_user.id")
    expires_at: datetime | None = Field(default=None, sa_column=utc_column(nullable=True))
    revoked_at: datetime | None = Field(default=None, sa_column=utc_column(nullable=True))
    revoked_by_id: int | None = Field(default=None, foreign_key="app_user.id")
    note: str = Field(default="", max_length=500)
