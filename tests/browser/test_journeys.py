"""Journeys that cross the areas of the site, in a real browser: a researcher finds an
instrument, picks free time on the calendar and sees the booking in My bookings; a second
researcher who picked the same time sees the conflict, not who holds it; a lab manager approves
a pending request and the researcher sees it confirmed; the language switch follows the user
through every area; the key pages fit a phone; bad input sent through the pages is refused.

Each person has a browser context of their own (own cookies), as on separate computers.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pytest
from playwright.sync_api import expect
from sqlmodel import Session, select

from booking.models import Booking
from booking.rules import BookingStatus, OperatedBy
from core.accounts.models import User
from core.accounts.rules import Role, ScopeKind
from core.accounts.schemas import RoleGrant
from instruments import service as instruments
from instruments.rules import ApprovalMode
from instruments.schemas import OpeningSpanIn, QualificationGrant
from tests.browser.conftest import DESKTOP, PHONE, _new_page, log_in, screenshot
from tests.browser.test_booking_flow import drag_across, show_day, tomorrow
from tests.factories import PASSWORD, make_organisation, make_user
from tests.instruments.factories import make_facility, make_instrument

Seeder = Callable[[], AbstractContextManager[Session]]
OpenTab = Callable[..., Any]
EVERY_DAY_7_TO_22 = [OpeningSpanIn(weekday=d, start="07:00", end="22:00") for d in range(7)]


@dataclass
class Lab:
    facility_id: int
    instrument_id: int
    instrument_name: str
    keyword: str  # finds this instrument, and only it, in the catalogue
    manager: str  # e-mails
    first: str
    second: str
    first_name: str


def seed_lab(seed_session: Seeder, tag: str, approval: ApprovalMode) -> Lab:
    """A facility open every day 07:00–22:00 with one instrument, its lab manager, and two
    researchers qualified on the instrument; names and e-mails unique to ``tag``."""
    with seed_session() as session:
        university = make_organisation(session, name=f"旅程测试大学{tag}")
        facility = make_facility(
            session,
            organisation=university,
            name=f"旅程测试平台{tag}",
            opening_hours=EVERY_DAY_7_TO_22,
            opens_on_holidays=True,
        )
        keyword = f"JRN{tag.upper()}"
        instrument = make_instrument(
            session,
            facility=facility,
            name=f"场发射扫描电镜{tag}",
            name_en=f"Field-emission SEM {tag}",
            keywords=f"电镜 SEM {keyword}",
            approval_mode=approval,
        )
        manager = make_user(
            session,
            email=f"journey-manager-{tag}@example.cn",
            name=f"平台经理{tag}",
            roles=[
                RoleGrant(
                    role=Role.LAB_MANAGER, scope_kind=ScopeKind.FACILITY, scope_id=facility.id
                )
            ],
        )
        researchers = []
        for which, name in (("first", "李研究员"), ("second", "王研究员")):
            user = make_user(
                session,
                organisation=university,
                email=f"journey-{which}-{tag}@example.cn",
                name=f"{name}{tag}",
                roles=[Role.RESEARCHER],
            )
            instruments.grant_qualification(
                session,
                actor=None,
                data=QualificationGrant(user_id=user.id or 0, instrument_id=instrument.id or 0),
            )
            researchers.append(user)
        session.commit()
        return Lab(
            facility_id=facility.id or 0,
            instrument_id=instrument.id or 0,
            instrument_name=instrument.name,
            keyword=keyword,
            manager=manager.email,
            first=researchers[0].email,
            second=researchers[1].email,
            first_name=researchers[0].name,
        )


@pytest.fixture
def open_tab(chromium: Any, live_server: str) -> Iterator[OpenTab]:
    """``open_tab(viewport)``: one more browser context (another person's computer)."""
    opened: list[Iterator[Any]] = []

    def open_one(viewport: dict[str, int] = DESKTOP) -> Any:
        tab = _new_page(chromium, live_server, viewport)
        opened.append(tab)
        return next(tab)

    yield open_one
    for tab in opened:
        next(tab, None)  # closes its context


def bookings_at(seed_session: Seeder, instrument_id: int, start: datetime) -> list[Booking]:
    with seed_session() as session:
        return list(
            session.exec(
                select(Booking).where(
                    Booking.instrument_id == instrument_id, Booking.start_at == start
                )
            ).all()
        )


def find_and_pick(page: Any, lab: Lab, day: datetime, first_slot: str, last_slot: str) -> None:
    """Search the catalogue, open the instrument and drag across free time on its calendar,
    landing on the confirmation step."""
    page.goto("/instruments")
    page.locator("#f-q").fill(lab.keyword)
    page.locator("form[role=search] button[type=submit]").first.click()
    expect(page.locator("#results .result-count")).to_have_text("找到 1 台仪器")
    page.get_by_role("link", name=lab.instrument_name).click()
    expect(page.locator("#calendar-heading")).to_contain_text("可预约时间")
    show_day(page, day)
    page.locator(".slot-free").first.wait_for()
    drag_across(page, day, first_slot, last_slot)
    page.wait_for_url(re.compile(rf"/instruments/{lab.instrument_id}/book\?"))
    expect(page.locator(".chosen-time")).to_contain_text(f"{day:%Y-%m-%d} {first_slot}")


def booking_id_in(url: str) -> int:
    found = re.search(r"/my/bookings/(\d+)", url)
    assert found is not None, url
    return int(found.group(1))


def fits(page: Any, width: int = PHONE["width"]) -> bool:
    return bool(page.evaluate("w => document.documentElement.scrollWidth <= w", width))


def only_expected(errors: list[str], *statuses: int) -> list[str]:
    """Script errors, less chromium's own log line for an answer we provoked on purpose."""
    return [e for e in errors if not any(f"status of {s}" in e for s in statuses)]


def test_a_researcher_finds_books_on_the_calendar_and_sees_it_in_my_bookings(
    page: Any, seed_session: Seeder
) -> None:
    lab = seed_lab(seed_session, "find", ApprovalMode.AUTOMATIC_FOR_QUALIFIED)
    day = tomorrow()
    log_in(page, lab.first, PASSWORD)

    find_and_pick(page, lab, day, "10:00", "10:30")
    screenshot(page, "journey-confirm")
    page.locator("#f-purpose").fill("断口形貌观察")
    page.get_by_role("button", name="提交申请").click()
    page.wait_for_url(re.compile(r"/my/bookings/\d+"))
    booking_id = booking_id_in(page.url)

    page.get_by_role("navigation").get_by_role("link", name="我的预约").click()
    page.wait_for_url(re.compile(r"/my/bookings$"))
    row = page.locator(f"li[data-booking-id='{booking_id}']")
    expect(row.locator("a.instrument")).to_have_text(lab.instrument_name)
    expect(row.locator(".status")).to_have_text("已确认")
    expect(row.locator(".status")).to_have_attribute("data-status", "confirmed")
    expect(row.locator(".when")).to_contain_text(f"{day:%Y-%m-%d} 10:00")
    expect(row.locator(".when")).to_contain_text("Asia/Shanghai")
    screenshot(page, "journey-my-bookings")
    [booking] = bookings_at(seed_session, lab.instrument_id, day.replace(hour=10))
    assert (booking.id, booking.status) == (booking_id, BookingStatus.CONFIRMED)
    assert page.script_errors == []


def test_a_second_researcher_who_picked_the_same_time_sees_the_conflict_not_who_holds_it(
    page: Any, open_tab: OpenTab, seed_session: Seeder
) -> None:
    lab = seed_lab(seed_session, "race", ApprovalMode.AUTOMATIC_FOR_QUALIFIED)
    day = tomorrow()
    second = open_tab()
    log_in(page, lab.first, PASSWORD)
    log_in(second, lab.second, PASSWORD)
    # Both pick the same free hour before either sends the request.
    find_and_pick(page, lab, day, "13:00", "13:30")
    find_and_pick(second, lab, day, "13:00", "13:30")

    page.get_by_role("button", name="提交申请").click()
    page.wait_for_url(re.compile(r"/my/bookings/\d+"))
    second.get_by_role("button", name="提交申请").click()

    expect(second.get_by_role("heading", name="这段时间已被占用")).to_be_visible()
    expect(second.locator(".conflict")).to_contain_text("仪器已被预约")
    assert lab.first_name not in second.content()
    assert lab.first not in second.content()
    screenshot(second, "journey-conflict")
    # Back on the calendar the hour is an anonymous busy block.
    second.get_by_role("link", name="返回日历").click()
    expect(second.locator(".slot-busy").first).to_be_visible()
    assert lab.first_name not in second.locator("#availability-calendar").inner_text()
    second.goto("/my/bookings")
    expect(second.get_by_text("没有即将进行的预约。")).to_be_visible()

    held = bookings_at(seed_session, lab.instrument_id, day.replace(hour=13))
    assert [b.id for b in held] == [booking_id_in(page.url)]
    assert page.script_errors == []
    # The refused request is answered 409, which chromium logs as a failed resource.
    assert only_expected(second.script_errors, 409) == []


def test_a_manager_approves_a_pending_request_and_the_researcher_sees_it_confirmed(
    page: Any, open_tab: OpenTab, seed_session: Seeder
) -> None:
    lab = seed_lab(seed_session, "approve", ApprovalMode.MANUAL)
    day = tomorrow()
    log_in(page, lab.first, PASSWORD)
    find_and_pick(page, lab, day, "14:00", "14:30")
    expect(page.get_by_text("每个申请都由实验室管理员审批。")).to_be_visible()
    page.locator("#f-purpose").fill("催化剂颗粒成像")
    page.get_by_role("button", name="提交申请").click()
    page.wait_for_url(re.compile(r"/my/bookings/\d+"))
    booking_id = booking_id_in(page.url)
    page.goto("/my/bookings")
    row = page.locator(f"li[data-booking-id='{booking_id}']")
    expect(row.locator(".status")).to_have_text("待审批")

    manager = open_tab()
    log_in(manager, lab.manager, PASSWORD)
    manager.get_by_role("navigation").get_by_role("link", name="管理").click()
    expect(manager.locator("#pending-count")).to_have_text("1")
    manager.goto("/manage/approvals")
    request = manager.locator(f"#request-{booking_id}")
    expect(request).to_contain_text("催化剂颗粒成像")
    expect(request).to_contain_text(lab.first_name)
    screenshot(manager, "journey-approval-queue")
    request.locator("button[value=approve]").click()
    expect(manager.get_by_role("status")).to_have_text("已批准：1 条。")
    expect(manager.locator(f"#request-{booking_id}")).to_have_count(0)

    page.reload()
    expect(row.locator(".status")).to_have_text("已确认")
    expect(row.locator(".status")).to_have_attribute("data-status", "confirmed")
    screenshot(page, "journey-approved-in-my-bookings")
    assert page.script_errors == []
    assert manager.script_errors == []


def test_the_language_chosen_follows_the_user_through_every_area(
    page: Any, open_tab: OpenTab, seed_session: Seeder
) -> None:
    lab = seed_lab(seed_session, "lang", ApprovalMode.AUTOMATIC_FOR_QUALIFIED)
    with seed_session() as session:  # one person who researches and manages the facility
        make_user(
            session,
            email="journey-both-lang@example.cn",
            name="双重角色用户",
            roles=[
                Role.RESEARCHER,
                RoleGrant(
                    role=Role.LAB_MANAGER, scope_kind=ScopeKind.FACILITY, scope_id=lab.facility_id
                ),
            ],
        )
        session.commit()
    # Each area's page and what it says in either language.
    pages = [
        ("/instruments", "h1", "仪器目录", "Instrument catalogue"),
        (f"/instruments/{lab.instrument_id}", "#calendar-heading", "可预约时间", "Availability"),
        ("/my/bookings", "h1", "我的预约", "My bookings"),
        ("/manage", "h1", "管理概览", "Manager dashboard"),
        ("/manage/approvals", "h1", "审批队列", "Approval queue"),
        ("/reports", "h1", "利用率看板", "Utilization dashboard"),
        ("/notifications", "h1", "消息通知", "Notifications"),
        ("/account", "h1", "我的账户", "My account"),
    ]
    html = page.locator("html")
    log_in(page, "journey-both-lang@example.cn", PASSWORD)
    page.goto("/instruments")
    expect(html).to_have_attribute("lang", "zh-CN")
    expect(page.locator("h1")).to_have_text("仪器目录")

    page.get_by_role("button", name="English").click()
    page.wait_for_url(re.compile(r"/instruments$"))  # the switch stays on the page
    expect(html).to_have_attribute("lang", "en")
    for path, where, _, english in pages:
        page.goto(path)
        expect(html).to_have_attribute("lang", "en")
        expect(page.locator(where).first).to_contain_text(english)
        expect(page.get_by_role("button", name="Log out")).to_be_visible()
    screenshot(page, "journey-account-en")

    # The account remembers it: logging in on another computer shows English.
    elsewhere = open_tab()
    log_in(elsewhere, "journey-both-lang@example.cn", PASSWORD)
    elsewhere.goto("/my/bookings")
    expect(elsewhere.locator("html")).to_have_attribute("lang", "en")
    expect(elsewhere.locator("h1")).to_have_text("My bookings")

    page.goto("/manage/approvals")
    page.get_by_role("button", name="中文").click()
    page.wait_for_url(re.compile(r"/manage/approvals$"))
    for path, where, chinese, _ in pages:
        page.goto(path)
        expect(html).to_have_attribute("lang", "zh-CN")
        expect(page.locator(where).first).to_contain_text(chinese)
    screenshot(page, "journey-account-zh")
    assert page.script_errors == []
    assert elsewhere.script_errors == []


def test_the_journey_from_catalogue_to_approval_works_at_phone_width(
    phone_page: Any, open_tab: OpenTab, seed_session: Seeder
) -> None:
    lab = seed_lab(seed_session, "phone", ApprovalMode.MANUAL)
    day = tomorrow()
    page = phone_page
    log_in(page, lab.first, PASSWORD)

    page.goto("/instruments")
    page.locator("#f-q").fill(lab.keyword)
    page.locator("form[role=search] button[type=submit]").first.click()
    expect(page.locator("#results .result-count")).to_have_text("找到 1 台仪器")
    assert fits(page), "catalogue"
    screenshot(page, "journey-catalogue-phone")
    page.get_by_role("link", name=lab.instrument_name).click()
    page.locator("#availability-calendar [data-time]").first.wait_for()
    assert fits(page), "instrument page"
    screenshot(page, "journey-instrument-phone")

    page.locator("#f-start").fill(f"{day:%Y-%m-%d}T16:00")
    page.locator("#f-end").fill(f"{day:%Y-%m-%d}T17:00")
    page.get_by_role("button", name="下一步：确认").click()
    expect(page.locator(".chosen-time")).to_contain_text(f"{day:%Y-%m-%d} 16:00")
    assert fits(page), "confirmation"
    page.get_by_role("button", name="提交申请").click()
    page.wait_for_url(re.compile(r"/my/bookings/\d+"))
    booking_id = booking_id_in(page.url)
    page.goto("/my/bookings")
    expect(page.locator(f"li[data-booking-id='{booking_id}'] .status")).to_have_text("待审批")
    assert fits(page), "my bookings"
    screenshot(page, "journey-my-bookings-phone")

    manager = open_tab(PHONE)
    log_in(manager, lab.manager, PASSWORD)
    manager.goto("/manage/approvals")
    approve = manager.locator(f"#request-{booking_id} button[value=approve]")
    expect(approve).to_be_visible()
    assert fits(manager), "approval queue"
    screenshot(manager, "journey-approval-queue-phone")
    approve.click()
    expect(manager.get_by_role("status")).to_have_text("已批准：1 条。")
    assert fits(manager), "approval queue after approving"
    assert page.script_errors == []
    assert manager.script_errors == []


def add_booking(session: Session, lab: Lab, email: str, start: datetime) -> int:
    """A pending request of the researcher ``email`` at ``lab``, made directly in the database."""
    user = session.exec(select(User).where(User.email == email)).one()
    booking = Booking(
        instrument_id=lab.instrument_id,
        facility_id=lab.facility_id,
        user_id=user.id or 0,
        organisation_id=user.organisation_id,
        start_at=start,
        end_at=start + timedelta(hours=1),
        held_until=start + timedelta(hours=1),
        status=BookingStatus.PENDING,
        operated_by=OperatedBy.SELF,
        purpose="他人的申请",
        expires_at=start,
        created_by_id=user.id,
    )
    session.add(booking)
    session.flush()
    return booking.id or 0


def test_a_form_sent_without_its_security_token_is_refused_and_books_nothing(
    page: Any, seed_session: Seeder
) -> None:
    lab = seed_lab(seed_session, "csrf", ApprovalMode.AUTOMATIC_FOR_QUALIFIED)
    day = tomorrow()
    log_in(page, lab.first, PASSWORD)
    find_and_pick(page, lab, day, "11:00", "11:30")

    page.evaluate(
        "() => document.querySelector('form.booking-form input[name=csrf_token]').remove()"
    )
    with page.expect_response(lambda r: r.request.method == "POST") as answer:
        page.get_by_role("button", name="提交申请").click()

    assert answer.value.status == 403
    expect(page.get_by_role("heading", name="无权访问")).to_be_visible()
    screenshot(page, "journey-csrf-refused")
    assert bookings_at(seed_session, lab.instrument_id, day.replace(hour=11)) == []
    assert only_expected(page.script_errors, 403) == []


def test_a_tampered_booking_id_pointing_at_someone_elses_request_is_not_found(
    page: Any, open_tab: OpenTab, seed_session: Seeder
) -> None:
    mine = seed_lab(seed_session, "tamper", ApprovalMode.MANUAL)
    theirs = seed_lab(seed_session, "tamper2", ApprovalMode.MANUAL)
    day = tomorrow()
    with seed_session() as session:
        own_request = add_booking(session, mine, mine.first, day.replace(hour=9))
        other_request = add_booking(session, theirs, theirs.first, day.replace(hour=9))
        session.commit()

    # A manager's approve button whose hidden booking id names another facility's request.
    log_in(page, mine.manager, PASSWORD)
    page.goto("/manage/approvals")
    page.locator(f"#request-{own_request} form.inline input[name=booking_id]").evaluate(
        "(input, id) => { input.value = String(id); }", other_request
    )
    with page.expect_response(lambda r: r.request.method == "POST") as answer:
        page.locator(f"#request-{own_request} button[value=approve]").click()
    assert answer.value.status == 404
    expect(page.get_by_role("heading", name="未找到")).to_be_visible()
    screenshot(page, "journey-tampered-approval")

    # A researcher's cancel form sent for another researcher's booking.
    researcher = open_tab()
    log_in(researcher, mine.first, PASSWORD)
    researcher.goto("/my/bookings")
    row = researcher.locator(f"li[data-booking-id='{own_request}']")
    row.locator("summary", has_text="取消").click()
    row.locator("form[action$='/cancel']").evaluate(
        "(form, id) => { form.action = `/my/bookings/${id}/cancel`; }", other_request
    )
    with researcher.expect_response(lambda r: r.request.method == "POST") as answer:
        row.get_by_role("button", name="取消预约").click()
    assert answer.value.status == 404
    expect(researcher.get_by_role("heading", name="未找到")).to_be_visible()

    with seed_session() as session:
        for booking_id in (own_request, other_request):
            untouched = session.get(Booking, booking_id)
            assert untouched is not None
            assert untouched.status == BookingStatus.PENDING
    assert only_expected(page.script_errors, 404) == []
    assert only_expected(researcher.script_errors, 404) == []


def test_a_double_clicked_request_from_the_calendar_makes_one_booking(
    page: Any, seed_session: Seeder
) -> None:
    lab = seed_lab(seed_session, "double", ApprovalMode.AUTOMATIC_FOR_QUALIFIED)
    day = tomorrow()
    log_in(page, lab.first, PASSWORD)
    find_and_pick(page, lab, day, "17:00", "17:30")

    page.get_by_role("button", name="提交申请").dblclick()
    page.wait_for_url(re.compile(r"/my/bookings/\d+"))

    made = bookings_at(seed_session, lab.instrument_id, day.replace(hour=17))
    assert [b.id for b in made] == [booking_id_in(page.url)]
    page.goto("/my/bookings")
    expect(page.locator("li.booking")).to_have_count(1)
    assert page.script_errors == []
