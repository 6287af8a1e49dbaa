"""A planner in a real browser: the dashboard's ECharts charts draw (no CSP violation), the
table drills down from a cluster to its facilities and to a facility's instruments, and the
page fits a phone."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlmodel import Session

from booking.models import Booking, ServiceRequest, ServiceRequestStatus, UsageRecord
from booking.rules import BookingStatus, OperatedBy
from core.accounts.rules import OrganisationType, Role
from core.clock import now
from core.places import Cluster
from tests.browser.conftest import PHONE, log_in, screenshot
from tests.factories import PASSWORD, make_organisation, make_user
from tests.instruments.factories import make_facility, make_instrument, make_testing_service

SHANGHAI = ZoneInfo("Asia/Shanghai")
Seed = Callable[[], AbstractContextManager[Session]]
CHARTS = ("utilization", "trend", "top", "bottom", "sharing")


@dataclass
class Seeded:
    planner_email: str
    facility_id: int
    instrument_id: int


def _days_ago(days: int, hour: int) -> datetime:
    day = now().astimezone(SHANGHAI).date() - timedelta(days=days)
    return datetime(day.year, day.month, day.day, hour, tzinfo=SHANGHAI)


def seed_platform(seed_session: Seed, tag: str) -> Seeded:
    """Two clusters with a facility each, instruments used by internal and external users over
    the last months, a no-show, and a reported sample request."""
    with seed_session() as session:
        university = make_organisation(session, name=f"看板测试大学{tag}")
        company = make_organisation(
            session, name=f"看板测试公司{tag}", type=OrganisationType.ENTERPRISE
        )
        science_city = make_facility(
            session,
            organisation=university,
            name=f"科学城分析中心{tag}",
            district="沙坪坝区",
            cluster=Cluster.WESTERN_SCIENCE_CITY,
        )
        liangjiang = make_facility(
            session,
            organisation=university,
            name=f"两江材料平台{tag}",
            district="两江新区",
            cluster=Cluster.LIANGJIANG,
        )
        bought = (_days_ago(800, 0)).date()
        microscope = make_instrument(
            session,
            facility=science_city,
            name=f"场发射扫描电镜{tag}",
            purchase_date=bought,
            purchase_value_fen=300_000_000,
        )
        spectrometer = make_instrument(
            session, facility=science_city, name=f"红外光谱仪{tag}", purchase_date=bought
        )
        diffractometer = make_instrument(
            session, facility=liangjiang, name=f"X射线衍射仪{tag}", purchase_date=bought
        )
        researcher = make_user(session, organisation=university, roles=[Role.RESEARCHER])
        engineer = make_user(session, organisation=company, roles=[Role.RESEARCHER])
        planner = make_user(session, email=f"planner-{tag}@example.cn", roles=[Role.PLANNER])
        for days, instrument, user, hours in (
            (200, microscope, researcher, 30),
            (150, microscope, engineer, 40),
            (90, microscope, researcher, 60),
            (60, spectrometer, researcher, 8),
            (40, diffractometer, engineer, 90),
            (10, diffractometer, researcher, 20),
        ):
            begin = _days_ago(days, 8)
            session.add(
                UsageRecord(
                    instrument_id=instrument.id or 0,
                    user_id=user.id or 0,
                    organisation_id=user.organisation_id,
                    started_at=begin,
                    ended_at=begin + timedelta(hours=hours),
                )
            )
            session.add(
                Booking(
                    instrument_id=instrument.id or 0,
                    facility_id=instrument.facility_id,
                    user_id=user.id or 0,
                    organisation_id=user.organisation_id,
                    start_at=begin,
                    end_at=begin + timedelta(hours=hours),
                    held_until=begin + timedelta(hours=hours),
                    status=BookingStatus.COMPLETED,
                    operated_by=OperatedBy.SELF,
                    created_by_id=user.id,
                )
            )
        missed = _days_ago(20, 9)
        session.add(
            Booking(
                instrument_id=spectrometer.id or 0,
                facility_id=science_city.id or 0,
                user_id=researcher.id or 0,
                organisation_id=university.id,
                start_at=missed,
                end_at=missed + timedelta(hours=2),
                held_until=missed + timedelta(hours=2),
                status=BookingStatus.NO_SHOW,
                operated_by=OperatedBy.SELF,
                created_by_id=researcher.id,
            )
        )
        service = make_testing_service(
            session, facility=science_city, instruments=[microscope], daily_sample_capacity=10
        )
        session.add(
            ServiceRequest(
                testing_service_id=service.id or 0,
                facility_id=science_city.id or 0,
                user_id=engineer.id or 0,
                organisation_id=company.id,
                sample_count=3,
                status=ServiceRequestStatus.REPORTED,
                submitted_at=_days_ago(30, 9),
                accepted_at=_days_ago(29, 9),
                reported_at=_days_ago(25, 9),
            )
        )
        session.commit()
        return Seeded(planner.email, science_city.id or 0, microscope.id or 0)


def charts_drawn(page: Any) -> None:
    for name in CHARTS:
        page.locator(f"#chart-{name} canvas").first.wait_for(state="attached")
        assert page.locator(f"#chart-{name} canvas").count() >= 1


def test_a_planner_reads_the_dashboard_and_drills_down_to_an_instrument(
    page: Any, seed_session: Seed
) -> None:
    seeded = seed_platform(seed_session, "desk")

    log_in(page, seeded.planner_email, PASSWORD)
    page.goto("/reports")
    charts_drawn(page)
    assert page.locator("#figure-effective_hours .figure").inner_text() != "—"
    # A tooltip drawn on hover must not break the CSP (no inline style attributes).
    page.locator("#chart-trend canvas").first.hover()
    page.locator("#chart-utilization canvas").first.hover()
    page.wait_for_timeout(300)
    screenshot(page, "reports-dashboard")

    page.locator("#group-western_science_city a.drill").click()
    page.wait_for_load_state("networkidle")
    assert "group_by=facility" in page.url
    assert "cluster=western_science_city" in page.url
    charts_drawn(page)

    page.locator(f"#group-{seeded.facility_id} a.drill").click()
    page.wait_for_load_state("networkidle")
    assert f"facility_id={seeded.facility_id}" in page.url
    assert page.locator(f"#group-{seeded.instrument_id}").is_visible()
    charts_drawn(page)
    screenshot(page, "reports-facility-instruments")

    page.locator(f"#group-{seeded.instrument_id} a.drill").click()
    page.wait_for_load_state("networkidle")
    assert page.locator("#instrument-page").get_attribute("href") == (
        f"/instruments/{seeded.instrument_id}"
    )
    with page.expect_download() as download:
        page.locator("#usage-csv").click()
    assert download.value.suggested_filename.endswith(".csv")
    assert page.script_errors == []


def test_the_dashboard_fits_a_phone(phone_page: Any, seed_session: Seed) -> None:
    seeded = seed_platform(seed_session, "phone")

    log_in(phone_page, seeded.planner_email, PASSWORD)
    phone_page.goto("/reports")
    charts_drawn(phone_page)

    assert phone_page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    assert phone_page.locator("#export-xlsx").is_visible()
    screenshot(phone_page, "reports-dashboard-phone")
    assert phone_page.script_errors == []
