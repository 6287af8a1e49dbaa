"""A lab manager edits an instrument's price and the facility's opening hours in a real browser,
by keyboard, at desktop and phone width."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import pytest
from sqlmodel import Session, col, select

from core.accounts.rules import Role, ScopeKind
from core.accounts.schemas import RoleGrant
from instruments.models import Instrument, OpeningSpan
from tests.browser.conftest import PHONE, log_in, screenshot
from tests.factories import PASSWORD, make_user
from tests.instruments.factories import make_facility, make_instrument


@pytest.fixture
def managed(seed_session: Callable[[], AbstractContextManager[Session]]) -> dict[str, Any]:
    with seed_session() as session:
        facility = make_facility(session)
        instrument = make_instrument(
            session, facility=facility, name="场发射扫描电镜", price_internal_fen=20_000
        )
        manager = make_user(
            session,
            name="平台管理员",
            roles=[
                RoleGrant(
                    role=Role.LAB_MANAGER, scope_kind=ScopeKind.FACILITY, scope_id=facility.id
                )
            ],
        )
        session.commit()
        return {
            "email": manager.email,
            "instrument_id": instrument.id,
            "facility_id": facility.id,
        }


def test_a_manager_edits_a_price_and_the_opening_hours_by_keyboard(
    page: Any,
    seed_session: Callable[[], AbstractContextManager[Session]],
    managed: dict[str, Any],
) -> None:
    log_in(page, managed["email"], PASSWORD)
    page.goto("/manage/instruments")
    page.get_by_role("link", name="编辑 场发射扫描电镜").click()
    page.wait_for_load_state("networkidle")

    price = page.get_by_label("校内用户（元/小时）")
    assert price.input_value() == "200.00"
    price.focus()
    page.keyboard.press("Control+A")
    page.keyboard.type("235.50")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.name") == "price_external_academic_yuan"
    screenshot(page, "manage-instrument-edit")
    price.press("Enter")  # submits the form, as a keyboard user does
    page.wait_for_load_state("networkidle")

    assert page.get_by_role("status").inner_text() == "已保存。"
    assert page.get_by_label("校内用户（元/小时）").input_value() == "235.50"
    with seed_session() as session:
        instrument = session.get(Instrument, managed["instrument_id"])
        assert instrument is not None
        assert instrument.price_internal_fen == 23_550

    page.goto(f"/manage/facilities/{managed['facility_id']}/hours")
    monday = page.locator("fieldset[data-weekday='0']")
    monday.get_by_role("button", name="添加时段").focus()
    page.keyboard.press("Enter")  # a second, empty interval appears and takes the focus
    assert monday.locator(".span-row").count() == 3
    page.keyboard.type("18:00")
    page.keyboard.press("Tab")
    page.keyboard.type("21:30")
    monday.locator("input[name='end_0']").first.fill("12:00")
    screenshot(page, "manage-opening-hours")
    page.get_by_role("button", name="保存开放时间").click()
    page.wait_for_load_state("networkidle")

    assert page.get_by_role("status").inner_text() == "已保存。"
    with seed_session() as session:
        spans = session.exec(
            select(OpeningSpan)
            .where(OpeningSpan.facility_id == managed["facility_id"], OpeningSpan.weekday == 0)
            .order_by(col(OpeningSpan.start_minute))
        ).all()
        assert [(s.start_minute, s.end_minute) for s in spans] == [(540, 720), (1080, 1290)]
    assert page.script_errors == []


def test_the_management_pages_fit_a_phone(phone_page: Any, managed: dict[str, Any]) -> None:
    log_in(phone_page, managed["email"], PASSWORD)
    for path, name in (
        (f"/manage/instruments/{managed['instrument_id']}/edit", "manage-instrument-edit-phone"),
        (f"/manage/facilities/{managed['facility_id']}/hours", "manage-opening-hours-phone"),
        ("/manage/instruments", None),
        ("/manage/outages", None),
        ("/manage/qualifications", None),
        ("/manage/service-requests", None),
    ):
        phone_page.goto(path)
        phone_page.wait_for_load_state("networkidle")
        width = phone_page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], path
        if name:
            screenshot(phone_page, name)
    assert phone_page.script_errors == []
