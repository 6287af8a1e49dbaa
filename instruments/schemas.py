"""API shapes of the catalogue. Prices are integer fen (no fractions, never negative)."""

from __future__ import annotations

from datetime import date, datetime

from pydantic import BaseModel, Field, HttpUrl

from core.accounts.schemas import StrictModel
from core.places import Cluster
from core.types import UTCDateTimeIn
from instruments.rules import (
    ApprovalMode,
    Category,
    CustomerClass,
    InstrumentStatus,
    OperationMode,
    OutageKind,
)

Fen = int  # documented per field; Field(ge=0) refuses negatives, pydantic refuses fractions


class OpeningSpanIn(StrictModel):
    weekday: int = Field(ge=0, le=6, description="0 = Monday … 6 = Sunday")
    start: str = Field(pattern=r"^\d{2}:\d{2}$", description="Local time HH:MM")
    end: str = Field(pattern=r"^\d{2}:\d{2}$", description="Local time HH:MM; 24:00 = midnight")


class OpeningSpanRead(BaseModel):
    weekday: int
    start: str
    end: str


class FacilityCreate(StrictModel):
    organisation_id: int
    name: str = Field(min_length=2, max_length=200)
    name_en: str | None = Field(default=None, max_length=200)
    description: str = Field(default="", max_length=4000)
    address: str = Field(default="", max_length=300)
    district: str
    cluster: Cluster | None = Field(default=None, description="Defaults from the district.")
    contact_name: str = Field(default="", max_length=100)
    contact_phone: str = Field(default="", max_length=40)
    contact_email: str = Field(default="", max_length=254)
    timezone: str = "Asia/Shanghai"
    opens_on_holidays: bool = False
    opening_hours: list[OpeningSpanIn] | None = Field(
        default=None, description="Defaults to Monday–Friday 08:30–12:00 and 14:00–17:30."
    )


class FacilityUpdate(StrictModel):
    name: str | None = Field(default=None, min_length=2, max_length=200)
    name_en: str | None = Field(default=None, max_length=200)
    description: str | None = Field(default=None, max_length=4000)
    address: str | None = Field(default=None, max_length=300)
    district: str | None = None
    cluster: Cluster | None = None
    contact_name: str | None = Field(default=None, max_length=100)
    contact_phone: str | None = Field(default=None, max_length=40)
    contact_email: str | None = Field(default=None, max_length=254)
    timezone: str | None = None
    opens_on_holidays: bool | None = None
    is_active: bool | None = None


class FacilityRead(BaseModel):
    id: int
    organisation_id: int
    name: str
    name_en: str | None
    description: str
    address: str
    district: str
    cluster: Cluster
    contact_name: str
    contact_phone: str
    contact_email: str
    timezone: str
    opens_on_holidays: bool
    is_active: bool
    opening_hours: list[OpeningSpanRead] = []


class ClosureIn(StrictModel):
    start_date: date
    end_date: date
    reason: str = Field(default="", max_length=300)


class ClosureRead(ClosureIn):
    id: int
    facility_id: int


class InstrumentFields(StrictModel):
    """Everything a manager sets on an instrument; all optional on update."""

    name_en: str = Field(default="", max_length=200)
    keywords: str = Field(default="", max_length=1000)
    model: str = Field(default="", max_length=200)
    manufacturer: str = Field(default="", max_length=200)
    country_of_origin: str = Field(default="", max_length=60)
    purchase_value_fen: int | None = Field(default=None, ge=0, description="原值 in fen")
    purchase_date: date | None = None
    location: str = Field(default="", max_length=300)
    description: str = Field(default="", max_length=8000)
    specifications: str = Field(default="", max_length=8000)
    photo_url: HttpUrl | None = None
    status: InstrumentStatus = InstrumentStatus.ACTIVE
    special_purpose: bool = False
    rated_annual_hours: int | None = Field(
        default=None, ge=1, le=8784, description="Defaults to 1,400 (800 if special-purpose)."
    )
    slot_minutes: int = Field(default=30, ge=5, le=1440)
    min_duration_minutes: int = Field(default=30, ge=5)
    max_duration_minutes: int = Field(default=480, ge=5)
    max_advance_days: int = Field(default=60, ge=1, le=730)
    min_notice_minutes: int = Field(default=60, ge=0)
    buffer_minutes: int = Field(default=0, ge=0, le=1440)
    approval_mode: ApprovalMode = ApprovalMode.AUTOMATIC_FOR_QUALIFIED
    cancellation_deadline_hours: int = Field(default=24, ge=0, le=720)
    late_cancel_charge_percent: int = Field(default=50, ge=0, le=100)
    no_show_charge_percent: int = Field(default=50, ge=0, le=100)
    unattended_runs_allowed: bool = False
    requires_qualification: bool = True
    user_weekly_hours_limit: int | None = Field(default=None, ge=1, le=168)
    user_future_bookings_limit: int | None = Field(default=None, ge=1, le=1000)
    organisation_weekly_hours_limit: int | None = Field(default=None, ge=1, le=168)
    price_internal_fen: int = Field(default=0, ge=0, description="per hour, fen")
    price_external_academic_fen: int = Field(default=0, ge=0, description="per hour, fen")
    price_enterprise_fen: int = Field(default=0, ge=0, description="per hour, fen")
    staff_surcharge_fen: int = Field(default=0, ge=0, description="per hour, fen")
    min_billing_minutes: int = Field(default=30, ge=1, le=1440)
    min_charge_fen: int = Field(default=0, ge=0)


class InstrumentCreate(InstrumentFields):
    facility_id: int
    asset_code: str = Field(min_length=1, max_length=60, description="仪器编号")
    name: str = Field(min_length=2, max_length=200)
    category: Category
    operation_mode: OperationMode


class InstrumentUpdate(StrictModel):
    facility_id: int | None = None
    asset_code: str | None = Field(default=None, min_length=1, max_length=60)
    name: str | None = Field(default=None, min_length=2, max_length=200)
    category: Category | None = None
    operation_mode: OperationMode | None = None
    name_en: str | None = Field(default=None, max_length=200)
    keywords: str | None = Field(default=None, max_length=1000)
    model: str | None = Field(default=None, max_length=200)
    manufacturer: str | None = Field(default=None, max_length=200)
    country_of_origin: str | None = Field(default=None, max_length=60)
    purchase_value_fen: int | None = Field(default=None, ge=0)
    purchase_date: date | None = None
    location: str | None = Field(default=None, max_length=300)
    description: str | None = Field(default=None, max_length=8000)
    specifications: str | None = Field(default=None, max_length=8000)
    photo_url: HttpUrl | None = None
    status: InstrumentStatus | None = None
    special_purpose: bool | None = None
    rated_annual_hours: int | None = Field(default=None, ge=1, le=8784)
    slot_minutes: int | None = Field(default=None, ge=5, le=1440)
    min_duration_minutes: int | None = Field(default=None, ge=5)
    max_duration_minutes: int | None = Field(default=None, ge=5)
    max_advance_days: int | None = Field(default=None, ge=1, le=730)
    min_notice_minutes: int | None = Field(default=None, ge=0)
    buffer_minutes: int | None = Field(default=None, ge=0, le=1440)
    approval_mode: ApprovalMode | None = None
    cancellation_deadline_hours: int | None = Field(default=None, ge=0, le=720)
    late_cancel_charge_percent: int | None = Field(default=None, ge=0, le=100)
    no_show_charge_percent: int | None = Field(default=None, ge=0, le=100)
    unattended_runs_allowed: bool | None = None
    requires_qualification: bool | None = None
    user_weekly_hours_limit: int | None = Field(default=None, ge=1, le=168)
    user_future_bookings_limit: int | None = Field(default=None, ge=1, le=1000)
    organisation_weekly_hours_limit: int | None = Field(default=None, ge=1, le=168)
    price_internal_fen: int | None = Field(default=None, ge=0)
    price_external_academic_fen: int | None = Field(default=None, ge=0)
    price_enterprise_fen: int | None = Field(default=None, ge=0)
    staff_surcharge_fen: int | None = Field(default=None, ge=0)
    min_billing_minutes: int | None = Field(default=None, ge=1, le=1440)
    min_charge_fen: int | None = Field(default=None, ge=0)


class PriceList(BaseModel):
    internal_fen: int
    external_academic_fen: int
    enterprise_fen: int
    staff_surcharge_fen: int
    min_billing_minutes: int
    min_charge_fen: int
    your_class: CustomerClass | None = Field(default=None, description="The caller's price class.")
    your_price_fen: int | None = Field(
        default=None, description="Per hour, for the caller's class."
    )


class BookingRulesRead(BaseModel):
    slot_minutes: int
    min_duration_minutes: int
    max_duration_minutes: int
    max_advance_days: int
    min_notice_minutes: int
    buffer_minutes: int
    approval_mode: ApprovalMode
    cancellation_deadline_hours: int
    late_cancel_charge_percent: int
    no_show_charge_percent: int
    unattended_runs_allowed: bool
    requires_qualification: bool
    user_weekly_hours_limit: int | None
    user_future_bookings_limit: int | None
    organisation_weekly_hours_limit: int | None


class InstrumentSummary(BaseModel):
    id: int
    asset_code: str
    name: str
    name_en: str
    model: str
    manufacturer: str
    category: Category
    status: InstrumentStatus
    operation_mode: OperationMode
    is_large: bool
    facility_id: int
    facility_name: str
    organisation_id: int
    cluster: Cluster
    district: str
    photo_url: str
    has_testing_service: bool
    price_fen: int = Field(description="Per hour in the class the search priced by.")


class InstrumentRead(BaseModel):
    id: int
    asset_code: str
    facility_id: int
    facility_name: str
    organisation_id: int
    name: str
    name_en: str
    keywords: str
    model: str
    manufacturer: str
    country_of_origin: str
    category: Category
    purchase_value_fen: int | None
    purchase_date: date | None
    is_large: bool
    location: str
    description: str
    specifications: str
    photo_url: str
    status: InstrumentStatus
    operation_mode: OperationMode
    special_purpose: bool
    rated_annual_hours: int
    rules: BookingRulesRead
    prices: PriceList
    testing_service_ids: list[int]
    updated_at: datetime


class TestingServiceCreate(StrictModel):
    __test__ = False

    facility_id: int
    name: str = Field(min_length=2, max_length=200)
    name_en: str = Field(default="", max_length=200)
    method_standard: str = Field(default="", max_length=300)
    description: str = Field(default="", max_length=4000)
    price_internal_fen: int = Field(ge=0, description="per sample, fen")
    price_external_academic_fen: int = Field(ge=0)
    price_enterprise_fen: int = Field(ge=0)
    turnaround_days: int = Field(default=5, ge=1, le=365)
    daily_sample_capacity: int = Field(default=10, ge=1, le=100_000)
    cma_accredited: bool = False
    cnas_accredited: bool = False
    instrument_ids: list[int] = Field(default_factory=list)


class TestingServiceUpdate(StrictModel):
    __test__ = False

    name: str | None = Field(default=None, min_length=2, max_length=200)
    name_en: str | None = Field(default=None, max_length=200)
    method_standard: str | None = Field(default=None, max_length=300)
    description: str | None = Field(default=None, max_length=4000)
    price_internal_fen: int | None = Field(default=None, ge=0)
    price_external_academic_fen: int | None = Field(default=None, ge=0)
    price_enterprise_fen: int | None = Field(default=None, ge=0)
    turnaround_days: int | None = Field(default=None, ge=1, le=365)
    daily_sample_capacity: int | None = Field(default=None, ge=1, le=100_000)
    cma_accredited: bool | None = None
    cnas_accredited: bool | None = None
    is_active: bool | None = None
    instrument_ids: list[int] | None = None


class TestingServiceRead(BaseModel):
    __test__ = False

    id: int
    facility_id: int
    name: str
    name_en: str
    method_standard: str
    description: str
    price_internal_fen: int
    price_external_academic_fen: int
    price_enterprise_fen: int
    turnaround_days: int
    daily_sample_capacity: int
    cma_accredited: bool
    cnas_accredited: bool
    is_active: bool
    instrument_ids: list[int]


class OutageCreate(StrictModel):
    instrument_id: int | None = Field(default=None, description="Empty: the whole facility.")
    facility_id: int | None = Field(default=None, description="Needed when no instrument is named.")
    start_at: UTCDateTimeIn
    end_at: UTCDateTimeIn
    kind: OutageKind
    note: str = Field(default="", max_length=1000)


class OutageRead(BaseModel):
    id: int
    facility_id: int
    instrument_id: int | None
    start_at: datetime
    end_at: datetime
    kind: OutageKind
    note: str


class QualificationGrant(StrictModel):
    user_id: int
    instrument_id: int
    expires_at: UTCDateTimeIn | None = None
    note: str = Field(default="", max_length=500)


class QualificationRead(BaseModel):
    id: int
    user_id: int
    instrument_id: int
    granted_at: datetime
    granted_by_id: int | None
    expires_at: datetime | None
    revoked_at: datetime | None
    note: str
    is_valid: bool


class IntervalRead(BaseModel):
    start: datetime
    end: datetime


class OpenIntervals(BaseModel):
    open: list[IntervalRead]
