"""A hand-computed October 2025 (Asia/Shanghai) for the utilization reports.

Facility F (owned by university U) opens Monday to Friday 09:00–17:00 and closes on statutory
holidays. October 2025: 23 weekdays, of which 1–3 and 6–8 October are National Day holidays,
and Saturday 11 October is a make-up working day (调休): 18 open days × 8 h = 144 h.
Facility G (enterprise E) opens the same week but also on holidays: 24 days = 192 h.

Instrument A (F, bought 2020, 800,000 yuan, 1,400 rated hours a year):
- an outage 20 Oct 10:00 → 21 Oct 12:00: 7 h + 3 h of opening hours lost → available 134 h;
- rated 1,400 × 31/365 = 118.904 h in October;
- usage: 30 Sep 16:00 → 1 Oct 02:00 internal (2 h in October, 8 h in September),
  15 Oct 09:00–13:00 external (4 h), 31 Oct 22:00 → 1 Nov 01:00 internal (2 h in October),
  22 Oct 14:00–15:30 by a user without an organisation (external, 1.5 h), 16 Oct 2 h
  training, 17 Oct 1 h maintenance → effective 9.5 h, external 5.5 h;
- bookings: completed 15 Oct 09–13 (4 h), confirmed 31 Oct 22:00 → 1 Nov 02:00 (2 h in
  October), two no-shows (23 Oct), a late cancellation (24 Oct), a late cancellation that was
  a move (27 Oct → 28 Oct 09–10, completed, 1 h), a cancellation in time → booked 7 h,
  2 completed, 2 no-shows, 1 late cancellation (the move is not one);
- testing service S (capacity 10 a day): 6 + 4 samples accepted → 10 / (10 × 18) = 5.6 %;
  four reports after 2, 4, 10 and 1.5 days → median turnaround 3 days.

Instrument B (F, bought 16 Oct 2025, 100,000 yuan): in service from 16 Oct: 12 open days =
96 h, an outage 27–31 Oct all day takes 40 h → available 56 h; rated 1,400 × 16/365 =
61.37 h; no use.

Instrument C (G, rated 100 h a year): 8 h of use on 8 Oct (a holiday G opens) by U's user.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from zoneinfo import ZoneInfo

from sqlmodel import Session

from booking.models import Booking, ServiceCapacityDay, ServiceRequest, UsageRecord
from core.accounts.models import Organisation, User
from core.accounts.rules import OrganisationType, Role, ScopeKind
from core.accounts.schemas import RoleGrant
from instruments.models import Facility, Instrument, Outage, TestingService
from instruments.rules import OutageKind
from tests.factories import make_organisation, make_user
from tests.instruments.factories import make_facility, make_instrument, make_testing_service

SHANGHAI = ZoneInfo("Asia/Shanghai")


def local(month: int, day: int, hour: int = 0, minute: int = 0, year: int = 2025) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=SHANGHAI)


@dataclass
class World:
    university: Organisation
    enterprise: Organisation
    facility: Facility
    other_facility: Facility
    a: Instrument
    b: Instrument
    c: Instrument
    service: TestingService
    internal_user: User
    external_user: User
    loner: User
    manager: User
    other_manager: User
    planner: User
    admin: User
    researcher: User
    finance: User


def _usage(
    session: Session,
    instrument: Instrument,
    user: User,
    start: datetime,
    end: datetime,
    kind: str = "use",
    **extra: object,
) -> UsageRecord:
    record = UsageRecord(
        instrument_id=instrument.id or 0,
        user_id=user.id or 0,
        organisation_id=user.organisation_id,
        started_at=start,
        ended_at=end,
        kind=kind,
        **extra,
    )
    session.add(record)
    session.flush()
    return record


def _booking(
    session: Session,
    instrument: Instrument,
    user: User,
    start: datetime,
    end: datetime,
    status: str,
    **extra: object,
) -> Booking:
    booking = Booking(
        instrument_id=instrument.id or 0,
        facility_id=instrument.facility_id,
        user_id=user.id or 0,
        organisation_id=user.organisation_id,
        start_at=start,
        end_at=end,
        held_until=end,
        status=status,
        operated_by="self",
        **extra,
    )
    session.add(booking)
    session.flush()
    return booking


def build_world(session: Session) -> World:
    university = make_organisation(session, name="报表大学")
    enterprise = make_organisation(
        session, name="报表科技有限公司", type=OrganisationType.ENTERPRISE, district="南岸区"
    )
    outsider_org = make_organisation(session, name="外校")
    facility = make_facility(session, organisation=university, name="报表平台F")
    other_facility = make_facility(
        session, organisation=enterprise, name="报表平台G", opens_on_holidays=True
    )
    a = make_instrument(
        session,
        facility=facility,
        name="扫描电镜A",
        asset_code="RPT-A",
        purchase_date=date(2020, 1, 1),
        purchase_value_fen=800_000 * 100,
    )
    b = make_instrument(
        session,
        facility=facility,
        name="衍射仪B",
        asset_code="RPT-B",
        purchase_date=date(2025, 10, 16),
        purchase_value_fen=100_000 * 100,
    )
    c = make_instrument(
        session,
        facility=other_facility,
        name="质谱仪C",
        asset_code="RPT-C",
        purchase_date=date(2019, 5, 1),
        rated_annual_hours=100,
    )
    internal_user = make_user(session, organisation=university, name="校内用户")
    external_user = make_user(session, organisation=outsider_org, name="校外用户")
    loner = make_user(session, name="个人用户")
    world = World(
        university=university,
        enterprise=enterprise,
        facility=facility,
        other_facility=other_facility,
        a=a,
        b=b,
        c=c,
        service=make_testing_service(
            session, facility=facility, instruments=[a], daily_sample_capacity=10
        ),
        internal_user=internal_user,
        external_user=external_user,
        loner=loner,
        manager=make_user(
            session,
            roles=[
                RoleGrant(
                    role=Role.LAB_MANAGER, scope_kind=ScopeKind.FACILITY, scope_id=facility.id
                )
            ],
        ),
        other_manager=make_user(
            session,
            roles=[
                RoleGrant(
                    role=Role.LAB_MANAGER, scope_kind=ScopeKind.FACILITY, scope_id=other_facility.id
                )
            ],
        ),
        planner=make_user(session, roles=[Role.PLANNER]),
        admin=make_user(session, roles=[Role.ADMIN]),
        researcher=make_user(session, organisation=university),
        finance=make_user(session, roles=[Role.FINANCE]),
    )
    for start, end in ((local(10, 20, 10), local(10, 21, 12)),):
        session.add(
            Outage(
                facility_id=facility.id or 0,
                instrument_id=a.id,
                start_at=start,
                end_at=end,
                kind=OutageKind.REPAIR,
            )
        )
    session.add(
        Outage(
            facility_id=facility.id or 0,
            instrument_id=b.id,
            start_at=local(10, 27),
            end_at=local(11, 1),
            kind=OutageKind.CALIBRATION,
        )
    )
    # Usage of A.
    _usage(session, a, internal_user, local(9, 30, 16), local(10, 1, 2))
    _usage(session, a, external_user, local(10, 15, 9), local(10, 15, 13), samples=3)
    _usage(session, a, internal_user, local(10, 31, 22), local(11, 1, 1))
    _usage(session, a, loner, local(10, 22, 14), local(10, 22, 15, 30), note="无单位")
    _usage(session, a, internal_user, local(10, 16, 9), local(10, 16, 11), kind="training")
    _usage(session, a, internal_user, local(10, 17, 9), local(10, 17, 10), kind="maintenance")
    _usage(session, a, internal_user, local(12, 31, 23), local(1, 1, 1, year=2026))
    # Use of C on a holiday its facility opens.
    _usage(session, c, internal_user, local(10, 8, 9), local(10, 8, 17))
    # Bookings of A.
    _booking(session, a, external_user, local(10, 15, 9), local(10, 15, 13), "completed")
    _booking(session, a, internal_user, local(10, 31, 22), local(11, 1, 2), "confirmed")
    _booking(session, a, internal_user, local(10, 23, 9), local(10, 23, 10), "no_show")
    _booking(session, a, internal_user, local(10, 23, 10), local(10, 23, 11), "no_show")
    _booking(
        session,
        a,
        internal_user,
        local(10, 24, 9),
        local(10, 24, 10),
        "cancelled",
        late_cancellation=True,
    )
    moved_to = _booking(session, a, internal_user, local(10, 28, 9), local(10, 28, 10), "completed")
    _booking(
        session,
        a,
        internal_user,
        local(10, 27, 9),
        local(10, 27, 10),
        "cancelled",
        late_cancellation=True,
        replaced_by_id=moved_to.id,
    )
    _booking(session, a, internal_user, local(10, 29, 9), local(10, 29, 10), "cancelled")
    # Samples and reports of the testing service.
    for day, samples in ((date(2025, 10, 9), 6), (date(2025, 10, 10), 4)):
        session.add(
            ServiceCapacityDay(
                testing_service_id=world.service.id or 0, day=day, accepted_samples=samples
            )
        )
    for submitted, reported in (
        (local(10, 9, 9), local(10, 11, 9)),
        (local(10, 10, 9), local(10, 14, 9)),
        (local(10, 10, 9), local(10, 20, 9)),
        (local(10, 13, 9), local(10, 14, 21)),
    ):
        session.add(
            ServiceRequest(
                testing_service_id=world.service.id or 0,
                facility_id=facility.id or 0,
                user_id=external_user.id or 0,
                sample_count=1,
                status="reported",
                submitted_at=submitted,
                reported_at=reported,
            )
        )
    session.flush()
    return world
