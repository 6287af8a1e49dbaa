"""Changing the catalogue: facilities, opening hours, closures, instruments, testing services,
outages and qualifications.

Invariants: only an admin or a lab manager of the facility changes it (a manager asking about
another facility's objects gets 404, a user without a managing role 403); opening intervals of
a day never overlap; prices are whole, non-negative fen and every change of them is kept in
``price_change`` from the moment it applies; an instrument's ``is_large`` and ``search_text``
always follow its data; a qualification's history is never rewritten (renewal ends the old row).
Every change is audited in the same transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import sqlalchemy as sa
from sqlmodel import Session, col, delete, select

from core import audit
from core.accounts import service as accounts
from core.accounts.models import Organisation, RoleAssignment, User
from core.accounts.rules import Role, ScopeKind
from core.accounts.schemas import RoleGrant
from core.auth.principal import Principal
from core.clock import now
from core.errors import Conflict, NotFound, PermissionDenied, Problem, RuleViolation, raise_if
from core.places import DISTRICTS, cluster_for_district
from instruments import rules
from instruments.models import (
    Facility,
    FacilityClosure,
    Instrument,
    OpeningSpan,
    Outage,
    PriceChange,
    Qualification,
    TestingService,
    TestingServiceInstrument,
)
from instruments.rules import CATEGORY_NAMES, InstrumentStatus
from instruments.schemas import (
    ClosureIn,
    FacilityCreate,
    FacilityUpdate,
    InstrumentCreate,
    InstrumentUpdate,
    OpeningSpanIn,
    OutageCreate,
    QualificationGrant,
    TestingServiceCreate,
    TestingServiceUpdate,
)

NULLABLE_FIELDS = frozenset(
    {
        "purchase_value_fen",
        "purchase_date",
        "user_weekly_hours_limit",
        "user_future_bookings_limit",
        "organisation_weekly_hours_limit",
    }
)
PRICE_FIELDS = (
    "price_internal_fen",
    "price_external_academic_fen",
    "price_enterprise_fen",
    "staff_surcharge_fen",
    "min_billing_minutes",
    "min_charge_fen",
)
DEFAULT_OPENING_HOURS = [
    OpeningSpanIn(weekday=day, start=start, end=end)
    for day in range(5)
    for start, end in (("08:30", "12:00"), ("14:00", "17:30"))
]

# Facility-scoped roles (lab_manager) must name a facility that exists.
accounts.SCOPE_EXISTS[ScopeKind.FACILITY] = lambda session, facility_id: (
    session.get(Facility, facility_id) is not None
)


CALENDAR_FIELDS = frozenset({"timezone", "opens_on_holidays", "is_active"})


def _calendar_changed(facility: Facility) -> None:
    """Cached calendars of this facility are stale from now on."""
    facility.calendar_token = uuid.uuid4().hex
    facility.updated_at = now()


def _actor_id(actor: Principal | None) -> int | None:
    return actor.user_id if actor is not None else None


def managed_facility(
    session: Session, *, actor: Principal | None, facility_id: int, action: str
) -> Facility:
    """The facility, if ``actor`` may manage it: 403 without a managing role, else 404."""
    if actor is not None and not actor.has_role(Role.LAB_MANAGER, Role.ADMIN):
        raise PermissionDenied(f"Only a lab manager of the facility or an admin may {action}.")
    facility = session.get(Facility, facility_id)
    if facility is None or (actor is not None and not actor.manages_facility(facility_id)):
        raise NotFound("Facility")
    return facility


# --- Facilities --------------------------------------------------------------------------


def _minute(text: str, *, is_end: bool) -> int | None:
    hours, minutes = (int(part) for part in text.split(":"))
    if minutes >= 60 or hours > 24 or (hours == 24 and (minutes or not is_end)):
        return None
    return hours * 60 + minutes


def _spans(spans_in: Sequence[OpeningSpanIn]) -> tuple[list[rules.OpeningSpan], list[Problem]]:
    spans: list[rules.OpeningSpan] = []
    problems: list[Problem] = []
    for index, span in enumerate(spans_in):
        start, end = _minute(span.start, is_end=False), _minute(span.end, is_end=True)
        if start is None or end is None:
            problems.append(
                Problem("invalid_time", "Use a time from 00:00 to 24:00.", f"opening_hours.{index}")
            )
            start, end = 0, 0
        spans.append(rules.OpeningSpan(span.weekday, start, end))
    if not problems:
        problems = rules.opening_hours_problems(spans)
    return spans, problems


def _facility_problems(session: Session, values: dict[str, Any]) -> list[Problem]:
    problems = []
    if "district" in values and values["district"] not in DISTRICTS:
        problems.append(
            Problem("unknown_district", f"Unknown district: {values['district']}.", "district")
        )
    if "timezone" in values:
        try:
            ZoneInfo(values["timezone"])
        except (ZoneInfoNotFoundError, ValueError):
            problems.append(Problem("unknown_timezone", "Unknown time zone.", "timezone"))
    if "organisation_id" in values and session.get(Organisation, values["organisation_id"]) is None:
        problems.append(Problem("unknown_organisation", "No such organisation.", "organisation_id"))
    return problems


def _ensure_unique_facility_name(session: Session, name: str, exclude_id: int | None) -> None:
    query = select(Facility.id).where(Facility.name == name)
    if exclude_id is not None:
        query = query.where(Facility.id != exclude_id)
    if session.exec(query).first() is not None:
        raise Conflict(
            "Another facility already has this name.",
            code="duplicate_facility",
            problems=[Problem("duplicate", "Already registered.", "name")],
        )


def create_facility(session: Session, *, actor: Principal | None, data: FacilityCreate) -> Facility:
    """Register a facility of an organisation (admins)."""
    if actor is not None:
        actor.require_admin("register facilities")
    values = data.model_dump(exclude={"opening_hours"})
    spans, span_problems = _spans(
        data.opening_hours if data.opening_hours is not None else DEFAULT_OPENING_HOURS
    )
    raise_if(_facility_problems(session, values) + span_problems)
    values["cluster"] = values["cluster"] or cluster_for_district(values["district"])
    _ensure_unique_facility_name(session, values["name"], None)
    facility = Facility.model_validate(values)
    session.add(facility)
    session.flush()
    _replace_spans(session, facility.id or 0, spans)
    audit.record(
        session,
        actor_id=_actor_id(actor),
        action="facility.created",
        subject_type="facility",
        subject_id=facility.id or 0,
        data={"name": facility.name},
    )
    return facility


def update_facility(
    session: Session, *, actor: Principal | None, facility_id: int, data: FacilityUpdate
) -> Facility:
    """Change a facility's details; only the fields given change."""
    facility = managed_facility(session, actor=actor, facility_id=facility_id, action="change it")
    changes = data.model_dump(exclude_unset=True)
    raise_if(_facility_problems(session, changes))
    if "name" in changes:
        _ensure_unique_facility_name(session, changes["name"], facility_id)
    if CALENDAR_FIELDS & changes.keys():
        _calendar_changed(facility)
    audit.apply_update(
        session,
        facility,
        changes,
        actor_id=_actor_id(actor),
        action="facility.updated",
        subject_type="facility",
    )
    return facility


def _replace_spans(session: Session, facility_id: int, spans: list[rules.OpeningSpan]) -> None:
    session.execute(delete(OpeningSpan).where(col(OpeningSpan.facility_id) == facility_id))
    for span in spans:
        session.add(
            OpeningSpan(
                facility_id=facility_id,
                weekday=span.weekday,
                start_minute=span.start_minute,
                end_minute=span.end_minute,
            )
        )
    session.flush()


def set_opening_hours(
    session: Session, *, actor: Principal | None, facility_id: int, spans: Sequence[OpeningSpanIn]
) -> None:
    """Replace a facility's weekly opening hours."""
    facility = managed_facility(
        session, actor=actor, facility_id=facility_id, action="change opening hours"
    )
    parsed, problems = _spans(spans)
    raise_if(problems)
    _replace_spans(session, facility_id, parsed)
    _calendar_changed(facility)
    session.add(facility)
    audit.record(
        session,
        actor_id=_actor_id(actor),
        action="facility.opening_hours_set",
        subject_type="facility",
        subject_id=facility_id,
        data={"spans": [[s.weekday, s.start, s.end] for s in spans]},
    )


def add_closure(
    session: Session, *, actor: Principal | None, facility_id: int, data: ClosureIn
) -> FacilityClosure:
    """Close a facility on some days beyond the statutory holidays."""
    facility = managed_facility(session, actor=actor, facility_id=facility_id, action="close it")
    _calendar_changed(facility)
    session.add(facility)
    if data.end_date < data.start_date:
        raise RuleViolation(
            [Problem("end_before_start", "The last day is before the first.", "end_date")]
        )
    closure = FacilityClosure(facility_id=facility_id, **data.model_dump())
    session.add(closure)
    session.flush()
    audit.record(
        session,
        actor_id=_actor_id(actor),
        action="facility.closure_added",
        subject_type="facility",
        subject_id=facility_id,
        data={"from": str(data.start_date), "to": str(data.end_date)},
    )
    return closure


def remove_closure(session: Session, *, actor: Principal | None, closure_id: int) -> None:
    closure = session.get(FacilityClosure, closure_id)
    if closure is None:
        raise NotFound("Closure")
    facility = managed_facility(
        session, actor=actor, facility_id=closure.facility_id, action="reopen it"
    )
    _calendar_changed(facility)
    session.add(facility)
    session.delete(closure)
    session.flush()
    audit.record(
        session,
        actor_id=_actor_id(actor),
        action="facility.closure_removed",
        subject_type="facility",
        subject_id=closure.facility_id,
        data={"closure_id": closure_id},
    )


def add_manager(
    session: Session, *, actor: Principal | None, facility_id: int, user_id: int
) -> RoleAssignment:
    """Make a user a lab manager of a facility (admins)."""
    if actor is not None:
        actor.require_admin("appoint lab managers")
    if session.get(Facility, facility_id) is None:
        raise NotFound("Facility")
    return accounts.grant_role(
        session,
        actor_id=_actor_id(actor),
        user_id=user_id,
        grant=RoleGrant(role=Role.LAB_MANAGER, scope_kind=ScopeKind.FACILITY, scope_id=facility_id),
    )


# --- Instruments -------------------------------------------------------------------------


def _search_text(instrument: Instrument) -> str:
    zh, en = CATEGORY_NAMES[instrument.category]
    parts = (
        instrument.name,
        instrument.name_en,
        instrument.keywords,
        instrument.model,
        instrument.manufacturer,
        instrument.asset_code,
        instrument.description,
        zh,
        en,
    )
    return " ".join(p for p in parts if p).lower()


def _instrument_problems(values: dict[str, Any]) -> list[Problem]:
    booking_rules = rules.BookingRules(
        **{name: values[name] for name in rules.BookingRules.__dataclass_fields__}
    )
    problems = rules.booking_rules_problems(booking_rules)
    if (
        values["min_billing_minutes"] % values["slot_minutes"]
        and values["slot_minutes"] % values["min_billing_minutes"]
    ):
        problems.append(
            Problem(
                "invalid_billing_unit",
                "The minimum billing unit must be a multiple or a divisor of the slot.",
                "min_billing_minutes",
            )
        )
    return problems


def _ensure_unique_asset_code(session: Session, asset_code: str, exclude_id: int | None) -> None:
    query = select(Instrument.id).where(Instrument.asset_code == asset_code)
    if exclude_id is not None:
        query = query.where(Instrument.id != exclude_id)
    if session.exec(query).first() is not None:
        raise Conflict(
            "Another instrument already has this asset code.",
            code="duplicate_asset_code",
            problems=[Problem("duplicate", "Already registered.", "asset_code")],
        )


def _record_prices(session: Session, instrument: Instrument, actor: Principal | None) -> None:
    session.add(
        PriceChange(
            instrument_id=instrument.id or 0,
            prices={name: getattr(instrument, name) for name in PRICE_FIELDS},
            changed_by_id=_actor_id(actor),
        )
    )


def create_instrument(
    session: Session, *, actor: Principal | None, data: InstrumentCreate
) -> Instrument:
    """List an instrument in a facility the actor manages."""
    managed_facility(session, actor=actor, facility_id=data.facility_id, action="add instruments")
    values = data.model_dump()
    values["photo_url"] = str(values["photo_url"]) if values["photo_url"] else ""
    if values["rated_annual_hours"] is None:
        values["rated_annual_hours"] = rules.default_rated_hours(values["special_purpose"])
    raise_if(_instrument_problems(values))
    _ensure_unique_asset_code(session, values["asset_code"], None)
    instrument = Instrument.model_validate(values)
    instrument.is_large = rules.is_large_instrument(instrument.purchase_value_fen)
    instrument.search_text = _search_text(instrument)
    session.add(instrument)
    session.flush()
    _record_prices(session, instrument, actor)
    audit.record(
        session,
        actor_id=_actor_id(actor),
        action="instrument.created",
        subject_type="instrument",
        subject_id=instrument.id or 0,
        data={"name": instrument.name, "asset_code": instrument.asset_code},
    )
    return instrument


def get_instrument(session: Session, instrument_id: int) -> Instrument:
    instrument = session.get(Instrument, instrument_id)
    if instrument is None:
        raise NotFound("Instrument")
    return instrument


def managed_instrument(
    session: Session, *, actor: Principal | None, instrument_id: int, action: str
) -> Instrument:
    """The instrument, if ``actor`` manages its facility (403 without a managing role, else 404)."""
    if actor is not None and not actor.has_role(Role.LAB_MANAGER, Role.ADMIN):
        raise PermissionDenied(f"Only a lab manager of the facility or an admin may {action}.")
    instrument = session.get(Instrument, instrument_id)
    if instrument is None or (
        actor is not None and not actor.manages_facility(instrument.facility_id)
    ):
        raise NotFound("Instrument")
    return instrument


def update_instrument(
    session: Session, *, actor: Principal | None, instrument_id: int, data: InstrumentUpdate
) -> Instrument:
    """Change an instrument; only the fields given change. Moving it needs both facilities."""
    instrument = managed_instrument(
        session, actor=actor, instrument_id=instrument_id, action="change it"
    )
    changes = data.model_dump(exclude_unset=True)
    if "photo_url" in changes:
        changes["photo_url"] = str(changes["photo_url"]) if changes["photo_url"] else ""
    if changes.get("facility_id") not in (None, instrument.facility_id):
        managed_facility(
            session,
            actor=actor,
            facility_id=changes["facility_id"],
            action="move instruments there",
        )
    none_not_allowed = [k for k, v in changes.items() if v is None and k not in NULLABLE_FIELDS]
    if none_not_allowed:
        raise RuleViolation(
            [Problem("required", "May not be emptied.", k) for k in none_not_allowed]
        )
    merged = instrument.model_dump() | changes
    raise_if(_instrument_problems(merged))
    if "asset_code" in changes:
        _ensure_unique_asset_code(session, changes["asset_code"], instrument_id)
    prices_before = {name: getattr(instrument, name) for name in PRICE_FIELDS}
    for key, value in changes.items():
        setattr(instrument, key, value)
    instrument.is_large = rules.is_large_instrument(instrument.purchase_value_fen)
    instrument.search_text = _search_text(instrument)
    instrument.updated_at = now()
    session.add(instrument)
    if {name: getattr(instrument, name) for name in PRICE_FIELDS} != prices_before:
        _record_prices(session, instrument, actor)
    session.flush()
    audit.record(
        session,
        actor_id=_actor_id(actor),
        action="instrument.updated",
        subject_type="instrument",
        subject_id=instrument_id,
        data={"changed": sorted(changes)},
    )
    return instrument


def retire_instrument(
    session: Session, *, actor: Principal | None, instrument_id: int
) -> Instrument:
    """Take an instrument out of service for good; it stays in history and reports."""
    instrument = managed_instrument(
        session, actor=actor, instrument_id=instrument_id, action="retire it"
    )
    if instrument.status == InstrumentStatus.RETIRED:
        raise Conflict("The instrument is already retired.", code="already_retired")
    instrument.status = InstrumentStatus.RETIRED
    instrument.updated_at = now()
    session.add(instrument)
    session.flush()
    audit.record(
        session,
        actor_id=_actor_id(actor),
        action="instrument.retired",
        subject_type="instrument",
        subject_id=instrument_id,
    )
    return instrument


# --- Testing services --------------------------------------------------------------------


def _check_service_instruments(
    session: Session, facility_id: int, instrument_ids: list[int]
) -> None:
    if not instrument_ids:
        return
    found = set(
        session.exec(
            select(Instrument.id).where(
                col(Instrument.id).in_(instrument_ids), Instrument.facility_id == facility_id
            )
        ).all()
    )
    missing = [i for i in instrument_ids if i not in found]
    if missing:
        raise RuleViolation(
            [
                Problem(
                    "unknown_instrument",
                    f"Not an instrument of this facility: {missing}.",
                    "instrument_ids",
                )
            ]
        )


def _link_instruments(session: Session, service_id: int, instrument_ids: list[int]) -> None:
    session.execute(
        delete(TestingServiceInstrument).where(
            col(TestingServiceInstrument.testing_service_id) == service_id
        )
    )
    for instrument_id in dict.fromkeys(instrument_ids):
        session.add(
            TestingServiceInstrument(testing_service_id=service_id, instrument_id=instrument_id)
        )
    session.flush()


def create_testing_service(
    session: Session, *, actor: Principal | None, data: TestingServiceCreate
) -> TestingService:
    """Offer a sample-based testing service (检测服务) in a facility the actor manages."""
    managed_facility(
        session, actor=actor, facility_id=data.facility_id, action="add testing services"
    )
    _check_service_instruments(session, data.facility_id, data.instrument_ids)
    service = TestingService.model_validate(data.model_dump(exclude={"instrument_ids"}))
    session.add(service)
    session.flush()
    _link_instruments(session, service.id or 0, data.instrument_ids)
    audit.record(
        session,
        actor_id=_actor_id(actor),
        action="testing_service.created",
        subject_type="testing_service",
        subject_id=service.id or 0,
        data={"name": service.name},
    )
    return service


def update_testing_service(
    session: Session, *, actor: Principal | None, service_id: int, data: TestingServiceUpdate
) -> TestingService:
    service = session.get(TestingService, service_id)
    if actor is not None and not actor.has_role(Role.LAB_MANAGER, Role.ADMIN):
        raise PermissionDenied("Only a lab manager of the facility or an admin may change it.")
    if service is None or (actor is not None and not actor.manages_facility(service.facility_id)):
        raise NotFound("Testing service")
    changes = data.model_dump(exclude_unset=True, exclude={"instrument_ids"})
    empty = [k for k, v in changes.items() if v is None]
    if empty:
        raise RuleViolation([Problem("required", "May not be emptied.", k) for k in empty])
    if data.instrument_ids is not None:
        _check_service_instruments(session, service.facility_id, data.instrument_ids)
        _link_instruments(session, service_id, data.instrument_ids)
    audit.apply_update(
        session,
        service,
        changes,
        also_changed=["instrument_ids"] if data.instrument_ids is not None else [],
        actor_id=_actor_id(actor),
        action="testing_service.updated",
        subject_type="testing_service",
    )
    return service


# --- Outages -----------------------------------------------------------------------------


def create_outage(session: Session, *, actor: Principal | None, data: OutageCreate) -> Outage:
    """Make an instrument, or a whole facility, unavailable for a time range."""
    problems = []
    if data.end_at <= data.start_at:
        problems.append(
            Problem("end_not_after_start", "The outage must end after it starts.", "end_at")
        )
    if data.instrument_id is None and data.facility_id is None:
        problems.append(Problem("required", "Name an instrument or a facility.", "instrument_id"))
    raise_if(problems)
    if data.instrument_id is not None:
        instrument = managed_instrument(
            session, actor=actor, instrument_id=data.instrument_id, action="record outages"
        )
        facility_id = instrument.facility_id
        if data.facility_id not in (None, facility_id):
            raise RuleViolation(
                [Problem("mismatch", "The instrument is not in that facility.", "facility_id")]
            )
    else:
        facility_id = (
            managed_facility(
                session, actor=actor, facility_id=data.facility_id or 0, action="record outages"
            ).id
            or 0
        )
    outage = Outage(
        facility_id=facility_id,
        instrument_id=data.instrument_id,
        start_at=data.start_at,
        end_at=data.end_at,
        kind=data.kind,
        note=data.note,
        created_by_id=_actor_id(actor),
    )
    session.add(outage)
    session.flush()
    audit.record(
        session,
        actor_id=_actor_id(actor),
        action="outage.created",
        subject_type="outage",
        subject_id=outage.id or 0,
        data={
            "instrument_id": data.instrument_id,
            "facility_id": facility_id,
            "kind": data.kind,
            "start_at": data.start_at.isoformat(),
            "end_at": data.end_at.isoformat(),
        },
    )
    return outage


def delete_outage(session: Session, *, actor: Principal | None, outage_id: int) -> None:
    outage = session.get(Outage, outage_id)
    if actor is not None and not actor.has_role(Role.LAB_MANAGER, Role.ADMIN):
        raise PermissionDenied("Only a lab manager of the facility or an admin may remove outages.")
    if outage is None or (actor is not None and not actor.manages_facility(outage.facility_id)):
        raise NotFound("Outage")
    session.delete(outage)
    session.flush()
    audit.record(
        session,
        actor_id=_actor_id(actor),
        action="outage.deleted",
        subject_type="outage",
        subject_id=outage_id,
        data={"instrument_id": outage.instrument_id},
    )


# --- Qualifications ----------------------------------------------------------------------


def is_valid(qualification: Qualification, at: datetime) -> bool:
    return qualification.revoked_at is None and (
        qualification.expires_at is None or qualification.expires_at > at
    )


def qualification_valid_at(user_id: Any, instrument_id: Any, at: Any) -> sa.ColumnElement[bool]:
    """Where a qualification of the user on the instrument is valid at ``at`` (values or SQL
    expressions, e.g. the bound parameters of a statement built once)."""
    return sa.and_(
        col(Qualification.user_id) == user_id,
        col(Qualification.instrument_id) == instrument_id,
        col(Qualification.revoked_at).is_(None),
        col(Qualification.expires_at).is_(None) | (col(Qualification.expires_at) > at),
    )


def valid_qualification(
    session: Session, *, user_id: int, instrument_id: int, until: datetime | None = None
) -> Qualification | None:
    """The user's qualification on the instrument that is valid now (and still at ``until``,
    e.g. the end of a booking), if any."""
    current = max(now(), until) if until is not None else now()
    return session.exec(
        select(Qualification).where(qualification_valid_at(user_id, instrument_id, current))
    ).first()


def grant_qualification(
    session: Session, *, actor: Principal | None, data: QualificationGrant
) -> Qualification:
    """Record that a user is trained on an instrument; a renewal ends the previous record."""
    managed_instrument(
        session, actor=actor, instrument_id=data.instrument_id, action="grant qualifications"
    )
    if session.get(User, data.user_id) is None:
        raise RuleViolation([Problem("unknown_user", "No such user.", "user_id")])
    if data.expires_at is not None and data.expires_at <= now():
        raise RuleViolation([Problem("in_past", "The expiry must be in the future.", "expires_at")])
    previous = valid_qualification(session, user_id=data.user_id, instrument_id=data.instrument_id)
    if previous is not None:
        previous.revoked_at = now()
        previous.revoked_by_id = _actor_id(actor)
        previous.note = (previous.note + " (renewed)").strip()
        session.add(previous)
    qualification = Qualification(
        user_id=data.user_id,
        instrument_id=data.instrument_id,
        granted_by_id=_actor_id(actor),
        expires_at=data.expires_at,
        note=data.note,
    )
    session.add(qualification)
    session.flush()
    audit.record(
        session,
        actor_id=_actor_id(actor),
        action="qualification.granted",
        subject_type="qualification",
        subject_id=qualification.id or 0,
        data={
            "user_id": data.user_id,
            "instrument_id": data.instrument_id,
            "expires_at": data.expires_at.isoformat() if data.expires_at else None,
        },
    )
    return qualification


def revoke_qualification(
    session: Session, *, actor: Principal | None, qualification_id: int, reason: str = ""
) -> Qualification:
    qualification = session.get(Qualification, qualification_id)
    if actor is not None and not actor.has_role(Role.LAB_MANAGER, Role.ADMIN):
        raise PermissionDenied("Only a lab manager of the facility or an admin may revoke it.")
    if qualification is None:
        raise NotFound("Qualification")
    managed_instrument(
        session,
        actor=actor,
        instrument_id=qualification.instrument_id,
        action="revoke qualifications",
    )
    if qualification.revoked_at is not None:
        raise Conflict("The qualification is already revoked.", code="already_revoked")
    qualification.revoked_at = now()
    qualification.revoked_by_id = _actor_id(actor)
    if reason:
        qualification.note = (qualification.note + f" revoked: {reason}").strip()
    session.add(qualification)
    session.flush()
    audit.record(
        session,
        actor_id=_actor_id(actor),
        action="qualification.revoked",
        subject_type="qualification",
        subject_id=qualification_id,
        data={"reason": reason},
    )
    return qualification
