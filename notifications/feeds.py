"""Calendar feeds (/calendar/{token}.ics): create, list, revoke, regenerate; state and render.

Invariants owned here: the token is the feed's only key (``secrets.token_urlsafe(32)``, 43
url-safe characters); a revoked or regenerated-away token finds nothing, exactly like an unknown
one. A user feed shows its owner's own bookings; anyone may subscribe to an instrument's or a
facility's, but it names bookers and purposes only while its owner manages that facility (busy
times otherwise; checked again at every poll, so losing the role hides them). A feed covers
bookings from 30 days back to 365 days ahead, counted from the start of the current UTC day so
that the calendar and its ETag stay the same all day while nothing changes. One query reads a
feed's bookings with their instruments and facilities; a poll that the subscriber already has
costs one aggregate query and builds nothing.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from functools import cache
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import sqlalchemy as sa
from sqlmodel import Session, col, select

from booking.models import Booking
from booking.rules import HELD_STATUSES, BookingStatus
from core import audit
from core.accounts.models import User
from core.auth.principal import Principal, load_principal
from core.clock import now
from core.errors import NotFound, Problem, RuleViolation
from instruments.models import Facility, Instrument
from notifications import ics
from notifications.models import CalendarFeed, FeedKind

DAYS_BACK = 30
DAYS_AHEAD = 365
# Last-Modified is told in whole seconds, and a booking change is stamped when it is written but
# seen only once its transaction commits, a little later. So a feed's last change is vouched for
# by a date only once it is this old: until then no Last-Modified is sent and If-Modified-Since
# is not answered 304 (the ETag, which counts versions, serves meanwhile).
SETTLED_AFTER = timedelta(seconds=30)
# Bookings an instrument's or facility's subscribers see: what holds the instrument, and what
# was used. A user's own feed also lists the ones that went away (cancelled, rejected, expired,
# no-show) as STATUS:CANCELLED, so calendar apps drop the events they showed before.
SHARED_STATUSES = frozenset(HELD_STATUSES | {BookingStatus.COMPLETED})

# The columns an event needs (ics.BookingFacts): rows, not ORM objects, for speed.
BOOKING_FACTS = (
    col(Booking.id),
    col(Booking.calendar_uid),
    col(Booking.version),
    col(Booking.status),
    col(Booking.start_at),
    col(Booking.end_at),
    col(Booking.purpose),
    col(Booking.updated_at),
)

FEED_NAMES = {
    "zh-CN": {FeedKind.USER: "我的仪器预约"},
    "en": {FeedKind.USER: "My instrument bookings"},
}


def new_token() -> str:
    return secrets.token_urlsafe(32)


def feed_urls(base_url: str, token: str) -> tuple[str, str]:
    """The feed's ``webcal://`` link and the same address on the site's own scheme."""
    parts = urlsplit(base_url)
    path = f"{parts.path.rstrip('/')}/calendar/{token}.ics"
    return (
        urlunsplit(("webcal", parts.netloc, path, "", "")),
        urlunsplit((parts.scheme, parts.netloc, path, "", "")),
    )


def calendar_host(base_url: str) -> str:
    """The host part of every UID (``booking-{id}@{host}``)."""
    return urlsplit(base_url).hostname or "localhost"


# --- Managing feeds ---------------------------------------------------------------------------


def create_feed(
    session: Session, *, actor: Principal, kind: FeedKind, subject_id: int | None
) -> CalendarFeed:
    """Subscribe the caller to its own bookings, an instrument's or a facility's."""
    if kind is FeedKind.USER:
        if subject_id not in (None, actor.user_id):
            raise RuleViolation(
                [Problem("not_own_feed", "A user feed shows your own bookings.", "subject_id")]
            )
        subject_id, full_details = actor.user_id, True
    else:
        if subject_id is None:
            raise RuleViolation(
                [Problem("missing", f"Which {kind.value} the feed shows.", "subject_id")]
            )
        full_details = actor.manages_facility(_facility_of(session, kind, subject_id))
    feed = CalendarFeed(
        token=new_token(),
        kind=kind,
        subject_id=subject_id,
        owner_id=actor.user_id,
        full_details=full_details,
    )
    session.add(feed)
    session.flush()
    _audit(session, actor, feed, "calendar_feed.created")
    return feed


def list_feeds(session: Session, *, actor: Principal) -> Sequence[CalendarFeed]:
    """The caller's live feeds, oldest first."""
    return session.exec(
        select(CalendarFeed)
        .where(CalendarFeed.owner_id == actor.user_id, col(CalendarFeed.revoked_at).is_(None))
        .order_by(col(CalendarFeed.id))
    ).all()


def revoke_feed(session: Session, *, actor: Principal, feed_id: int) -> None:
    """Turn a feed off for good; revoking it again changes nothing."""
    feed = _own_feed(session, actor, feed_id)
    if feed.revoked_at is None:
        feed.revoked_at = now()
        session.add(feed)
        session.flush()
        _audit(session, actor, feed, "calendar_feed.revoked")


def regenerate_feed(session: Session, *, actor: Principal, feed_id: int) -> CalendarFeed:
    """Give a live feed a new token (a leaked link stops working); the old token finds nothing."""
    feed = _own_feed(session, actor, feed_id)
    if feed.revoked_at is not None:
        raise NotFound("Calendar feed")
    feed.token = new_token()
    session.add(feed)
    session.flush()
    _audit(session, actor, feed, "calendar_feed.regenerated")
    return feed


def _own_feed(session: Session, actor: Principal, feed_id: int) -> CalendarFeed:
    feed = session.get(CalendarFeed, feed_id)
    if feed is None or feed.owner_id != actor.user_id:
        raise NotFound("Calendar feed")
    return feed


def _facility_of(session: Session, kind: FeedKind, subject_id: int) -> int:
    """The facility an instrument or facility feed belongs to (every poll of a manager's feed
    asks: one column, not the whole row)."""
    if kind is FeedKind.INSTRUMENT:
        facility_id = session.execute(_INSTRUMENT_FACILITY, {"id": subject_id}).scalar()
        if facility_id is None:
            raise NotFound("Instrument")
        return int(facility_id)
    if session.execute(_FACILITY_ID, {"id": subject_id}).scalar() is None:
        raise NotFound("Facility")
    return subject_id


_INSTRUMENT_FACILITY = sa.select(col(Instrument.facility_id)).where(
    col(Instrument.id) == sa.bindparam("id")
)
_FACILITY_ID = sa.select(col(Facility.id)).where(col(Facility.id) == sa.bindparam("id"))


def _audit(session: Session, actor: Principal, feed: CalendarFeed, action: str) -> None:
    # Never the token: the audit trail is read by people the feed is not meant for.
    audit.record(
        session,
        actor_id=actor.user_id,
        action=action,
        subject_type="calendar_feed",
        subject_id=feed.id or 0,
        data={"kind": feed.kind, "subject_id": feed.subject_id, "full_details": feed.full_details},
    )


# --- Serving feeds ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Subscription:
    """A live feed as it is served now: its owner, what it may show, and which days."""

    feed: CalendarFeed
    owner: User
    full_details: bool
    window_start: datetime
    window_end: datetime


@dataclass(frozen=True)
class FeedState:
    """What identifies a feed's current content without building it."""

    subscription: Subscription
    etag: str  # quoted, as in the header
    last_modified: datetime
    # When the last change is recent, or a lost role hid details at a moment no row records,
    # the date says nothing reliable (see SETTLED_AFTER): then it is not used as a validator.
    dated: bool = True

    @property
    def last_modified_header(self) -> datetime | None:
        """The Last-Modified a response may carry, if any."""
        return self.last_modified if self.dated else None

    def unchanged_since(self, since: datetime) -> bool:
        """Whether a subscriber whose copy is from ``since`` (If-Modified-Since) has it still."""
        # A date from the future is no copy's date (RFC 9110 §13.1.3): it proves nothing.
        return self.dated and self.last_modified.replace(microsecond=0) <= since <= now()


# The poll's statements are built once, with parameters: building and keying them for the
# statement cache cost more than SQLite takes to answer them.
_LIVE_FEED = (
    select(CalendarFeed, User)
    .join(User, col(User.id) == CalendarFeed.owner_id)
    .where(
        CalendarFeed.token == sa.bindparam("token"),
        col(CalendarFeed.revoked_at).is_(None),
        col(User.is_active).is_(True),
    )
)


def subscription(session: Session, *, token: str) -> Subscription:
    """The live feed a token names; unknown, revoked and regenerated-away tokens are 404."""
    found = session.exec(_LIVE_FEED, params={"token": token}).first()
    if found is None:
        raise NotFound("Calendar feed")
    feed, owner = found
    full_details = feed.full_details
    if full_details and feed.kind is not FeedKind.USER:
        facility_id = _facility_of(session, feed.kind, feed.subject_id)
        full_details = load_principal(session, owner).manages_facility(facility_id)
    today = datetime.combine(now().astimezone(UTC).date(), time(), tzinfo=UTC)
    return Subscription(
        feed=feed,
        owner=owner,
        full_details=full_details,
        window_start=today - timedelta(days=DAYS_BACK),
        window_end=today + timedelta(days=DAYS_AHEAD),
    )


def feed_state(session: Session, subscription: Subscription) -> FeedState:
    """The feed's ETag and Last-Modified, from one aggregate query over its bookings.

    The aggregate reads every booking of the feed's subject and days, also those the feed does
    not show: a booking that leaves an instrument's feed (cancelled) was changed, so its
    ``updated_at`` moves the ETag and Last-Modified forward instead of back."""
    # Bookings alone (no joins: the poll must stay cheap with 10,000 of them), then the few
    # instrument and facility rows whose names and places the feed shows.
    bookings, catalogue = _state_queries(subscription.feed.kind)
    params = _window_params(subscription)
    count, last_change, versions, last_id = session.execute(bookings, params).one()
    instruments_at, facilities_at = session.execute(catalogue, params).one()
    feed, owner = subscription.feed, subscription.owner
    parts: list[Any] = [
        feed.id,
        feed.token,
        feed.kind,
        feed.subject_id,
        subscription.full_details,
        owner.locale,
        owner.updated_at,
        subscription.window_start.date(),
        count,
        last_change,
        versions,
        last_id,
        instruments_at,
        facilities_at,
    ]
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:32]
    changes = [m for m in (last_change, instruments_at, facilities_at) if m is not None]
    # The window moves at the start of each UTC day, so the content may change then too.
    day_start = subscription.window_start + timedelta(days=DAYS_BACK)
    last_modified = max([feed.created_at, owner.updated_at, day_start, *changes])
    dated = (
        last_modified <= now() - SETTLED_AFTER and subscription.full_details == feed.full_details
    )
    return FeedState(subscription, f'"{digest}"', last_modified, dated)


def render_feed(session: Session, subscription: Subscription, *, host: str) -> str:
    """The feed's calendar file: one query for its bookings, instruments and facilities."""
    feed, owner = subscription.feed, subscription.owner
    names_bookers = subscription.full_details and feed.kind is not FeedKind.USER
    query = _joined(
        sa.select(
            *BOOKING_FACTS,
            col(Instrument.name),
            col(Instrument.name_en),
            col(Instrument.location),
            col(Facility.address),
            col(Facility.timezone),
            col(User.name) if names_bookers else sa.null(),
        ),
        subscription,
        shown_only=True,
    )
    if names_bookers:
        query = query.join(User, col(User.id) == Booking.user_id)
    rows = session.execute(query.order_by(col(Booking.start_at), col(Booking.id))).all()
    english = owner.locale == "en"
    events = []
    facts = len(BOOKING_FACTS)
    for row in rows:  # the booking's columns by name, as ics.BookingFacts reads them
        name, name_en, location, address, zone, booker = row[facts:]
        who = (booker if names_bookers else owner.name) if subscription.full_details else None
        events.append(
            ics.booking_event(
                row,
                instrument_name=(name_en or name) if english else name,
                location=location or address,
                host=host,
                locale=owner.locale,
                who=who,
                timezone=zone,
            )
        )
    return ics.feed(events, name=_feed_name(session, subscription))


@cache
def _state_queries(kind: FeedKind) -> tuple[Any, Any]:
    """For a kind of feed: the aggregate over its bookings, and the last change of the
    instruments and facilities its events name (no joins: a poll must stay cheap)."""
    bookings = _bookings_of(
        sa.select(
            sa.func.count(col(Booking.id)),
            sa.func.max(col(Booking.updated_at)),
            sa.func.coalesce(sa.func.sum(col(Booking.version)), 0),
            sa.func.max(col(Booking.id)),
        ),
        kind,
    )
    stamps = (
        sa.select(sa.func.max(col(Instrument.updated_at)), sa.func.max(col(Facility.updated_at)))
        .select_from(Instrument)
        .join(Facility, col(Facility.id) == Instrument.facility_id)
    )
    subject: sa.BindParameter[int] = sa.bindparam("subject_id")
    if kind is FeedKind.INSTRUMENT:
        return bookings, stamps.where(col(Instrument.id) == subject)
    if kind is FeedKind.FACILITY:
        return bookings, stamps.where(col(Facility.id) == subject)
    used = _bookings_of(sa.select(col(Booking.instrument_id)), kind).distinct()
    return bookings, stamps.where(col(Instrument.id).in_(used))


def _bookings_of(query: Any, kind: FeedKind) -> Any:
    """``query`` over all bookings of a feed's subject and days, shown or not (parameters:
    :func:`_window_params`)."""
    subject = {
        FeedKind.USER: Booking.user_id,
        FeedKind.INSTRUMENT: Booking.instrument_id,
        FeedKind.FACILITY: Booking.facility_id,
    }[kind]
    return query.select_from(Booking).where(
        col(subject) == sa.bindparam("subject_id"),
        col(Booking.start_at) < sa.bindparam("window_end"),
        col(Booking.end_at) > sa.bindparam("window_start"),
    )


def _window_params(subscription: Subscription) -> dict[str, Any]:
    return {
        "subject_id": subscription.feed.subject_id,
        "window_start": subscription.window_start,
        "window_end": subscription.window_end,
    }


def _joined(query: Any, subscription: Subscription, *, shown_only: bool) -> Any:
    """``query`` over the bookings of the feed's subject and days, joined to their instruments
    and facilities; ``shown_only``: just those the feed shows."""
    feed = subscription.feed
    query = (
        query.select_from(Booking)
        .join(Instrument, col(Instrument.id) == Booking.instrument_id)
        .join(Facility, col(Facility.id) == Booking.facility_id)
        .where(
            col(Booking.start_at) < subscription.window_end,
            col(Booking.end_at) > subscription.window_start,
        )
    )
    if feed.kind is FeedKind.USER:
        query = query.where(Booking.user_id == feed.subject_id)
        # A moved booking's replacement carries its calendar UID; the cancelled original must
        # not appear beside it as a second event with the same UID.
        return query.where(col(Booking.replaced_by_id).is_(None)) if shown_only else query
    if feed.kind is FeedKind.INSTRUMENT:
        query = query.where(Booking.instrument_id == feed.subject_id)
    else:
        query = query.where(Booking.facility_id == feed.subject_id)
    return query.where(col(Booking.status).in_(sorted(SHARED_STATUSES))) if shown_only else query


def _feed_name(session: Session, subscription: Subscription) -> str:
    feed, locale = subscription.feed, subscription.owner.locale
    if feed.kind is FeedKind.USER:
        return FEED_NAMES.get(locale, FEED_NAMES["en"])[FeedKind.USER]
    subject: Instrument | Facility | None = (
        session.get(Instrument, feed.subject_id)
        if feed.kind is FeedKind.INSTRUMENT
        else session.get(Facility, feed.subject_id)
    )
    if subject is None:
        raise NotFound("Calendar feed")
    return (subject.name_en or subject.name) if locale == "en" else subject.name
