"""Changing the catalogue: who may, what is validated, what is kept."""

from datetime import UTC, datetime, timedelta

import pytest
from sqlmodel import Session, col, select

from core import audit
from core.accounts.rules import Role, ScopeKind
from core.accounts.schemas import RoleGrant
from core.auth.principal import Principal, load_principal
from core.clock import frozen
from core.errors import Conflict, NotFound, PermissionDenied, RuleViolation
from instruments import service
from instruments.models import PriceChange
from instruments.rules import InstrumentStatus, OutageKind
from instruments.schemas import (
    FacilityCreate,
    FacilityUpdate,
    InstrumentUpdate,
    OpeningSpanIn,
    OutageCreate,
    QualificationGrant,
    TestingServiceCreate,
)
from tests.factories import make_organisation, make_user
from tests.instruments.factories import make_facility, make_instrument


def manager_of(session: Session, facility_id: int) -> Principal:
    user = make_user(
        session,
        roles=[
            RoleGrant(role=Role.LAB_MANAGER, scope_kind=ScopeKind.FACILITY, scope_id=facility_id)
        ],
    )
    return load_principal(session, user)


def with_role(session: Session, role: Role) -> Principal:
    return load_principal(session, make_user(session, password=None, roles=[role]))


def test_only_admins_register_facilities(session: Session) -> None:
    organisation = make_organisation(session)
    data = FacilityCreate(organisation_id=organisation.id, name="新平台", district="北碚区")
    with pytest.raises(PermissionDenied):
        service.create_facility(session, actor=with_role(session, Role.RESEARCHER), data=data)
    facility = service.create_facility(session, actor=with_role(session, Role.ADMIN), data=data)
    assert facility.cluster == "western_science_city"


def test_a_new_facility_gets_office_hours_unless_told_otherwise(session: Session) -> None:
    from instruments.queries import opening_spans_by_facility

    facility = make_facility(session, opening_hours=None)
    spans = opening_spans_by_facility(session, [facility.id])[facility.id]
    assert {(s.weekday, s.start_minute, s.end_minute) for s in spans if s.weekday == 0} == {
        (0, 510, 720),
        (0, 840, 1050),
    }


def test_overlapping_or_inverted_opening_hours_are_refused_together(session: Session) -> None:
    facility = make_facility(session)
    with pytest.raises(RuleViolation) as refused:
        service.set_opening_hours(
            session,
            actor=None,
            facility_id=facility.id,
            spans=[
                OpeningSpanIn(weekday=0, start="08:00", end="12:00"),
                OpeningSpanIn(weekday=0, start="11:00", end="13:00"),
                OpeningSpanIn(weekday=1, start="18:00", end="09:00"),
            ],
        )
    assert [p.code for p in refused.value.problems] == ["end_not_after_start", "overlapping_hours"]


def test_a_lab_manager_changes_only_its_own_facilities(session: Session) -> None:
    mine, theirs = make_facility(session), make_facility(session)
    manager = manager_of(session, mine.id)
    service.update_facility(
        session, actor=manager, facility_id=mine.id, data=FacilityUpdate(address="虎溪校区")
    )
    with pytest.raises(NotFound):
        service.update_facility(
            session, actor=manager, facility_id=theirs.id, data=FacilityUpdate(address="x")
        )
    with pytest.raises(PermissionDenied):
        service.update_facility(
            session,
            actor=with_role(session, Role.PLANNER),
            facility_id=mine.id,
            data=FacilityUpdate(address="x"),
        )


def test_instruments_know_when_they_are_large_and_what_finds_them(session: Session) -> None:
    instrument = make_instrument(
        session,
        name="场发射扫描电子显微镜",
        name_en="Field emission scanning electron microscope",
        keywords="电镜 SEM FE-SEM",
        purchase_value_fen=3_200_000_00,
    )
    assert instrument.is_large
    assert "fe-sem" in instrument.search_text
    assert "分析仪器" in instrument.search_text  # the category's name finds it too
    service.update_instrument(
        session,
        actor=None,
        instrument_id=instrument.id,
        data=InstrumentUpdate(purchase_value_fen=100_000_00),
    )
    assert not instrument.is_large


def test_special_purpose_instruments_default_to_800_rated_hours(session: Session) -> None:
    assert make_instrument(session).rated_annual_hours == 1400
    assert make_instrument(session, special_purpose=True).rated_annual_hours == 800
    assert (
        make_instrument(session, special_purpose=True, rated_annual_hours=1000).rated_annual_hours
        == 1000
    )


def test_every_price_change_is_kept_from_when_it_applies(session: Session) -> None:
    start = datetime(2026, 12, 1, tzinfo=UTC)
    with frozen(start):
        instrument = make_instrument(session, price_internal_fen=10_000)
    with frozen(start + timedelta(days=30)):
        service.update_instrument(
            session,
            actor=None,
            instrument_id=instrument.id,
            data=InstrumentUpdate(price_internal_fen=12_000),
        )
        service.update_instrument(
            session, actor=None, instrument_id=instrument.id, data=InstrumentUpdate(location="B101")
        )
    history = session.exec(
        select(PriceChange)
        .where(PriceChange.instrument_id == instrument.id)
        .order_by(col(PriceChange.id))
    ).all()
    assert [(h.effective_at, h.prices["price_internal_fen"]) for h in history] == [
        (start, 10_000),
        (start + timedelta(days=30), 12_000),
    ]


def test_asset_codes_are_unique(session: Session) -> None:
    make_instrument(session, asset_code="CQU-2019-001")
    with pytest.raises(Conflict):
        make_instrument(session, asset_code="CQU-2019-001")


def test_inconsistent_booking_rules_are_refused(session: Session) -> None:
    with pytest.raises(RuleViolation) as refused:
        make_instrument(session, slot_minutes=30, min_duration_minutes=45, max_duration_minutes=30)
    assert {p.code for p in refused.value.problems} == {"invalid_duration", "max_below_min"}


def test_retiring_twice_is_a_conflict(session: Session) -> None:
    instrument = make_instrument(session)
    assert (
        service.retire_instrument(session, actor=None, instrument_id=instrument.id).status
        == InstrumentStatus.RETIRED
    )
    with pytest.raises(Conflict):
        service.retire_instrument(session, actor=None, instrument_id=instrument.id)


def test_a_testing_service_uses_instruments_of_its_own_facility(session: Session) -> None:
    facility = make_facility(session)
    elsewhere = make_instrument(session)
    with pytest.raises(RuleViolation):
        service.create_testing_service(
            session,
            actor=None,
            data=TestingServiceCreate(
                facility_id=facility.id,
                name="XRD 物相分析",
                price_internal_fen=1,
                price_external_academic_fen=1,
                price_enterprise_fen=1,
                instrument_ids=[elsewhere.id],
            ),
        )


def test_an_outage_must_end_after_it_starts_and_name_what_it_blocks(session: Session) -> None:
    start = datetime(2026, 12, 1, 9, tzinfo=UTC)
    with pytest.raises(RuleViolation) as refused:
        service.create_outage(
            session,
            actor=None,
            data=OutageCreate(start_at=start, end_at=start, kind=OutageKind.REPAIR),
        )
    assert {p.field for p in refused.value.problems} == {"end_at", "instrument_id"}


def test_an_instrument_outage_belongs_to_its_facility(session: Session) -> None:
    instrument = make_instrument(session)
    start = datetime(2026, 12, 1, 9, tzinfo=UTC)
    outage = service.create_outage(
        session,
        actor=None,
        data=OutageCreate(
            instrument_id=instrument.id,
            start_at=start,
            end_at=start + timedelta(days=3),
            kind=OutageKind.CALIBRATION,
        ),
    )
    assert outage.facility_id == instrument.facility_id


def test_qualifications_expire_renew_and_keep_their_history(session: Session) -> None:
    instrument = make_instrument(session)
    manager = manager_of(session, instrument.facility_id)
    user = make_user(session, password=None)
    start = datetime(2026, 12, 1, tzinfo=UTC)
    with frozen(start):
        first = service.grant_qualification(
            session,
            actor=manager,
            data=QualificationGrant(
                user_id=user.id, instrument_id=instrument.id, expires_at=start + timedelta(days=365)
            ),
        )
        assert (
            service.valid_qualification(session, user_id=user.id, instrument_id=instrument.id)
            == first
        )
        renewed = service.grant_qualification(
            session,
            actor=manager,
            data=QualificationGrant(user_id=user.id, instrument_id=instrument.id),
        )
    assert first.revoked_at == start
    assert renewed.expires_at is None
    with frozen(start + timedelta(days=400)):
        assert (
            service.valid_qualification(session, user_id=user.id, instrument_id=instrument.id)
            == renewed
        )
        service.revoke_qualification(
            session, actor=manager, qualification_id=renewed.id, reason="安全违规"
        )
        assert (
            service.valid_qualification(session, user_id=user.id, instrument_id=instrument.id)
            is None
        )
        with pytest.raises(Conflict):
            service.revoke_qualification(session, actor=manager, qualification_id=renewed.id)
    _, total = audit.list_entries(session, action="qualification.")
    assert total == 3


def test_an_expired_qualification_is_not_valid(session: Session) -> None:
    instrument = make_instrument(session)
    user = make_user(session, password=None)
    start = datetime(2026, 12, 1, tzinfo=UTC)
    with frozen(start):
        service.grant_qualification(
            session,
            actor=None,
            data=QualificationGrant(
                user_id=user.id, instrument_id=instrument.id, expires_at=start + timedelta(days=1)
            ),
        )
    with frozen(start + timedelta(days=1)):
        assert (
            service.valid_qualification(session, user_id=user.id, instrument_id=instrument.id)
            is None
        )


def test_a_manager_of_another_facility_cannot_grant_qualifications(session: Session) -> None:
    instrument = make_instrument(session)
    stranger = manager_of(session, make_facility(session).id)
    with pytest.raises(NotFound):
        service.grant_qualification(
            session,
            actor=stranger,
            data=QualificationGrant(user_id=make_user(session).id, instrument_id=instrument.id),
        )


def test_a_lab_manager_role_needs_an_existing_facility(session: Session) -> None:
    with pytest.raises(RuleViolation):
        make_user(
            session,
            roles=[
                RoleGrant(role=Role.LAB_MANAGER, scope_kind=ScopeKind.FACILITY, scope_id=987654)
            ],
        )
