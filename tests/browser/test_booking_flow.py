"""Booking in a real browser: a researcher finds an instrument, drags across free time on the
FullCalendar calendar, confirms and lands on its booking; a second researcher asking for the
same time sees the conflict; the instrument page fits a phone; no script errors (CSP
violations show up as errors too)."""

from __future__ import annotations

import re
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from playwright.sync_api import expect
from sqlmodel import Session, select

from booking.models import Booking
from booking.rules import BookingStatus
from core.accounts.rules import Role
from core.db import Database
from instruments import service as instruments
from instruments.schemas import OpeningSpanIn, QualificationGrant
from tests.browser.conftest import PHONE, log_in, screenshot
from tests.factories import PASSWORD, make_organisation, make_user
from tests.instruments.factories import make_facility, make_instrument

SHANGHAI = ZoneInfo("Asia/Shanghai")
Seeder = Callable[[], AbstractContextManager[Session]]
EVERY_DAY_7_TO_22 = [OpeningSpanIn(weekday=d, start="07:00", end="22:00") for d in range(7)]


@dataclass
class Seeded:
    instrument_id: int
    first: str  # researchers' e-mails, both qualified
    second: str


@pytest.fixture(scope="module")
def seeded(browser_database: Database) -> Seeded:
    """One instrument open every day 07:00–22:00 and two researchers qualified on it."""
    with browser_database.new_session() as session:
        university = make_organisation(session, name="浏览器测试大学")
        facility = make_facility(
            session,
            organisation=university,
            name="浏览器测试平台",
            opening_hours=EVERY_DAY_7_TO_22,
            opens_on_holidays=True,
        )
        instrument = make_instrument(
            session,
            facility=facility,
            name="透射电子显微镜",
            name_en="Transmission electron microscope",
            keywords="电镜 TEM",
            model="Talos F200X",
            manufacturer="Thermo Fisher",
            description="200 kV 场发射透射电镜，可做高分辨成像与能谱分析。",
        )
        emails = []
        for name in ("第一位研究员", "第二位研究员"):
            user = make_user(session, organisation=university, name=name, roles=[Role.RESEARCHER])
            instruments.grant_qualification(
                session,
                actor=None,
                data=QualificationGrant(user_id=user.id or 0, instrument_id=instrument.id or 0),
            )
            emails.append(user.email)
        session.commit()
        return Seeded(instrument.id or 0, emails[0], emails[1])


def tomorrow() -> datetime:
    return (datetime.now(SHANGHAI) + timedelta(days=1)).replace(
        hour=0, minute=0, second=0, microsecond=0
    )


def drag_across(page: Any, day: datetime, first_slot: str, last_slot: str) -> None:
    """Drag with the mouse down the day's column from the first slot to the last one."""
    page.locator(f"[data-time='{first_slot}:00']").last.evaluate(
        "slot => slot.scrollIntoView({block: 'center'})"
    )
    header = page.locator(f"[role=columnheader][data-date='{day:%Y-%m-%d}']").bounding_box()
    top = page.locator(f"[data-time='{first_slot}:00']").last.bounding_box()
    bottom = page.locator(f"[data-time='{last_slot}:00']").last.bounding_box()
    x = header["x"] + header["width"] / 2
    page.mouse.move(x, top["y"] + top["height"] / 2)
    page.mouse.down()
    page.mouse.move(x, top["y"] + top["height"] / 2 + 3, steps=3)
    page.mouse.move(x, bottom["y"] + bottom["height"] / 2, steps=10)
    page.mouse.up()


def show_day(page: Any, day: datetime) -> None:
    """Step the week view forward until it shows ``day``, waiting for each week to be drawn
    (checking before the calendar has drawn could page past the wanted week)."""
    days = page.locator("#availability-calendar [role=columnheader][data-date]")
    wanted = page.locator(f"#availability-calendar [role=columnheader][data-date='{day:%Y-%m-%d}']")
    for _ in range(3):
        days.first.wait_for()
        if wanted.count():
            return
        shown = days.first.get_attribute("data-date")
        page.locator("#availability-calendar button[aria-label='下月']").click()
        expect(days.first).not_to_have_attribute("data-date", shown or "")
    expect(wanted).to_have_count(1)


def test_a_researcher_books_a_free_slot_on_the_calendar(
    page: Any, seeded: Seeded, seed_session: Seeder
) -> None:
    log_in(page, seeded.first, PASSWORD)
    page.goto("/instruments")
    page.locator("#f-q").fill("TEM")
    page.locator("form[role=search] button[type=submit]").first.click()
    page.wait_for_load_state("networkidle")
    screenshot(page, "catalogue")
    page.get_by_role("link", name="透射电子显微镜").click()
    page.wait_for_load_state("networkidle")
    page.wait_for_selector(".slot-free")
    screenshot(page, "instrument-page")
    day = tomorrow()
    show_day(page, day)
    page.wait_for_selector(".slot-free")

    drag_across(page, day, "10:00", "10:30")
    page.wait_for_url(re.compile(r"/instruments/\d+/book\?"))
    assert page.locator(".chosen-time").inner_text().startswith(f"{day:%Y-%m-%d} 10:00")
    screenshot(page, "booking-confirmation")
    page.locator("#f-purpose").fill("纳米颗粒形貌观察")
    page.get_by_role("button", name="提交申请").click()

    page.wait_for_url(re.compile(r"/my/bookings/\d+"))
    booking_id = int(re.search(r"/my/bookings/(\d+)", page.url).group(1))
    with seed_session() as session:
        booking = session.get(Booking, booking_id)
        assert booking is not None
        assert booking.status == BookingStatus.CONFIRMED
        assert booking.purpose == "纳米颗粒形貌观察"
        assert booking.start_at == day.replace(hour=10)
        assert booking.end_at == day.replace(hour=11)
    assert page.script_errors == []


def test_a_second_researcher_asking_for_the_same_time_sees_the_conflict(
    page: Any, seeded: Seeded, seed_session: Seeder
) -> None:
    day = tomorrow()
    start, end = day.replace(hour=10), day.replace(hour=11)
    log_in(page, seeded.second, PASSWORD)
    page.goto(f"/instruments/{seeded.instrument_id}")
    page.locator("#f-start").fill(f"{day:%Y-%m-%d}T10:00")
    page.locator("#f-end").fill(f"{day:%Y-%m-%d}T11:00")
    page.get_by_role("button", name="下一步：确认").click()
    page.wait_for_load_state("networkidle")
    page.get_by_role("button", name="提交申请").click()
    page.wait_for_load_state("networkidle")

    assert page.get_by_role("heading", name="这段时间已被占用").is_visible()
    assert "仪器已被预约" in page.locator(".conflict").inner_text()
    assert "第一位研究员" not in page.content()
    assert page.get_by_role("button", name="加入候补名单").is_visible()
    screenshot(page, "booking-conflict")
    with seed_session() as session:
        held = session.exec(
            select(Booking).where(
                Booking.instrument_id == seeded.instrument_id,
                Booking.start_at < end,
                Booking.end_at > start,
            )
        ).all()
        assert len(held) == 1
    # The refused request is answered 409, which chromium logs as a failed resource; anything
    # else (a script error, a CSP violation) is a fault.
    assert [e for e in page.script_errors if "status of 409" not in e] == []


def test_a_double_clicked_request_makes_one_booking(
    page: Any, seeded: Seeded, seed_session: Seeder
) -> None:
    day = tomorrow()
    log_in(page, seeded.first, PASSWORD)
    page.goto(
        f"/instruments/{seeded.instrument_id}/book"
        f"?start={day:%Y-%m-%d}T15:00&end={day:%Y-%m-%d}T16:00"
    )

    page.get_by_role("button", name="提交申请").dblclick()
    # The second click's navigation may abort the first's: poll the address, not one navigation.
    expect(page).to_have_url(re.compile(r"/my/bookings/\d+"))

    with seed_session() as session:
        made = session.exec(
            select(Booking).where(
                Booking.instrument_id == seeded.instrument_id,
                Booking.start_at == day.replace(hour=15),
            )
        ).all()
        assert len(made) == 1
    assert page.url.split("?")[0].endswith(f"/my/bookings/{made[0].id}")


def test_the_catalogue_filters_refresh_the_results_in_place_on_a_phone(
    phone_page: Any, seeded: Seeded
) -> None:
    phone_page.goto("/instruments")
    phone_page.locator(".more-filters summary").click()
    with phone_page.expect_response(lambda r: "/instruments?" in r.url and "category=" in r.url):
        phone_page.locator("#f-category").select_option("laser")
    phone_page.wait_for_url(re.compile(r"category=laser"))  # htmx keeps the address in step

    assert "找到 0 台仪器" in phone_page.locator("#results").inner_text()
    assert phone_page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    screenshot(phone_page, "catalogue-phone")
    assert phone_page.script_errors == []


def test_the_instrument_page_fits_a_phone(phone_page: Any, seeded: Seeded) -> None:
    log_in(phone_page, seeded.first, PASSWORD)
    phone_page.goto(f"/instruments/{seeded.instrument_id}")
    phone_page.wait_for_selector(".slot-free, .fc-timegrid")
    phone_page.wait_for_load_state("networkidle")

    assert phone_page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    assert phone_page.locator("#f-start").is_visible()
    screenshot(phone_page, "instrument-page-phone")
    assert phone_page.script_errors == []
