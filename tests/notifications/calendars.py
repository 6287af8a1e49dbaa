"""Reading calendar files in tests: with the independent ``icalendar`` parser, after checking
the physical format (CRLF line endings, lines of at most 75 octets)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import icalendar


def physical_lines(text: str) -> list[str]:
    assert text.endswith("\r\n"), "the last line ends with CRLF too"
    lines = text[: -len("\r\n")].split("\r\n")
    assert not any("\n" in line or "\r" in line for line in lines), "a bare LF or CR"
    too_long = [line for line in lines if len(line.encode()) > 75]
    assert not too_long, f"lines over 75 octets: {too_long[:3]}"
    return lines


def parse(text: str) -> icalendar.Calendar:
    """The calendar, checked physically, then parsed by ``icalendar`` (which must not complain)."""
    physical_lines(text)
    calendar = icalendar.Calendar.from_ical(text)
    assert not calendar.errors
    for component in calendar.walk():
        assert not component.errors, component.errors
    return calendar


def events(text: str) -> list[icalendar.Event]:
    return list(parse(text).walk("VEVENT"))


def utc_property(component: Any, name: str) -> datetime:
    """A DATE-TIME property that must be written in UTC (``...Z``)."""
    raw = component[name].to_ical().decode()
    assert raw.endswith("Z"), f"{name}:{raw} is not UTC"
    value = component.decoded(name)
    assert value.utcoffset().total_seconds() == 0
    return value.astimezone(UTC)
