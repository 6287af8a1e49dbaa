"""Recurring bookings, the waitlist, and outages falling on bookings."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlmodel import Session, select

from booking import outages, series, service, waitlist
from booking.models import Booking, WaitlistStatus
from booking.rules import BookingStatus, OperatedBy
from booking.schemas import BookingCreate
from booking.series import Frequency, SeriesCreate, SeriesMode
from booking.service import BookingPolicy
from core.accounts.rules import Role, ScopeKind
from core.accounts.schemas import RoleGrant
from core.auth.principal import Principal, load_principal
from core.clock import frozen
from core.errors import Conflict, RuleViolation
from core.events import OutboxEvent
from core.settings import Settings
from instruments import service as catalogue
from instruments.rules import OperationMode, OutageKind
from instruments.schemas import InstrumentUpdate, OpeningSpanIn, OutageCreate
from tests.factories import make_user
from tests.instruments.factories import make_facility, make_instrument

NOW = datetime(2026, 11, 30, 1, tzinfo=UTC)  # Monday 09:00 in Chongqing
POLICY = BookingPolicy.from_settings(Settings())


@pytest.fixture
def world(session: Session) -> dict:
    with frozen(NOW):
        facility = make_facility(
            session,
            opening_hours=[OpeningSpanIn(weekday=d, start="08:00", end="20:00") for d in range(7)],
        )
        instrument = make_instrument(
            session,
            facility=facility,
            operation_mode=OperationMode.SELF_OPERATED,
            requires_qualification=False,
            min_notice_minutes=0,
            buffer_minutes=0,
        )
        manager = load_principal(
            session,
            make_user(
                session,
                password=None,
                roles=[
                    RoleGrant(
                        role=Role.LAB_MANAGER, scope_kind=ScopeKind.FACILITY, scope_id=facility.id
                    )
                ],
            ),
        )
        alice = load_principal(session, make_user(session, password=None, roles=[Role.RESEARCHER]))
        bob = load_principal(session, make_user(session, password=None, roles=[Role.RESEARCHER]))
    return {
        "instrument": instrument,
        "facility": facility,
        "manager": manager,
        "alice": alice,
        "bob": bob,
    }


def book(
    session: Session, actor: Principal, instrument_id: int, start: datetime, hours: int = 2
) -> Booking:
    return service.create_booking(
        session,
        actor=actor,
        policy=POLICY,
        data=BookingCreate(
            instrument_id=instrument_id, start=start, end=start + timedelta(hours=hours)
        ),
    )


def at(day: int, hour: int) -> datetime:
    """A time in the week of 30 November 2026, Chongqing wall clock, as UTC."""
    return datetime(2026, 11, 30, hour - 8, tzinfo=UTC) + timedelta(days=day)


def weekly(
    instrument_id: int, count: int, mode: SeriesMode = SeriesMode.ALL_OR_NOTHING
) -> SeriesCreate:
    return SeriesCreate(
        instrument_id=instrument_id,
        start=at(1, 9),
        end=at(1, 11),
        frequency=Frequency.WEEKLY,
        count=count,
        mode=mode,
    )


def test_a_weekly_series_books_every_occurrence_at_the_same_local_time(
    session: Session, world: dict
) -> None:
    with frozen(NOW):
        result = series.create_series(
            session, actor=world["alice"], data=weekly(world["instrument"].id, 4), policy=POLICY
        )
    assert [b.start_at for b in result.booked] == [at(1, 9) + timedelta(weeks=n) for n in range(4)]
    assert {b.series_id for b in result.booked} == {result.series.id}
    assert result.skipped == []


def test_all_or_nothing_books_nothing_and_lists_every_failing_date(
    session: Session, world: dict
) -> None:
    with frozen(NOW):
        book(
            session, world["bob"], world["instrument"].id, at(8, 10)
        )  # the second Tuesday is taken
        with pytest.raises(RuleViolation) as refused:
            series.create_series(
                session, actor=world["alice"], data=weekly(world["instrument"].id, 3), policy=POLICY
            )
    assert [p.code for p in refused.value.problems] == ["overlap"]
    assert "2026-12-08" in refused.value.problems[0].message


def test_free_only_books_the_free_dates_and_lists_the_skipped(
    session: Session, world: dict
) -> None:
    with frozen(NOW):
        book(session, world["bob"], world["instrument"].id, at(8, 10))
        result = series.create_series(
            session,
            actor=world["alice"],
            data=weekly(world["instrument"].id, 3, SeriesMode.FREE_ONLY),
            policy=POLICY,
        )
    assert len(result.booked) == 2
    assert [(s.start, s.code) for s in result.skipped] == [(at(8, 9), "overlap")]


def test_a_series_names_each_broken_rule_and_an_empty_series_says_why(
    session: Session, world: dict
) -> None:
    with frozen(NOW):
        catalogue.update_instrument(
            session,
            actor=world["manager"],
            instrument_id=world["instrument"].id,
            data=InstrumentUpdate(user_weekly_hours_limit=2),
        )
        book(session, world["alice"], world["instrument"].id, at(8, 14))  # week 2 is used up
        with pytest.raises(RuleViolation) as refused:
            series.create_series(
                session, actor=world["alice"], data=weekly(world["instrument"].id, 3), policy=POLICY
            )
        assert [p.code for p in refused.value.problems] == ["quota_user_hours"]
        with pytest.raises(RuleViolation) as empty:
            series.create_series(
                session,
                actor=world["alice"],
                data=SeriesCreate(
                    instrument_id=world["instrument"].id,
                    start=at(1, 9),
                    end=at(1, 11),
                    frequency=Frequency.DAILY,
                    until=date(2026, 11, 30),
                ),
                policy=POLICY,
            )
    assert [(p.code, p.field) for p in empty.value.problems] == [("no_occurrences", "until")]


def test_a_series_needs_count_or_until_and_stays_within_100() -> None:
    with pytest.raises(ValueError, match="count or until"):
        SeriesCreate(instrument_id=1, start=at(1, 9), end=at(1, 11), frequency=Frequency.DAILY)
    with pytest.raises(RuleViolation):
        series.occurrences(
            at(1, 9),
            at(1, 11),
            zone=ZoneInfo("Asia/Shanghai"),
            frequency=Frequency.DAILY,
            interval=1,
            count=None,
            until=date(2027, 12, 31),
        )


def test_cancelling_the_rest_of_a_series_keeps_the_earlier_occurrences(
    session: Session, world: dict
) -> None:
    with frozen(NOW):
        result = series.create_series(
            session, actor=world["alice"], data=weekly(world["instrument"].id, 4), policy=POLICY
        )
        cancelled = series.cancel_rest_of_series(
            session, actor=world["alice"], booking_id=result.booked[2].id
        )
    assert [b.id for b in cancelled] == [result.booked[2].id, result.booked[3].id]
    assert [b.status for b in result.booked[:2]] == [
        BookingStatus.CONFIRMED,
        BookingStatus.CONFIRMED,
    ]


def test_the_rest_of_a_series_is_cancelled_though_its_first_occurrence_is_in_use(
    session: Session, world: dict
) -> None:
    with frozen(NOW):
        result = series.create_series(
            session, actor=world["alice"], data=weekly(world["instrument"].id, 3), policy=POLICY
        )
    first = result.booked[0]
    with frozen(at(1, 9)):
        service.check_in(session, actor=world["alice"], booking_id=first.id, policy=POLICY)
        cancelled = series.cancel_rest_of_series(session, actor=world["alice"], booking_id=first.id)
    assert [b.id for b in cancelled] == [b.id for b in result.booked[1:]]
    assert first.status is BookingStatus.IN_USE


def test_a_freed_slot_is_offered_to_the_first_waiter_who_accepts_it(
    session: Session, world: dict
) -> None:
    instrument_id = world["instrument"].id
    with frozen(NOW):
        taken = book(session, world["alice"], instrument_id, at(1, 9))
        with pytest.raises(Conflict):
            waitlist.join(
                session,
                actor=world["bob"],
                instrument_id=instrument_id,
                start=at(1, 14),
                end=at(1, 15),
            )
        entry = waitlist.join(
            session, actor=world["bob"], instrument_id=instrument_id, start=at(1, 9), end=at(1, 11)
        )
        service.cancel(session, actor=world["alice"], booking_id=taken.id)
        session.refresh(entry)
        assert entry.status is WaitlistStatus.OFFERED
        offer = session.get(Booking, entry.offered_booking_id)
        assert (offer.status, offer.user_id) == (BookingStatus.OFFERED, world["bob"].user_id)
        # The offer holds the time: nobody else can take it meanwhile.
        with pytest.raises(Conflict):
            book(session, world["alice"], instrument_id, at(1, 9))
        accepted = waitlist.accept(
            session,
            actor=world["bob"],
            booking_id=offer.id,
            operated_by=OperatedBy.SELF,
            policy=POLICY,
        )
    assert accepted.status is BookingStatus.CONFIRMED
    topics = session.exec(select(OutboxEvent.topic)).all()
    assert "waitlist.offered" in topics


def offered_to(session: Session, world: dict, waiter: Principal, day: int) -> Booking:
    """Alice's booking at 09:00–11:00 of ``day``, the waiter waiting for it, Alice cancelling."""
    instrument_id = world["instrument"].id
    taken = book(session, world["alice"], instrument_id, at(day, 9))
    entry = waitlist.join(
        session, actor=waiter, instrument_id=instrument_id, start=at(day, 9), end=at(day, 11)
    )
    service.cancel(session, actor=world["alice"], booking_id=taken.id)
    session.refresh(entry)
    offer = session.get(Booking, entry.offered_booking_id)
    assert offer is not None
    return offer


def test_accepting_an_offer_obeys_every_rule_of_a_booking_request(
    session: Session, world: dict
) -> None:
    instrument = world["instrument"]
    with frozen(NOW):
        # Bob holds the two hours a week he may, then is offered two more.
        catalogue.update_instrument(
            session,
            actor=world["manager"],
            instrument_id=instrument.id,
            data=InstrumentUpdate(user_weekly_hours_limit=2),
        )
        book(session, world["bob"], instrument.id, at(1, 14))
        offer = offered_to(session, world, world["bob"], 2)
        # Meanwhile the instrument became staff-operated.
        catalogue.update_instrument(
            session,
            actor=world["manager"],
            instrument_id=instrument.id,
            data=InstrumentUpdate(operation_mode=OperationMode.STAFF_OPERATED),
        )
        with pytest.raises(RuleViolation) as refused:
            waitlist.accept(
                session,
                actor=world["bob"],
                booking_id=offer.id,
                operated_by=OperatedBy.SELF,
                policy=POLICY,
            )
    assert sorted(p.code for p in refused.value.problems) == ["quota_user_hours", "staff_only"]
    session.refresh(offer)
    assert offer.status is BookingStatus.OFFERED


def test_a_declined_offer_lets_the_waiter_wait_again_and_nobody_waits_for_own_time(
    session: Session, world: dict
) -> None:
    instrument_id = world["instrument"].id
    with frozen(NOW):
        offer = offered_to(session, world, world["bob"], 1)
        service.cancel(session, actor=world["bob"], booking_id=offer.id)  # declined
        [entry] = waitlist.entries_of(session, user_id=world["bob"].user_id)
        assert entry.status is WaitlistStatus.CANCELLED
        mine = book(session, world["bob"], instrument_id, at(1, 9))
        with pytest.raises(Conflict) as refused:
            waitlist.join(
                session,
                actor=world["bob"],
                instrument_id=instrument_id,
                start=at(1, 9),
                end=at(1, 11),
            )
        assert refused.value.code == "already_held"
        again = waitlist.join(
            session,
            actor=world["alice"],
            instrument_id=instrument_id,
            start=at(1, 9),
            end=at(1, 11),
        )
        assert again.status is WaitlistStatus.WAITING
        assert mine.status is BookingStatus.CONFIRMED


def test_time_freed_by_an_outage_is_offered_to_nobody(session: Session, world: dict) -> None:
    instrument_id = world["instrument"].id
    with frozen(NOW):
        taken = book(session, world["alice"], instrument_id, at(2, 9))
        entry = waitlist.join(
            session, actor=world["bob"], instrument_id=instrument_id, start=at(2, 9), end=at(2, 11)
        )
        outage = catalogue.create_outage(
            session,
            actor=world["manager"],
            data=OutageCreate(
                instrument_id=instrument_id,
                start_at=at(2, 8),
                end_at=at(2, 18),
                kind=OutageKind.REPAIR,
            ),
        )
        outages.apply_outage(
            session, actor=world["manager"], outage_id=outage.id, action=outages.OutageAction.CANCEL
        )
    session.refresh(taken)
    session.refresh(entry)
    assert taken.status is BookingStatus.CANCELLED
    assert entry.status is WaitlistStatus.WAITING  # still waiting, for when the time reopens
    offers = session.exec(select(Booking).where(Booking.status == BookingStatus.OFFERED)).all()
    assert offers == []


def test_a_lapsed_offer_goes_to_the_next_waiter(session: Session, world: dict) -> None:
    instrument_id = world["instrument"].id
    carol = load_principal(session, make_user(session, password=None, roles=[Role.RESEARCHER]))
    with frozen(NOW):
        taken = book(session, world["alice"], instrument_id, at(3, 9))
        first = waitlist.join(
            session, actor=world["bob"], instrument_id=instrument_id, start=at(3, 9), end=at(3, 11)
        )
    with frozen(NOW + timedelta(minutes=1)):
        second = waitlist.join(
            session, actor=carol, instrument_id=instrument_id, start=at(3, 9), end=at(3, 11)
        )
        service.cancel(session, actor=world["alice"], booking_id=taken.id)
    with frozen(NOW + timedelta(hours=13)):
        assert waitlist.expire_offers(session) == 1
        assert waitlist.expire_offers(session) == 0
    session.refresh(first)
    session.refresh(second)
    assert first.status is WaitlistStatus.EXPIRED
    assert second.status is WaitlistStatus.OFFERED


def test_an_outage_flags_the_bookings_it_falls_on_or_cancels_them(
    session: Session, world: dict
) -> None:
    instrument_id = world["instrument"].id
    with frozen(NOW):
        hit = book(session, world["alice"], instrument_id, at(2, 9))
        spared = book(session, world["alice"], instrument_id, at(4, 9))
        outage = catalogue.create_outage(
            session,
            actor=world["manager"],
            data=OutageCreate(
                instrument_id=instrument_id,
                start_at=at(2, 8),
                end_at=at(3, 20),
                kind=OutageKind.REPAIR,
                note="真空泵故障",
            ),
        )
        flagged = outages.apply_outage(
            session, actor=world["manager"], outage_id=outage.id, action=outages.OutageAction.FLAG
        )
        assert [b.id for b in flagged] == [hit.id]
        assert "真空泵故障" in hit.attention
        assert hit.status is BookingStatus.CONFIRMED
        cancelled = outages.apply_outage(
            session, actor=world["manager"], outage_id=outage.id, action=outages.OutageAction.CANCEL
        )
    session.refresh(hit)
    session.refresh(spared)
    assert [b.id for b in cancelled] == [hit.id]
    assert hit.status is BookingStatus.CANCELLED
    assert "Outage (repair)" in hit.reason
    assert spared.status is BookingStatus.CONFIRMED
