"""Calendar files as an independent parser (icalendar) reads them: invitations, cancels, feeds,
booking events in Chinese and English, escaping and folding."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from booking.models import Booking
from booking.rules import BookingStatus, OperatedBy
from notifications import ics
from notifications.ics import CalendarEvent
from tests.notifications.calendars import events, parse, physical_lines, utc_property

S = BookingStatus
START = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai
STAMP = datetime(2026, 11, 30, 1, 2, 3, tzinfo=UTC)
LONG_CHINESE = "场发射扫描电子显微镜测试：样品为纳米颗粒，需喷金处理；" * 12


def event(**changes: object) -> CalendarEvent:
    values: dict[str, object] = {
        "uid": "booking-7@labshare.example.cn",
        "sequence": 2,
        "start": START,
        "end": START + timedelta(hours=2),
        "summary": "预约：X射线衍射仪",
        "description": "状态：已确认",
        "location": "理学楼 B201",
        "status": "CONFIRMED",
        "stamp": STAMP,
        "organizer_email": "lab@labshare.example.cn",
        "attendee_email": "zhang@example.cn",
    }
    values.update(changes)
    return CalendarEvent(**values)  # type: ignore[arg-type]


def booking(status: BookingStatus = S.CONFIRMED, **changes: object) -> Booking:
    values: dict[str, object] = {
        "id": 7,
        "instrument_id": 1,
        "facility_id": 1,
        "user_id": 1,
        "start_at": START,
        "end_at": START + timedelta(hours=2),
        "held_until": START + timedelta(hours=2),
        "status": status,
        "operated_by": OperatedBy.SELF,
        "purpose": "XRD 物相分析, 样品 3 个",
        "version": 4,
        "updated_at": STAMP,
    }
    values.update(changes)
    return Booking(**values)


def booking_event(
    record: Booking, *, locale: str = "zh-CN", who: str | None = "张三"
) -> CalendarEvent:
    return ics.booking_event(
        record,
        instrument_name="X射线衍射仪",
        location="理学楼 B201",
        host="labshare.example.cn",
        locale=locale,
        who=who,
        timezone="Asia/Shanghai",
    )


# --- Invitations (RFC 5546) -------------------------------------------------------------------


def test_a_request_carries_every_property_a_calendar_client_needs() -> None:
    calendar = parse(ics.invitation(event(), method="REQUEST"))

    assert str(calendar["PRODID"]) == "-//labshare//labshare 0.1//EN"
    assert str(calendar["VERSION"]) == "2.0"
    assert str(calendar["METHOD"]) == "REQUEST"
    (vevent,) = calendar.walk("VEVENT")
    assert str(vevent["UID"]) == "booking-7@labshare.example.cn"
    assert int(vevent["SEQUENCE"]) == 2
    assert utc_property(vevent, "DTSTAMP") == STAMP
    assert utc_property(vevent, "DTSTART") == START
    assert utc_property(vevent, "DTEND") == START + timedelta(hours=2)
    assert str(vevent["STATUS"]) == "CONFIRMED"
    assert str(vevent["SUMMARY"]) == "预约：X射线衍射仪"
    assert str(vevent["DESCRIPTION"]) == "状态：已确认"
    assert str(vevent["LOCATION"]) == "理学楼 B201"
    assert str(vevent["ORGANIZER"]) == "mailto:lab@labshare.example.cn"
    assert str(vevent["ATTENDEE"]) == "mailto:zhang@example.cn"


def test_calendar_properties_come_before_the_event() -> None:
    # RFC 5545: icalbody = calprops component; ics 0.7 writes METHOD after the events.
    lines = physical_lines(ics.invitation(event(), method="REQUEST"))

    assert lines[:2] == ["BEGIN:VCALENDAR", "VERSION:2.0"]
    assert lines.index("METHOD:REQUEST") < lines.index("BEGIN:VEVENT")
    assert lines[-1] == "END:VCALENDAR"


def test_a_cancel_keeps_the_uid_says_cancelled_and_carries_the_higher_sequence() -> None:
    request = parse(ics.invitation(event(sequence=2), method="REQUEST"))
    cancel = parse(ics.invitation(event(sequence=3), method="CANCEL"))

    (requested,) = request.walk("VEVENT")
    (cancelled,) = cancel.walk("VEVENT")
    assert str(cancel["METHOD"]) == "CANCEL"
    assert str(cancelled["UID"]) == str(requested["UID"])
    assert int(cancelled["SEQUENCE"]) > int(requested["SEQUENCE"])
    assert str(cancelled["STATUS"]) == "CANCELLED"
    assert utc_property(cancelled, "DTSTAMP") == STAMP


def test_a_booking_and_its_cancellation_make_a_request_and_a_cancel_of_one_event() -> None:
    confirmed = booking(S.CONFIRMED, version=1)
    cancelled = booking(S.CANCELLED, version=2, updated_at=STAMP + timedelta(hours=1))

    (first,) = events(ics.invitation(booking_event(confirmed), method="REQUEST"))
    (second,) = events(ics.invitation(booking_event(cancelled), method="CANCEL"))

    assert str(first["UID"]) == str(second["UID"]) == "booking-7@labshare.example.cn"
    assert (int(first["SEQUENCE"]), int(second["SEQUENCE"])) == (1, 2)
    assert (str(first["STATUS"]), str(second["STATUS"])) == ("CONFIRMED", "CANCELLED")
    assert utc_property(second, "DTSTAMP") > utc_property(first, "DTSTAMP")


def test_a_moved_booking_keeps_its_first_bookings_uid() -> None:
    moved_start = START + timedelta(days=1)
    replacement = booking(
        id=12,
        calendar_uid="booking-7",
        version=5,
        start_at=moved_start,
        end_at=moved_start + timedelta(hours=1),
    )

    (vevent,) = events(ics.invitation(booking_event(replacement), method="REQUEST"))

    assert str(vevent["UID"]) == "booking-7@labshare.example.cn"
    assert int(vevent["SEQUENCE"]) == 5
    assert utc_property(vevent, "DTSTART") == START + timedelta(days=1)


def test_without_people_the_invitation_names_no_organizer_or_attendee() -> None:
    text = ics.invitation(event(organizer_email=None, attendee_email=None), method="REQUEST")

    (vevent,) = events(text)
    assert "ORGANIZER" not in vevent
    assert "ATTENDEE" not in vevent


# --- Text: escaping, folding, times ------------------------------------------------------------


def test_text_is_escaped_and_reads_back_exactly() -> None:
    tricky = "a,b;c\nd\\e"

    text = ics.invitation(
        event(summary=tricky, description=tricky, location=tricky), method="REQUEST"
    )

    assert "SUMMARY:a\\,b\\;c\\nd\\\\e\r\n" in text
    (vevent,) = events(text)
    assert str(vevent["SUMMARY"]) == tricky
    assert str(vevent["DESCRIPTION"]) == tricky
    assert str(vevent["LOCATION"]) == tricky


def test_carriage_returns_become_line_feeds_and_control_characters_are_dropped() -> None:
    text = ics.invitation(event(description="一\r\n二\r三\x00\x1b四\t五"), method="REQUEST")

    (vevent,) = events(text)
    assert str(vevent["DESCRIPTION"]) == "一\n二\n三四\t五"


def test_long_chinese_text_is_folded_at_75_octets_and_unfolds_back_exactly() -> None:
    text = ics.invitation(event(description=LONG_CHINESE), method="REQUEST")

    lines = physical_lines(text)
    start = next(i for i, line in enumerate(lines) if line.startswith("DESCRIPTION:"))
    end = next(i for i in range(start + 1, len(lines)) if not lines[i].startswith(" "))
    folded, continuation = lines[start:end], lines[start + 1 : end]
    assert len(folded) > 10
    # Each line was filled as far as a whole character allows (3 octets each in UTF-8).
    assert all(len(line.encode()) > 75 - 3 for line in folded[:-1])
    unfolded = lines[start] + "".join(line[1:] for line in continuation)
    assert unfolded == "DESCRIPTION:" + LONG_CHINESE.replace(";", "\\;").replace(",", "\\,")
    (vevent,) = events(text)
    assert str(vevent["DESCRIPTION"]) == LONG_CHINESE


@pytest.mark.parametrize(
    "value",
    [
        "x" * 200,  # ASCII
        "é" * 100,  # two octets
        "仪" * 100,  # three octets
        "🔬" * 60,  # four octets
        "a仪é🔬" * 40,  # mixed, so cuts fall at every offset
    ],
)
def test_folding_never_splits_a_character(value: str) -> None:
    text = ics.invitation(event(location=value), method="REQUEST")

    physical_lines(text)  # every line decodes on its own: it is a str split from valid UTF-8
    for line in text.split("\r\n"):
        line.encode().decode("utf-8")
    (vevent,) = events(text)
    assert str(vevent["LOCATION"]) == value


def test_times_in_other_zones_are_written_in_utc() -> None:
    local = datetime(2026, 12, 1, 10, 0, tzinfo=ZoneInfo("Asia/Shanghai"))

    (vevent,) = events(
        ics.invitation(event(start=local, end=local + timedelta(hours=1)), method="REQUEST")
    )

    assert utc_property(vevent, "DTSTART") == START
    assert "DTSTART:20261201T020000Z\r\n" in ics.invitation(event(start=local), method="CANCEL")


def test_a_naive_time_is_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        ics.invitation(event(start=datetime(2026, 12, 1, 10, 0)), method="REQUEST")  # noqa: DTZ001


# --- Booking events ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (S.CONFIRMED, "CONFIRMED"),
        (S.IN_USE, "CONFIRMED"),
        (S.COMPLETED, "CONFIRMED"),
        (S.PENDING, "TENTATIVE"),
        (S.OFFERED, "TENTATIVE"),
        (S.CANCELLED, "CANCELLED"),
        (S.REJECTED, "CANCELLED"),
        (S.EXPIRED, "CANCELLED"),
        (S.NO_SHOW, "CANCELLED"),
    ],
)
def test_the_event_status_follows_the_booking_status(status: BookingStatus, expected: str) -> None:
    (vevent,) = events(ics.feed([booking_event(booking(status))], name="x"))

    assert str(vevent["STATUS"]) == expected


def test_every_booking_status_has_an_event_status_and_labels_in_both_languages() -> None:
    assert set(ics.EVENT_STATUS) == set(BookingStatus)
    assert set(ics.STATUS_LABELS["zh-CN"]) == set(ics.STATUS_LABELS["en"]) == set(BookingStatus)


def test_a_chinese_booking_event_names_the_instrument_times_booker_and_purpose() -> None:
    (vevent,) = events(ics.feed([booking_event(booking(), locale="zh-CN")], name="我的仪器预约"))

    assert str(vevent["UID"]) == "booking-7@labshare.example.cn"
    assert int(vevent["SEQUENCE"]) == 4
    assert utc_property(vevent, "DTSTAMP") == STAMP
    assert str(vevent["SUMMARY"]) == "预约：X射线衍射仪"
    assert str(vevent["LOCATION"]) == "理学楼 B201"
    assert str(vevent["DESCRIPTION"]) == (
        "状态：已确认\n"
        "时间：2026-12-01 10:00–12:00（Asia/Shanghai）\n"
        "预约人：张三\n"
        "用途：XRD 物相分析, 样品 3 个"
    )


def test_an_english_booking_event_says_the_same_in_english() -> None:
    (vevent,) = events(ics.feed([booking_event(booking(S.PENDING), locale="en")], name="Mine"))

    assert str(vevent["SUMMARY"]) == "Booking: X射线衍射仪"
    assert str(vevent["STATUS"]) == "TENTATIVE"
    assert str(vevent["DESCRIPTION"]) == (
        "Status: awaiting approval\n"
        "Time: 2026-12-01 10:00–12:00 (Asia/Shanghai)\n"
        "Booked by: 张三\n"
        "Purpose: XRD 物相分析, 样品 3 个"
    )


def test_the_description_shows_times_in_the_facility_zone_with_both_dates_over_midnight() -> None:
    late = booking(start_at=START + timedelta(hours=12), end_at=START + timedelta(hours=16))

    event_ = ics.booking_event(
        late,
        instrument_name="XRD",
        location="",
        host="h",
        locale="en",
        who=None,
        timezone="Europe/Berlin",
    )

    assert "Time: 2026-12-01 15:00–19:00 (Europe/Berlin)" in event_.description
    overnight = ics.booking_event(
        late, instrument_name="XRD", location="", host="h", locale="en", who=None
    )
    assert "Time: 2026-12-01 22:00 – 2026-12-02 02:00 (Asia/Shanghai)" in overnight.description


@pytest.mark.parametrize(
    ("locale", "summary", "instrument_line"),
    [("zh-CN", "已预约", "仪器：X射线衍射仪"), ("en", "Booked", "Instrument: X射线衍射仪")],
)
def test_a_busy_only_event_has_no_personal_data(
    locale: str, summary: str, instrument_line: str
) -> None:
    text = ics.feed([booking_event(booking(), locale=locale, who=None)], name="XRD")

    (vevent,) = events(text)
    assert str(vevent["SUMMARY"]) == summary
    assert str(vevent["DESCRIPTION"]).splitlines()[0] == instrument_line
    assert "张三" not in text
    assert "物相分析" not in text
    assert "ORGANIZER" not in text
    assert "ATTENDEE" not in text


def test_an_unnamed_booker_leaves_out_the_name_line_but_keeps_the_purpose() -> None:
    description = booking_event(booking(), locale="en", who="").description

    assert "Booked by" not in description
    assert "Purpose: XRD 物相分析, 样品 3 个" in description


# --- Feeds -------------------------------------------------------------------------------------


def test_a_feed_publishes_its_events_under_its_name() -> None:
    first = booking_event(booking(id=1))
    tomorrow = START + timedelta(days=1)
    second = booking_event(booking(id=2, start_at=tomorrow, end_at=tomorrow + timedelta(hours=1)))

    text = ics.feed([first, second], name="X射线衍射仪, 理学楼")

    calendar = parse(text)

    assert str(calendar["METHOD"]) == "PUBLISH"
    assert str(calendar["PRODID"]) == "-//labshare//labshare 0.1//EN"
    assert str(calendar["VERSION"]) == "2.0"
    # An X- property's value is TEXT (RFC 5545 §3.8.8.2), so escaped; icalendar returns it raw.
    assert str(calendar["X-WR-CALNAME"]) == "X射线衍射仪\\, 理学楼"
    assert "\r\nX-WR-CALNAME:X射线衍射仪\\, 理学楼\r\n" in text
    uids = [str(e["UID"]) for e in calendar.walk("VEVENT")]
    assert uids == ["booking-1@labshare.example.cn", "booking-2@labshare.example.cn"]
    # Published, not sent: no invitation fields even when the events carry e-mail addresses.
    assert "ATTENDEE" not in ics.feed([event()], name="x")


def test_an_empty_feed_is_a_valid_calendar() -> None:
    calendar = parse(ics.feed([], name="空"))

    assert calendar.walk("VEVENT") == []
    assert str(calendar["METHOD"]) == "PUBLISH"


def test_the_product_can_be_named() -> None:
    calendar = parse(ics.feed([], name="x", product="-//other//x//EN"))

    assert str(calendar["PRODID"]) == "-//other//x//EN"


def test_an_unknown_event_status_is_refused() -> None:
    with pytest.raises(ValueError, match="status"):
        ics.feed([dataclasses.replace(event(), status="MAYBE")], name="x")


def test_the_same_event_always_gives_the_same_bytes() -> None:
    # Feeds carry a strong ETag: nothing in the output may depend on the moment of rendering.
    assert ics.feed([booking_event(booking())], name="x") == ics.feed(
        [booking_event(booking())], name="x"
    )


# --- The feed's plain-text writer against the ics-built feed ------------------------------------

TRICKY_EVENTS = [
    event(),
    event(description=LONG_CHINESE, location="理学楼 B201, 3 层; 东侧"),
    event(summary="a,b;c\nd\\e", description="一\r\n二\r三\x00\x1b四\t五", location="x" * 200),
    event(location="a仪é🔬" * 40, summary="🔬" * 60, description="é" * 100),
    event(uid="booking-123456789@" + "very-long-subdomain." * 5 + "example.cn", sequence=117),
    event(description="", location=""),
    event(status="TENTATIVE", stamp=STAMP.astimezone(ZoneInfo("Europe/Berlin"))),
    event(status="CANCELLED", start=datetime(2026, 12, 1, 10, 0, tzinfo=ZoneInfo("Asia/Shanghai"))),
    booking_event(booking(), locale="zh-CN"),
    booking_event(booking(S.PENDING, purpose="a;b,c\\d\n第二行"), locale="en"),
    booking_event(booking(S.CANCELLED), locale="en", who=""),
    booking_event(booking(S.IN_USE, calendar_uid="booking-3"), locale="zh-CN", who=None),
    booking_event(
        booking(start_at=START + timedelta(hours=12), end_at=START + timedelta(hours=40)),
        locale="en",
        who=None,
    ),
]


@pytest.mark.parametrize(
    ("name", "product"),
    [
        ("我的仪器预约", ics.PRODUCT),
        ("X射线衍射仪, 理学楼; 3\\层\n" * 6, "-//a much longer product name, with commas//" * 3),
    ],
)
def test_the_feed_writer_gives_the_bytes_of_the_ics_built_feed(name: str, product: str) -> None:
    fast = ics.feed(TRICKY_EVENTS, name=name, product=product)
    reference = ics.feed_with_ics(TRICKY_EVENTS, name=name, product=product)

    assert fast == reference
    # And the independent parser reads the same calendar from both, property by property.
    written, built = parse(fast), parse(reference)
    assert written.to_ical() == built.to_ical()
    pairs = list(zip(written.walk("VEVENT"), built.walk("VEVENT"), strict=True))
    assert len(pairs) == len(TRICKY_EVENTS)
    for (ours, theirs), source in zip(pairs, TRICKY_EVENTS, strict=True):
        assert sorted(ours) == sorted(theirs)
        assert {k: ours[k].to_ical() for k in ours} == {k: theirs[k].to_ical() for k in theirs}
        assert str(ours["UID"]) == source.uid
        assert str(ours["SUMMARY"]) == _readable(source.summary)
        assert str(ours.get("DESCRIPTION", "")) == _readable(source.description)
        assert str(ours.get("LOCATION", "")) == _readable(source.location)
        assert utc_property(ours, "DTSTART") == source.start
        assert utc_property(ours, "DTSTAMP") == source.stamp


def _readable(text: str) -> str:
    """What a calendar app reads back: line breaks as LF, control characters gone."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return "".join(c for c in text if c in "\t\n" or not (ord(c) < 0x20 or ord(c) == 0x7F))


def test_both_feed_writers_refuse_an_unknown_status() -> None:
    for write in (ics.feed, ics.feed_with_ics):
        with pytest.raises(ValueError, match="status"):
            write([dataclasses.replace(event(), status="MAYBE")], name="x")
