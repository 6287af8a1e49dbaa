"""Booking operations: request, approve, reject, cancel, move, hand over, check in and out,
no-shows, expiry, walk-in use and usage corrections.

Invariants: bookings in a held status never overlap on one instrument, counting buffers (the
database refuses it: an exclusion constraint on PostgreSQL, a trigger and the write lock taken
by ``BEGIN IMMEDIATE`` on SQLite; the check here exists for a clear message); every problem of
a request is reported at once and only a lab manager of the facility overrides the overridable
ones, explicitly and audited; a status changes only along ``rules.TRANSITIONS``, with a
conditional update so two workers never apply the same transition twice; a move cancels and
replaces in one transaction; each change raises ``version``, writes an audit entry and an
outbox event in the caller's transaction.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, cast
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, func, select

from booking import rules
from booking.models import Booking, UsageRecord, WaitlistEntry, WaitlistStatus, is_held
from booking.rules import HELD_STATUSES, BookingStatus, OperatedBy
from booking.schemas import BookingCreate, UsageRecordCorrection, UsageRecordCreate
from core import audit, events
from core.accounts.models import User
from core.accounts.rules import Role
from core.auth.principal import Principal
from core.clock import now
from core.db import HotStatement, Preamble, as_loaded
from core.errors import (
    Conflict,
    DomainError,
    NotFound,
    PermissionDenied,
    Problem,
    RuleViolation,
    Throttled,
)
from core.settings import Settings
from instruments import queries as catalogue
from instruments import service as instruments
from instruments.models import Facility, Instrument
from instruments.rules import ApprovalMode, OperationMode

BOOKING_TABLE: sa.Table = Booking.__table__  # type: ignore[attr-defined]
_NEW_BOOKING_COLUMNS = frozenset(BOOKING_TABLE.c.keys()) - {"id"}


def _hot_rows(session: Session, statement: HotStatement, parameters: dict[str, Any]) -> list[Any]:
    """A hot statement's rows on the session's connection, after flushing what the session
    holds (as the ORM would): every booking request runs these small queries, and the ORM's
    handling of a statement costs more than the query itself."""
    session.flush()
    return statement.rows(session.connection(), parameters)


@dataclass(frozen=True)
class BookingPolicy:
    """Platform-wide booking settings (from ``core.settings``)."""

    pending_ttl: timedelta
    grace: timedelta
    suspension_threshold: int
    no_show_window: timedelta
    suspension: timedelta
    creations_per_minute: int

    @classmethod
    def from_settings(cls, settings: Settings) -> BookingPolicy:
        return cls(
            pending_ttl=timedelta(hours=settings.pending_request_ttl_hours),
            grace=timedelta(minutes=settings.check_in_grace_minutes),
            suspension_threshold=settings.no_show_suspension_threshold,
            no_show_window=timedelta(days=settings.no_show_window_days),
            suspension=timedelta(days=settings.suspension_days),
            creations_per_minute=settings.booking_creations_per_minute,
        )


def booking_payload(booking: Booking) -> dict[str, Any]:
    return _payload_of_columns(booking.id, {name: getattr(booking, name) for name in _PAYLOAD})


_PAYLOAD = ("instrument_id", "facility_id", "user_id", "start_at", "end_at", "status", "version")


def _payload_of_columns(booking_id: int | None, columns: dict[str, Any]) -> dict[str, Any]:
    return {
        "booking_id": booking_id,
        "instrument_id": columns["instrument_id"],
        "facility_id": columns["facility_id"],
        "user_id": columns["user_id"],
        "start": columns["start_at"].isoformat(),
        "end": columns["end_at"].isoformat(),
        "status": columns["status"],
        "version": columns["version"],
    }


_ENTRY_PARAMETERS = (
    "occurred_at",
    "actor_id",
    "action",
    "subject_type",
    "subject_id",
    "data",
    "request_id",
)


@functools.cache
def _audit_and_event() -> tuple[HotStatement, HotStatement, HotStatement]:
    """The INSERTs of a change's audit entry, of its outbox event, and of both in one statement
    (PostgreSQL: the entry a data-modifying CTE of the event's INSERT)."""
    entry_table: sa.Table = audit.AuditEntry.__table__  # type: ignore[attr-defined]
    event_table: sa.Table = events.OutboxEvent.__table__  # type: ignore[attr-defined]
    insert_entry = sa.insert(entry_table).values(
        {name: sa.bindparam(name) for name in _ENTRY_PARAMETERS}
    )
    insert_event = sa.insert(event_table).values(
        topic=sa.bindparam("topic"),
        payload=sa.bindparam("payload"),
        dedupe_key=None,
        status=events.EventStatus.PENDING,
        attempts=0,
        created_at=sa.bindparam("occurred_at"),
        available_at=sa.bindparam("occurred_at"),
    )
    both = insert_event.add_cte(insert_entry.cte("booking_audit_entry"))
    return HotStatement(insert_entry), HotStatement(insert_event), HotStatement(both)


@dataclass(frozen=True)
class Recorded:
    """How a new booking is recorded: its audit entry's and outbox event's action (``booking.``
    + ``action``), who acted, and what else they say."""

    action: str
    actor_id: int | None
    data: dict[str, Any]


def record_change(
    session: Session, booking: Booking, *, actor_id: int | None, action: str, **data: Any
) -> None:
    """Audit and announce a booking's change in the current transaction.

    The same rows as ``audit.record`` and ``events.emit`` write, as plain INSERTs: on the hot
    path the ORM's objects and flushes cost several times the statements themselves.
    """
    parameters = _change_parameters(
        booking.id or 0, booking.status, booking_payload(booking), Recorded(action, actor_id, data)
    )
    insert_entry, insert_event, both = _audit_and_event()
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        # One round trip to the server, not two, for every change of every booking.
        both.rows(connection, parameters)
    else:
        insert_entry.rows(connection, parameters)
        insert_event.rows(connection, parameters)


def _change_parameters(
    booking_id: int | None, status: BookingStatus, payload: dict[str, Any], change: Recorded
) -> dict[str, Any]:
    """The bound values of a change's audit entry and outbox event (``booking_id`` None: the
    statement fills it in)."""
    return {
        "occurred_at": now(),
        "actor_id": change.actor_id,
        "action": f"booking.{change.action}",
        "subject_type": "booking",
        "subject_id": None if booking_id is None else str(booking_id),
        "data": {"status": status, **change.data},
        "request_id": audit.current_request_id.get(),
        "topic": f"booking.{change.action}",
        "payload": payload | change.data,
    }


# --- Who may see and do what ---------------------------------------------------------------


def _manages(actor: Principal | None, facility_id: int) -> bool:
    return actor is None or actor.manages_facility(facility_id)


def visible_booking(session: Session, *, actor: Principal | None, booking_id: int) -> Booking:
    """The booking if the actor may see it: its owner, the facility's managers, planners and
    admins; anyone else gets 404, as for a missing one."""
    booking = session.get(Booking, booking_id)
    if booking is None:
        raise NotFound("Booking")
    if actor is None or actor.reads_everything or booking.user_id == actor.user_id:
        return booking
    if actor.manages_facility(booking.facility_id):
        return booking
    raise NotFound("Booking")


def _require_manager(actor: Principal | None, booking: Booking, action: str) -> None:
    if not _manages(actor, booking.facility_id):
        raise PermissionDenied(f"Only a lab manager of the facility may {action} a booking.")


def _require_owner_or_manager(actor: Principal | None, booking: Booking, action: str) -> None:
    if (
        actor is not None
        and booking.user_id != actor.user_id
        and not _manages(actor, booking.facility_id)
    ):
        raise PermissionDenied(f"Only the booker or a lab manager may {action} this booking.")


def _require_status(booking: Booking, action: str) -> None:
    if booking.status not in rules.TRANSITIONS[action]:
        status = str(booking.status).replace("_", " ")
        raise Conflict(
            f"You cannot {action.replace('_', ' ')} this booking: its status is {status}.",
            code="wrong_status",
        )


def _transition(
    session: Session, booking: Booking, action: str, to: BookingStatus, **values: Any
) -> None:
    """Change status with a conditional update: of two racing callers, exactly one wins."""
    allowed = rules.TRANSITIONS[action]
    changes = {"status": to, "version": Booking.version + 1, "updated_at": now(), **values}
    result = session.execute(
        sa.update(Booking)
        .where(col(Booking.id) == booking.id, col(Booking.status).in_(list(allowed)))
        .values(**changes)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise Conflict("The booking changed meanwhile; reload and try again.", code="wrong_status")
    session.refresh(booking)


# --- Requests ------------------------------------------------------------------------------


def _week_bounds(moment: datetime, zone: str) -> tuple[datetime, datetime]:
    local = moment.astimezone(ZoneInfo(zone))
    monday = (local - timedelta(days=local.weekday())).replace(
        hour=0, minute=0, second=0, microsecond=0
    )
    return monday, monday + timedelta(days=7)


def _held_hours(session: Session, condition: Any, start: datetime, end: datetime) -> float:
    statuses = [*HELD_STATUSES, BookingStatus.COMPLETED]
    rows = session.execute(
        sa.select(col(Booking.start_at), col(Booking.end_at)).where(
            condition,
            col(Booking.status).in_(statuses),
            col(Booking.start_at) < end,
            col(Booking.end_at) > start,
        )
    ).all()
    return sum((min(e, end) - max(s, start)).total_seconds() / 3600 for s, e in rows)


class _QuotaLimits(Protocol):
    """An instrument's quotas (the instrument, or a row of its columns)."""

    id: int | None
    user_weekly_hours_limit: int | None
    organisation_weekly_hours_limit: int | None
    user_future_bookings_limit: int | None


# The first key of PostgreSQL advisory locks on an instrument's quotas (the second: its id).
QUOTA_LOCK_SPACE = 0x4C53_0001
RATE_LOCK_SPACE = 0x4C53_0002


@functools.cache
def _quota_lock() -> Any:
    return sa.select(sa.func.pg_advisory_xact_lock(QUOTA_LOCK_SPACE, sa.bindparam("instrument_id")))


def _one_quota_check_at_a_time(session: Session, instrument_id: int) -> None:
    """Wait until no other transaction is checking or booking against this instrument's quotas.

    Two requests that each fit a quota but not together would otherwise both pass it on
    PostgreSQL, each counting before the other's booking is written; behind the lock (held to
    the end of the transaction) the later one counts the earlier one's booking, committed by
    then (READ COMMITTED reads anew in each statement). On SQLite every writer already waits
    for the others (``BEGIN IMMEDIATE``).
    """
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        connection.execute(_quota_lock(), {"instrument_id": instrument_id})


def _quota_problems(
    session: Session,
    *,
    instrument: _QuotaLimits,
    zone: str,
    user_id: int,
    organisation_id: int | None,
    start: datetime,
    end: datetime,
    ignore_booking_id: int | None = None,
) -> list[Problem]:
    limits = (
        instrument.user_weekly_hours_limit,
        instrument.organisation_weekly_hours_limit,
        instrument.user_future_bookings_limit,
    )
    if all(limit is None for limit in limits):
        return []
    _one_quota_check_at_a_time(session, instrument.id or 0)
    problems = []
    hours = (end - start).total_seconds() / 3600
    week_start, week_end = _week_bounds(start, zone)
    # A booking being moved is replaced, not added to: it does not count against its move.
    on_instrument = (col(Booking.instrument_id) == instrument.id) & (
        col(Booking.id) != (ignore_booking_id or 0)
    )
    if instrument.user_weekly_hours_limit is not None:
        used = _held_hours(
            session, on_instrument & (col(Booking.user_id) == user_id), week_start, week_end
        )
        if used + hours > instrument.user_weekly_hours_limit:
            problems.append(
                Problem(
                    "quota_user_hours",
                    f"You may hold {instrument.user_weekly_hours_limit} h a week on this "
                    f"instrument; {used:g} h are booked.",
                    "end",
                    True,
                )
            )
    if organisation_id is not None and instrument.organisation_weekly_hours_limit is not None:
        used = _held_hours(
            session,
            on_instrument & (col(Booking.organisation_id) == organisation_id),
            week_start,
            week_end,
        )
        if used + hours > instrument.organisation_weekly_hours_limit:
            problems.append(
                Problem(
                    "quota_organisation_hours",
                    f"Your organisation may hold {instrument.organisation_weekly_hours_limit} h "
                    "a week on this instrument.",
                    "end",
                    True,
                )
            )
    if instrument.user_future_bookings_limit is not None:
        upcoming = session.exec(
            select(func.count())
            .select_from(Booking)
            .where(
                on_instrument,
                col(Booking.user_id) == user_id,
                col(Booking.status).in_(list(HELD_STATUSES)),
                col(Booking.start_at) > now(),
            )
        ).one()
        if upcoming >= instrument.user_future_bookings_limit:
            problems.append(
                Problem(
                    "quota_future_bookings",
                    f"You may hold {instrument.user_future_bookings_limit} upcoming bookings "
                    "on this instrument.",
                    "start",
                    True,
                )
            )
    return problems


def suspension_until(session: Session, *, user_id: int, policy: BookingPolicy) -> datetime | None:
    """When a user's booking rights return after repeated no-shows, or None if not suspended."""
    return _rate_and_suspension(session, creator_id=None, user_id=user_id, policy=policy)


def _suspended_until(
    no_shows: int, newest_no_show: datetime | None, policy: BookingPolicy, current: datetime
) -> datetime | None:
    """The end of a suspension, from the no-shows in the window (how many, the newest start)."""
    if no_shows < policy.suspension_threshold or newest_no_show is None:
        return None
    until = newest_no_show + policy.suspension
    return until if until > current else None


def _count_up_to(condition: Any, limit: str) -> Any:
    """How many bookings meet ``condition``, counted up to the bound parameter ``limit``: the
    rules only ask whether a limit is reached. Bounded, the count is cheap to plan as well as to
    run, so PostgreSQL keeps one plan for the request's statement instead of planning it anew on
    every request (unbounded, its generic plan was estimated four times the cost)."""
    some = sa.select(sa.literal(1)).select_from(BOOKING_TABLE).where(condition)
    return sa.select(sa.func.count()).select_from(
        some.limit(sa.bindparam(limit, type_=sa.Integer)).subquery()
    )


@functools.cache
def _standing_columns() -> tuple[Any, Any, Any]:
    """What every booking request checks first, as scalar subqueries: the requests its creator
    made in the last minute (none for no one; counted up to the rate limit), and the booked
    user's recent no-shows (how many, up to the suspension threshold; the newest start)."""
    booking = BOOKING_TABLE.c
    recent_no_show = sa.and_(
        booking.user_id == sa.bindparam("user_id"),
        booking.status == BookingStatus.NO_SHOW,
        booking.start_at >= sa.bindparam("no_show_since"),
    )
    return (
        _creations_since().scalar_subquery().label("made"),
        _count_up_to(recent_no_show, "no_show_threshold").scalar_subquery().label("no_shows"),
        sa.select(sa.func.max(booking.start_at))
        .where(recent_no_show)
        .scalar_subquery()
        .label("newest_no_show"),
    )


@functools.cache
def _standing() -> HotStatement:
    return HotStatement(sa.select(*_standing_columns()))


def _standing_parameters(
    creator_id: int | None, user_id: int, policy: BookingPolicy, current: datetime
) -> dict[str, Any]:
    return _rate_parameters(creator_id, policy, current) | {
        "user_id": user_id,
        "no_show_since": current - policy.no_show_window,
        "no_show_threshold": policy.suspension_threshold,
    }


def _standing_answer(
    row: Any, *, creator_id: int | None, policy: BookingPolicy, current: datetime
) -> datetime | None:
    """429 for a creator over the rate limit; else when the booked user's suspension ends."""
    if creator_id is not None and row.made >= policy.creations_per_minute:
        raise _throttled()
    return _suspended_until(row.no_shows, row.newest_no_show, policy, current)


def _rate_and_suspension(
    session: Session, *, creator_id: int | None, user_id: int, policy: BookingPolicy
) -> datetime | None:
    """Refuse (429) a creator over the rate limit (None: nobody's requests are counted);
    else when the booked user's suspension ends, or None."""
    current = now()
    parameters = _standing_parameters(creator_id, user_id, policy, current)
    (row,) = _hot_rows(session, _standing(), parameters)
    return _standing_answer(row, creator_id=creator_id, policy=policy, current=current)


def _suspension_problems(until: datetime | None, *, whose: str) -> list[Problem]:
    if until is None:
        return []
    message = f"{whose} are suspended after repeated no-shows until {until.isoformat()}."
    return [Problem("suspended", message, "user_id", True)]


@functools.cache
def _overlapping() -> Any:
    return (
        select(Booking)
        .where(
            col(Booking.instrument_id) == sa.bindparam("instrument_id"),
            col(Booking.status).in_(list(HELD_STATUSES)),
            col(Booking.start_at) < sa.bindparam("until"),
            col(Booking.held_until) > sa.bindparam("start"),
        )
        .order_by(col(Booking.start_at))
    )


def overlapping(
    session: Session, instrument_id: int, start: datetime, until: datetime
) -> list[Booking]:
    """Held bookings of the instrument whose held range meets ``[start, until)``."""
    parameters = {"instrument_id": instrument_id, "start": start, "until": until}
    return list(session.execute(_overlapping(), parameters).scalars().all())


@functools.cache
def _held_ranges_meeting() -> HotStatement:
    """What a refused overlap names: the held ranges of the instrument's bookings meeting
    ``[start, until)``, as (start_at, held_until) rows."""
    booking = BOOKING_TABLE.c
    return HotStatement(
        sa.select(booking.start_at, booking.held_until)
        .where(
            booking.instrument_id == sa.bindparam("instrument_id"),
            is_held(booking.status),
            booking.start_at < sa.bindparam("until"),
            booking.held_until > sa.bindparam("start"),
        )
        .order_by(booking.start_at)
    )


class _HeldRange(Protocol):
    start_at: datetime
    held_until: datetime


def _overlap_problems(found: Sequence[_HeldRange]) -> list[Problem]:
    # The interval, never who holds it: other researchers' bookings are private.
    return [
        Problem(
            "overlap",
            f"The instrument is booked from {b.start_at.isoformat()} "
            f"to {b.held_until.isoformat()}.",
            "start",
        )
        for b in found
    ]


@functools.cache
def _insert_booking(dialect: str) -> HotStatement:
    """INSERT … RETURNING id of every column but the id, built once. On PostgreSQL ``ON
    CONFLICT DO NOTHING`` lets the exclusion constraint refuse an overlap with no row instead
    of an error (an erroring insert deadlocks under contention, this one does not)."""
    columns: dict[str, Any] = {name: sa.bindparam(name) for name in sorted(_NEW_BOOKING_COLUMNS)}
    if dialect == "postgresql":
        return HotStatement(
            pg_insert(BOOKING_TABLE)
            .values(columns)
            .on_conflict_do_nothing()
            .returning(BOOKING_TABLE.c.id)
        )
    return HotStatement(sa.insert(BOOKING_TABLE).values(columns).returning(BOOKING_TABLE.c.id))


@functools.cache
def _insert_booking_recorded() -> HotStatement:
    """PostgreSQL: a held booking's INSERT with its audit entry and outbox event, one statement
    (data-modifying CTEs) answering the new booking's id (and no held ranges); for an overlap,
    when neither entry nor event is written, the held ranges it meets (id None)."""
    entry_table: sa.Table = audit.AuditEntry.__table__  # type: ignore[attr-defined]
    event_table: sa.Table = events.OutboxEvent.__table__  # type: ignore[attr-defined]
    change_parameters = {*_ENTRY_PARAMETERS, "topic", "payload"}
    if change_parameters & _NEW_BOOKING_COLUMNS:
        raise TypeError(f"booking columns named like change parameters: {change_parameters}")

    def bound(table: sa.Table, column: str, name: str | None = None) -> Any:
        return sa.bindparam(name or column, type_=table.c[column].type)

    new_booking = (
        pg_insert(BOOKING_TABLE)
        .values({name: sa.bindparam(name) for name in sorted(_NEW_BOOKING_COLUMNS)})
        .on_conflict_do_nothing()
        .returning(BOOKING_TABLE.c.id)
        .cte("new_booking")
    )
    entry = sa.insert(entry_table).from_select(
        list(_ENTRY_PARAMETERS),
        sa.select(
            *(
                sa.cast(new_booking.c.id, sa.String)
                if name == "subject_id"
                else bound(entry_table, name)
                for name in _ENTRY_PARAMETERS
            )
        ),
    )
    payload = sa.cast(
        sa.bindparam("payload", type_=JSONB).op("||")(
            sa.func.jsonb_build_object("booking_id", new_booking.c.id)
        ),
        event_table.c.payload.type,
    )
    event = sa.insert(event_table).from_select(
        ["topic", "payload", "status", "attempts", "created_at", "available_at"],
        sa.select(
            bound(event_table, "topic"),
            payload,
            sa.literal(events.EventStatus.PENDING, event_table.c.status.type),
            sa.literal(0),
            bound(event_table, "created_at", "occurred_at"),
            bound(event_table, "available_at", "occurred_at"),
        ),
    )
    # For an overlap, the held ranges met, as the statement's snapshot sees them: the 409
    # names them without another round trip.
    booking = BOOKING_TABLE.c
    met = sa.select(
        sa.cast(sa.null(), booking.id.type),
        booking.start_at,
        booking.held_until,
    ).where(
        ~sa.exists(sa.select(new_booking.c.id)),
        booking.instrument_id == sa.bindparam("instrument_id"),
        is_held(booking.status),
        booking.start_at < sa.bindparam("held_until"),
        booking.held_until > sa.bindparam("start_at"),
    )
    inserted = sa.select(
        new_booking.c.id,
        sa.cast(sa.null(), booking.start_at.type).label("start_at"),
        sa.cast(sa.null(), booking.held_until.type).label("held_until"),
    )
    return HotStatement(
        sa.union_all(inserted, met)
        .add_cte(entry.cte("new_booking_audit_entry"))
        .add_cte(event.cte("new_booking_event"))
    )


@functools.cache
def _booking_defaults() -> tuple[dict[str, Any], dict[str, Callable[[], Any]]]:
    """The model's defaults of a booking's columns: values, and factories called per booking."""
    values: dict[str, Any] = {}
    factories: dict[str, Callable[[], Any]] = {}
    for name, field in Booking.model_fields.items():
        if name == "id" or field.is_required():
            continue
        if field.default_factory is not None:
            factories[name] = cast(Callable[[], Any], field.default_factory)
        else:
            values[name] = field.default
    return values, factories


def insert_held(session: Session, *, recorded: Recorded | None = None, **columns: Any) -> Booking:
    """Insert a held booking with these columns (the model's defaults for the others); the
    database refuses an overlap (409), whatever raced us. ``recorded`` writes the booking's
    audit entry and outbox event too (on PostgreSQL in the same statement: one round trip).

    One statement, without the ORM's unit of work (nor the model's ``__init__``): the booking
    then joins the session as the persistent row it is (times in UTC, as read back). On SQLite
    the overlap trigger aborts only the INSERT itself, so the transaction goes on to name the
    conflict.
    """
    defaults, factories = _booking_defaults()
    values = defaults | {name: make() for name, make in factories.items() if name not in columns}
    values |= columns
    if values.keys() != _NEW_BOOKING_COLUMNS:
        raise TypeError(f"booking columns wrong or missing: {sorted(values)}")
    for key, value in values.items():
        if isinstance(value, datetime) and value.tzinfo is not UTC:
            values[key] = value.astimezone(UTC)
    values["overrides"] = list(values["overrides"])
    connection = session.connection()
    dialect = connection.dialect.name
    recorded_here = recorded if dialect == "postgresql" else None
    if recorded_here is not None:
        statement = _insert_booking_recorded()
        payload = _payload_of_columns(None, values)
        parameters = values | _change_parameters(None, values["status"], payload, recorded_here)
    else:
        statement, parameters = _insert_booking(dialect), values
    try:
        inserted = statement.rows(connection, parameters)
    except IntegrityError as exc:
        if "overlap" not in str(exc.orig):
            raise
        inserted = []
    booking_id = next((row.id for row in inserted if row.id is not None), None)
    if booking_id is None:
        # The held ranges the insert met, if it answers them (the recorded one does); where
        # it does not, or met only a booking committed after its snapshot was taken (it
        # waited for it), a statement of their own.
        found = sorted(inserted, key=lambda met: met.start_at) or _hot_rows(
            session,
            _held_ranges_meeting(),
            {
                "instrument_id": values["instrument_id"],
                "start": values["start_at"],
                "until": values["held_until"],
            },
        )
        raise Conflict(
            "The time is already booked.", code="overlap", problems=_overlap_problems(found)
        )
    # A savepoint rolled back earlier may have left a booking with this (reused) id behind.
    booking = as_loaded(session, Booking, values | {"id": booking_id}, replacing=True)
    if recorded is not None and recorded_here is None:
        record_change(
            session, booking, actor_id=recorded.actor_id, action=recorded.action, **recorded.data
        )
    return booking


@dataclass(frozen=True)
class _Checked:
    facility_id: int
    organisation_id: int | None  # the booked user's
    buffer_minutes: int
    status: BookingStatus
    overridden: list[str]


@functools.cache
def _request_terms() -> HotStatement:
    """Everything a booking request is checked against, in one statement: the instrument's
    calendar rows (a row per outage in the window), with its rules and quotas, the booked
    user, whether the user holds a valid qualification, and the standing every request checks
    first (bound: ``instrument_id``, ``start``/``end`` of the window, ``user_id``,
    ``qualified_at``, and the standing's parameters)."""
    instrument: sa.Table = Instrument.__table__  # type: ignore[attr-defined]
    user: sa.Table = User.__table__  # type: ignore[attr-defined]
    i = instrument.c
    qualified = sa.exists().where(
        instruments.qualification_valid_at(
            sa.bindparam("user_id"), i.id, sa.bindparam("qualified_at")
        )
    )
    return HotStatement(
        catalogue.calendar_rows(one_instrument=True)
        .add_columns(
            i.operation_mode,
            i.requires_qualification,
            i.approval_mode,
            i.min_duration_minutes,
            i.max_duration_minutes,
            i.max_advance_days,
            i.min_notice_minutes,
            i.unattended_runs_allowed,
            i.user_weekly_hours_limit,
            i.organisation_weekly_hours_limit,
            i.user_future_bookings_limit,
            user.c.id.label("user_id"),
            user.c.is_active.label("user_active"),
            user.c.organisation_id.label("user_organisation_id"),
            sa.case((i.requires_qualification, qualified), else_=sa.true()).label("qualified"),
            *_standing_columns(),
        )
        .outerjoin(user, user.c.id == sa.bindparam("user_id"))
    )


def _generic_plans() -> Any:
    return sa.func.set_config("plan_cache_mode", "force_generic_plan", sa.true())


def _terms_setup_columns(creator_id: Any) -> list[Any]:
    return [_generic_plans(), _rate_lock_column(creator_id)]


TERMS_SETUP = Preamble(_terms_setup_columns, frozenset({"postgresql"}))
"""A booking request's setup for its terms (``_set_up_for_terms``), for the request's creator,
as a preamble of the request's first statement: the API finds the caller with it."""


@functools.cache
def _terms_setup(rate_locked: bool) -> HotStatement:
    if rate_locked:
        return HotStatement(sa.select(*_terms_setup_columns(sa.bindparam("creator_id"))))
    return HotStatement(sa.select(_generic_plans()))


def _set_up_for_terms(session: Session, rate_limited_creator: int | None) -> None:
    """On PostgreSQL, in one statement before the terms (one round trip), unless the
    transaction's first statement did it already (``TERMS_SETUP``): their generic plan for the
    rest of the transaction, and for a rate-limited creator the rate lock
    (``_one_rate_count_at_a_time``).

    The terms' plan does not depend on their values, but over many bookings PostgreSQL
    planned them anew on every run (0.6 ms, the run 0.1 ms): its estimate of the generic plan
    is off. Prepared statements run on their generic plan once ``plan_cache_mode`` says so;
    set locally, the setting ends with the transaction.
    """
    if session.get_bind().dialect.name != "postgresql":
        return
    # The preamble locks for its subject whether or not the subject is rate-limited.
    set_up_for = TERMS_SETUP.ran_for(session)
    if set_up_for is not None and rate_limited_creator in (None, set_up_for):
        return
    setup = _terms_setup(rate_locked=rate_limited_creator is not None)
    _hot_rows(session, setup, {"creator_id": rate_limited_creator})


def check_request(
    session: Session,
    *,
    actor: Principal | None,
    instrument_id: int,
    user_id: int,
    start: datetime,
    end: datetime,
    operated_by: OperatedBy,
    override: Sequence[str],
    policy: BookingPolicy,
    ignore_booking_id: int | None = None,
    check_overlap: bool = True,
    also: Sequence[Problem] = (),
    rate_limited_creator: int | None = None,
) -> _Checked:
    """Check a request against every rule; ``also`` adds the caller's own problems, which are
    reported and may be overridden like the others. A new request names the user whose
    requests are rate-limited (``rate_limited_creator``): over the limit is 429 before
    anything else is checked."""
    if start.tzinfo is None or end.tzinfo is None:
        raise RuleViolation([Problem("naive_time", "Times need an offset.", "start")])
    current = now()
    # Opening hours and outages a day either side: a booking's slots and days are local.
    window_start, window_end = start - timedelta(days=1), end + timedelta(days=1)
    parameters = _standing_parameters(rate_limited_creator, user_id, policy, current) | {
        "instrument_id": instrument_id,
        "start": window_start,
        "end": window_end,
        "qualified_at": max(current, end),
    }
    _set_up_for_terms(session, rate_limited_creator)
    rows = _hot_rows(session, _request_terms(), parameters)
    if not rows:
        # Too many requests is still the first answer, even for a missing instrument.
        _rate_and_suspension(
            session, creator_id=rate_limited_creator, user_id=user_id, policy=policy
        )
        raise NotFound("Instrument")
    terms = rows[0]
    suspended_until = _standing_answer(
        terms, creator_id=rate_limited_creator, policy=policy, current=current
    )
    calendar = catalogue.calendars_of_rows(session, rows)[instrument_id]
    if not calendar.bookable:
        raise Conflict(
            f"The instrument is {terms.status} and cannot be booked.", code="not_bookable"
        )
    if terms.user_id is None or not terms.user_active:
        raise RuleViolation([Problem("unknown_user", "No such active user.", "user_id")])
    manager = actor is None or actor.manages_facility(terms.facility_id)
    if override and not manager:
        raise PermissionDenied("Only a lab manager of the facility may override booking rules.")

    problems: list[Problem] = list(also)
    if operated_by is OperatedBy.SELF and terms.operation_mode == OperationMode.STAFF_OPERATED:
        problems.append(
            Problem(
                "staff_only", "Only the facility's staff operate this instrument.", "operated_by"
            )
        )
    if operated_by is OperatedBy.STAFF and terms.operation_mode == OperationMode.SELF_OPERATED:
        problems.append(
            Problem("self_only", "This instrument is operated by its users.", "operated_by")
        )
    qualified = bool(terms.qualified)
    if operated_by is OperatedBy.SELF and not qualified and not problems:
        raise PermissionDenied(
            "Operating this instrument yourself needs a valid qualification (training). "
            "Ask the facility, or request staff operation.",
            code="not_qualified",
        )
    booking_rules = rules.InstrumentBookingRules(
        slot_minutes=terms.slot_minutes,
        min_duration_minutes=terms.min_duration_minutes,
        max_duration_minutes=terms.max_duration_minutes,
        max_advance_days=terms.max_advance_days,
        min_notice_minutes=terms.min_notice_minutes,
        buffer_minutes=terms.buffer_minutes,
        unattended_runs_allowed=terms.unattended_runs_allowed,
        zone=calendar.facility.zone,
    )
    problems += rules.request_problems(
        start=start,
        end=end,
        now=current,
        rules=booking_rules,
        open_intervals=calendar.open_intervals(window_start, window_end),
        outages=calendar.outages,
    )
    if not any(p.code == "end_not_after_start" for p in problems):
        problems += _quota_problems(
            session,
            instrument=terms,
            zone=terms.timezone,
            user_id=user_id,
            organisation_id=terms.user_organisation_id,
            start=start,
            end=end,
            ignore_booking_id=ignore_booking_id,
        )
        problems += _suspension_problems(suspended_until, whose="Booking rights")
    overridden = [p.code for p in problems if p.overridable and p.code in override]
    problems = [p for p in problems if not (p.overridable and p.code in override)]
    unknown = [code for code in override if code not in overridden]
    if unknown:
        problems.append(
            Problem("unknown_override", f"Nothing to override: {', '.join(unknown)}.", "override")
        )
    taken: list[Booking] = []
    # The insert finds an overlap itself (PostgreSQL: ON CONFLICT DO NOTHING against the
    # exclusion constraint; SQLite: the trigger aborts the INSERT alone), so a caller that
    # writes nothing before it may leave the check to it; with other problems an overlap is
    # listed among them.
    if end > start and (problems or check_overlap):
        taken = [
            b
            for b in overlapping(
                session, instrument_id, start, rules.held_until(end, terms.buffer_minutes)
            )
            if b.id != ignore_booking_id
        ]
    if problems:
        raise RuleViolation(problems + _overlap_problems(taken))
    if taken:
        raise Conflict(
            "The time is already booked.", code="overlap", problems=_overlap_problems(taken)
        )

    automatic = terms.approval_mode == ApprovalMode.AUTOMATIC_FOR_QUALIFIED
    confirmed = manager or (automatic and operated_by is OperatedBy.SELF and qualified)
    status = BookingStatus.CONFIRMED if confirmed else BookingStatus.PENDING
    return _Checked(
        terms.facility_id, terms.user_organisation_id, terms.buffer_minutes, status, overridden
    )


def organisation_of(session: Session, user_id: int) -> int | None:
    return session.exec(select(User.organisation_id).where(User.id == user_id)).first()


def _offer_freed_time(session: Session, booking: Booking) -> None:
    """Held time was freed: the waitlist may offer it to someone (imported here, late, because
    the waitlist module builds on this one)."""
    from booking import waitlist

    waitlist.offer_freed_time(
        session,
        instrument_id=booking.instrument_id,
        start=booking.start_at,
        until=booking.held_until,
    )


@functools.cache
def _creations_since() -> Any:
    """The booking requests a creator made since a moment, counted up to the rate limit."""
    booking = BOOKING_TABLE.c
    return _count_up_to(
        sa.and_(
            booking.created_by_id == sa.bindparam("creator_id"),
            booking.created_at > sa.bindparam("created_since"),
        ),
        "rate_limit",
    )


@functools.cache
def _creations_counted() -> HotStatement:
    return HotStatement(_creations_since())


def _rate_parameters(
    creator_id: int | None, policy: BookingPolicy, current: datetime
) -> dict[str, Any]:
    return {
        "creator_id": creator_id,
        "created_since": _rate_window_start(current),
        "rate_limit": policy.creations_per_minute,
    }


def _rate_window_start(current: datetime) -> datetime:
    # Half-open: a request made exactly a minute ago no longer counts, as Retry-After promises.
    return current - timedelta(minutes=1)


def _throttled() -> Throttled:
    return Throttled(
        "Too many booking requests; wait a minute.", retry_after_s=60, code="booking_rate"
    )


def _rate_lock_column(creator_id: Any) -> Any:
    """PostgreSQL's lock on a creator's booking requests, held to the end of the transaction."""
    return sa.func.pg_advisory_xact_lock(RATE_LOCK_SPACE, creator_id)


@functools.cache
def _rate_lock() -> HotStatement:
    return HotStatement(sa.select(_rate_lock_column(sa.bindparam("creator_id"))))


def _one_rate_count_at_a_time(session: Session, creator_id: int) -> None:
    """Wait until no other transaction is counting or making this creator's booking requests.

    As for the quotas (``_one_quota_check_at_a_time``): on PostgreSQL two racing requests
    would each count the creator's requests before the other's was written, and both pass
    the limit's last place; behind the lock (to the end of the transaction) the later one
    counts the earlier one's. Taken in a statement before the one that counts (a booking
    request's: with the terms' setup, ``_set_up_for_terms``): READ COMMITTED sees what
    committed before each statement starts, not what commits while it waits for a lock.
    On SQLite every writer already waits for the others.
    """
    if session.get_bind().dialect.name == "postgresql":
        _hot_rows(session, _rate_lock(), {"creator_id": creator_id})


def check_rate(session: Session, *, user_id: int, policy: BookingPolicy) -> None:
    """Refuse (429) a user who made too many booking requests in the last minute."""
    _one_rate_count_at_a_time(session, user_id)
    parameters = _rate_parameters(user_id, policy, now())
    ((made,),) = _hot_rows(session, _creations_counted(), parameters)
    if made >= policy.creations_per_minute:
        raise _throttled()


def create_booking(
    session: Session,
    *,
    actor: Principal | None,
    data: BookingCreate,
    policy: BookingPolicy,
    rate_limited: bool = True,
) -> Booking:
    """Request a booking; confirmed at once where the instrument allows it, else pending.

    ``rate_limited=False`` is for the occurrences of a series, which count as one request.
    """
    user_id = data.user_id if data.user_id is not None else (actor.user_id if actor else None)
    if user_id is None:
        raise RuleViolation([Problem("required", "Name the user to book for.", "user_id")])
    if actor is not None and user_id != actor.user_id:
        facility_id = catalogue.instrument_with_facility(session, data.instrument_id)[1].id or 0
        if not actor.manages_facility(facility_id):
            raise PermissionDenied("Only a lab manager of the facility books for other users.")
    # A series' occurrences count as one request; lab managers and admins are not limited.
    rate_limited_creator = None
    if rate_limited and actor is not None and not (actor.managed_facility_ids or actor.is_admin):
        rate_limited_creator = actor.user_id
    checked = check_request(
        session,
        actor=actor,
        instrument_id=data.instrument_id,
        user_id=user_id,
        start=data.start,
        end=data.end,
        operated_by=data.operated_by,
        override=data.override,
        policy=policy,
        # Nothing is written before the insert, which refuses an overlap itself (409).
        check_overlap=False,
        rate_limited_creator=rate_limited_creator,
    )
    current = now()
    return insert_held(
        session,
        instrument_id=data.instrument_id,
        facility_id=checked.facility_id,
        user_id=user_id,
        organisation_id=checked.organisation_id,
        start_at=data.start,
        end_at=data.end,
        held_until=rules.held_until(data.end, checked.buffer_minutes),
        status=checked.status,
        operated_by=data.operated_by,
        purpose=data.purpose,
        charge_account=data.charge_account,
        sample_count=data.sample_count,
        overrides=checked.overridden,
        expires_at=min(current + policy.pending_ttl, data.start)
        if checked.status is BookingStatus.PENDING
        else None,
        created_by_id=actor.user_id if actor else None,
        created_at=current,
        updated_at=current,
        recorded=Recorded(
            "confirmed" if checked.status is BookingStatus.CONFIRMED else "requested",
            actor_id=actor.user_id if actor else None,
            data={"overrides": checked.overridden},
        ),
    )


# --- Decisions and changes -----------------------------------------------------------------


def approve(session: Session, *, actor: Principal | None, booking_id: int) -> Booking:
    booking = visible_booking(session, actor=actor, booking_id=booking_id)
    _require_manager(actor, booking, "approve")
    _require_status(booking, "approve")
    if booking.expires_at is not None and booking.expires_at <= now():
        raise Conflict("The request has expired; the booker may ask again.", code="request_expired")
    _transition(
        session,
        booking,
        "approve",
        BookingStatus.CONFIRMED,
        decided_by_id=actor.user_id if actor else None,
        decided_at=now(),
        expires_at=None,
    )
    record_change(session, booking, actor_id=actor.user_id if actor else None, action="confirmed")
    return booking


def reject(session: Session, *, actor: Principal | None, booking_id: int, reason: str) -> Booking:
    booking = visible_booking(session, actor=actor, booking_id=booking_id)
    _require_manager(actor, booking, "reject")
    _require_status(booking, "reject")
    _transition(
        session,
        booking,
        "reject",
        BookingStatus.REJECTED,
        decided_by_id=actor.user_id if actor else None,
        decided_at=now(),
        reason=reason,
    )
    record_change(
        session,
        booking,
        actor_id=actor.user_id if actor else None,
        action="rejected",
        reason=reason,
    )
    _offer_freed_time(session, booking)
    return booking


def cancel(
    session: Session, *, actor: Principal | None, booking_id: int, reason: str = ""
) -> Booking:
    """Cancel: free before the instrument's deadline, a late cancellation after it."""
    booking = visible_booking(session, actor=actor, booking_id=booking_id)
    _require_owner_or_manager(actor, booking, "cancel")
    by_manager = actor is not None and booking.user_id != actor.user_id
    if by_manager and not reason.strip():
        raise RuleViolation(
            [Problem("required", "Say why you cancel someone's booking.", "reason")]
        )
    _require_status(booking, "cancel")
    declined_offer = booking.status is BookingStatus.OFFERED
    instrument = session.get(Instrument, booking.instrument_id)
    assert instrument is not None
    late = _late_for_owner(actor, booking, instrument)
    _transition(
        session, booking, "cancel", BookingStatus.CANCELLED, reason=reason, late_cancellation=late
    )
    record_change(
        session,
        booking,
        actor_id=actor.user_id if actor else None,
        action="cancelled",
        reason=reason,
        late=late,
    )
    if declined_offer:
        # The waiter is done with this time: it may join again, or leave, like anyone.
        session.execute(
            sa.update(WaitlistEntry)
            .where(
                col(WaitlistEntry.offered_booking_id) == booking.id,
                col(WaitlistEntry.status) == WaitlistStatus.OFFERED,
            )
            .values(status=WaitlistStatus.CANCELLED, updated_at=now())
            .execution_options(synchronize_session=False)
        )
    _offer_freed_time(session, booking)
    return booking


def move(
    session: Session,
    *,
    actor: Principal | None,
    booking_id: int,
    start: datetime,
    end: datetime,
    override: Sequence[str],
    policy: BookingPolicy,
) -> Booking:
    """Move or resize: the old booking is cancelled and replaced in one transaction, so the
    booker never ends up with neither slot; a move is not a cancellation in any metric."""
    old = visible_booking(session, actor=actor, booking_id=booking_id)
    _require_owner_or_manager(actor, old, "move")
    _require_status(old, "move")
    if old.start_at <= now():
        raise Conflict("The booking has started and can no longer be moved.", code="started")
    if (start, end) == (old.start_at, old.end_at):
        raise RuleViolation([Problem("unchanged", "The booking is already at this time.", "start")])
    checked = check_request(
        session,
        actor=actor,
        instrument_id=old.instrument_id,
        user_id=old.user_id,
        start=start,
        end=end,
        operated_by=OperatedBy(old.operated_by),
        override=override,
        policy=policy,
        ignore_booking_id=old.id,
        also=_late_move_problems(session, actor, old),
    )
    # An approved booking stays approved where it moves; a request keeps waiting, unless the
    # new time needs no approval.
    status = BookingStatus.CONFIRMED if old.status is BookingStatus.CONFIRMED else checked.status
    _transition(session, old, "move", BookingStatus.CANCELLED, reason="moved")
    current = now()
    new = insert_held(
        session,
        **old.model_dump(
            exclude={
                "id",
                "start_at",
                "end_at",
                "held_until",
                "status",
                "version",
                "overrides",
                "expires_at",
                "replaced_by_id",
                "created_at",
                "updated_at",
                "reason",
                "late_cancellation",
                "decided_by_id",
                "decided_at",
                "calendar_uid",
            }
        ),
        # The calendar event is the same one, moved: same UID, a higher SEQUENCE (version).
        calendar_uid=old.calendar_uid or f"booking-{old.id}",
        start_at=start,
        end_at=end,
        held_until=rules.held_until(end, checked.buffer_minutes),
        status=status,
        version=old.version + 1,
        overrides=checked.overridden,
        expires_at=min(current + policy.pending_ttl, start)
        if status is BookingStatus.PENDING
        else None,
        created_at=current,
        updated_at=current,
    )
    session.execute(
        sa.update(Booking)
        .where(col(Booking.id) == old.id)
        .values(replaced_by_id=new.id)
        .execution_options(synchronize_session=False)
    )
    session.refresh(old)
    actor_id = actor.user_id if actor else None
    record_change(session, old, actor_id=actor_id, action="moved", replaced_by_id=new.id)
    record_change(
        session,
        new,
        actor_id=actor_id,
        action="rescheduled",
        replaces_booking_id=old.id,
    )
    _offer_freed_time(session, old)
    return new


def _late_for_owner(actor: Principal | None, booking: Booking, instrument: Instrument) -> bool:
    """Whether giving up the booking now is a late cancellation: its owner's confirmed booking
    past the instrument's deadline (the facility's own decisions are never charged)."""
    by_manager = actor is not None and booking.user_id != actor.user_id
    return (
        not by_manager
        and booking.status is BookingStatus.CONFIRMED
        and rules.is_late_cancellation(
            now(), booking.start_at, instrument.cancellation_deadline_hours
        )
    )


def _late_move_problems(
    session: Session, actor: Principal | None, booking: Booking
) -> list[Problem]:
    """Its owner may not move a confirmed booking after the cancellation deadline: a move is no
    cancellation in any metric, so it would shed the late-cancellation charge. Like a
    cancellation, a move by the facility is its own decision; a manager may also override."""
    instrument = session.get(Instrument, booking.instrument_id)
    assert instrument is not None
    if not _late_for_owner(actor, booking, instrument):
        return []
    hours = instrument.cancellation_deadline_hours
    return [
        Problem(
            "move_deadline",
            f"Less than {hours} hours before its start a booking can no longer be moved; "
            "cancel it (a late cancellation) or ask the facility.",
            "start",
            True,
        )
    ]


def _receiver_problems(
    session: Session, booking: Booking, receiver: User, policy: BookingPolicy
) -> list[Problem]:
    """What would stop the receiver from booking this time itself: a qualification that does
    not last to the end, its quotas, a no-show suspension."""
    instrument = session.get(Instrument, booking.instrument_id)
    facility = session.get(Facility, booking.facility_id)
    assert instrument is not None
    assert facility is not None
    assert receiver.id is not None
    problems = []
    if (
        booking.operated_by == OperatedBy.SELF
        and instrument.requires_qualification
        and instruments.valid_qualification(
            session, user_id=receiver.id, instrument_id=booking.instrument_id, until=booking.end_at
        )
        is None
    ):
        problems.append(
            Problem(
                "not_qualified",
                "The colleague is not qualified on this instrument for the whole booking.",
                "user_id",
            )
        )
    # The booking already counts towards the organisation's quota: left out, then added back.
    problems += _quota_problems(
        session,
        instrument=instrument,
        zone=facility.timezone,
        user_id=receiver.id,
        organisation_id=receiver.organisation_id,
        start=booking.start_at,
        end=booking.end_at,
        ignore_booking_id=booking.id,
    )
    suspended_until = suspension_until(session, user_id=receiver.id, policy=policy)
    return problems + _suspension_problems(suspended_until, whose="The colleague's booking rights")


def hand_over(
    session: Session,
    *,
    actor: Principal | None,
    booking_id: int,
    to_user_id: int,
    policy: BookingPolicy,
) -> Booking:
    """Give a booking to a colleague of the same organisation (qualified, if self-operated)."""
    booking = visible_booking(session, actor=actor, booking_id=booking_id)
    _require_owner_or_manager(actor, booking, "hand over")
    _require_status(booking, "hand_over")
    colleague = session.get(User, to_user_id)
    if (
        colleague is None
        or not colleague.is_active
        or booking.organisation_id is None
        or colleague.organisation_id != booking.organisation_id
    ):
        raise RuleViolation(
            [
                Problem(
                    "not_colleague",
                    "Hand a booking only to an active colleague of the same organisation.",
                    "user_id",
                )
            ]
        )
    if to_user_id == booking.user_id:
        raise RuleViolation(
            [Problem("same_user", "The booking is already this user's.", "user_id")]
        )
    problems = _receiver_problems(session, booking, colleague, policy)
    if problems:
        raise RuleViolation(problems)
    previous = booking.user_id
    _transition(session, booking, "hand_over", BookingStatus(booking.status), user_id=to_user_id)
    record_change(
        session,
        booking,
        actor_id=actor.user_id if actor else None,
        action="handed_over",
        from_user_id=previous,
    )
    return booking


def check_in(
    session: Session, *, actor: Principal | None, booking_id: int, policy: BookingPolicy
) -> Booking:
    """Start using the instrument: from the grace window before the start until the end."""
    booking = visible_booking(session, actor=actor, booking_id=booking_id)
    _require_owner_or_manager(actor, booking, "check in")
    _require_status(booking, "check_in")
    current = now()
    if current < booking.start_at - policy.grace:
        raise Conflict(
            f"Check-in opens {int(policy.grace.total_seconds() // 60)} minutes before the start.",
            code="too_early",
        )
    if current >= booking.end_at:
        raise Conflict("The booking is over.", code="too_late")
    if current < booking.start_at:
        busy = session.exec(
            select(Booking.id).where(
                Booking.instrument_id == booking.instrument_id,
                Booking.status == BookingStatus.IN_USE,
            )
        ).first()
        if busy is not None:
            raise Conflict(
                "The instrument is still in use; check in at your start time.",
                code="instrument_busy",
            )
    _transition(session, booking, "check_in", BookingStatus.IN_USE, checked_in_at=current)
    record_change(session, booking, actor_id=actor.user_id if actor else None, action="checked_in")
    return booking


def check_out(
    session: Session, *, actor: Principal | None, booking_id: int, samples: int | None = None
) -> UsageRecord:
    """Finish: the booking completes and a usage record keeps what actually happened."""
    booking = visible_booking(session, actor=actor, booking_id=booking_id)
    _require_owner_or_manager(actor, booking, "check out")
    _require_status(booking, "check_out")
    current = now()
    started = booking.checked_in_at or booking.start_at
    _transition(session, booking, "check_out", BookingStatus.COMPLETED)
    usage = UsageRecord(
        booking_id=booking.id,
        instrument_id=booking.instrument_id,
        user_id=booking.user_id,
        organisation_id=booking.organisation_id,
        operator_id=(actor.user_id if actor else None)
        if booking.operated_by == OperatedBy.STAFF
        else booking.user_id,
        started_at=started,
        ended_at=max(current, started + timedelta(minutes=1)),
        samples=samples if samples is not None else booking.sample_count,
    )
    session.add(usage)
    session.flush()
    record_change(
        session,
        booking,
        actor_id=actor.user_id if actor else None,
        action="completed",
        usage_record_id=usage.id,
    )
    return usage


# --- Scheduled transitions (the worker) ----------------------------------------------------


def _due(session: Session, query: Any) -> list[int]:
    """Ids of due bookings; on PostgreSQL rows another worker holds are skipped, not waited on."""
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    return list(session.execute(query).scalars().all())


def expire_pending(session: Session, *, limit: int = 500) -> int:
    """Pending requests nobody answered in time expire (each exactly once)."""
    ids = _due(
        session,
        sa.select(col(Booking.id))
        .where(col(Booking.status) == BookingStatus.PENDING, col(Booking.expires_at) <= now())
        .limit(limit),
    )
    done = 0
    for booking_id in ids:
        booking = session.get(Booking, booking_id)
        assert booking is not None
        try:
            _transition(
                session, booking, "expire", BookingStatus.EXPIRED, reason="No answer in time."
            )
        except DomainError:
            continue  # another worker got there first
        record_change(session, booking, actor_id=None, action="expired")
        _offer_freed_time(session, booking)
        done += 1
    return done


def mark_no_shows(session: Session, *, policy: BookingPolicy, limit: int = 500) -> int:
    """Confirmed bookings nobody checked in to by start + grace become no-shows (exactly once)."""
    ids = _due(
        session,
        sa.select(col(Booking.id))
        .where(
            col(Booking.status) == BookingStatus.CONFIRMED,
            col(Booking.start_at) <= now() - policy.grace,
        )
        # In the order of the month totals a no-show changes (a trigger updates a row per
        # instrument and month): two workers lock those rows in the same order, no deadlock.
        .order_by(col(Booking.instrument_id), col(Booking.start_at))
        .limit(limit),
    )
    done = 0
    for booking_id in ids:
        booking = session.get(Booking, booking_id)
        assert booking is not None
        try:
            _transition(session, booking, "no_show", BookingStatus.NO_SHOW)
        except DomainError:
            continue
        record_change(session, booking, actor_id=None, action="no_show")
        done += 1
    return done


# --- Usage records -------------------------------------------------------------------------


# One recorded use of an instrument: a long unattended run fits, a typo of a year does not.
MAX_USAGE = timedelta(days=31)


def _usage_time_problems(
    session: Session,
    *,
    instrument_id: int,
    started: datetime,
    ended: datetime,
    ignore: tuple[int | None, int | None] = (None, None),
) -> list[Problem]:
    """What is wrong with the times of a recorded use: backwards, in the future, implausibly
    long, or over another use of the instrument (a recorded one, or a booking in use).
    ``ignore`` is the (usage record, booking) being corrected."""
    if ended <= started:
        return [Problem("end_not_after_start", "The use must end after it starts.", "ended_at")]
    problems = []
    if ended > now() + timedelta(minutes=5):
        problems.append(Problem("in_future", "Record a use once it has happened.", "ended_at"))
    if ended - started > MAX_USAGE:
        problems.append(
            Problem(
                "too_long",
                f"One use lasts at most {MAX_USAGE.days} days; record a longer run in parts.",
                "ended_at",
            )
        )
    usage_id, booking_id = ignore
    recorded = session.exec(
        select(UsageRecord.id).where(
            UsageRecord.instrument_id == instrument_id,
            col(UsageRecord.id) != (usage_id or 0),
            col(UsageRecord.started_at) < ended,
            col(UsageRecord.ended_at) > started,
        )
    ).first()
    in_use = session.exec(
        select(Booking.id).where(
            Booking.instrument_id == instrument_id,
            Booking.status == BookingStatus.IN_USE,
            col(Booking.id) != (booking_id or 0),
            col(Booking.checked_in_at) < ended,
            col(Booking.end_at) > started,
        )
    ).first()
    if recorded is not None or in_use is not None:
        problems.append(
            Problem(
                "overlap",
                "Another use of the instrument is recorded for part of this time.",
                "started_at",
            )
        )
    return problems


def record_walk_in(
    session: Session, *, actor: Principal | None, data: UsageRecordCreate
) -> UsageRecord:
    """A use without a booking, recorded by a lab manager of the facility."""
    instrument = instruments.managed_instrument(
        session, actor=actor, instrument_id=data.instrument_id, action="record use"
    )
    user = session.get(User, data.user_id)
    problems = []
    if user is None:
        problems.append(Problem("unknown_user", "No such user.", "user_id"))
    problems += _usage_time_problems(
        session, instrument_id=instrument.id or 0, started=data.started_at, ended=data.ended_at
    )
    if problems:
        raise RuleViolation(problems)
    assert user is not None
    usage = UsageRecord(
        instrument_id=instrument.id or 0,
        user_id=data.user_id,
        organisation_id=user.organisation_id,
        operator_id=actor.user_id if actor else None,
        started_at=data.started_at,
        ended_at=data.ended_at,
        samples=data.samples,
        kind=data.kind,
        note=data.note,
    )
    session.add(usage)
    session.flush()
    audit.record(
        session,
        actor_id=actor.user_id if actor else None,
        action="usage.recorded",
        subject_type="usage_record",
        subject_id=usage.id or 0,
        data={"instrument_id": usage.instrument_id, "user_id": usage.user_id, "kind": usage.kind},
    )
    return usage


def correct_usage(
    session: Session, *, actor: Principal | None, usage_id: int, data: UsageRecordCorrection
) -> UsageRecord:
    """A lab manager corrects what was recorded; the audit log keeps the values before."""
    usage = session.get(UsageRecord, usage_id)
    if actor is not None and not actor.has_role(Role.LAB_MANAGER, Role.ADMIN):
        raise PermissionDenied("Only a lab manager of the facility may correct usage records.")
    if usage is None:
        raise NotFound("Usage record")
    instruments.managed_instrument(
        session, actor=actor, instrument_id=usage.instrument_id, action="correct usage"
    )
    before = {
        "started_at": usage.started_at.isoformat(),
        "ended_at": usage.ended_at.isoformat(),
        "samples": usage.samples,
    }
    started = data.started_at or usage.started_at
    ended = data.ended_at or usage.ended_at
    problems = _usage_time_problems(
        session,
        instrument_id=usage.instrument_id,
        started=started,
        ended=ended,
        ignore=(usage.id, usage.booking_id),
    )
    if problems:
        raise RuleViolation(problems)
    usage.started_at, usage.ended_at = started, ended
    if data.samples is not None:
        usage.samples = data.samples
    usage.note = data.note
    usage.corrected_by_id = actor.user_id if actor else None
    usage.corrected_at = now()
    session.add(usage)
    session.flush()
    audit.record(
        session,
        actor_id=usage.corrected_by_id,
        action="usage.corrected",
        subject_type="usage_record",
        subject_id=usage_id,
        data={"before": before, "note": data.note},
    )
    return usage
