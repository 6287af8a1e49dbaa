"""A lab manager in a real browser: dashboard, approval queue (one and in bulk), facility
calendar, check-in desk and the printable QR code; the queue on a phone."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlmodel import Session

from booking.models import Booking
from booking.rules import BookingStatus, OperatedBy
from core.accounts.rules import Role, ScopeKind
from core.accounts.schemas import RoleGrant
from core.clock import now
from instruments.rules import ApprovalMode
from tests.browser.conftest import PHONE, log_in, screenshot
from tests.factories import PASSWORD, make_organisation, make_user
from tests.instruments.factories import make_facility, make_instrument

SHANGHAI = ZoneInfo("Asia/Shanghai")
Seed = Callable[[], AbstractContextManager[Session]]


@dataclass
class Seeded:
    manager_email: str
    facility_id: int
    instrument_id: int
    requests: list[int]
    today: int


def _local(days: int, hour: int) -> datetime:
    day = now().astimezone(SHANGHAI).date() + timedelta(days=days)
    return datetime(day.year, day.month, day.day, hour, tzinfo=SHANGHAI)


def seed_lab(seed_session: Seed, tag: str, requests: int = 3) -> Seeded:
    """A facility with an instrument needing approval, its manager, and a researcher's
    pending requests from tomorrow 09:00 plus one confirmed booking today."""
    with seed_session() as session:
        university = make_organisation(session, name=f"浏览器测试大学{tag}")
        facility = make_facility(session, organisation=university, name=f"浏览器测试平台{tag}")
        instrument = make_instrument(
            session,
            facility=facility,
            name=f"激光共聚焦显微镜{tag}",
            approval_mode=ApprovalMode.MANUAL,
        )
        manager = make_user(
            session,
            email=f"manager-{tag}@example.cn",
            name="平台经理",
            roles=[
                RoleGrant(
                    role=Role.LAB_MANAGER, scope_kind=ScopeKind.FACILITY, scope_id=facility.id
                )
            ],
        )
        researcher = make_user(
            session, organisation=university, name="陈研究员", roles=[Role.RESEARCHER]
        )

        def add(start: datetime, status: BookingStatus, purpose: str) -> int:
            booking = Booking(
                instrument_id=instrument.id or 0,
                facility_id=facility.id or 0,
                user_id=researcher.id or 0,
                organisation_id=university.id,
                start_at=start,
                end_at=start + timedelta(hours=1),
                held_until=start + timedelta(hours=1),
                status=status,
                operated_by=OperatedBy.SELF,
                purpose=purpose,
                expires_at=start if status is BookingStatus.PENDING else None,
                created_by_id=researcher.id,
            )
            session.add(booking)
            session.flush()
            return booking.id or 0

        pending = [
            add(_local(1, 9 + i), BookingStatus.PENDING, f"细胞成像 {i + 1}")
            for i in range(requests)
        ]
        today = add(_local(0, 23), BookingStatus.CONFIRMED, "夜间成像")
        session.commit()
        return Seeded(manager.email, facility.id or 0, instrument.id or 0, pending, today)


def booking_in(seed_session: Seed, booking_id: int) -> Booking:
    with seed_session() as session:
        found = session.get(Booking, booking_id)
        assert found is not None
        return found


def test_a_manager_approves_one_request_and_rejects_others_in_bulk(
    page: Any, seed_session: Seed
) -> None:
    lab = seed_lab(seed_session, "queue")
    first, second, third = lab.requests

    log_in(page, lab.manager_email, PASSWORD)
    page.goto("/manage")
    assert page.locator("#pending-count").inner_text() == "3"
    screenshot(page, "manage-dashboard")

    page.goto("/manage/approvals")
    assert page.locator(f"#request-{first}").is_visible()
    screenshot(page, "manage-approvals")
    page.locator(f"#request-{first} button[value=approve]").click()
    page.wait_for_load_state("networkidle")

    assert page.get_by_role("status").inner_text().startswith("已批准")
    assert booking_in(seed_session, first).status == BookingStatus.CONFIRMED
    assert page.locator(f"#request-{first}").count() == 0

    page.locator(f"#pick-{second}").check()
    page.locator(f"#pick-{third}").check()
    page.locator("#f-reason").fill("仪器需要校准")
    page.locator("#bulk button[value=reject]").click()
    page.wait_for_load_state("networkidle")

    for booking_id in (second, third):
        rejected = booking_in(seed_session, booking_id)
        assert (rejected.status, rejected.reason) == (BookingStatus.REJECTED, "仪器需要校准")
    assert page.get_by_text("没有待审批的申请。").is_visible()
    assert page.script_errors == []


def test_a_bulk_rejection_without_a_reason_is_shown_next_to_the_field(
    page: Any, seed_session: Seed
) -> None:
    lab = seed_lab(seed_session, "reason", requests=2)

    log_in(page, lab.manager_email, PASSWORD)
    page.goto("/manage/approvals")
    page.locator("#select-all").check()
    assert page.locator(f"#pick-{lab.requests[1]}").is_checked()
    page.locator("#f-reason").fill("")
    page.locator("#bulk button[value=reject]").click()
    page.wait_for_load_state("networkidle")

    assert page.locator("#f-reason-error").is_visible()
    assert booking_in(seed_session, lab.requests[0]).status == BookingStatus.PENDING
    # The browser logs the refused form's 422 answer; nothing else may go wrong.
    assert [e for e in page.script_errors if "status of 422" not in e] == []


def test_the_approval_queue_fits_a_phone(phone_page: Any, seed_session: Seed) -> None:
    lab = seed_lab(seed_session, "phone")

    log_in(phone_page, lab.manager_email, PASSWORD)
    phone_page.goto("/manage/approvals")

    assert phone_page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    assert phone_page.locator(f"#request-{lab.requests[0]} button[value=approve]").is_visible()
    screenshot(phone_page, "manage-approvals-phone")
    for path in ("/manage", "/desk", f"/manage/facilities/{lab.facility_id}/calendar"):
        phone_page.goto(path)
        phone_page.wait_for_load_state("networkidle")
        assert phone_page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"], path
    screenshot(phone_page, "manage-calendar-phone")
    assert phone_page.script_errors == []


def test_the_facility_calendar_desk_and_qr_code_work_without_script_errors(
    page: Any, seed_session: Seed
) -> None:
    lab = seed_lab(seed_session, "calendar")

    log_in(page, lab.manager_email, PASSWORD)
    page.goto(f"/manage/facilities/{lab.facility_id}/calendar")
    assert page.locator(f"#lane-{lab.instrument_id} .block").count() == 1
    page.locator("#week-calendar .booking").first.wait_for()
    page.locator("#week-instrument").select_option(str(lab.instrument_id))
    page.wait_for_load_state("networkidle")
    assert page.locator("#week-calendar .booking").count() >= 1
    screenshot(page, "manage-calendar")

    page.goto("/desk")
    assert page.locator(f"#desk-{lab.today}").is_visible()
    screenshot(page, "manage-desk")

    page.goto(f"/manage/instruments/{lab.instrument_id}/qr")
    assert page.locator("img.qr").evaluate("img => img.complete && img.naturalWidth > 0")
    screenshot(page, "manage-qr")
    assert page.script_errors == []
