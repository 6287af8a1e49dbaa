"""My bookings in a real browser: a researcher cancels a booking through the page; the pages
fit a phone screen; no script errors (CSP violations show up as errors too)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlmodel import Session

from booking.models import Booking
from booking.rules import BookingStatus, OperatedBy
from core.accounts.models import User
from core.accounts.rules import Role
from instruments.models import Instrument
from tests.browser.conftest import PHONE, log_in, screenshot
from tests.factories import PASSWORD, make_organisation, make_user
from tests.instruments.factories import make_facility, make_instrument, make_testing_service

SHANGHAI = ZoneInfo("Asia/Shanghai")
Seeder = Callable[[], AbstractContextManager[Session]]


def days_ahead_at(days: int, hour: int) -> datetime:
    """``hour`` o'clock Shanghai time, ``days`` days from today, as UTC."""
    local = datetime.now(SHANGHAI) + timedelta(days=days)
    return local.replace(hour=hour, minute=0, second=0, microsecond=0).astimezone(UTC)


def add_booking(
    session: Session, instrument: Instrument, user: User, start: datetime, status: BookingStatus
) -> Booking:
    booking = Booking(
        instrument_id=instrument.id or 0,
        facility_id=instrument.facility_id,
        user_id=user.id or 0,
        organisation_id=user.organisation_id,
        start_at=start,
        end_at=start + timedelta(hours=2),
        held_until=start + timedelta(hours=2),
        status=status,
        operated_by=OperatedBy.SELF,
        purpose="XRD 物相分析",
        created_by_id=user.id,
    )
    session.add(booking)
    session.flush()
    return booking


@dataclass
class Seeded:
    email: str
    to_cancel: int
    other: int


@pytest.fixture
def seeded(seed_session: Seeder) -> Seeded:
    with seed_session() as session:
        university = make_organisation(session)
        facility = make_facility(session, organisation=university)
        instrument = make_instrument(session, facility=facility, name="X射线衍射仪 XRD")
        make_testing_service(
            session, facility=facility, instruments=[instrument], name="粉末XRD物相分析"
        )
        researcher = make_user(session, organisation=university, roles=[Role.RESEARCHER])
        to_cancel = add_booking(
            session, instrument, researcher, days_ahead_at(3, 10), BookingStatus.CONFIRMED
        )
        other = add_booking(
            session, instrument, researcher, days_ahead_at(4, 14), BookingStatus.PENDING
        )
        add_booking(session, instrument, researcher, days_ahead_at(-3, 9), BookingStatus.COMPLETED)
        session.commit()
        return Seeded(researcher.email, to_cancel.id or 0, other.id or 0)


def test_a_researcher_cancels_a_booking_from_my_bookings(page: Any, seeded: Seeded) -> None:
    log_in(page, seeded.email, PASSWORD)
    page.goto("/my/bookings")
    row = page.locator(f"li[data-booking-id='{seeded.to_cancel}']")
    assert row.locator(".status").get_attribute("data-status") == "confirmed"
    assert page.locator(f"li[data-booking-id='{seeded.other}'] .status").inner_text() == "待审批"
    screenshot(page, "my-bookings")

    row.locator("summary", has_text="取消").click()
    row.get_by_label("理由（可选）").fill("实验计划调整")
    row.get_by_role("button", name="取消预约").click()
    page.wait_for_load_state("networkidle")

    assert page.url.endswith(f"/my/bookings/{seeded.to_cancel}?done=cancelled")
    card = page.locator(f"section[data-booking-id='{seeded.to_cancel}']")
    assert card.locator(".status").get_attribute("data-status") == "cancelled"
    assert page.get_by_text("预约已取消。").is_visible()
    assert page.get_by_text("实验计划调整").first.is_visible()  # the reason, in the history
    screenshot(page, "my-booking-detail")

    page.goto("/my/bookings")
    assert page.locator(f"li[data-booking-id='{seeded.to_cancel}']").count() == 0
    page.goto("/my/bookings?when=past")
    assert (
        page.locator(f"li[data-booking-id='{seeded.to_cancel}'] .status").get_attribute(
            "data-status"
        )
        == "cancelled"
    )
    assert page.script_errors == []


def test_my_bookings_fit_a_phone_screen(phone_page: Any, seeded: Seeded) -> None:
    log_in(phone_page, seeded.email, PASSWORD)
    phone_page.goto("/my/bookings")
    phone_page.get_by_role("button", name="生成我的日历链接").click()
    phone_page.wait_for_load_state("networkidle")
    assert phone_page.locator("a.webcal-link").inner_text().startswith("webcal://")

    row = phone_page.locator(f"li[data-booking-id='{seeded.other}']")
    for action in ("改期", "转给同事", "取消"):
        row.locator("summary", has_text=action).click()

    width = phone_page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"]
    screenshot(phone_page, "my-bookings-phone")
    assert phone_page.script_errors == []


def test_the_service_request_form_sends_samples_with_a_file(
    page: Any, seeded: Seeded, tmp_path: Any
) -> None:
    attachment = tmp_path / "样品清单.pdf"
    attachment.write_bytes(b"%PDF-1.4\n% samples\n")
    log_in(page, seeded.email, PASSWORD)
    page.goto("/my/service-requests/new")
    screenshot(page, "service-request-form")

    page.get_by_label("检测服务").select_option(
        label=page.locator(
            "#f-testing_service_id option", has_text="粉末XRD物相分析"
        ).first.inner_text()
    )
    page.get_by_label("样品数量").fill("3")
    page.get_by_label("样品说明和备注").fill("三个粉末样品，需避光")
    page.get_by_label("附件（可选）").set_input_files(str(attachment))
    page.get_by_role("button", name="提交申请").click()
    page.wait_for_load_state("networkidle")

    assert "/my/service-requests/" in page.url
    assert "created=1" in page.url
    assert page.locator(".status").get_attribute("data-status") == "submitted"
    assert page.get_by_role("link", name="样品清单.pdf").is_visible()
    screenshot(page, "service-request-detail")

    page.set_viewport_size(PHONE)
    page.goto("/my/service-requests/new")
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    assert page.script_errors == []
