"""Booking operations on SQLite and PostgreSQL: requests and their rules, decisions, changes,
use, the worker's transitions; every change audited and announced through the outbox."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlmodel import Session, col, func, select

from booking import queries, service
from booking.models import Booking, UsageRecord
from booking.rules import HELD_STATUSES, TRANSITIONS, BookingStatus, OperatedBy
from booking.schemas import BookingCreate, UsageRecordCorrection, UsageRecordCreate
from booking.service import BookingPolicy
from core.accounts.models import Organisation, User
from core.accounts.rules import Role, ScopeKind
from core.accounts.schemas import RoleGrant
from core.audit import AuditEntry
from core.auth import service as auth
from core.auth.principal import Principal, load_principal
from core.clock import frozen, now
from core.db import Database
from core.errors import Conflict, NotFound, PermissionDenied, RuleViolation, Throttled
from core.events import OutboxEvent
from core.settings import Settings
from instruments import service as instruments
from instruments.models import Facility, Instrument
from instruments.rules import ApprovalMode, OutageKind
from instruments.schemas import OpeningSpanIn, OutageCreate, QualificationGrant
from tests.factories import make_organisation, make_user
from tests.instruments.factories import make_facility, make_instrument
from tests.querycount import counted_statements

SHANGHAI = ZoneInfo("Asia/Shanghai")
POLICY = BookingPolicy.from_settings(Settings())  # grace 15 min, 3 no-shows suspend, …
STAFF = OperatedBy.STAFF
S = BookingStatus


def at(local: str) -> datetime:
    """A Shanghai wall-clock time such as "2026-12-01 10:00", as aware UTC."""
    return datetime.fromisoformat(local).replace(tzinfo=SHANGHAI).astimezone(UTC)


NOW = at("2026-11-30 09:00")  # a Monday of an ordinary week; the facility opens 09:00–17:00


@pytest.fixture(autouse=True)
def frozen_now() -> Iterator[None]:
    with frozen(NOW):
        yield


@dataclass
class Lab:
    organisation: Organisation
    facility: Facility
    instrument: Instrument  # self- or staff-operated, confirmed at once for qualified users
    manager: Principal
    researcher: Principal
    colleague: Principal  # same organisation as the researcher, qualified
    outsider: Principal  # another organisation, qualified


def principal(session: Session, user: User) -> Principal:
    return load_principal(session, user)


def qualify(session: Session, user_id: int, instrument: Instrument) -> None:
    instruments.grant_qualification(
        session,
        actor=None,
        data=QualificationGrant(user_id=user_id, instrument_id=instrument.id or 0),
    )


def researcher_of(session: Session, organisation: Organisation | None) -> Principal:
    user = make_user(session, password=None, organisation=organisation, roles=[Role.RESEARCHER])
    return principal(session, user)


@pytest.fixture
def lab(session: Session) -> Lab:
    return make_lab(session)


def make_lab(session: Session) -> Lab:
    university = make_organisation(session)
    facility = make_facility(session, organisation=university)
    manager = make_user(
        session,
        password=None,
        organisation=university,
        roles=[
            RoleGrant(role=Role.LAB_MANAGER, scope_kind=ScopeKind.FACILITY, scope_id=facility.id)
        ],
    )
    found = Lab(
        organisation=university,
        facility=facility,
        instrument=make_instrument(session, facility=facility),
        manager=principal(session, manager),
        researcher=researcher_of(session, university),
        colleague=researcher_of(session, university),
        outsider=researcher_of(session, make_organisation(session)),
    )
    for user in (found.researcher, found.colleague, found.outsider):
        qualify(session, user.user_id, found.instrument)
    return found


def another_instrument(session: Session, lab: Lab, **rules: Any) -> Instrument:
    """An instrument of the lab's facility on which the lab's researchers are qualified."""
    instrument = make_instrument(session, facility=lab.facility, **rules)
    for user in (lab.researcher, lab.colleague, lab.outsider):
        qualify(session, user.user_id, instrument)
    return instrument


def book(
    session: Session,
    actor: Principal,
    start: str,
    end: str,
    *,
    instrument: Instrument,
    **fields: Any,
) -> Booking:
    return service.create_booking(
        session,
        actor=actor,
        data=BookingCreate(
            instrument_id=instrument.id or 0, start=at(start), end=at(end), **fields
        ),
        policy=POLICY,
    )


def booking_in(
    session: Session,
    lab: Lab,
    status: BookingStatus,
    start: datetime,
    *,
    user: Principal | None = None,
    hours: int = 1,
) -> Booking:
    """A booking that earlier operations left in ``status`` (written directly, for set-up)."""
    owner = user or lab.researcher
    booking = Booking(
        instrument_id=lab.instrument.id or 0,
        facility_id=lab.facility.id or 0,
        user_id=owner.user_id,
        organisation_id=owner.user.organisation_id,
        start_at=start,
        end_at=start + timedelta(hours=hours),
        held_until=start + timedelta(hours=hours),
        status=status,
        operated_by=OperatedBy.SELF,
        checked_in_at=start if status in (S.IN_USE, S.COMPLETED) else None,
        created_by_id=owner.user_id,
    )
    session.add(booking)
    session.flush()
    return booking


def audit_trail(session: Session, booking: Booking) -> list[str]:
    return list(
        session.exec(
            select(AuditEntry.action)
            .where(AuditEntry.subject_type == "booking", AuditEntry.subject_id == str(booking.id))
            .order_by(col(AuditEntry.id))
        ).all()
    )


def announced(session: Session, booking: Booking) -> list[str]:
    """Outbox topics about the booking, oldest first."""
    events = session.exec(select(OutboxEvent).order_by(col(OutboxEvent.id))).all()
    return [e.topic for e in events if e.payload.get("booking_id") == booking.id]


def last_audit(session: Session, booking: Booking) -> AuditEntry:
    entry = session.exec(
        select(AuditEntry)
        .where(AuditEntry.subject_type == "booking", AuditEntry.subject_id == str(booking.id))
        .order_by(col(AuditEntry.id).desc())
    ).first()
    assert entry is not None
    return entry


def codes(error: pytest.ExceptionInfo[Any]) -> list[str]:
    return [p.code for p in error.value.problems]


# --- Requests: confirmed, pending or refused ------------------------------------------------


def test_a_qualified_users_own_booking_on_an_automatic_instrument_is_confirmed(
    session: Session, lab: Lab
) -> None:
    booking = book(
        session, lab.researcher, "2026-12-01 10:00", "2026-12-01 12:00", instrument=lab.instrument
    )
    assert booking.status == S.CONFIRMED
    assert (booking.start_at, booking.end_at) == (at("2026-12-01 10:00"), at("2026-12-01 12:00"))
    assert booking.expires_at is None
    assert booking.organisation_id == lab.organisation.id
    assert audit_trail(session, booking) == ["booking.confirmed"]
    assert announced(session, booking) == ["booking.confirmed"]


def test_a_new_booking_is_audited_and_announced_with_what_it_is_and_an_overlap_with_nothing(
    session: Session, lab: Lab
) -> None:
    # On PostgreSQL the booking, its audit entry and its outbox event are one statement.
    with frozen(at("2026-11-20 09:00")):
        booking = book(
            session,
            lab.researcher,
            "2026-12-01 10:00",
            "2026-12-01 12:00",
            instrument=lab.instrument,
        )
    entry = last_audit(session, booking)
    assert (entry.action, entry.actor_id, entry.data, entry.occurred_at) == (
        "booking.confirmed",
        lab.researcher.user_id,
        {"status": "confirmed", "overrides": []},
        at("2026-11-20 09:00"),
    )
    event = session.exec(select(OutboxEvent).order_by(col(OutboxEvent.id).desc())).first()
    assert event is not None
    assert event.payload == {
        "booking_id": booking.id,
        "instrument_id": lab.instrument.id,
        "facility_id": lab.facility.id,
        "user_id": lab.researcher.user_id,
        "start": "2026-12-01T02:00:00+00:00",
        "end": "2026-12-01T04:00:00+00:00",
        "status": "confirmed",
        "version": 0,
        "overrides": [],
    }
    assert (event.topic, event.status, event.attempts, event.dedupe_key) == (
        "booking.confirmed",
        "pending",
        0,
        None,
    )
    assert event.created_at == event.available_at == at("2026-11-20 09:00")

    def written() -> tuple[int, int, int]:
        return tuple(  # type: ignore[return-value]
            session.exec(select(func.count()).select_from(model)).one()
            for model in (Booking, AuditEntry, OutboxEvent)
        )

    before = written()
    with pytest.raises(Conflict):
        book(
            session,
            lab.colleague,
            "2026-12-01 11:00",
            "2026-12-01 13:00",
            instrument=lab.instrument,
        )
    assert written() == before


def test_staff_operated_and_manually_approved_requests_wait_for_a_lab_manager(
    session: Session, lab: Lab
) -> None:
    staff_operated = book(
        session,
        lab.researcher,
        "2026-12-01 10:00",
        "2026-12-01 12:00",
        instrument=lab.instrument,
        operated_by=STAFF,
    )
    manual = another_instrument(session, lab, approval_mode=ApprovalMode.MANUAL)
    self_operated = book(
        session, lab.researcher, "2026-12-09 10:00", "2026-12-09 12:00", instrument=manual
    )
    assert staff_operated.status == S.PENDING
    assert self_operated.status == S.PENDING
    # Unanswered, a request expires after 48 hours, or at its start if that comes first.
    assert staff_operated.expires_at == at("2026-12-01 10:00")
    assert self_operated.expires_at == at("2026-12-02 09:00")
    assert audit_trail(session, self_operated) == ["booking.requested"]
    assert announced(session, self_operated) == ["booking.requested"]


def test_a_lab_manager_booking_for_a_researcher_is_confirmed(session: Session, lab: Lab) -> None:
    manual = another_instrument(session, lab, approval_mode=ApprovalMode.MANUAL)
    booking = book(
        session,
        lab.manager,
        "2026-12-01 10:00",
        "2026-12-01 12:00",
        instrument=manual,
        operated_by=STAFF,
        user_id=lab.researcher.user_id,
    )
    assert booking.status == S.CONFIRMED
    assert (booking.user_id, booking.created_by_id) == (lab.researcher.user_id, lab.manager.user_id)
    assert last_audit(session, booking).actor_id == lab.manager.user_id


def test_a_researcher_cannot_book_for_someone_else(session: Session, lab: Lab) -> None:
    with pytest.raises(PermissionDenied):
        book(
            session,
            lab.researcher,
            "2026-12-01 10:00",
            "2026-12-01 12:00",
            instrument=lab.instrument,
            user_id=lab.colleague.user_id,
        )


def test_operating_an_instrument_without_a_qualification_is_forbidden(
    session: Session, lab: Lab
) -> None:
    untrained = researcher_of(session, lab.organisation)
    with pytest.raises(PermissionDenied) as refused:
        book(session, untrained, "2026-12-01 10:00", "2026-12-01 12:00", instrument=lab.instrument)
    assert refused.value.code == "not_qualified"
    # The facility's staff may still run it for them.
    staff_operated = book(
        session,
        untrained,
        "2026-12-01 10:00",
        "2026-12-01 12:00",
        instrument=lab.instrument,
        operated_by=STAFF,
    )
    assert staff_operated.status == S.PENDING


def test_a_retired_instrument_cannot_be_booked(session: Session, lab: Lab) -> None:
    instruments.retire_instrument(session, actor=None, instrument_id=lab.instrument.id or 0)
    with pytest.raises(Conflict) as refused:
        book(
            session,
            lab.researcher,
            "2026-12-01 10:00",
            "2026-12-01 12:00",
            instrument=lab.instrument,
        )
    assert refused.value.code == "not_bookable"


def test_an_overlap_counting_the_buffer_names_the_time_but_not_who_holds_it(
    session: Session, lab: Lab
) -> None:
    buffered = another_instrument(session, lab, buffer_minutes=30)
    book(session, lab.colleague, "2026-12-01 10:00", "2026-12-01 11:00", instrument=buffered)
    with pytest.raises(Conflict) as refused:
        book(session, lab.researcher, "2026-12-01 11:00", "2026-12-01 12:00", instrument=buffered)
    assert refused.value.code == "overlap"
    assert [p.as_dict() for p in refused.value.problems] == [
        {
            "code": "overlap",
            "message": "The instrument is booked from 2026-12-01T02:00:00+00:00 "
            "to 2026-12-01T03:30:00+00:00.",
            "field": "start",
        }
    ]
    said = refused.value.detail + repr(refused.value.problems)
    colleague = lab.colleague.user
    assert colleague.name not in said
    assert colleague.email not in said
    # Right after the buffer the instrument is free again.
    after = book(
        session, lab.researcher, "2026-12-01 11:30", "2026-12-01 12:30", instrument=buffered
    )
    assert after.status == S.CONFIRMED


def test_broken_rules_and_an_overlap_are_reported_together(session: Session, lab: Lab) -> None:
    book(session, lab.colleague, "2026-12-01 15:00", "2026-12-01 17:00", instrument=lab.instrument)
    with pytest.raises(RuleViolation) as refused:
        book(
            session,
            lab.researcher,
            "2026-12-01 16:00",
            "2026-12-01 18:00",
            instrument=lab.instrument,
        )
    assert codes(refused) == ["outside_opening_hours", "overlap"]


def test_a_lab_manager_overrides_opening_hours_explicitly_and_it_is_audited(
    session: Session, lab: Lab
) -> None:
    with pytest.raises(RuleViolation) as refused:
        book(
            session,
            lab.manager,
            "2026-12-01 16:00",
            "2026-12-01 18:00",
            instrument=lab.instrument,
            user_id=lab.researcher.user_id,
        )
    assert [(p.code, p.overridable) for p in refused.value.problems] == [
        ("outside_opening_hours", True)
    ]
    booking = book(
        session,
        lab.manager,
        "2026-12-01 16:00",
        "2026-12-01 18:00",
        instrument=lab.instrument,
        user_id=lab.researcher.user_id,
        override=["outside_opening_hours"],
    )
    assert booking.status == S.CONFIRMED
    assert booking.overrides == ["outside_opening_hours"]
    entry = last_audit(session, booking)
    assert entry.actor_id == lab.manager.user_id
    assert entry.data["overrides"] == ["outside_opening_hours"]


def test_a_researcher_passing_an_override_is_forbidden(session: Session, lab: Lab) -> None:
    with pytest.raises(PermissionDenied):
        book(
            session,
            lab.researcher,
            "2026-12-01 16:00",
            "2026-12-01 18:00",
            instrument=lab.instrument,
            override=["outside_opening_hours"],
        )


def test_an_outage_cannot_be_overridden_nor_a_rule_that_is_not_broken(
    session: Session, lab: Lab
) -> None:
    instruments.create_outage(
        session,
        actor=None,
        data=OutageCreate(
            instrument_id=lab.instrument.id,
            start_at=at("2026-12-01 09:00"),
            end_at=at("2026-12-01 17:00"),
            kind=OutageKind.REPAIR,
        ),
    )
    with pytest.raises(RuleViolation) as refused:
        book(
            session,
            lab.manager,
            "2026-12-01 10:00",
            "2026-12-01 12:00",
            instrument=lab.instrument,
            user_id=lab.researcher.user_id,
            override=["during_outage", "too_long"],
        )
    assert codes(refused) == ["during_outage", "unknown_override"]


# --- Quotas and suspension ------------------------------------------------------------------


def test_a_user_may_hold_only_its_weekly_hours_unless_a_manager_overrides(
    session: Session, lab: Lab
) -> None:
    limited = another_instrument(session, lab, user_weekly_hours_limit=4)
    book(session, lab.researcher, "2026-12-01 10:00", "2026-12-01 13:00", instrument=limited)
    with pytest.raises(RuleViolation) as refused:
        book(session, lab.researcher, "2026-12-02 10:00", "2026-12-02 12:00", instrument=limited)
    assert [(p.code, p.overridable) for p in refused.value.problems] == [("quota_user_hours", True)]
    # Other users and other weeks are not affected.
    book(session, lab.colleague, "2026-12-02 10:00", "2026-12-02 12:00", instrument=limited)
    book(session, lab.researcher, "2026-12-08 10:00", "2026-12-08 12:00", instrument=limited)
    overridden = book(
        session,
        lab.manager,
        "2026-12-03 10:00",
        "2026-12-03 12:00",
        instrument=limited,
        user_id=lab.researcher.user_id,
        override=["quota_user_hours"],
    )
    assert overridden.overrides == ["quota_user_hours"]


def test_an_organisation_may_hold_only_its_weekly_hours(session: Session, lab: Lab) -> None:
    limited = another_instrument(session, lab, organisation_weekly_hours_limit=4)
    book(session, lab.researcher, "2026-12-01 10:00", "2026-12-01 13:00", instrument=limited)
    with pytest.raises(RuleViolation) as refused:
        book(session, lab.colleague, "2026-12-02 10:00", "2026-12-02 12:00", instrument=limited)
    assert [(p.code, p.overridable) for p in refused.value.problems] == [
        ("quota_organisation_hours", True)
    ]
    book(session, lab.outsider, "2026-12-02 10:00", "2026-12-02 12:00", instrument=limited)
    overridden = book(
        session,
        lab.manager,
        "2026-12-03 10:00",
        "2026-12-03 12:00",
        instrument=limited,
        user_id=lab.colleague.user_id,
        override=["quota_organisation_hours"],
    )
    assert overridden.status == S.CONFIRMED


def test_a_user_may_hold_only_so_many_upcoming_bookings(session: Session, lab: Lab) -> None:
    limited = another_instrument(session, lab, user_future_bookings_limit=2)
    first = book(
        session, lab.researcher, "2026-12-01 10:00", "2026-12-01 11:00", instrument=limited
    )
    book(session, lab.researcher, "2026-12-02 10:00", "2026-12-02 11:00", instrument=limited)
    with pytest.raises(RuleViolation) as refused:
        book(session, lab.researcher, "2026-12-03 10:00", "2026-12-03 11:00", instrument=limited)
    assert [(p.code, p.overridable) for p in refused.value.problems] == [
        ("quota_future_bookings", True)
    ]
    service.cancel(session, actor=lab.researcher, booking_id=first.id or 0)
    third = book(
        session, lab.researcher, "2026-12-03 10:00", "2026-12-03 11:00", instrument=limited
    )
    assert third.status == S.CONFIRMED


def test_three_no_shows_suspend_booking_rights_for_thirty_days(session: Session, lab: Lab) -> None:
    for day in ("2026-11-09", "2026-11-16", "2026-11-23"):
        booking_in(session, lab, S.NO_SHOW, at(f"{day} 10:00"))
    with pytest.raises(RuleViolation) as refused:
        book(
            session,
            lab.researcher,
            "2026-12-01 10:00",
            "2026-12-01 11:00",
            instrument=lab.instrument,
        )
    [problem] = refused.value.problems
    assert (problem.code, problem.overridable) == ("suspended", True)
    assert "2026-12-23T02:00:00+00:00" in problem.message  # the last no-show + 30 days
    overridden = book(
        session,
        lab.manager,
        "2026-12-01 10:00",
        "2026-12-01 11:00",
        instrument=lab.instrument,
        user_id=lab.researcher.user_id,
        override=["suspended"],
    )
    assert overridden.overrides == ["suspended"]
    with frozen(at("2026-12-23 10:00")):
        again = book(
            session,
            lab.researcher,
            "2026-12-24 10:00",
            "2026-12-24 11:00",
            instrument=lab.instrument,
        )
    assert again.status == S.CONFIRMED


def test_two_no_shows_or_old_ones_do_not_suspend(session: Session, lab: Lab) -> None:
    for day in ("2026-08-03", "2026-11-16", "2026-11-23"):  # the first is over 90 days ago
        booking_in(session, lab, S.NO_SHOW, at(f"{day} 10:00"))
    booking = book(
        session, lab.researcher, "2026-12-01 10:00", "2026-12-01 11:00", instrument=lab.instrument
    )
    assert booking.status == S.CONFIRMED


@pytest.fixture
def postgres_lab(migrated_postgres: Database) -> Iterator[tuple[Session, Lab]]:
    """A lab on the PostgreSQL database the tests share, in a session never committed."""
    session = migrated_postgres.new_session()
    try:
        yield session, make_lab(session)
    finally:
        session.close()


def test_on_postgresql_a_booking_requests_terms_run_on_their_generic_plan_in_its_transaction(
    postgres_lab: tuple[Session, Lab],
) -> None:
    """Prepared (psycopg prepares a statement on its sixth run), the terms every request is
    checked against are not planned anew for each request's values; the setting ends with the
    transaction."""
    terms_plans = (
        "SELECT sum(generic_plans), sum(custom_plans) FROM pg_prepared_statements "
        "WHERE statement LIKE '%%AS user_active%%'"  # a column only the terms have
    )
    session, lab = postgres_lab
    for hour in range(9, 17):
        book(
            session,
            lab.researcher,
            f"2026-12-01 {hour:02}:00",
            f"2026-12-01 {hour + 1:02}:00",
            instrument=lab.instrument,
        )
    connection = session.connection()
    generic, custom = connection.exec_driver_sql(terms_plans).one()
    assert connection.exec_driver_sql("SHOW plan_cache_mode").scalar() == "force_generic_plan"
    session.rollback()
    assert session.connection().exec_driver_sql("SHOW plan_cache_mode").scalar() == "auto"
    assert generic >= 2
    assert custom == 0


def test_on_postgresql_a_caller_found_with_the_terms_setup_sends_no_setup_of_its_own(
    postgres_lab: tuple[Session, Lab],
) -> None:
    """The API finds a booking request's caller in the statement that also sets the request's
    terms up: their generic plan and the caller's rate lock are in place, and the request sends
    no setup statement of its own."""
    rate_locks_held = (
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid() "
        "AND classid::bigint = %(space)s AND objid::bigint = %(user_id)s"
    )
    session, lab = postgres_lab
    token = auth.issue_access_token(session, Settings(), user=lab.researcher.user).token
    caller = auth.principal_for_token(session, token=token, preamble=service.TERMS_SETUP)
    connection = session.connection()
    assert connection.exec_driver_sql("SHOW plan_cache_mode").scalar() == "force_generic_plan"
    locks = {"space": service.RATE_LOCK_SPACE, "user_id": caller.user_id}
    assert connection.exec_driver_sql(rate_locks_held, locks).scalar() == 1
    with counted_statements(connection) as statements:
        booked = book(
            session, caller, "2026-12-01 10:00", "2026-12-01 11:00", instrument=lab.instrument
        )
    assert booked.status == S.CONFIRMED
    assert statements  # the request's own
    assert not [s for s in statements if "set_config" in s]


def test_on_postgresql_the_insert_refused_for_an_overlap_names_what_it_met_itself(
    postgres_lab: tuple[Session, Lab],
) -> None:
    session, lab = postgres_lab
    for start, end in (("14:00", "15:00"), ("10:00", "11:00")):
        book(
            session,
            lab.colleague,
            f"2026-12-01 {start}",
            f"2026-12-01 {end}",
            instrument=lab.instrument,
        )
    with counted_statements(session.connection()) as statements, pytest.raises(Conflict) as refused:
        book(
            session,
            lab.researcher,
            "2026-12-01 10:30",
            "2026-12-01 14:30",
            instrument=lab.instrument,
        )
    assert [p.message for p in refused.value.problems] == [
        "The instrument is booked from 2026-12-01T02:00:00+00:00 to 2026-12-01T03:00:00+00:00.",
        "The instrument is booked from 2026-12-01T06:00:00+00:00 to 2026-12-01T07:00:00+00:00.",
    ]
    assert "INSERT INTO booking" in statements[-1]  # no statement of its own for the ranges


@pytest.mark.parametrize("taken", [False, True], ids=["made", "refused"])
def test_a_booking_request_made_or_refused_leaves_nothing_for_the_garbage_collector(
    database: Database, session: Session, lab: Lab, taken: bool
) -> None:
    # What a request leaves in reference cycles waits for the collector, whose passes (up to
    # milliseconds) then come often enough to land in the middle of other requests.
    # Statements are built and compiled on their first use: a request before, on its own.
    book(session, lab.outsider, "2026-12-01 12:00", "2026-12-01 13:00", instrument=lab.instrument)
    if taken:
        book(
            session,
            lab.colleague,
            "2026-12-01 10:00",
            "2026-12-01 11:00",
            instrument=lab.instrument,
        )
    researcher = session.get(User, lab.researcher.user_id)
    assert researcher is not None
    token = auth.issue_access_token(session, Settings(), user=researcher).token
    auth.principal_for_token(session, token=token, preamble=service.TERMS_SETUP)
    session.commit()
    gc.collect()
    gc.disable()
    try:
        request_session = database.new_session()
        try:
            # As the API makes it: the caller found with the terms' setup, then the booking.
            caller = auth.principal_for_token(
                request_session, token=token, preamble=service.TERMS_SETUP
            )
            with contextlib.suppress(Conflict):
                book(
                    request_session,
                    caller,
                    "2026-12-01 10:00",
                    "2026-12-01 11:00",
                    instrument=lab.instrument,
                )
                request_session.commit()
        finally:
            request_session.close()
        del request_session
        assert gc.collect() == 0
    finally:
        gc.enable()


def test_over_the_rate_limit_a_request_is_429_before_its_other_problems(
    session: Session, lab: Lab
) -> None:
    one_a_minute = replace(POLICY, creations_per_minute=1)
    for day in ("2026-11-09", "2026-11-16", "2026-11-23"):  # recorded this minute
        booking_in(session, lab, S.NO_SHOW, at(f"{day} 10:00"))

    def request(actor: Principal, day: str, **fields: Any) -> Booking:
        return service.create_booking(
            session,
            actor=actor,
            data=BookingCreate(
                instrument_id=lab.instrument.id or 0,
                start=at(f"{day} 10:00"),
                end=at(f"{day} 11:00"),
                **fields,
            ),
            policy=one_a_minute,
        )

    with pytest.raises(Throttled):  # suspended too, but told to wait first
        request(lab.researcher, "2026-12-01")
    with pytest.raises(Throttled):  # even for an instrument that does not exist
        service.create_booking(
            session,
            actor=lab.researcher,
            data=BookingCreate(
                instrument_id=10**6, start=at("2026-12-01 10:00"), end=at("2026-12-01 11:00")
            ),
            policy=one_a_minute,
        )
    with frozen(now() + timedelta(minutes=1)):
        with pytest.raises(RuleViolation) as refused:
            request(lab.researcher, "2026-12-01")
        assert [p.code for p in refused.value.problems] == ["suspended"]
        # A lab manager is not rate-limited.
        for day in ("2026-12-01", "2026-12-02"):
            booked_for_researcher = request(
                lab.manager, day, user_id=lab.researcher.user_id, override=["suspended"]
            )
            assert booked_for_researcher.status == S.CONFIRMED


# --- Transitions ----------------------------------------------------------------------------


def test_a_lab_manager_approves_a_pending_request(session: Session, lab: Lab) -> None:
    request = book(
        session,
        lab.researcher,
        "2026-12-01 10:00",
        "2026-12-01 12:00",
        instrument=lab.instrument,
        operated_by=STAFF,
    )
    approved = service.approve(session, actor=lab.manager, booking_id=request.id or 0)
    assert approved.status == S.CONFIRMED
    assert (approved.decided_by_id, approved.decided_at) == (lab.manager.user_id, NOW)
    assert approved.expires_at is None
    assert approved.version == 1
    assert audit_trail(session, approved) == ["booking.requested", "booking.confirmed"]
    assert announced(session, approved) == ["booking.requested", "booking.confirmed"]


def test_a_researcher_cannot_approve_its_own_request(session: Session, lab: Lab) -> None:
    request = book(
        session,
        lab.researcher,
        "2026-12-01 10:00",
        "2026-12-01 12:00",
        instrument=lab.instrument,
        operated_by=STAFF,
    )
    with pytest.raises(PermissionDenied):
        service.approve(session, actor=lab.researcher, booking_id=request.id or 0)
    with pytest.raises(NotFound):  # another facility's manager does not even see it
        service.approve(session, actor=lab_manager_elsewhere(session), booking_id=request.id or 0)


def lab_manager_elsewhere(session: Session) -> Principal:
    facility = make_facility(session)
    user = make_user(
        session,
        password=None,
        roles=[
            RoleGrant(role=Role.LAB_MANAGER, scope_kind=ScopeKind.FACILITY, scope_id=facility.id)
        ],
    )
    return principal(session, user)


def test_a_lab_manager_rejects_a_pending_request_with_a_reason(session: Session, lab: Lab) -> None:
    request = book(
        session,
        lab.researcher,
        "2026-12-01 10:00",
        "2026-12-01 12:00",
        instrument=lab.instrument,
        operated_by=STAFF,
    )
    rejected = service.reject(
        session, actor=lab.manager, booking_id=request.id or 0, reason="Sample type not supported."
    )
    assert (rejected.status, rejected.reason) == (S.REJECTED, "Sample type not supported.")
    assert audit_trail(session, rejected)[-1] == "booking.rejected"
    assert announced(session, rejected)[-1] == "booking.rejected"
    # A rejected request no longer holds the time.
    taken = book(
        session, lab.colleague, "2026-12-01 10:00", "2026-12-01 12:00", instrument=lab.instrument
    )
    assert taken.status == S.CONFIRMED


@pytest.mark.parametrize("status", sorted(TRANSITIONS["cancel"]))
def test_the_booker_cancels_an_offered_pending_or_confirmed_booking(
    session: Session, lab: Lab, status: BookingStatus
) -> None:
    booking = booking_in(session, lab, status, at("2026-12-03 10:00"))
    cancelled = service.cancel(session, actor=lab.researcher, booking_id=booking.id or 0)
    assert cancelled.status == S.CANCELLED
    assert cancelled.late_cancellation is False
    assert audit_trail(session, cancelled) == ["booking.cancelled"]
    assert announced(session, cancelled) == ["booking.cancelled"]


def act(
    action: str,
) -> Callable[[Session, Lab, Booking], object]:
    """The operation of ``action`` with valid arguments, done by whoever may do it."""
    operations: dict[str, Callable[[Session, Lab, Booking], object]] = {
        "approve": lambda session, lab, booking: service.approve(
            session, actor=lab.manager, booking_id=booking.id or 0
        ),
        "reject": lambda session, lab, booking: service.reject(
            session, actor=lab.manager, booking_id=booking.id or 0, reason="Fully booked."
        ),
        "cancel": lambda session, lab, booking: service.cancel(
            session, actor=lab.researcher, booking_id=booking.id or 0
        ),
        "check_in": lambda session, lab, booking: service.check_in(
            session, actor=lab.researcher, booking_id=booking.id or 0, policy=POLICY
        ),
        "check_out": lambda session, lab, booking: service.check_out(
            session, actor=lab.researcher, booking_id=booking.id or 0
        ),
        "move": lambda session, lab, booking: service.move(
            session,
            actor=lab.researcher,
            booking_id=booking.id or 0,
            start=at("2026-12-04 10:00"),
            end=at("2026-12-04 11:00"),
            override=[],
            policy=POLICY,
        ),
        "hand_over": lambda session, lab, booking: service.hand_over(
            session,
            actor=lab.researcher,
            booking_id=booking.id or 0,
            to_user_id=lab.colleague.user_id,
            policy=POLICY,
        ),
    }
    return operations[action]


@pytest.mark.parametrize(
    "action", ["approve", "reject", "cancel", "check_in", "check_out", "move", "hand_over"]
)
def test_an_action_on_a_booking_in_the_wrong_status_is_a_conflict_and_changes_nothing(
    session: Session, lab: Lab, action: str
) -> None:
    refused_statuses = [s for s in BookingStatus if s not in TRANSITIONS[action]]
    for hour, status in enumerate(refused_statuses):
        booking = booking_in(session, lab, status, at("2026-12-02 00:00") + timedelta(hours=hour))
        with pytest.raises(Conflict) as refused:
            act(action)(session, lab, booking)
        assert refused.value.code == "wrong_status", status
        session.refresh(booking)
        assert (booking.status, booking.version, booking.user_id) == (
            status,
            0,
            lab.researcher.user_id,
        )
        assert audit_trail(session, booking) == []


def test_checking_in_to_a_cancelled_booking_says_why_it_is_refused(
    session: Session, lab: Lab
) -> None:
    booking = book(
        session, lab.researcher, "2026-12-01 10:00", "2026-12-01 12:00", instrument=lab.instrument
    )
    service.cancel(session, actor=lab.researcher, booking_id=booking.id or 0)
    with frozen(at("2026-12-01 10:00")), pytest.raises(Conflict) as refused:
        service.check_in(session, actor=lab.researcher, booking_id=booking.id or 0, policy=POLICY)
    assert refused.value.code == "wrong_status"
    assert refused.value.detail == "You cannot check in this booking: its status is cancelled."


def test_approving_an_approved_booking_is_a_conflict(session: Session, lab: Lab) -> None:
    request = book(
        session,
        lab.researcher,
        "2026-12-01 10:00",
        "2026-12-01 12:00",
        instrument=lab.instrument,
        operated_by=STAFF,
    )
    service.approve(session, actor=lab.manager, booking_id=request.id or 0)
    with pytest.raises(Conflict) as refused:
        service.approve(session, actor=lab.manager, booking_id=request.id or 0)
    assert refused.value.code == "wrong_status"
    assert refused.value.detail == "You cannot approve this booking: its status is confirmed."


# --- Cancelling ----------------------------------------------------------------------------


def test_cancelling_before_the_deadline_is_free_and_after_it_is_late(
    session: Session, lab: Lab
) -> None:
    early = book(
        session, lab.researcher, "2026-12-02 10:00", "2026-12-02 11:00", instrument=lab.instrument
    )
    late = book(
        session, lab.researcher, "2026-12-01 13:00", "2026-12-01 14:00", instrument=lab.instrument
    )
    with frozen(at("2026-12-01 10:00")):  # exactly 24 hours before the first
        service.cancel(session, actor=lab.researcher, booking_id=early.id or 0)
        service.cancel(session, actor=lab.researcher, booking_id=late.id or 0)
    assert (early.status, early.late_cancellation) == (S.CANCELLED, False)
    assert (late.status, late.late_cancellation) == (S.CANCELLED, True)
    assert last_audit(session, late).data["late"] is True


def test_a_lab_manager_cancelling_someones_booking_must_say_why(session: Session, lab: Lab) -> None:
    booking = book(
        session, lab.researcher, "2026-12-01 10:00", "2026-12-01 11:00", instrument=lab.instrument
    )
    with pytest.raises(RuleViolation) as refused:
        service.cancel(session, actor=lab.manager, booking_id=booking.id or 0, reason=" ")
    assert [(p.code, p.field) for p in refused.value.problems] == [("required", "reason")]
    assert booking.status == S.CONFIRMED
    cancelled = service.cancel(
        session, actor=lab.manager, booking_id=booking.id or 0, reason="Instrument broke down."
    )
    assert (cancelled.status, cancelled.reason) == (S.CANCELLED, "Instrument broke down.")
    assert cancelled.late_cancellation is False  # the facility's doing, never charged
    assert last_audit(session, cancelled).actor_id == lab.manager.user_id


# --- Moving and handing over ---------------------------------------------------------------


def test_a_move_cancels_the_old_booking_and_creates_the_new_one(session: Session, lab: Lab) -> None:
    old = book(
        session, lab.researcher, "2026-12-01 10:00", "2026-12-01 11:00", instrument=lab.instrument
    )
    new = service.move(
        session,
        actor=lab.researcher,
        booking_id=old.id or 0,
        start=at("2026-12-02 14:00"),
        end=at("2026-12-02 16:00"),
        override=[],
        policy=POLICY,
    )
    session.refresh(old)
    assert (new.status, new.start_at, new.end_at) == (
        S.CONFIRMED,
        at("2026-12-02 14:00"),
        at("2026-12-02 16:00"),
    )
    assert (old.status, old.reason, old.replaced_by_id) == (S.CANCELLED, "moved", new.id)
    assert old.late_cancellation is False
    assert audit_trail(session, old) == ["booking.confirmed", "booking.moved"]
    assert announced(session, old) == ["booking.confirmed", "booking.moved"]
    assert audit_trail(session, new) == ["booking.rescheduled"]
    assert announced(session, new) == ["booking.rescheduled"]
    # The old time is free again.
    book(session, lab.colleague, "2026-12-01 10:00", "2026-12-01 11:00", instrument=lab.instrument)


def test_after_the_cancellation_deadline_only_the_facility_moves_a_confirmed_booking(
    session: Session, lab: Lab
) -> None:
    booking = book(
        session, lab.researcher, "2026-12-01 13:00", "2026-12-01 14:00", instrument=lab.instrument
    )
    later = {"start": at("2026-12-08 10:00"), "end": at("2026-12-08 11:00"), "policy": POLICY}
    with frozen(at("2026-12-01 08:00")):  # 5 hours before: a cancellation would be late
        with pytest.raises(RuleViolation) as refused:
            service.move(
                session, actor=lab.researcher, booking_id=booking.id or 0, override=[], **later
            )
        assert [(p.code, p.overridable) for p in refused.value.problems] == [
            ("move_deadline", True)
        ]
        session.refresh(booking)
        assert (booking.status, booking.version) == (S.CONFIRMED, 0)
        # The facility may move it (its own decision, like its cancellations).
        moved = service.move(
            session, actor=lab.manager, booking_id=booking.id or 0, override=[], **later
        )
    assert moved.start_at == at("2026-12-08 10:00")
    session.refresh(booking)
    assert (booking.status, booking.late_cancellation) == (S.CANCELLED, False)


def test_a_booking_that_has_started_or_is_not_moving_is_not_moved(
    session: Session, lab: Lab
) -> None:
    booking = book(
        session, lab.researcher, "2026-12-01 10:00", "2026-12-01 12:00", instrument=lab.instrument
    )
    with pytest.raises(RuleViolation) as refused:
        service.move(
            session,
            actor=lab.researcher,
            booking_id=booking.id or 0,
            start=at("2026-12-01 10:00"),
            end=at("2026-12-01 12:00"),
            override=[],
            policy=POLICY,
        )
    assert codes(refused) == ["unchanged"]
    with frozen(at("2026-12-01 11:00")), pytest.raises(Conflict) as started:
        # An hour into the booking, nobody checked in: not a move, a no-show in the making.
        service.move(
            session,
            actor=lab.manager,
            booking_id=booking.id or 0,
            start=at("2026-12-09 10:00"),
            end=at("2026-12-09 12:00"),
            override=[],
            policy=POLICY,
        )
    assert started.value.code == "started"
    session.refresh(booking)
    assert (booking.status, booking.version) == (S.CONFIRMED, 0)


def test_a_booking_moves_onto_part_of_its_own_time(session: Session, lab: Lab) -> None:
    buffered = another_instrument(session, lab, buffer_minutes=30)
    old = book(session, lab.researcher, "2026-12-01 10:00", "2026-12-01 12:00", instrument=buffered)
    new = service.move(
        session,
        actor=lab.researcher,
        booking_id=old.id or 0,
        start=at("2026-12-01 11:00"),
        end=at("2026-12-01 13:00"),
        override=[],
        policy=POLICY,
    )
    assert (new.start_at, new.held_until) == (at("2026-12-01 11:00"), at("2026-12-01 13:30"))


def test_a_move_onto_a_taken_slot_leaves_the_old_booking_untouched(
    session: Session, lab: Lab
) -> None:
    old = book(
        session, lab.researcher, "2026-12-01 10:00", "2026-12-01 11:00", instrument=lab.instrument
    )
    book(session, lab.colleague, "2026-12-02 14:00", "2026-12-02 15:00", instrument=lab.instrument)
    with pytest.raises(Conflict) as refused:
        service.move(
            session,
            actor=lab.researcher,
            booking_id=old.id or 0,
            start=at("2026-12-02 13:00"),
            end=at("2026-12-02 15:00"),
            override=[],
            policy=POLICY,
        )
    assert refused.value.code == "overlap"
    session.refresh(old)
    assert (old.status, old.version, old.replaced_by_id) == (S.CONFIRMED, 0, None)
    mine = session.exec(
        select(func.count()).select_from(Booking).where(Booking.user_id == lab.researcher.user_id)
    ).one()
    assert mine == 1


def test_an_approved_booking_stays_approved_when_moved(session: Session, lab: Lab) -> None:
    manual = another_instrument(session, lab, approval_mode=ApprovalMode.MANUAL)
    request = book(
        session, lab.researcher, "2026-12-01 10:00", "2026-12-01 11:00", instrument=manual
    )
    service.approve(session, actor=lab.manager, booking_id=request.id or 0)
    moved = service.move(
        session,
        actor=lab.researcher,
        booking_id=request.id or 0,
        start=at("2026-12-01 14:00"),
        end=at("2026-12-01 15:00"),
        override=[],
        policy=POLICY,
    )
    assert (moved.status, moved.expires_at) == (S.CONFIRMED, None)
    # A request still waiting for a decision keeps waiting, with a fresh deadline.
    waiting = book(
        session, lab.researcher, "2026-12-07 10:00", "2026-12-07 11:00", instrument=manual
    )
    with frozen(at("2026-11-30 12:00")):
        still_waiting = service.move(
            session,
            actor=lab.researcher,
            booking_id=waiting.id or 0,
            start=at("2026-12-08 10:00"),
            end=at("2026-12-08 11:00"),
            override=[],
            policy=POLICY,
        )
    assert (still_waiting.status, still_waiting.expires_at) == (S.PENDING, at("2026-12-02 12:00"))


def test_a_move_within_the_quota_is_not_counted_twice(session: Session, lab: Lab) -> None:
    limited = another_instrument(
        session, lab, user_weekly_hours_limit=4, user_future_bookings_limit=1
    )
    old = book(session, lab.researcher, "2026-12-01 10:00", "2026-12-01 14:00", instrument=limited)
    moved = service.move(
        session,
        actor=lab.researcher,
        booking_id=old.id or 0,
        start=at("2026-12-02 10:00"),
        end=at("2026-12-02 14:00"),
        override=[],
        policy=POLICY,
    )
    assert moved.status == S.CONFIRMED


def test_a_booking_is_handed_over_to_a_qualified_colleague(session: Session, lab: Lab) -> None:
    booking = book(
        session, lab.researcher, "2026-12-01 10:00", "2026-12-01 11:00", instrument=lab.instrument
    )
    handed = service.hand_over(
        session,
        actor=lab.researcher,
        booking_id=booking.id or 0,
        to_user_id=lab.colleague.user_id,
        policy=POLICY,
    )
    assert (handed.user_id, handed.status) == (lab.colleague.user_id, S.CONFIRMED)
    entry = last_audit(session, handed)
    assert (entry.action, entry.data["from_user_id"]) == (
        "booking.handed_over",
        lab.researcher.user_id,
    )
    assert announced(session, handed) == ["booking.confirmed", "booking.handed_over"]
    with pytest.raises(NotFound):  # it is the colleague's now
        service.cancel(session, actor=lab.researcher, booking_id=booking.id or 0)


def test_a_booking_is_not_handed_to_an_outsider_or_an_unqualified_colleague(
    session: Session, lab: Lab
) -> None:
    booking = book(
        session, lab.researcher, "2026-12-01 10:00", "2026-12-01 11:00", instrument=lab.instrument
    )
    untrained = researcher_of(session, lab.organisation)
    for to_user, code in [(lab.outsider, "not_colleague"), (untrained, "not_qualified")]:
        with pytest.raises(RuleViolation) as refused:
            service.hand_over(
                session,
                actor=lab.researcher,
                booking_id=booking.id or 0,
                to_user_id=to_user.user_id,
                policy=POLICY,
            )
        assert codes(refused) == [code]
    assert (booking.user_id, booking.version) == (lab.researcher.user_id, 0)


def test_a_booking_is_handed_only_to_a_colleague_free_to_book_that_time_itself(
    session: Session, lab: Lab
) -> None:
    limited = another_instrument(session, lab, user_weekly_hours_limit=2)
    booking = book(
        session, lab.researcher, "2026-12-01 10:00", "2026-12-01 12:00", instrument=limited
    )

    def hand_to(receiver: Principal) -> list[str]:
        with pytest.raises(RuleViolation) as refused:
            service.hand_over(
                session,
                actor=lab.researcher,
                booking_id=booking.id or 0,
                to_user_id=receiver.user_id,
                policy=POLICY,
            )
        return codes(refused)

    # Trained, but the training lapses half-way through the booking.
    lapsing = researcher_of(session, lab.organisation)
    instruments.grant_qualification(
        session,
        actor=None,
        data=QualificationGrant(
            user_id=lapsing.user_id,
            instrument_id=limited.id or 0,
            expires_at=at("2026-12-01 11:00"),
        ),
    )
    assert hand_to(lapsing) == ["not_qualified"]
    # Already holding its two hours of the week.
    book(session, lab.colleague, "2026-12-02 10:00", "2026-12-02 12:00", instrument=limited)
    assert hand_to(lab.colleague) == ["quota_user_hours"]
    # Suspended after three no-shows.
    suspended = researcher_of(session, lab.organisation)
    qualify(session, suspended.user_id, limited)
    for day in ("2026-11-09", "2026-11-16", "2026-11-23"):
        booking_in(session, lab, S.NO_SHOW, at(f"{day} 10:00"), user=suspended)
    assert hand_to(suspended) == ["suspended"]
    # And not to the one who holds it already.
    assert hand_to(lab.researcher) == ["same_user"]
    session.refresh(booking)
    assert (booking.user_id, booking.version) == (lab.researcher.user_id, 0)
    # The organisation's own quota counts the booking once, whoever in it holds the booking.
    shared = another_instrument(session, lab, organisation_weekly_hours_limit=2)
    full = book(session, lab.researcher, "2026-12-01 10:00", "2026-12-01 12:00", instrument=shared)
    handed = service.hand_over(
        session,
        actor=lab.researcher,
        booking_id=full.id or 0,
        to_user_id=lab.colleague.user_id,
        policy=POLICY,
    )
    assert handed.user_id == lab.colleague.user_id


def test_users_without_an_organisation_are_not_colleagues(session: Session, lab: Lab) -> None:
    loner, stranger = researcher_of(session, None), researcher_of(session, None)
    for user in (loner, stranger):
        qualify(session, user.user_id, lab.instrument)
    booking = book(
        session, loner, "2026-12-01 10:00", "2026-12-01 11:00", instrument=lab.instrument
    )
    with pytest.raises(RuleViolation) as refused:
        service.hand_over(
            session,
            actor=loner,
            booking_id=booking.id or 0,
            to_user_id=stranger.user_id,
            policy=POLICY,
        )
    assert codes(refused) == ["not_colleague"]


# --- Using the instrument ------------------------------------------------------------------


def test_check_in_opens_fifteen_minutes_before_the_start(session: Session, lab: Lab) -> None:
    booking = book(
        session, lab.researcher, "2026-12-01 10:00", "2026-12-01 12:00", instrument=lab.instrument
    )
    with frozen(at("2026-12-01 09:44")), pytest.raises(Conflict) as refused:
        service.check_in(session, actor=lab.researcher, booking_id=booking.id or 0, policy=POLICY)
    assert refused.value.code == "too_early"
    with frozen(at("2026-12-01 09:45")):
        checked_in = service.check_in(
            session, actor=lab.researcher, booking_id=booking.id or 0, policy=POLICY
        )
    assert (checked_in.status, checked_in.checked_in_at) == (S.IN_USE, at("2026-12-01 09:45"))
    assert audit_trail(session, checked_in) == ["booking.confirmed", "booking.checked_in"]
    assert announced(session, checked_in) == ["booking.confirmed", "booking.checked_in"]


def test_a_booking_that_is_over_cannot_be_checked_in(session: Session, lab: Lab) -> None:
    booking = book(
        session, lab.researcher, "2026-12-01 10:00", "2026-12-01 12:00", instrument=lab.instrument
    )
    with frozen(at("2026-12-01 12:00")), pytest.raises(Conflict) as refused:
        service.check_in(session, actor=lab.researcher, booking_id=booking.id or 0, policy=POLICY)
    assert refused.value.code == "too_late"


def test_an_early_check_in_waits_while_the_instrument_is_in_use(session: Session, lab: Lab) -> None:
    first = book(
        session, lab.colleague, "2026-12-01 10:00", "2026-12-01 11:00", instrument=lab.instrument
    )
    second = book(
        session, lab.researcher, "2026-12-01 11:00", "2026-12-01 12:00", instrument=lab.instrument
    )
    with frozen(at("2026-12-01 10:00")):
        service.check_in(session, actor=lab.colleague, booking_id=first.id or 0, policy=POLICY)
    with frozen(at("2026-12-01 10:50")), pytest.raises(Conflict) as refused:
        service.check_in(session, actor=lab.researcher, booking_id=second.id or 0, policy=POLICY)
    assert refused.value.code == "instrument_busy"
    with frozen(at("2026-12-01 11:00")):  # at its own start it may, overrun or not
        checked_in = service.check_in(
            session, actor=lab.researcher, booking_id=second.id or 0, policy=POLICY
        )
    assert checked_in.status == S.IN_USE


def test_check_out_completes_the_booking_with_exactly_one_usage_record(
    session: Session, lab: Lab
) -> None:
    booking = book(
        session,
        lab.researcher,
        "2026-12-01 10:00",
        "2026-12-01 12:00",
        instrument=lab.instrument,
        sample_count=3,
    )
    with frozen(at("2026-12-01 09:50")):
        service.check_in(session, actor=lab.researcher, booking_id=booking.id or 0, policy=POLICY)
    with frozen(at("2026-12-01 12:10")):
        usage = service.check_out(
            session, actor=lab.researcher, booking_id=booking.id or 0, samples=5
        )
    assert (usage.booking_id, usage.user_id, usage.operator_id) == (
        booking.id,
        lab.researcher.user_id,
        lab.researcher.user_id,
    )
    # The overrun is recorded as it happened; the booking's held range stays as it was.
    assert (usage.started_at, usage.ended_at) == (at("2026-12-01 09:50"), at("2026-12-01 12:10"))
    assert (usage.samples, usage.organisation_id) == (5, lab.organisation.id)
    session.refresh(booking)
    assert (booking.status, booking.held_until) == (S.COMPLETED, at("2026-12-01 12:00"))
    assert last_audit(session, booking).data["usage_record_id"] == usage.id
    assert announced(session, booking)[-1] == "booking.completed"
    with frozen(at("2026-12-01 12:11")), pytest.raises(Conflict):
        service.check_out(session, actor=lab.researcher, booking_id=booking.id or 0)
    records = session.exec(
        select(func.count()).select_from(UsageRecord).where(UsageRecord.booking_id == booking.id)
    ).one()
    assert records == 1


def test_staff_checking_out_a_staff_operated_booking_are_its_operator(
    session: Session, lab: Lab
) -> None:
    booking = book(
        session,
        lab.manager,
        "2026-12-01 10:00",
        "2026-12-01 12:00",
        instrument=lab.instrument,
        operated_by=STAFF,
        user_id=lab.outsider.user_id,
        sample_count=4,
    )
    with frozen(at("2026-12-01 10:00")):
        service.check_in(session, actor=lab.manager, booking_id=booking.id or 0, policy=POLICY)
    with frozen(at("2026-12-01 11:30")):
        usage = service.check_out(session, actor=lab.manager, booking_id=booking.id or 0)
    assert (usage.user_id, usage.operator_id, usage.samples) == (
        lab.outsider.user_id,
        lab.manager.user_id,
        4,
    )


# --- The worker's transitions --------------------------------------------------------------


def test_unanswered_requests_expire_exactly_once(session: Session, lab: Lab) -> None:
    due = book(
        session,
        lab.researcher,
        "2026-12-01 10:00",
        "2026-12-01 11:00",
        instrument=lab.instrument,
        operated_by=STAFF,
    )
    later = book(
        session,
        lab.researcher,
        "2026-12-10 10:00",
        "2026-12-10 11:00",
        instrument=lab.instrument,
        operated_by=STAFF,
    )
    with frozen(at("2026-12-01 09:59")):
        assert service.expire_pending(session) == 0
    with frozen(at("2026-12-01 10:00")):
        assert service.expire_pending(session) == 1
        assert service.expire_pending(session) == 0
    session.refresh(due)
    session.refresh(later)
    assert (due.status, later.status) == (S.EXPIRED, S.PENDING)
    assert audit_trail(session, due) == ["booking.requested", "booking.expired"]
    assert announced(session, due) == ["booking.requested", "booking.expired"]
    assert last_audit(session, due).actor_id is None
    with frozen(at("2026-12-02 09:00")):  # 48 hours after the request
        assert service.expire_pending(session) == 1
    session.refresh(later)
    assert later.status == S.EXPIRED


def test_nobody_checking_in_by_start_plus_grace_is_a_no_show_marked_once(
    session: Session, lab: Lab
) -> None:
    absent = book(
        session, lab.researcher, "2026-12-01 10:00", "2026-12-01 11:00", instrument=lab.instrument
    )
    present = book(
        session, lab.colleague, "2026-12-01 11:00", "2026-12-01 12:00", instrument=lab.instrument
    )
    with frozen(at("2026-12-01 10:14")):
        assert service.mark_no_shows(session, policy=POLICY) == 0
    with frozen(at("2026-12-01 10:15")):
        assert service.mark_no_shows(session, policy=POLICY) == 1
        assert service.mark_no_shows(session, policy=POLICY) == 0
    with frozen(at("2026-12-01 11:05")):
        service.check_in(session, actor=lab.colleague, booking_id=present.id or 0, policy=POLICY)
    with frozen(at("2026-12-01 11:30")):
        assert service.mark_no_shows(session, policy=POLICY) == 0
    session.refresh(absent)
    session.refresh(present)
    assert (absent.status, present.status) == (S.NO_SHOW, S.IN_USE)
    assert audit_trail(session, absent) == ["booking.confirmed", "booking.no_show"]
    assert announced(session, absent) == ["booking.confirmed", "booking.no_show"]


# --- Usage without or after a booking ------------------------------------------------------


def walk_in(lab: Lab, **changes: Any) -> UsageRecordCreate:
    values: dict[str, Any] = {
        "instrument_id": lab.instrument.id,
        "user_id": lab.outsider.user_id,
        "started_at": at("2026-11-27 14:00"),
        "ended_at": at("2026-11-27 16:00"),
        "samples": 2,
        "note": "Walk-in",
    }
    return UsageRecordCreate.model_validate(values | changes)


def test_a_lab_manager_records_a_walk_in_use(session: Session, lab: Lab) -> None:
    usage = service.record_walk_in(session, actor=lab.manager, data=walk_in(lab))
    assert (usage.booking_id, usage.user_id, usage.operator_id) == (
        None,
        lab.outsider.user_id,
        lab.manager.user_id,
    )
    assert usage.organisation_id == lab.outsider.user.organisation_id
    entry = session.exec(
        select(AuditEntry).where(
            AuditEntry.action == "usage.recorded", AuditEntry.subject_id == str(usage.id)
        )
    ).one()
    assert entry.actor_id == lab.manager.user_id


def test_only_the_facilitys_lab_manager_records_walk_ins(session: Session, lab: Lab) -> None:
    with pytest.raises(PermissionDenied):
        service.record_walk_in(session, actor=lab.researcher, data=walk_in(lab))
    with pytest.raises(NotFound):
        service.record_walk_in(session, actor=lab_manager_elsewhere(session), data=walk_in(lab))
    with pytest.raises(RuleViolation) as refused:
        service.record_walk_in(
            session,
            actor=lab.manager,
            data=walk_in(lab, started_at=at("2026-11-30 10:00"), ended_at=at("2026-11-30 11:00")),
        )
    assert codes(refused) == ["in_future"]


def test_a_recorded_use_is_refused_over_another_use_or_implausibly_long(
    session: Session, lab: Lab
) -> None:
    earlier = service.record_walk_in(session, actor=lab.manager, data=walk_in(lab))
    in_use = book(
        session, lab.researcher, "2026-11-30 10:00", "2026-11-30 12:00", instrument=lab.instrument
    )

    def refused(**times: datetime) -> list[str]:
        with pytest.raises(RuleViolation) as refusal:
            service.record_walk_in(session, actor=lab.manager, data=walk_in(lab, **times))
        return codes(refusal)

    # Over the walk-in already recorded, and over the researcher's booking in use now.
    assert refused(started_at=at("2026-11-27 15:00"), ended_at=at("2026-11-27 17:00")) == [
        "overlap"
    ]
    with frozen(at("2026-11-30 10:30")):
        service.check_in(session, actor=lab.researcher, booking_id=in_use.id or 0, policy=POLICY)
        assert refused(started_at=at("2026-11-30 09:30"), ended_at=at("2026-11-30 10:31")) == [
            "overlap"
        ]
    assert refused(started_at=at("2016-11-27 14:00"), ended_at=at("2026-11-20 14:00")) == [
        "too_long"
    ]
    # Next to it is fine; a correction may not stretch a record over its neighbour either.
    later = service.record_walk_in(
        session,
        actor=lab.manager,
        data=walk_in(lab, started_at=at("2026-11-27 16:00"), ended_at=at("2026-11-27 17:00")),
    )
    with pytest.raises(RuleViolation) as stretched:
        service.correct_usage(
            session,
            actor=lab.manager,
            usage_id=earlier.id or 0,
            data=UsageRecordCorrection(ended_at=at("2026-11-27 16:30"), note="Stayed longer."),
        )
    assert codes(stretched) == ["overlap"]
    with pytest.raises(RuleViolation) as ahead:
        service.correct_usage(
            session,
            actor=lab.manager,
            usage_id=later.id or 0,
            data=UsageRecordCorrection(ended_at=at("2027-11-30 09:00"), note="Typo."),
        )
    assert codes(ahead) == ["in_future", "too_long", "overlap"]  # over the booking in use too


def test_a_lab_manager_corrects_a_usage_record_and_the_audit_keeps_the_values_before(
    session: Session, lab: Lab
) -> None:
    usage = service.record_walk_in(session, actor=lab.manager, data=walk_in(lab))
    correction = UsageRecordCorrection(
        ended_at=at("2026-11-27 15:30"), samples=3, note="Left early; one more sample."
    )
    with pytest.raises(PermissionDenied):
        service.correct_usage(session, actor=lab.outsider, usage_id=usage.id or 0, data=correction)
    with pytest.raises(NotFound):
        service.correct_usage(
            session, actor=lab_manager_elsewhere(session), usage_id=usage.id or 0, data=correction
        )
    corrected = service.correct_usage(
        session, actor=lab.manager, usage_id=usage.id or 0, data=correction
    )
    assert (corrected.started_at, corrected.ended_at, corrected.samples) == (
        at("2026-11-27 14:00"),
        at("2026-11-27 15:30"),
        3,
    )
    assert (corrected.corrected_by_id, corrected.corrected_at) == (lab.manager.user_id, NOW)
    entry = session.exec(
        select(AuditEntry).where(
            AuditEntry.action == "usage.corrected", AuditEntry.subject_id == str(usage.id)
        )
    ).one()
    assert entry.data["before"] == {
        "started_at": at("2026-11-27 14:00").isoformat(),
        "ended_at": at("2026-11-27 16:00").isoformat(),
        "samples": 2,
    }
    assert entry.data["note"] == "Left early; one more sample."


# --- Overnight runs and free time ----------------------------------------------------------


def test_an_unattended_run_crosses_midnight_and_spans_days(session: Session, lab: Lab) -> None:
    always_open = make_facility(
        session,
        organisation=lab.organisation,
        opening_hours=[OpeningSpanIn(weekday=d, start="00:00", end="24:00") for d in range(7)],
    )
    nmr = make_instrument(
        session,
        facility=always_open,
        unattended_runs_allowed=True,
        max_duration_minutes=3 * 24 * 60,
    )
    qualify(session, lab.researcher.user_id, nmr)
    qualify(session, lab.colleague.user_id, nmr)
    run = book(session, lab.researcher, "2026-12-01 20:00", "2026-12-03 08:00", instrument=nmr)
    assert run.status == S.CONFIRMED
    with pytest.raises(Conflict) as refused:
        book(session, lab.colleague, "2026-12-02 02:00", "2026-12-02 04:00", instrument=nmr)
    assert refused.value.code == "overlap"
    free = queries.availability(
        session, instrument_id=nmr.id or 0, start=at("2026-12-01 00:00"), end=at("2026-12-04 00:00")
    )
    assert free == [
        (at("2026-12-01 00:00"), at("2026-12-01 20:00")),
        (at("2026-12-03 08:00"), at("2026-12-04 00:00")),
    ]


def test_an_unattended_run_starts_in_opening_hours_and_runs_through_the_night(
    session: Session, lab: Lab
) -> None:
    overnight = another_instrument(
        session, lab, unattended_runs_allowed=True, max_duration_minutes=24 * 60
    )
    run = book(
        session, lab.researcher, "2026-12-01 16:00", "2026-12-02 10:00", instrument=overnight
    )
    assert run.status == S.CONFIRMED
    with pytest.raises(RuleViolation) as refused:
        book(session, lab.researcher, "2026-12-02 18:00", "2026-12-03 10:00", instrument=overnight)
    assert codes(refused) == ["outside_opening_hours"]


def test_availability_after_an_outage_over_several_days(session: Session, lab: Lab) -> None:
    instruments.create_outage(
        session,
        actor=None,
        data=OutageCreate(
            instrument_id=lab.instrument.id,
            start_at=at("2026-12-01 12:00"),
            end_at=at("2026-12-03 12:00"),
            kind=OutageKind.CALIBRATION,
        ),
    )
    free = queries.availability(
        session,
        instrument_id=lab.instrument.id or 0,
        start=at("2026-11-30 00:00"),
        end=at("2026-12-05 00:00"),
    )
    assert free == [
        (at("2026-11-30 09:00"), at("2026-11-30 17:00")),
        (at("2026-12-01 09:00"), at("2026-12-01 12:00")),
        (at("2026-12-03 12:00"), at("2026-12-03 17:00")),
        (at("2026-12-04 09:00"), at("2026-12-04 17:00")),
    ]
    with pytest.raises(RuleViolation) as refused:
        book(
            session,
            lab.researcher,
            "2026-12-02 10:00",
            "2026-12-02 11:00",
            instrument=lab.instrument,
        )
    assert codes(refused) == ["during_outage"]


def test_a_facility_wide_outage_closes_every_instrument(session: Session, lab: Lab) -> None:
    second = another_instrument(session, lab)
    instruments.create_outage(
        session,
        actor=None,
        data=OutageCreate(
            facility_id=lab.facility.id,
            start_at=at("2026-12-01 00:00"),
            end_at=at("2026-12-02 00:00"),
            kind=OutageKind.MAINTENANCE,
        ),
    )
    free = queries.free_time(
        session,
        instrument_ids=[lab.instrument.id or 0, second.id or 0],
        start=at("2026-12-01 00:00"),
        end=at("2026-12-03 00:00"),
    )
    day_two = [(at("2026-12-02 09:00"), at("2026-12-02 17:00"))]
    assert free == {lab.instrument.id: day_two, second.id: day_two}


def test_free_time_is_bookable_as_shown_counting_buffers(session: Session, lab: Lab) -> None:
    buffered = another_instrument(session, lab, buffer_minutes=30)
    book(session, lab.colleague, "2026-12-01 13:00", "2026-12-01 14:00", instrument=buffered)
    free = queries.availability(
        session,
        instrument_id=buffered.id or 0,
        start=at("2026-12-01 00:00"),
        end=at("2026-12-02 00:00"),
    )
    assert free == [
        (at("2026-12-01 09:00"), at("2026-12-01 12:30")),
        (at("2026-12-01 14:30"), at("2026-12-01 17:00")),
    ]
    for start, end in free:
        booking = service.create_booking(
            session,
            actor=lab.researcher,
            data=BookingCreate(instrument_id=buffered.id or 0, start=start, end=end),
            policy=POLICY,
        )
        assert booking.status == S.CONFIRMED


def test_every_held_booking_takes_its_time_out_of_free_time_and_no_other_does(
    session: Session, lab: Lab
) -> None:
    """Alike for one instrument (its availability) and for several (a free-time search)."""
    assert set(HELD_STATUSES) == {S.OFFERED, S.PENDING, S.CONFIRMED, S.IN_USE}
    second = another_instrument(session, lab)
    open_hours = [at(f"2026-12-0{day} {hour:02}:00") for day in (1, 2) for hour in range(9, 17)]
    starts = dict(zip(S, open_hours, strict=False))  # an hour in each status
    for status, start in starts.items():
        booking_in(session, lab, status, start)
    window = {"start": at("2026-12-01 00:00"), "end": at("2026-12-03 00:00")}

    free = queries.availability(session, instrument_id=lab.instrument.id or 0, **window)
    both = queries.free_time(
        session, instrument_ids=[lab.instrument.id or 0, second.id or 0], **window
    )

    hour = timedelta(hours=1)
    free_hours = {start + n * hour for start, end in free for n in range((end - start) // hour)}
    assert free_hours == set(open_hours) - {starts[status] for status in HELD_STATUSES}
    assert both == {
        lab.instrument.id: free,
        second.id: [(open_hours[0], open_hours[7] + hour), (open_hours[8], open_hours[15] + hour)],
    }


def test_a_request_past_its_expiry_cannot_be_approved_even_before_the_worker_runs(
    session: Session, lab: Lab
) -> None:
    pending = book(
        session,
        lab.researcher,
        "2026-12-03 10:00",
        "2026-12-03 11:00",
        instrument=lab.instrument,
        operated_by=OperatedBy.STAFF,
    )
    assert pending.expires_at is not None
    with frozen(pending.expires_at), pytest.raises(Conflict) as refused:
        service.approve(session, actor=lab.manager, booking_id=pending.id or 0)
    assert refused.value.code == "request_expired"


def test_a_qualification_that_lapses_before_the_booking_ends_does_not_count(
    session: Session, lab: Lab
) -> None:
    instrument = make_instrument(session, facility=lab.facility)
    instruments.grant_qualification(
        session,
        actor=None,
        data=QualificationGrant(
            user_id=lab.researcher.user_id,
            instrument_id=instrument.id or 0,
            expires_at=at("2026-12-02 12:00"),
        ),
    )
    assert book(
        session, lab.researcher, "2026-12-02 09:00", "2026-12-02 11:00", instrument=instrument
    )
    with pytest.raises(PermissionDenied) as refused:
        book(session, lab.researcher, "2026-12-02 13:00", "2026-12-02 14:00", instrument=instrument)
    assert refused.value.code == "not_qualified"
