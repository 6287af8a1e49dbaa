"""Calendar files (RFC 5545) and scheduling messages (RFC 5546): the only module that uses ``ics``.

``ics`` is pinned below 0.8 (0.8 changed its API). Its content-line model
(:class:`ics.grammar.parse.Container`, :class:`~ics.grammar.parse.ContentLine`) and its text
escaping build every file here; what 0.7 does not do is completed in this module:

- its ``Event`` model writes DTSTAMP from ``created`` and METHOD after the events (RFC 5545 puts
  calendar properties first), has no SEQUENCE, and formats each time through ``arrow`` and
  reflects on its serializers for every event (10,000 events took 0.7 s before any database
  work), so events are assembled as content lines directly;
- it neither folds long lines nor ends the file with CRLF: :func:`_fold` folds at 75 octets
  without splitting a UTF-8 character, and every line, the last included, ends with CRLF;
- it escapes a carriage return as ``\\r``, which RFC 5545 does not know: line breaks are
  normalised to ``\\n`` and other control characters dropped before escaping.

A subscription feed (METHOD:PUBLISH) holds thousands of events, and even content-line objects
cost more per event than the rest of the feed: :func:`feed` writes the same content lines as
plain text (:func:`_vevent_text`), with the same escaping and folding. The invitation path
keeps building :class:`~ics.grammar.parse.Container` objects, and :func:`feed_with_ics` builds
a feed that way too: the tests hold both writers to byte-identical output.

Invariants: a booking's UID never changes (a moved booking keeps its first booking's, see
``Booking.calendar_uid``); SEQUENCE is the booking's ``version``; DTSTAMP is the booking's last
change, so the same data always gives the same bytes (feeds can carry a strong ETag); times are
written in UTC with ``Z``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import lru_cache
from typing import Literal, Protocol
from zoneinfo import ZoneInfo

from ics.grammar.parse import Container, ContentLine
from ics.utils import escape_string

from booking.rules import BookingStatus

PRODUCT = "-//labshare//labshare 0.1//EN"
FEED_REFRESH = "PT1H"  # how often subscribers should poll (RFC 7986 REFRESH-INTERVAL)
MAX_LINE_OCTETS = 75

EventStatus = Literal["CONFIRMED", "TENTATIVE", "CANCELLED"]

EVENT_STATUS: dict[BookingStatus, EventStatus] = {
    BookingStatus.CONFIRMED: "CONFIRMED",
    BookingStatus.IN_USE: "CONFIRMED",
    BookingStatus.COMPLETED: "CONFIRMED",
    BookingStatus.PENDING: "TENTATIVE",
    BookingStatus.OFFERED: "TENTATIVE",
    BookingStatus.CANCELLED: "CANCELLED",
    BookingStatus.REJECTED: "CANCELLED",
    BookingStatus.EXPIRED: "CANCELLED",
    BookingStatus.NO_SHOW: "CANCELLED",
}

STATUS_LABELS: dict[str, dict[BookingStatus, str]] = {
    "zh-CN": {
        BookingStatus.OFFERED: "候补待确认",
        BookingStatus.PENDING: "待审批",
        BookingStatus.CONFIRMED: "已确认",
        BookingStatus.IN_USE: "使用中",
        BookingStatus.COMPLETED: "已完成",
        BookingStatus.NO_SHOW: "爽约",
        BookingStatus.CANCELLED: "已取消",
        BookingStatus.REJECTED: "已拒绝",
        BookingStatus.EXPIRED: "已过期",
    },
    "en": {
        BookingStatus.OFFERED: "offered from the waiting list",
        BookingStatus.PENDING: "awaiting approval",
        BookingStatus.CONFIRMED: "confirmed",
        BookingStatus.IN_USE: "in use",
        BookingStatus.COMPLETED: "completed",
        BookingStatus.NO_SHOW: "no-show",
        BookingStatus.CANCELLED: "cancelled",
        BookingStatus.REJECTED: "rejected",
        BookingStatus.EXPIRED: "expired",
    },
}

# Words of the summary and description, per locale.
WORDS: dict[str, dict[str, str]] = {
    "zh-CN": {
        "booking": "预约：{instrument}",
        "busy": "已预约",
        "instrument": "仪器：{instrument}",
        "status": "状态：{status}",
        "time": "时间：{time}（{zone}）",
        "who": "预约人：{who}",
        "purpose": "用途：{purpose}",
    },
    "en": {
        "booking": "Booking: {instrument}",
        "busy": "Booked",
        "instrument": "Instrument: {instrument}",
        "status": "Status: {status}",
        "time": "Time: {time} ({zone})",
        "who": "Booked by: {who}",
        "purpose": "Purpose: {purpose}",
    },
}

# Control characters RFC 5545 forbids in text (HTAB and the line feed, escaped, are allowed).
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


class BookingFacts(Protocol):
    """What an event says about a booking: a :class:`booking.models.Booking`, or a row of the
    same columns (feeds read rows: ORM objects cost more than the whole calendar text)."""

    @property
    def id(self) -> int | None: ...
    @property
    def calendar_uid(self) -> str | None: ...
    @property
    def version(self) -> int: ...
    @property
    def status(self) -> BookingStatus: ...
    @property
    def start_at(self) -> datetime: ...
    @property
    def end_at(self) -> datetime: ...
    @property
    def purpose(self) -> str: ...
    @property
    def updated_at(self) -> datetime: ...


@dataclass(frozen=True)
class CalendarEvent:
    """One VEVENT: what a calendar file says about one booking."""

    uid: str
    sequence: int
    start: datetime
    end: datetime
    summary: str
    description: str
    location: str
    status: str  # "CONFIRMED" | "TENTATIVE" | "CANCELLED"
    stamp: datetime
    organizer_email: str | None = None
    attendee_email: str | None = None


def invitation(
    event: CalendarEvent,
    *,
    method: Literal["REQUEST", "CANCEL"],
    product: str = PRODUCT,
) -> str:
    """A scheduling message (RFC 5546) for one event: a new or changed booking, or its cancel.

    A CANCEL always says STATUS:CANCELLED; it carries the same UID as the request it cancels
    and the higher SEQUENCE the caller gives it (the booking's version after the change)."""
    if method == "CANCEL":
        event = replace(event, status="CANCELLED")
    calendar = _calendar(product, [ContentLine("METHOD", value=method)])
    calendar.append(_vevent(event, with_people=True))
    return _serialize(calendar)


def feed(events: Iterable[CalendarEvent], *, name: str, product: str = PRODUCT) -> str:
    """A subscription feed (METHOD:PUBLISH) named ``name`` in the subscriber's calendar app."""
    # A feed is published, not sent: nobody is invited, so no ORGANIZER or ATTENDEE.
    head = [
        "BEGIN:VCALENDAR",
        "VERSION:2.0",
        f"PRODID:{product}",
        "CALSCALE:GREGORIAN",
        "METHOD:PUBLISH",
        f"X-WR-CALNAME:{_text(name)}",
        f"REFRESH-INTERVAL;VALUE=DURATION:{FEED_REFRESH}",
        f"X-PUBLISHED-TTL:{FEED_REFRESH}",
    ]
    parts = [_fold(line) + "\r\n" for line in head]
    parts.extend(map(_vevent_text, events))
    parts.append("END:VCALENDAR\r\n")
    return "".join(parts)


def feed_with_ics(events: Iterable[CalendarEvent], *, name: str, product: str = PRODUCT) -> str:
    """The same feed as :func:`feed`, built from ``ics`` content-line objects: the reference
    that the plain-text writer is tested against (about three times slower)."""
    calendar = _calendar(product, _feed_properties(name))
    calendar.extend(_vevent(event, with_people=False) for event in events)
    return _serialize(calendar)


def _feed_properties(name: str) -> list[ContentLine]:
    return [
        ContentLine("METHOD", value="PUBLISH"),
        ContentLine("X-WR-CALNAME", value=_text(name)),
        ContentLine("REFRESH-INTERVAL", params={"VALUE": ["DURATION"]}, value=FEED_REFRESH),
        ContentLine("X-PUBLISHED-TTL", value=FEED_REFRESH),
    ]


def booking_event(
    booking: BookingFacts,
    *,
    instrument_name: str,
    location: str,
    host: str,
    locale: str,
    who: str | None,
    timezone: str = "Asia/Shanghai",
) -> CalendarEvent:
    """The calendar event of a booking. ``who`` names the booker (empty: not named);
    ``who=None`` gives a busy-only event without personal data (no booker, no purpose).
    ``timezone`` is the facility's, for the times in the description."""
    status = BookingStatus(booking.status)
    before, after, summary = _event_words(locale, status, instrument_name, timezone, who)
    description = before + _local_span(booking, ZoneInfo(timezone)) + after
    if who is not None and booking.purpose:
        words = WORDS.get(locale, WORDS["en"])
        description += "\n" + words["purpose"].format(purpose=booking.purpose)
    return CalendarEvent(
        uid=f"{booking.calendar_uid or f'booking-{booking.id}'}@{host}",
        sequence=booking.version,
        start=booking.start_at,
        end=booking.end_at,
        summary=summary,
        description=description,
        location=location,
        status=EVENT_STATUS[status],
        stamp=booking.updated_at,
    )


@lru_cache(maxsize=1024)  # a feed's events share their instrument, zone and a few bookers
def _event_words(
    locale: str, status: BookingStatus, instrument_name: str, timezone: str, who: str | None
) -> tuple[str, str, str]:
    """What an event says besides its times and purpose: the description before and after the
    time span, and the summary."""
    words = WORDS.get(locale, WORDS["en"])
    labels = STATUS_LABELS.get(locale, STATUS_LABELS["en"])
    time_before, _, time_after = words["time"].partition("{time}")
    lines = []
    if who is None:
        lines.append(words["instrument"].format(instrument=instrument_name))
    lines.append(words["status"].format(status=labels[status]))
    lines.append(time_before)
    after = [time_after.format(zone=timezone)]
    if who:
        after.append(words["who"].format(who=who))
    summary = words["busy"] if who is None else words["booking"].format(instrument=instrument_name)
    return "\n".join(lines), "\n".join(after), summary


def _local_span(booking: BookingFacts, zone: ZoneInfo) -> str:
    start = booking.start_at.astimezone(zone)
    end = booking.end_at.astimezone(zone)
    # By hand, as in _utc: strftime is slow, and a feed formats two times per event.
    if (start.year, start.month, start.day) == (end.year, end.month, end.day):
        return f"{_local_minute(start)}–{end.hour:02}:{end.minute:02}"
    return f"{_local_minute(start)} – {_local_minute(end)}"


def _local_minute(m: datetime) -> str:
    return f"{m.year:04}-{m.month:02}-{m.day:02} {m.hour:02}:{m.minute:02}"


def _calendar(product: str, properties: list[ContentLine]) -> Container:
    return Container(
        "VCALENDAR",
        ContentLine("VERSION", value="2.0"),
        ContentLine("PRODID", value=product),
        ContentLine("CALSCALE", value="GREGORIAN"),
        *properties,
    )


def _vevent(event: CalendarEvent, *, with_people: bool) -> Container:
    if event.status not in ("CONFIRMED", "TENTATIVE", "CANCELLED"):
        raise ValueError(f"not a VEVENT status: {event.status!r}")
    lines = [
        ContentLine("UID", value=_escape(event.uid)),
        ContentLine("SEQUENCE", value=str(event.sequence)),
        ContentLine("DTSTAMP", value=_utc(event.stamp)),
        ContentLine("DTSTART", value=_utc(event.start)),
        ContentLine("DTEND", value=_utc(event.end)),
        ContentLine("SUMMARY", value=_text(event.summary)),
        ContentLine("STATUS", value=event.status),
        # A booking blocks the instrument (and its user's time) unless it is off.
        ContentLine("TRANSP", value="TRANSPARENT" if event.status == "CANCELLED" else "OPAQUE"),
    ]
    if event.description:
        lines.append(ContentLine("DESCRIPTION", value=_escape(event.description)))
    if event.location:
        lines.append(ContentLine("LOCATION", value=_text(event.location)))
    if with_people and event.organizer_email:
        lines.append(ContentLine("ORGANIZER", value=f"mailto:{event.organizer_email}"))
    if with_people and event.attendee_email:
        lines.append(
            ContentLine(
                "ATTENDEE",
                # The booker asked for the booking: nothing to accept, no reply wanted.
                params={"ROLE": ["REQ-PARTICIPANT"], "PARTSTAT": ["ACCEPTED"], "RSVP": ["FALSE"]},
                value=f"mailto:{event.attendee_email}",
            )
        )
    return Container("VEVENT", *lines)


# What each status makes of an event's free/busy time: a booking blocks the instrument (and its
# user's time) unless it is off.
_TRANSPARENCY = {"CONFIRMED": "OPAQUE", "TENTATIVE": "OPAQUE", "CANCELLED": "TRANSPARENT"}


def _vevent_text(event: CalendarEvent) -> str:
    """:func:`_vevent` without people, written as folded text lines (each ending in CRLF)."""
    transparency = _TRANSPARENCY.get(event.status)
    if transparency is None:
        raise ValueError(f"not a VEVENT status: {event.status!r}")
    text = (
        "BEGIN:VEVENT\r\n"
        f"{_fold('UID:' + _escape(event.uid))}\r\n"
        f"SEQUENCE:{event.sequence}\r\n"
        f"DTSTAMP:{_utc(event.stamp)}\r\n"
        f"DTSTART:{_utc(event.start)}\r\n"
        f"DTEND:{_utc(event.end)}\r\n"
        f"{_text_line('SUMMARY', event.summary)}"
        f"STATUS:{event.status}\r\n"
        f"TRANSP:{transparency}\r\n"
    )
    if event.description:
        text += _fold("DESCRIPTION:" + _escape(event.description)) + "\r\n"
    if event.location:
        text += _text_line("LOCATION", event.location)
    return text + "END:VEVENT\r\n"


@lru_cache(maxsize=4096)  # summaries and places repeat across a feed's events
def _text_line(name: str, value: str) -> str:
    """A TEXT property's folded line, with its CRLF."""
    return _fold(f"{name}:{_escape(value)}") + "\r\n"


def _utc(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise ValueError("naive datetime: calendar times must be aware")
    m = moment.astimezone(UTC)
    # By hand: strftime costs more than the rest of an event (it dominated a 10,000-event feed).
    return f"{m.year:04}{m.month:02}{m.day:02}T{m.hour:02}{m.minute:02}{m.second:02}Z"


def _escape(value: str) -> str:
    """A TEXT value: one kind of line break, no control characters, then ics's escaping."""
    value = value.replace("\r\n", "\n").replace("\r", "\n")
    return str(escape_string(_CONTROL.sub("", value)))


_text = lru_cache(maxsize=4096)(_escape)  # for values that repeat (names, places, summaries)


def _serialize(calendar: Container) -> str:
    # Escaped values hold no line breaks, so ics's CRLF-joined output splits into content lines.
    return "".join(_fold(line) + "\r\n" for line in str(calendar).split("\r\n"))


def _fold(line: str) -> str:
    """Fold a content line into physical lines of at most 75 octets (RFC 5545 §3.1), never
    inside a UTF-8 character; a continuation starts with one space, which counts."""
    if len(line) <= MAX_LINE_OCTETS and line.isascii():
        return line
    encoded = line.encode()
    if len(encoded) <= MAX_LINE_OCTETS:
        return line
    pieces = []
    begin, room = 0, MAX_LINE_OCTETS
    while len(encoded) - begin > room:
        cut = begin + room
        while encoded[cut] & 0xC0 == 0x80:  # a continuation byte: back up to the lead byte
            cut -= 1
        pieces.append(encoded[begin:cut])
        begin, room = cut, MAX_LINE_OCTETS - 1
    pieces.append(encoded[begin:])
    return b"\r\n ".join(pieces).decode()
