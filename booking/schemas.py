"""API shapes of bookings and usage records. Times must carry an offset (naive → 422)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from booking.rules import BookingStatus, OperatedBy
from core.accounts.schemas import StrictModel
from core.types import UTCDateTimeIn


class BookingCreate(StrictModel):
    instrument_id: int
    start: UTCDateTimeIn
    end: UTCDateTimeIn
    purpose: str = Field(default="", max_length=1000)
    charge_account: str = Field(default="", max_length=200, description="经费卡 or payer")
    operated_by: OperatedBy = OperatedBy.SELF
    sample_count: int | None = Field(default=None, ge=1, le=100_000)
    user_id: int | None = Field(
        default=None, description="Book for this user (lab managers of the facility)."
    )
    override: list[str] = Field(
        default_factory=list,
        description="Rule codes a lab manager overrides, e.g. outside_opening_hours (audited).",
    )


class BookingMove(StrictModel):
    start: UTCDateTimeIn
    end: UTCDateTimeIn
    override: list[str] = Field(default_factory=list)


class Reason(StrictModel):
    reason: str = Field(min_length=1, max_length=1000)


class OptionalReason(StrictModel):
    reason: str = Field(default="", max_length=1000)


class CheckOut(StrictModel):
    samples: int | None = Field(default=None, ge=0, le=100_000)


class HandOver(StrictModel):
    user_id: int


class BookingRead(BaseModel):
    id: int
    instrument_id: int
    facility_id: int
    user_id: int
    start: datetime
    end: datetime
    held_until: datetime
    status: BookingStatus
    operated_by: OperatedBy
    purpose: str
    charge_account: str
    sample_count: int | None
    version: int
    overrides: list[str]
    expires_at: datetime | None
    reason: str
    late_cancellation: bool
    replaced_by_id: int | None
    checked_in_at: datetime | None
    created_at: datetime


class UsageRecordCreate(StrictModel):
    instrument_id: int
    user_id: int
    started_at: UTCDateTimeIn
    ended_at: UTCDateTimeIn
    samples: int | None = Field(default=None, ge=0, le=100_000)
    kind: str = Field(default="use", pattern="^(use|training|maintenance)$")
    note: str = Field(default="", max_length=1000)


class UsageRecordCorrection(StrictModel):
    started_at: UTCDateTimeIn | None = None
    ended_at: UTCDateTimeIn | None = None
    samples: int | None = Field(default=None, ge=0, le=100_000)
    note: str = Field(min_length=1, max_length=1000, description="Why it was corrected.")


class UsageRecordRead(BaseModel):
    id: int
    booking_id: int | None
    instrument_id: int
    user_id: int
    operator_id: int | None
    started_at: datetime
    ended_at: datetime
    samples: int | None
    kind: str
    note: str
    corrected_at: datetime | None


class FreeInterval(BaseModel):
    start: datetime
    end: datetime


class Availability(BaseModel):
    free: list[FreeInterval]


class FreeInstrument(BaseModel):
    instrument_id: int
    name: str
    facility_name: str
    free: list[FreeInterval]
