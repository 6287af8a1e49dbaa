"""The site in a real browser: login, the language switch, and a phone-width layout."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from sqlmodel import Session

from tests.browser.conftest import PHONE, log_in, screenshot
from tests.factories import PASSWORD, make_user


def test_the_language_switch_changes_the_page(
    page: Any, seed_session: Callable[[], AbstractContextManager[Session]]
) -> None:
    with seed_session() as session:
        user = make_user(session, email="switch@example.cn", name="切换者")
        session.commit()
        email = user.email

    log_in(page, email, PASSWORD)
    assert page.locator("html").get_attribute("lang") == "zh-CN"
    assert page.get_by_role("button", name="退出登录").is_visible()

    page.get_by_role("button", name="English").click()
    page.wait_for_load_state("networkidle")

    assert page.locator("html").get_attribute("lang") == "en"
    assert page.get_by_role("button", name="Log out").is_visible()
    screenshot(page, "home-en")
    assert page.script_errors == []


def test_the_header_fits_a_phone_screen(phone_page: Any) -> None:
    phone_page.goto("/login")

    width = phone_page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"]
    assert phone_page.locator("#email").is_visible()
    screenshot(phone_page, "login-phone")
