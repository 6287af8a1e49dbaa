"""Calendar feeds on SQLite and PostgreSQL: who may subscribe to what and see how much, tokens,
revoking and regenerating, which bookings a feed shows, its ETag, and its one query."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from sqlmodel import Session

from booking import service as bookings
from booking.models import Booking
from booking.rules import BookingStatus, OperatedBy
from booking.schemas import BookingCreate
from booking.service import BookingPolicy
from core.accounts import service as accounts
from core.accounts.models import User
from core.accounts.rules import Role, ScopeKind
from core.accounts.schemas import RoleGrant
from core.audit import AuditEntry
from core.auth.principal import Principal, load_principal
from core.clock import frozen
from core.errors import NotFound, RuleViolation
from core.settings import Settings
from instruments import service as instruments
from instruments.models import Facility, Instrument
from instruments.schemas import QualificationGrant
from notifications import feeds
from notifications.models import CalendarFeed, FeedKind
from tests.factories import make_organisation, make_user
from tests.instruments.factories import make_facility, make_instrument
from tests.notifications.calendars import events, parse, utc_property

SHANGHAI = ZoneInfo("Asia/Shanghai")
S = BookingStatus
HOST = "labshare.example.cn"
TOKEN = re.compile(r"^[A-Za-z0-9_-]{43,}$")


def at(local: str) -> datetime:
    return datetime.fromisoformat(local).replace(tzinfo=SHANGHAI).astimezone(UTC)


NOW = at("2026-11-30 09:00")


@pytest.fixture(autouse=True)
def frozen_now() -> Iterator[None]:
    with frozen(NOW):
        yield


@dataclass
class Lab:
    facility: Facility
    instrument: Instrument
    other_instrument: Instrument  # same facility
    manager: Principal
    researcher: Principal
    colleague: Principal
    subscriber: Principal  # an outsider who only wants to see when the instrument is free


@pytest.fixture
def lab(session: Session) -> Lab:
    university = make_organisation(session)
    facility = make_facility(session, organisation=university)
    manager = make_user(
        session,
        password=None,
        name="管理员王",
        roles=[
            RoleGrant(role=Role.LAB_MANAGER, scope_kind=ScopeKind.FACILITY, scope_id=facility.id)
        ],
    )
    instrument = make_instrument(session, facility=facility, location="理学楼 B201")
    other = make_instrument(session, facility=facility, location="理学楼 B305")

    def researcher(name: str, email: str) -> Principal:
        user = make_user(
            session,
            password=None,
            name=name,
            email=email,
            organisation=university,
            roles=[Role.RESEARCHER],
        )
        for item in (instrument, other):
            instruments.grant_qualification(
                session,
                actor=None,
                data=QualificationGrant(user_id=user.id or 0, instrument_id=item.id or 0),
            )
        return load_principal(session, user)

    return Lab(
        facility=facility,
        instrument=instrument,
        other_instrument=other,
        manager=load_principal(session, manager),
        researcher=researcher("张三", "zhangsan@example.cn"),
        colleague=researcher("李四", "lisi@example.cn"),
        subscriber=researcher("王五", "wangwu@example.cn"),
    )


def place(
    session: Session,
    lab: Lab,
    user: Principal,
    start: datetime,
    *,
    status: BookingStatus = S.CONFIRMED,
    instrument: Instrument | None = None,
    purpose: str = "",
    hours: int = 1,
) -> Booking:
    """A booking that earlier operations left in ``status`` (written directly, for set-up)."""
    instrument = instrument or lab.instrument
    booking = Booking(
        instrument_id=instrument.id or 0,
        facility_id=instrument.facility_id,
        user_id=user.user_id,
        start_at=start,
        end_at=start + timedelta(hours=hours),
        held_until=start + timedelta(hours=hours),
        status=status,
        operated_by=OperatedBy.SELF,
        purpose=purpose,
    )
    session.add(booking)
    session.flush()
    return booking


def render(session: Session, feed: CalendarFeed) -> str:
    return feeds.render_feed(session, feeds.subscription(session, token=feed.token), host=HOST)


def state(session: Session, feed: CalendarFeed) -> feeds.FeedState:
    return feeds.feed_state(session, feeds.subscription(session, token=feed.token))


def uids(text: str) -> list[str]:
    return [str(e["UID"]) for e in events(text)]


def uid(booking: Booking) -> str:
    return f"booking-{booking.id}@{HOST}"


# --- Creating feeds -------------------------------------------------------------------------------


def test_a_user_feed_is_the_callers_own_with_full_details(session: Session, lab: Lab) -> None:
    feed = feeds.create_feed(session, actor=lab.researcher, kind=FeedKind.USER, subject_id=None)

    assert (feed.kind, feed.subject_id, feed.owner_id) == (
        FeedKind.USER,
        lab.researcher.user_id,
        lab.researcher.user_id,
    )
    assert feed.full_details
    assert feed.revoked_at is None


def test_nobody_subscribes_to_another_users_bookings(session: Session, lab: Lab) -> None:
    with pytest.raises(RuleViolation) as error:
        feeds.create_feed(
            session, actor=lab.researcher, kind=FeedKind.USER, subject_id=lab.colleague.user_id
        )

    assert [p.code for p in error.value.problems] == ["not_own_feed"]


@pytest.mark.parametrize("kind", [FeedKind.INSTRUMENT, FeedKind.FACILITY])
def test_anyone_subscribes_to_an_instrument_or_facility_but_only_its_managers_see_details(
    session: Session, lab: Lab, kind: FeedKind
) -> None:
    subject_id = lab.instrument.id if kind is FeedKind.INSTRUMENT else lab.facility.id

    managers = feeds.create_feed(session, actor=lab.manager, kind=kind, subject_id=subject_id)
    others = feeds.create_feed(session, actor=lab.subscriber, kind=kind, subject_id=subject_id)

    assert managers.full_details
    assert not others.full_details


def test_an_instrument_or_facility_feed_needs_an_existing_subject(
    session: Session, lab: Lab
) -> None:
    with pytest.raises(RuleViolation) as error:
        feeds.create_feed(session, actor=lab.subscriber, kind=FeedKind.INSTRUMENT, subject_id=None)
    assert [p.field for p in error.value.problems] == ["subject_id"]
    with pytest.raises(NotFound):
        feeds.create_feed(
            session, actor=lab.subscriber, kind=FeedKind.INSTRUMENT, subject_id=999_999
        )
    with pytest.raises(NotFound):
        feeds.create_feed(session, actor=lab.subscriber, kind=FeedKind.FACILITY, subject_id=999_999)


def test_tokens_are_long_url_safe_and_new_each_time(session: Session, lab: Lab) -> None:
    created = [
        feeds.create_feed(session, actor=lab.researcher, kind=FeedKind.USER, subject_id=None)
        for _ in range(5)
    ]
    tokens = [feed.token for feed in created]

    assert all(TOKEN.match(token) for token in tokens)
    assert len(set(tokens)) == 5


def test_creating_revoking_and_regenerating_are_audited_without_the_token(
    session: Session, lab: Lab
) -> None:
    feed = feeds.create_feed(
        session, actor=lab.subscriber, kind=FeedKind.INSTRUMENT, subject_id=lab.instrument.id
    )
    feeds.regenerate_feed(session, actor=lab.subscriber, feed_id=feed.id or 0)
    feeds.revoke_feed(session, actor=lab.subscriber, feed_id=feed.id or 0)

    entries = session.exec(
        sa.select(AuditEntry).where(  # type: ignore[call-overload]
            AuditEntry.subject_type == "calendar_feed", AuditEntry.subject_id == str(feed.id)
        )
    ).all()
    assert [e[0].action for e in entries] == [
        "calendar_feed.created",
        "calendar_feed.regenerated",
        "calendar_feed.revoked",
    ]
    assert all(e[0].actor_id == lab.subscriber.user_id for e in entries)
    assert feed.token not in repr([e[0].data for e in entries])


# --- Listing, revoking, regenerating --------------------------------------------------------------


def test_the_list_holds_the_callers_live_feeds_only(session: Session, lab: Lab) -> None:
    mine = feeds.create_feed(session, actor=lab.researcher, kind=FeedKind.USER, subject_id=None)
    gone = feeds.create_feed(
        session, actor=lab.researcher, kind=FeedKind.FACILITY, subject_id=lab.facility.id
    )
    feeds.create_feed(session, actor=lab.colleague, kind=FeedKind.USER, subject_id=None)
    feeds.revoke_feed(session, actor=lab.researcher, feed_id=gone.id or 0)

    assert [f.id for f in feeds.list_feeds(session, actor=lab.researcher)] == [mine.id]


def test_a_revoked_token_finds_nothing_and_revoking_again_changes_nothing(
    session: Session, lab: Lab
) -> None:
    feed = feeds.create_feed(session, actor=lab.researcher, kind=FeedKind.USER, subject_id=None)
    feeds.subscription(session, token=feed.token)

    feeds.revoke_feed(session, actor=lab.researcher, feed_id=feed.id or 0)
    revoked_at = feed.revoked_at
    feeds.revoke_feed(session, actor=lab.researcher, feed_id=feed.id or 0)

    assert revoked_at == NOW
    assert feed.revoked_at == revoked_at
    with pytest.raises(NotFound):
        feeds.subscription(session, token=feed.token)


def test_a_regenerated_feed_answers_its_new_token_only(session: Session, lab: Lab) -> None:
    feed = feeds.create_feed(session, actor=lab.researcher, kind=FeedKind.USER, subject_id=None)
    old = feed.token

    regenerated = feeds.regenerate_feed(session, actor=lab.researcher, feed_id=feed.id or 0)

    assert regenerated.id == feed.id
    assert regenerated.token != old
    assert TOKEN.match(regenerated.token)
    assert feeds.subscription(session, token=regenerated.token).feed.id == feed.id
    with pytest.raises(NotFound):
        feeds.subscription(session, token=old)


def test_a_revoked_feed_cannot_be_regenerated(session: Session, lab: Lab) -> None:
    feed = feeds.create_feed(session, actor=lab.researcher, kind=FeedKind.USER, subject_id=None)
    feeds.revoke_feed(session, actor=lab.researcher, feed_id=feed.id or 0)

    with pytest.raises(NotFound):
        feeds.regenerate_feed(session, actor=lab.researcher, feed_id=feed.id or 0)


@pytest.mark.parametrize("action", [feeds.revoke_feed, feeds.regenerate_feed])
def test_nobody_touches_another_users_feed(session: Session, lab: Lab, action: Any) -> None:
    feed = feeds.create_feed(session, actor=lab.researcher, kind=FeedKind.USER, subject_id=None)

    with pytest.raises(NotFound):
        action(session, actor=lab.colleague, feed_id=feed.id or 0)
    with pytest.raises(NotFound):
        action(session, actor=lab.colleague, feed_id=999_999)
    assert feeds.subscription(session, token=feed.token).feed.revoked_at is None


def test_an_unknown_token_or_a_deactivated_owner_finds_nothing(session: Session, lab: Lab) -> None:
    feed = feeds.create_feed(session, actor=lab.researcher, kind=FeedKind.USER, subject_id=None)
    with pytest.raises(NotFound):
        feeds.subscription(session, token=feeds.new_token())

    owner = session.get(User, lab.researcher.user_id)
    assert owner is not None
    owner.is_active = False
    session.add(owner)
    session.flush()

    with pytest.raises(NotFound):
        feeds.subscription(session, token=feed.token)


# --- What a feed shows ----------------------------------------------------------------------------


def test_a_user_feed_shows_the_users_bookings_in_full(session: Session, lab: Lab) -> None:
    mine = place(session, lab, lab.researcher, at("2026-12-01 10:00"), purpose="XRD 物相分析")
    other = place(
        session, lab, lab.researcher, at("2026-12-02 14:00"), instrument=lab.other_instrument
    )
    place(session, lab, lab.colleague, at("2026-12-01 14:00"), purpose="李四的样品")
    feed = feeds.create_feed(session, actor=lab.researcher, kind=FeedKind.USER, subject_id=None)

    text = render(session, feed)

    calendar = parse(text)
    assert str(calendar["METHOD"]) == "PUBLISH"
    assert str(calendar["X-WR-CALNAME"]) == "我的仪器预约"
    first, second = calendar.walk("VEVENT")
    assert [str(first["UID"]), str(second["UID"])] == [uid(mine), uid(other)]
    assert str(first["SUMMARY"]) == f"预约：{lab.instrument.name}"
    assert str(first["LOCATION"]) == "理学楼 B201"
    assert str(first["STATUS"]) == "CONFIRMED"
    assert int(first["SEQUENCE"]) == 0
    assert utc_property(first, "DTSTART") == at("2026-12-01 10:00")
    assert utc_property(first, "DTEND") == at("2026-12-01 11:00")
    assert utc_property(first, "DTSTAMP") == mine.updated_at
    assert str(first["DESCRIPTION"]) == (
        "状态：已确认\n"
        "时间：2026-12-01 10:00–11:00（Asia/Shanghai）\n"
        "预约人：张三\n"
        "用途：XRD 物相分析"
    )
    assert "李四" not in text


def test_a_user_feed_shows_bookings_that_went_away_as_cancelled(session: Session, lab: Lab) -> None:
    cancelled = place(session, lab, lab.researcher, at("2026-12-01 10:00"), status=S.CANCELLED)
    rejected = place(session, lab, lab.researcher, at("2026-12-01 12:00"), status=S.REJECTED)
    pending = place(session, lab, lab.researcher, at("2026-12-01 14:00"), status=S.PENDING)
    feed = feeds.create_feed(session, actor=lab.researcher, kind=FeedKind.USER, subject_id=None)

    found = {str(e["UID"]): str(e["STATUS"]) for e in events(render(session, feed))}

    assert found == {
        uid(cancelled): "CANCELLED",
        uid(rejected): "CANCELLED",
        uid(pending): "TENTATIVE",
    }


def test_a_moved_booking_stays_one_event_with_its_uid_and_a_higher_sequence(
    session: Session, lab: Lab
) -> None:
    policy = BookingPolicy.from_settings(Settings())
    first = bookings.create_booking(
        session,
        actor=lab.researcher,
        data=BookingCreate(
            instrument_id=lab.instrument.id or 0,
            start=at("2026-12-01 10:00"),
            end=at("2026-12-01 11:00"),
        ),
        policy=policy,
    )
    feed = feeds.create_feed(session, actor=lab.researcher, kind=FeedKind.USER, subject_id=None)
    (before,) = events(render(session, feed))

    moved = bookings.move(
        session,
        actor=lab.researcher,
        booking_id=first.id or 0,
        start=at("2026-12-02 14:00"),
        end=at("2026-12-02 15:00"),
        override=[],
        policy=policy,
    )

    (after,) = events(render(session, feed))
    assert moved.id != first.id
    assert str(after["UID"]) == str(before["UID"]) == uid(first)
    assert int(after["SEQUENCE"]) > int(before["SEQUENCE"])
    assert utc_property(after, "DTSTART") == at("2026-12-02 14:00")
    # The instrument's subscribers see it move too, under the same UID.
    shared = feeds.create_feed(
        session, actor=lab.subscriber, kind=FeedKind.INSTRUMENT, subject_id=lab.instrument.id
    )
    assert uids(render(session, shared)) == [uid(first)]


def test_a_feed_covers_30_days_back_to_365_days_ahead(session: Session, lab: Lab) -> None:
    today = datetime(2026, 11, 30, tzinfo=UTC)
    too_old = place(session, lab, lab.researcher, today - timedelta(days=30, hours=2))
    oldest = place(session, lab, lab.researcher, today - timedelta(days=30, minutes=30))
    last = place(session, lab, lab.researcher, today + timedelta(days=365, hours=-1))
    too_far = place(session, lab, lab.researcher, today + timedelta(days=365))
    feed = feeds.create_feed(session, actor=lab.researcher, kind=FeedKind.USER, subject_id=None)

    shown = uids(render(session, feed))

    assert shown == [uid(oldest), uid(last)]
    assert uid(too_old) not in shown
    assert uid(too_far) not in shown


@pytest.mark.parametrize("kind", [FeedKind.INSTRUMENT, FeedKind.FACILITY])
def test_a_feed_for_someone_who_does_not_manage_the_facility_has_no_personal_data(
    session: Session, lab: Lab, kind: FeedKind
) -> None:
    held = [
        place(session, lab, lab.researcher, at("2026-12-01 10:00"), purpose="秘密课题 A"),
        place(session, lab, lab.colleague, at("2026-12-01 13:00"), status=S.PENDING),
        place(session, lab, lab.colleague, at("2026-11-20 10:00"), status=S.COMPLETED),
    ]
    place(session, lab, lab.researcher, at("2026-12-01 15:00"), status=S.CANCELLED)
    place(session, lab, lab.researcher, at("2026-11-21 10:00"), status=S.NO_SHOW)
    elsewhere = place(
        session, lab, lab.colleague, at("2026-12-03 10:00"), instrument=lab.other_instrument
    )
    subject_id = lab.instrument.id if kind is FeedKind.INSTRUMENT else lab.facility.id
    feed = feeds.create_feed(session, actor=lab.subscriber, kind=kind, subject_id=subject_id)

    text = render(session, feed)

    expected = sorted(held, key=lambda b: b.start_at)
    if kind is FeedKind.FACILITY:
        expected.append(elsewhere)
    assert uids(text) == [uid(b) for b in expected]
    assert {str(e["SUMMARY"]) for e in events(text)} == {"已预约"}
    for personal in ("张三", "李四", "zhangsan", "lisi", "mailto", "秘密课题", "预约人", "用途"):
        assert personal not in text
    assert "ATTENDEE" not in text
    assert "ORGANIZER" not in text


def test_a_managers_instrument_feed_names_bookers_and_purposes(session: Session, lab: Lab) -> None:
    place(session, lab, lab.researcher, at("2026-12-01 10:00"), purpose="XRD 物相分析")
    place(session, lab, lab.colleague, at("2026-12-01 13:00"))
    feed = feeds.create_feed(
        session, actor=lab.manager, kind=FeedKind.INSTRUMENT, subject_id=lab.instrument.id
    )

    first, second = events(render(session, feed))

    assert str(first["SUMMARY"]) == f"预约：{lab.instrument.name}"
    assert "预约人：张三\n用途：XRD 物相分析" in str(first["DESCRIPTION"])
    assert "预约人：李四" in str(second["DESCRIPTION"])


def test_a_manager_who_loses_the_role_sees_busy_times_only(session: Session, lab: Lab) -> None:
    place(session, lab, lab.researcher, at("2026-12-01 10:00"), purpose="XRD 物相分析")
    feed = feeds.create_feed(
        session, actor=lab.manager, kind=FeedKind.FACILITY, subject_id=lab.facility.id
    )
    assert "张三" in render(session, feed)

    (assignment,) = lab.manager.assignments
    accounts.revoke_role(
        session, actor_id=None, user_id=lab.manager.user_id, assignment_id=assignment.id or 0
    )

    text = render(session, feed)
    assert "张三" not in text
    assert "物相分析" not in text
    assert not feeds.subscription(session, token=feed.token).full_details


def test_an_english_speaking_owner_gets_english_text(session: Session, lab: Lab) -> None:
    owner = session.get(User, lab.subscriber.user_id)
    assert owner is not None
    owner.locale = "en"
    session.add(owner)
    instrument = session.get(Instrument, lab.instrument.id)
    assert instrument is not None
    instrument.name_en = "X-ray diffractometer"
    session.add(instrument)
    session.flush()
    place(session, lab, lab.researcher, at("2026-12-01 10:00"))
    feed = feeds.create_feed(
        session, actor=lab.subscriber, kind=FeedKind.INSTRUMENT, subject_id=lab.instrument.id
    )

    text = render(session, feed)

    (vevent,) = events(text)
    assert str(vevent["SUMMARY"]) == "Booked"
    assert str(vevent["DESCRIPTION"]) == (
        "Instrument: X-ray diffractometer\nStatus: confirmed\n"
        "Time: 2026-12-01 10:00–11:00 (Asia/Shanghai)"
    )
    assert "X-WR-CALNAME:X-ray diffractometer\r\n" in text


# --- ETag and the one query -----------------------------------------------------------------------


def test_the_etag_stays_while_nothing_changes_and_moves_with_every_change(
    session: Session, lab: Lab
) -> None:
    booking = place(session, lab, lab.researcher, at("2026-12-01 10:00"))
    feed = feeds.create_feed(
        session, actor=lab.subscriber, kind=FeedKind.INSTRUMENT, subject_id=lab.instrument.id
    )
    seen = [state(session, feed)]
    assert state(session, feed).etag == seen[0].etag
    assert seen[0].last_modified == max(booking.updated_at, feed.created_at)
    assert re.fullmatch(r'"[0-9a-f]{32}"', seen[0].etag)

    with frozen(NOW + timedelta(minutes=5)):  # a change: version and updated_at move
        bookings.cancel(session, actor=lab.researcher, booking_id=booking.id or 0)
        seen.append(state(session, feed))
    place(session, lab, lab.colleague, at("2026-12-02 10:00"))  # a new booking
    seen.append(state(session, feed))
    feeds.regenerate_feed(session, actor=lab.subscriber, feed_id=feed.id or 0)
    seen.append(state(session, feed))
    with frozen(NOW + timedelta(days=1)):  # the window moved a day
        seen.append(state(session, feed))

    assert len({s.etag for s in seen}) == len(seen)
    # The cancelled booking left the feed, and Last-Modified moved forward, not back.
    assert seen[1].last_modified == NOW + timedelta(minutes=5)


def test_a_feed_of_many_bookings_is_read_with_one_query(session: Session, lab: Lab) -> None:
    users = [lab.researcher, lab.colleague, lab.subscriber]
    for n in range(30):
        place(
            session,
            lab,
            users[n % 3],
            at("2026-12-01 10:00") + timedelta(hours=n),
            instrument=[lab.instrument, lab.other_instrument][n % 2],
            purpose=f"样品 {n}",
        )
    feed = feeds.create_feed(
        session, actor=lab.manager, kind=FeedKind.FACILITY, subject_id=lab.facility.id
    )
    subscription = feeds.subscription(session, token=feed.token)
    for loaded in list(session):  # no booking attribute served from the identity map
        if isinstance(loaded, Booking):
            session.expire(loaded)
    statements: list[str] = []
    engine = session.get_bind().engine

    def count(*args: Any) -> None:
        statements.append(args[2])

    sa.event.listen(engine, "before_cursor_execute", count)
    try:
        text = feeds.render_feed(session, subscription, host=HOST)
        feeds.feed_state(session, subscription)
    finally:
        sa.event.remove(engine, "before_cursor_execute", count)

    assert len(events(text)) == 30
    booking_reads = [s for s in statements if "FROM booking" in s]
    # The bookings with their instruments, facilities and bookers; then the ETag's aggregate.
    assert len(booking_reads) == 2
    assert "count(" in booking_reads[1].lower()
    # Besides those: the facility's name for the calendar, nothing per booking.
    assert len(statements) <= 3
