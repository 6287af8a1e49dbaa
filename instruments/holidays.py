"""China's statutory holidays and make-up working days, from the maintained chinese-calendar.

The library covers the years the State Council has announced; for a later year it knows
nothing yet, and days fall back to plain weekdays and weekends (logged once per year).
"""

from __future__ import annotations

import logging
from datetime import date
from functools import lru_cache

import chinese_calendar

from instruments.rules import DayKind

log = logging.getLogger("labshare.holidays")


@lru_cache(maxsize=4096)
def day_kind(day: date) -> DayKind:
    weekend = day.weekday() >= 5
    try:
        on_holiday, holiday_name = chinese_calendar.get_holiday_detail(day)
    except NotImplementedError:
        _warn_unknown_year(day.year)
        return DayKind.WEEKEND if weekend else DayKind.WORKDAY
    if on_holiday and holiday_name is not None:
        return DayKind.HOLIDAY
    if not on_holiday and weekend:
        return DayKind.MAKEUP_WORKDAY
    return DayKind.WEEKEND if weekend else DayKind.WORKDAY


@lru_cache(maxsize=64)
def _warn_unknown_year(year: int) -> None:
    log.warning("no statutory holiday data for %s yet; treating it as an ordinary year", year)
