"""Whatever users and workers do, held bookings of an instrument never overlap (property test)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import combinations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlmodel import Session, col, select

from booking import service
from booking.models import Booking
from booking.rules import HELD_STATUSES
from booking.schemas import BookingCreate
from booking.service import BookingPolicy
from core.accounts.rules import Role
from core.auth.principal import load_principal
from core.clock import frozen
from core.errors import DomainError
from core.settings import Settings
from instruments.rules import ApprovalMode, OperationMode
from instruments.schemas import OpeningSpanIn
from tests.factories import make_user
from tests.instruments.factories import make_facility, make_instrument

NOW = datetime(2026, 11, 30, 1, tzinfo=UTC)
FIRST_SLOT = NOW + timedelta(days=1)
POLICY = BookingPolicy.from_settings(Settings(booking_creations_per_minute=10_000))

slot = st.integers(min_value=0, max_value=30)
length = st.integers(min_value=1, max_value=6)
operations = st.lists(
    st.one_of(
        st.tuples(st.just("request"), slot, length, st.booleans()),
        st.tuples(st.just("cancel"), st.integers(0, 20)),
        st.tuples(st.just("move"), st.integers(0, 20), slot, length),
        st.tuples(st.just("approve"), st.integers(0, 20)),
        st.tuples(st.just("expire"), st.integers(1, 72)),
    ),
    max_size=25,
)


def held_bookings_do_not_overlap(session: Session, instrument_id: int) -> None:
    held = session.exec(
        select(Booking).where(
            Booking.instrument_id == instrument_id, col(Booking.status).in_(list(HELD_STATUSES))
        )
    ).all()
    for first, second in combinations(held, 2):
        assert first.held_until <= second.start_at or second.held_until <= first.start_at


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=operations)
def test_held_bookings_never_overlap_whatever_happens(session: Session, steps: list) -> None:
    example = session.begin_nested()
    try:
        with frozen(NOW):
            facility = make_facility(
                session,
                opening_hours=[
                    OpeningSpanIn(weekday=d, start="00:00", end="24:00") for d in range(7)
                ],
            )
            instrument = make_instrument(
                session,
                facility=facility,
                operation_mode=OperationMode.SELF_OPERATED,
                requires_qualification=False,
                approval_mode=ApprovalMode.MANUAL,
                min_notice_minutes=0,
                buffer_minutes=15,
                max_duration_minutes=240,
            )
            researcher = load_principal(
                session, make_user(session, password=None, roles=[Role.RESEARCHER])
            )
            ids: list[int] = []
            clock = NOW
            for step in steps:
                try:
                    with frozen(clock), session.begin_nested():
                        if step[0] == "request":
                            _, first, slots, as_manager = step
                            start = FIRST_SLOT + timedelta(minutes=30 * first)
                            booking = service.create_booking(
                                session,
                                actor=None if as_manager else researcher,
                                policy=POLICY,
                                data=BookingCreate(
                                    instrument_id=instrument.id,
                                    start=start,
                                    end=start + timedelta(minutes=30 * slots),
                                    user_id=researcher.user_id,
                                ),
                            )
                            ids.append(booking.id or 0)
                        elif ids and step[0] == "cancel":
                            service.cancel(
                                session, actor=researcher, booking_id=ids[step[1] % len(ids)]
                            )
                        elif ids and step[0] == "approve":
                            service.approve(session, actor=None, booking_id=ids[step[1] % len(ids)])
                        elif ids and step[0] == "move":
                            _, which, first, slots = step
                            start = FIRST_SLOT + timedelta(minutes=30 * first)
                            moved = service.move(
                                session,
                                actor=researcher,
                                booking_id=ids[which % len(ids)],
                                start=start,
                                end=start + timedelta(minutes=30 * slots),
                                override=[],
                                policy=POLICY,
                            )
                            ids.append(moved.id or 0)
                        elif step[0] == "expire":
                            clock = clock + timedelta(hours=step[1])
                            with frozen(clock):
                                service.expire_pending(session)
                except DomainError:
                    pass  # refused, as it may be; the invariant must hold either way
                held_bookings_do_not_overlap(session, instrument.id or 0)
    finally:
        example.rollback()
        # Rows read during the example (the researcher's role) stay in the identity map after
        # the rollback, and SQLite hands their ids out again in the next example: forget them.
        session.expunge_all()
