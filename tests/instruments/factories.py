"""Factories for catalogue objects."""

from __future__ import annotations

import itertools
from typing import Any

from sqlmodel import Session

from core.accounts.models import Organisation
from instruments import service
from instruments.models import Facility, Instrument, TestingService
from instruments.rules import Category, OperationMode
from instruments.schemas import (
    FacilityCreate,
    InstrumentCreate,
    OpeningSpanIn,
    TestingServiceCreate,
)
from tests.factories import make_organisation

_counter = itertools.count(1)

WEEKDAYS_9_TO_5 = [OpeningSpanIn(weekday=d, start="09:00", end="17:00") for d in range(5)]


def make_facility(
    session: Session, *, organisation: Organisation | None = None, **overrides: Any
) -> Facility:
    n = next(_counter)
    organisation = organisation or make_organisation(session)
    values: dict[str, Any] = {
        "organisation_id": organisation.id,
        "name": f"测试平台{n}",
        "district": organisation.district,
        "opening_hours": WEEKDAYS_9_TO_5,
    }
    values.update(overrides)
    return service.create_facility(session, actor=None, data=FacilityCreate.model_validate(values))


def make_instrument(
    session: Session, *, facility: Facility | None = None, **overrides: Any
) -> Instrument:
    n = next(_counter)
    facility = facility or make_facility(session)
    values: dict[str, Any] = {
        "facility_id": facility.id,
        "asset_code": f"T-{n:05d}",
        "name": f"测试仪器{n}",
        "category": Category.ANALYTICAL,
        "operation_mode": OperationMode.BOTH,
        "price_internal_fen": 10_000,
        "price_external_academic_fen": 20_000,
        "price_enterprise_fen": 30_000,
    }
    values.update(overrides)
    return service.create_instrument(
        session, actor=None, data=InstrumentCreate.model_validate(values)
    )


def make_testing_service(
    session: Session,
    *,
    facility: Facility,
    instruments: list[Instrument] = (),
    **overrides: Any,  # type: ignore[assignment]
) -> TestingService:
    values: dict[str, Any] = {
        "facility_id": facility.id,
        "name": f"检测服务{next(_counter)}",
        "price_internal_fen": 5_000,
        "price_external_academic_fen": 8_000,
        "price_enterprise_fen": 12_000,
        "instrument_ids": [i.id for i in instruments],
    }
    values.update(overrides)
    return service.create_testing_service(
        session, actor=None, data=TestingServiceCreate.model_validate(values)
    )
