"""The demo's year of history: shaped like what the services produce, the same every time."""

from __future__ import annotations

import itertools
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlmodel import Session, col, select

from booking.models import (
    Booking,
    ServiceCapacityDay,
    ServiceRequest,
    ServiceRequestStatus,
    UsageRecord,
)
from booking.rules import BookingStatus
from core.accounts.models import Organisation, User
from core.accounts.rules import OrganisationType
from instruments import queries as instrument_queries
from instruments.models import Instrument, Outage, TestingService
from instruments.rules import ApprovalMode, OperationMode
from tests.factories import make_organisation, make_user
from tests.instruments.factories import make_facility, make_instrument, make_testing_service
from web.demo_history import Profile, build_history, build_service_requests

# A Thursday afternoon; the history covers the 120 days before it.
END = datetime(2026, 6, 18, 8, 0, tzinfo=UTC)
DAYS = 120
SHANGHAI = ZoneInfo("Asia/Shanghai")
HELD_ONCE = (BookingStatus.COMPLETED, BookingStatus.NO_SHOW)


class Lab:
    """One facility (weekdays 09:00–17:00) with three instruments, and who uses them."""

    def __init__(self, session: Session) -> None:
        self.owner = make_organisation(session, name="历史大学")
        self.firm = make_organisation(
            session, name="历史科技有限公司", type=OrganisationType.ENTERPRISE
        )
        facility = make_facility(session, organisation=self.owner)
        self.busy = make_instrument(session, facility=facility, buffer_minutes=15)
        self.quiet = make_instrument(
            session,
            facility=facility,
            operation_mode=OperationMode.SELF_OPERATED,
            approval_mode=ApprovalMode.MANUAL,
        )
        self.new = make_instrument(
            session, facility=facility, operation_mode=OperationMode.STAFF_OPERATED
        )
        self.service = make_testing_service(
            session, facility=facility, daily_sample_capacity=6, turnaround_days=3
        )
        self.insiders = [make_user(session, organisation=self.owner) for _ in range(3)]
        self.outsiders = [make_user(session, organisation=self.firm) for _ in range(3)]
        self.demo_login = make_user(session, organisation=self.owner)
        self.since = END - timedelta(days=40)

    @property
    def users(self) -> list[tuple[int, int | None]]:
        people = [*self.insiders, *self.outsiders, self.demo_login]
        return [(u.id or 0, u.organisation_id) for u in people]

    def profiles(self) -> dict[int, Profile]:
        return {
            self.busy.id or 0: Profile(load=0.8, external=0.4, no_show=0.08),
            self.quiet.id or 0: Profile(load=0.15, external=0.2, repair_days=20),
            self.new.id or 0: Profile(load=0.5, external=0.6, since=self.since),
        }

    def build(self, session: Session, seed: int = 7) -> None:
        build_history(
            session,
            profiles=self.profiles(),
            users=self.users,
            quiet_user_ids=[self.demo_login.id or 0],
            end=END,
            days=DAYS,
            seed=seed,
        )
        build_service_requests(session, users=self.users, end=END, days=DAYS, seed=seed)


@pytest.fixture
def lab(session: Session) -> Lab:
    built = Lab(session)
    built.build(session)
    return built


def bookings_of(session: Session, instrument: Instrument) -> list[Booking]:
    return list(
        session.exec(
            select(Booking)
            .where(Booking.instrument_id == instrument.id)
            .order_by(col(Booking.start_at))
        ).all()
    )


def effective_hours(session: Session, instrument: Instrument) -> float:
    records = session.exec(
        select(UsageRecord).where(
            UsageRecord.instrument_id == instrument.id, UsageRecord.kind == "use"
        )
    ).all()
    return sum((r.ended_at - r.started_at).total_seconds() for r in records) / 3600


def test_bookings_that_took_place_never_overlap_buffers_included(
    session: Session, lab: Lab
) -> None:
    for instrument in (lab.busy, lab.quiet, lab.new):
        taken = [b for b in bookings_of(session, instrument) if b.status in HELD_ONCE]
        assert taken, instrument.asset_code
        for before, after in itertools.pairwise(taken):
            assert before.held_until <= after.start_at, (before.id, after.id)
        assert all(b.held_until == b.end_at + timedelta(minutes=15) for b in taken) == (
            instrument is lab.busy
        )


def test_bookings_keep_to_opening_hours_and_avoid_outages(session: Session, lab: Lab) -> None:
    """Open time is the calendar's: weekdays 09:00–17:00 and make-up working days, without
    statutory holidays and without the instrument's outages."""
    outages = session.exec(select(Outage).where(Outage.instrument_id == lab.quiet.id)).all()
    repair = [o for o in outages if o.kind == "repair"]
    assert len(repair) == 1
    assert repair[0].end_at - repair[0].start_at == timedelta(days=20)
    ids = [i.id or 0 for i in (lab.busy, lab.quiet, lab.new)]
    calendars = instrument_queries.load_calendars(
        session, instrument_ids=ids, start=END - timedelta(days=DAYS + 1), end=END
    )
    open_time = {i: calendars[i].open_intervals(END - timedelta(days=DAYS + 1), END) for i in ids}
    for booking in session.exec(select(Booking)).all():
        if booking.status not in HELD_ONCE:
            continue
        start = booking.start_at.astimezone(SHANGHAI)
        assert (start.hour, start.minute) >= (9, 0)
        assert start.minute in (0, 30)  # on the instrument's 30-minute slots
        assert booking.end_at.astimezone(SHANGHAI).date() == start.date()
        assert booking.end_at <= END
        assert any(
            opened <= booking.start_at and booking.end_at <= closed
            for opened, closed in open_time[booking.instrument_id]
        ), booking
        for outage in outages if booking.instrument_id == lab.quiet.id else []:
            assert booking.end_at <= outage.start_at or booking.start_at >= outage.end_at


def test_usage_records_exist_for_checked_in_bookings_only_and_fit_them(
    session: Session, lab: Lab
) -> None:
    bookings = {b.id: b for b in session.exec(select(Booking)).all()}
    records = session.exec(select(UsageRecord).where(col(UsageRecord.booking_id).is_not(None)))
    used = {}
    for record in records:
        booking = bookings[record.booking_id]
        used[booking.id] = record
        assert booking.status == BookingStatus.COMPLETED
        assert record.ended_at > record.started_at
        assert booking.start_at - timedelta(minutes=15) <= record.started_at
        assert record.started_at <= booking.start_at + timedelta(minutes=30)
        assert record.ended_at <= booking.end_at + timedelta(minutes=30)
        assert booking.checked_in_at == record.started_at
        assert record.user_id == booking.user_id
    completed = {i for i, b in bookings.items() if b.status == BookingStatus.COMPLETED}
    assert set(used) == completed
    durations = {round((r.ended_at - r.started_at).total_seconds() / 60) for r in used.values()}
    assert len(durations) > 20  # durations vary around the bookings


def test_what_happened_on_an_instrument_never_overlaps(session: Session, lab: Lab) -> None:
    """Uses may overrun their bookings a little, but never into the next use, training or
    maintenance on the same instrument."""
    for instrument in (lab.busy, lab.quiet, lab.new):
        records = session.exec(
            select(UsageRecord)
            .where(UsageRecord.instrument_id == instrument.id)
            .order_by(col(UsageRecord.started_at))
        ).all()
        assert len(records) > 5
        for before, after in itertools.pairwise(records):
            assert before.ended_at <= after.started_at, (before.id, after.id)


def test_no_shows_and_cancellations_have_no_usage_and_moves_keep_their_calendar_uid(
    session: Session, lab: Lab
) -> None:
    bookings = session.exec(select(Booking)).all()
    by_status: dict[str, list[Booking]] = defaultdict(list)
    for booking in bookings:
        by_status[booking.status].append(booking)
    late = [b for b in by_status[BookingStatus.CANCELLED] if b.late_cancellation]
    moved = [b for b in by_status[BookingStatus.CANCELLED] if b.replaced_by_id is not None]
    assert by_status[BookingStatus.NO_SHOW]
    assert late
    assert moved
    assert [b for b in by_status[BookingStatus.CANCELLED] if not b.late_cancellation]
    assert all(b.checked_in_at is None for b in by_status[BookingStatus.NO_SHOW] + late)
    without_use = {b.id for b in bookings if b.status != BookingStatus.COMPLETED}
    used = set(session.exec(select(UsageRecord.booking_id)).all())
    assert not without_use & used
    by_id = {b.id: b for b in bookings}
    for old in moved:
        assert by_id[old.replaced_by_id].calendar_uid == f"booking-{old.id}"
        assert not old.late_cancellation
    # The demo logins are never no-shows or late cancellers: their booking rights stay intact.
    assert not [
        b for b in by_status[BookingStatus.NO_SHOW] + late if b.user_id == lab.demo_login.id
    ]


def test_utilization_differs_and_the_new_instrument_starts_when_it_arrived(
    session: Session, lab: Lab
) -> None:
    busy, quiet, new = (effective_hours(session, i) for i in (lab.busy, lab.quiet, lab.new))

    assert busy > 3 * quiet > 0
    assert new > 0
    assert min(b.start_at for b in bookings_of(session, lab.new)) >= lab.since
    organisations = {
        b.organisation_id for b in bookings_of(session, lab.busy) if b.status in HELD_ONCE
    }
    assert organisations == {lab.owner.id, lab.firm.id}  # internal and external users
    kinds = set(session.exec(select(UsageRecord.kind)).all())
    assert kinds >= {"use", "training", "maintenance"}


def test_service_requests_go_through_their_statuses_within_the_daily_capacity(
    session: Session, lab: Lab
) -> None:
    requests = session.exec(
        select(ServiceRequest).where(ServiceRequest.testing_service_id == lab.service.id)
    ).all()
    statuses = {r.status for r in requests}
    assert {ServiceRequestStatus.COMPLETED, ServiceRequestStatus.REJECTED} <= statuses
    per_day: dict[object, int] = defaultdict(int)
    for request in requests:
        assert request.submitted_at <= END
        if request.accepted_at is not None:
            assert request.submitted_at < request.accepted_at
            assert request.scheduled_date is not None
            per_day[request.scheduled_date] += request.sample_count
        if request.reported_at is not None:
            assert request.started_at is not None
            assert request.accepted_at is not None
            assert request.started_at < request.reported_at <= END
        if request.status == ServiceRequestStatus.COMPLETED:
            assert request.completed_at is not None
            assert request.reported_at is not None
            assert request.reported_at < request.completed_at <= END
    capacity = session.exec(
        select(ServiceCapacityDay).where(ServiceCapacityDay.testing_service_id == lab.service.id)
    ).all()
    assert {c.day: c.accepted_samples for c in capacity} == dict(per_day)
    assert max(per_day.values()) <= 6


def fingerprint(session: Session) -> list[tuple[object, ...]]:
    bookings = session.exec(select(Booking).order_by(col(Booking.id))).all()
    usage = session.exec(
        select(UsageRecord).order_by(col(UsageRecord.started_at), col(UsageRecord.instrument_id))
    ).all()
    requests = session.exec(select(ServiceRequest).order_by(col(ServiceRequest.submitted_at))).all()
    return (
        [(b.id, b.instrument_id, b.user_id, b.start_at, b.end_at, b.status) for b in bookings]
        + [(u.booking_id, u.user_id, u.started_at, u.ended_at, u.kind) for u in usage]
        + [(r.user_id, r.submitted_at, r.status, r.sample_count) for r in requests]
    )


def test_the_same_seed_builds_the_same_history(session: Session) -> None:
    lab = Lab(session)
    built: list[list[tuple[object, ...]]] = []
    for seed in (7, 7, 8):
        savepoint = session.begin_nested()
        lab.build(session, seed=seed)
        built.append(fingerprint(session))
        savepoint.rollback()

    assert built[0] == built[1]
    assert built[0] != built[2]
    assert len(built[0]) > 300


def test_the_demo_year_tells_a_story(session: Session) -> None:
    """The demo's own profiles: some instruments near or above 1,200 h, several under half their
    rated hours, one that arrived mid-year, external users in every cluster."""
    from web.demo import seed

    seed(session)
    hours: dict[str, float] = {}
    for instrument in session.exec(select(Instrument)).all():
        hours[instrument.asset_code] = effective_hours(session, instrument)
    rated = dict(session.exec(select(Instrument.asset_code, Instrument.rated_annual_hours)).all())

    assert len([c for c, h in hours.items() if h >= 1100]) >= 3
    assert len([c for c, h in hours.items() if h < rated[c] / 2]) >= 6
    assert hours["CQU-EM-003"] < rated["CQU-EM-003"] / 2  # the long repair
    added = session.exec(select(Instrument).where(Instrument.asset_code == "CQNU-006")).one()
    first = session.exec(
        select(Booking.start_at)
        .where(Booking.instrument_id == added.id)
        .order_by(col(Booking.start_at))
    ).first()
    assert first is not None
    assert first >= added.created_at
    history_users = session.exec(select(User).where(col(User.email).startswith("history"))).all()
    assert all(u.password_hash is None for u in history_users)
    assert session.exec(select(TestingService)).first() is not None
    assert session.exec(select(ServiceRequest)).first() is not None
    assert session.exec(select(Organisation)).first() is not None
