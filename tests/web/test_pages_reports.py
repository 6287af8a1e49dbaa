"""The planner dashboard: headline figures, charts' data, the group table with drill-down, the
low-use list and the exports, for planners (everything), lab managers (their facilities) and
no one else; bad filters are answered 422 with the reason next to the field.

The data set is small and computed by hand: two clusters, three facilities, four instruments,
usage records of internal and external users in 2026, and a few bookings.
"""

from __future__ import annotations

import csv
import html
import io
import json
import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session

from booking.models import Booking, ServiceRequest, ServiceRequestStatus, UsageRecord
from booking.rules import BookingStatus, OperatedBy
from core.accounts.models import Organisation, User
from core.accounts.rules import OrganisationType, Role, ScopeKind
from core.accounts.schemas import RoleGrant
from core.clock import frozen
from core.db import ConnectionBoundDatabase
from core.places import Cluster
from instruments.models import Facility, Instrument
from reports.rules import MAX_REPORT_YEARS
from tests.factories import login_page, make_organisation, make_user
from tests.instruments.factories import make_facility, make_instrument, make_testing_service
from tests.querycount import counted_statements
from web.pages import reports as report_pages

SHANGHAI = ZoneInfo("Asia/Shanghai")
YEAR_2026 = "from=2026-01-01&until=2026-12-31"


def at(local: str) -> datetime:
    """A Shanghai wall-clock time such as "2026-03-02 10:00", as aware UTC."""
    return datetime.fromisoformat(local).replace(tzinfo=SHANGHAI).astimezone(UTC)


@pytest.fixture(autouse=True)
def frozen_now() -> Iterator[None]:
    with frozen(at("2026-11-30 09:00")):
        yield


@dataclass
class Platform:
    university: Organisation
    company: Organisation
    science_city: Facility  # 西部（重庆）科学城: facilities A and C
    liangjiang: Facility  # 两江协同创新区: facility B
    third: Facility
    microscope: Instrument  # large, at A
    spectrometer: Instrument  # at A
    diffractometer: Instrument  # at B
    cytometer: Instrument  # at C, never used
    planner: User
    manager: User  # manages A only
    researcher: User
    engineer: User  # from the company: external everywhere


def instrument_at(session: Session, facility: Facility, name: str, **fields: object) -> Instrument:
    # Owned since 2020: the whole of 2026 counts, 1,400 rated hours.
    return make_instrument(
        session, facility=facility, name=name, purchase_date=date(2020, 1, 1), **fields
    )


@pytest.fixture
def platform(session: Session) -> Platform:
    university = make_organisation(session, name="重庆报表大学")
    company = make_organisation(
        session, name="两江仪器公司", type=OrganisationType.ENTERPRISE, district="两江新区"
    )
    a = make_facility(
        session,
        organisation=university,
        name="分析测试中心",
        district="沙坪坝区",
        cluster=Cluster.WESTERN_SCIENCE_CITY,
    )
    b = make_facility(
        session,
        organisation=university,
        name="两江材料平台",
        district="两江新区",
        cluster=Cluster.LIANGJIANG,
    )
    c = make_facility(
        session,
        organisation=university,
        name="生物医学平台",
        district="九龙坡区",
        cluster=Cluster.WESTERN_SCIENCE_CITY,
    )
    microscope = instrument_at(session, a, "场发射扫描电镜", purchase_value_fen=300_000_000)
    reported_sample_request(session, a, microscope, company)
    return Platform(
        university=university,
        company=company,
        science_city=a,
        liangjiang=b,
        third=c,
        microscope=microscope,
        spectrometer=instrument_at(session, a, "红外光谱仪"),
        diffractometer=instrument_at(session, b, "X射线衍射仪"),
        cytometer=instrument_at(session, c, "流式细胞仪"),
        planner=make_user(session, roles=[Role.PLANNER], name="规划处"),
        manager=make_user(
            session,
            name="李经理",
            roles=[RoleGrant(role=Role.LAB_MANAGER, scope_kind=ScopeKind.FACILITY, scope_id=a.id)],
        ),
        researcher=make_user(
            session, roles=[Role.RESEARCHER], organisation=university, name="张研究员"
        ),
        engineer=make_user(session, roles=[Role.RESEARCHER], organisation=company, name="王工"),
    )


def reported_sample_request(
    session: Session, facility: Facility, instrument: Instrument, sender: Organisation
) -> None:
    """Samples sent to facility A on 1 May 2026 and reported on 4 May: 3 days."""
    service = make_testing_service(
        session, facility=facility, instruments=[instrument], daily_sample_capacity=10
    )
    sender_user = make_user(session, roles=[Role.RESEARCHER], organisation=sender)
    session.add(
        ServiceRequest(
            testing_service_id=service.id or 0,
            facility_id=facility.id or 0,
            user_id=sender_user.id or 0,
            organisation_id=sender.id,
            sample_count=3,
            status=ServiceRequestStatus.REPORTED,
            submitted_at=at("2026-05-01 09:00"),
            accepted_at=at("2026-05-01 15:00"),
            reported_at=at("2026-05-04 09:00"),
        )
    )
    session.flush()


def used(
    session: Session, instrument: Instrument, user: User, start: str, hours: float
) -> UsageRecord:
    begin = at(start)
    record = UsageRecord(
        instrument_id=instrument.id or 0,
        user_id=user.id or 0,
        organisation_id=user.organisation_id,
        started_at=begin,
        ended_at=begin + timedelta(hours=hours),
    )
    session.add(record)
    session.flush()
    return record


def booked(
    session: Session, instrument: Instrument, user: User, status: BookingStatus, start: str
) -> Booking:
    begin = at(start)
    booking = Booking(
        instrument_id=instrument.id or 0,
        facility_id=instrument.facility_id,
        user_id=user.id or 0,
        organisation_id=user.organisation_id,
        start_at=begin,
        end_at=begin + timedelta(hours=2),
        held_until=begin + timedelta(hours=2),
        status=status,
        operated_by=OperatedBy.SELF,
        purpose="形貌表征",
        created_by_id=user.id,
    )
    session.add(booking)
    session.flush()
    return booking


@pytest.fixture
def history(session: Session, platform: Platform) -> Platform:
    """Effective hours in 2026: microscope 10 internal + 4 external, spectrometer 2 internal,
    diffractometer 7 external; 23 h in all, 11 h external. Bookings on the microscope: two
    completed and one no-show (a no-show rate of 1/3). One use in 2025, outside the period."""
    p = platform
    used(session, p.microscope, p.researcher, "2026-03-02 09:00", 10)
    used(session, p.microscope, p.engineer, "2026-03-03 09:00", 4)
    used(session, p.spectrometer, p.researcher, "2026-04-01 14:00", 2)
    used(session, p.diffractometer, p.engineer, "2026-06-10 09:00", 7)
    used(session, p.diffractometer, p.engineer, "2025-06-10 09:00", 100)
    booked(session, p.microscope, p.researcher, BookingStatus.COMPLETED, "2026-03-02 09:00")
    booked(session, p.microscope, p.engineer, BookingStatus.COMPLETED, "2026-03-03 09:00")
    booked(session, p.microscope, p.researcher, BookingStatus.NO_SHOW, "2026-03-04 09:00")
    return p


def headline(html: str, metric: str) -> str:
    """The figure shown under a headline (tags and spaces around it stripped)."""
    block = html.split(f'id="figure-{metric}"', 1)[1].split("</div>", 1)[0]
    figure = block.split('class="figure">', 1)[1].split("<", 1)[0]
    return figure.strip()


def test_a_planner_sees_the_headline_figures_of_the_whole_platform(
    client: TestClient, history: Platform
) -> None:
    login_page(client, history.planner.email)

    page = client.get(f"/reports?{YEAR_2026}")

    assert page.status_code == 200
    figures = {metric: headline(page.text, metric) for metric in report_pages.HEADLINE}
    assert figures["instruments"] == "4"
    assert figures["large_instruments"] == "1"
    assert figures["rated_hours"] == "5,600.0 h"  # 4 × 1,400
    assert figures["effective_hours"] == "23.0 h"
    assert figures["external_hours"] == "11.0 h"
    assert figures["utilization"] == "0.4 %"  # 23 / 5,600
    assert figures["sharing_rate"] == "47.8 %"  # 11 / 23
    assert figures["no_show_rate"] == "33.3 %"  # 1 / (2 + 1)
    assert figures["booked_hours"] == "4.0 h"  # the two completed bookings
    assert figures["turnaround_days"] == "3.0 d"  # the one request, 1 to 4 May


def test_every_headline_figure_carries_its_definition_as_hover_text_and_footnote(
    client: TestClient, session: Session, history: Platform
) -> None:
    login_page(client, history.planner.email)

    page = client.get(f"/reports?{YEAR_2026}").text

    assert '<abbr title="使用率（国家考核口径）= 有效机时 ÷ 额定机时。">使用率</abbr>' in page
    for metric in report_pages.HEADLINE:
        assert f'href="#def-{metric}"' in page
        assert f'<li id="def-{metric}">' in page
    history.planner.locale = "en"
    session.flush()
    english = client.get(f"/reports?{YEAR_2026}").text
    assert "Utilization (使用率, the national measure) = effective hours ÷ rated hours." in english
    assert "Few bookings: 3 in the period" in english  # the low-use reasons in English too
    assert ">Western (Chongqing) Science City</a>" in english


def test_the_groups_table_drills_down_from_cluster_to_facility_to_instrument(
    client: TestClient, history: Platform
) -> None:
    login_page(client, history.planner.email)

    clusters = client.get(f"/reports?{YEAR_2026}&group_by=cluster").text
    rows = re.findall(r'<tr id="group-([a-z_]+)">', clusters)
    assert sorted(rows) == ["liangjiang", "western_science_city"]
    to_facilities = drill_link(clusters, "western_science_city")
    assert "group_by=facility" in to_facilities
    assert "cluster=western_science_city" in to_facilities

    facilities = client.get(to_facilities).text
    assert "分析测试中心" in facilities
    assert "生物医学平台" in facilities
    assert "两江材料平台" not in facilities.split('id="groups"', 1)[1].split("</table>", 1)[0]
    to_instruments = drill_link(facilities, str(history.science_city.id))
    assert f"facility_id={history.science_city.id}" in to_instruments
    assert "group_by=instrument" in to_instruments

    instruments = client.get(to_instruments).text
    table = instruments.split('id="groups"', 1)[1].split("</table>", 1)[0]
    assert "场发射扫描电镜" in table
    assert "红外光谱仪" in table
    assert "X射线衍射仪" not in table
    assert f'href="/instruments/{history.microscope.id}"' in table
    to_instrument = drill_link(instruments, str(history.microscope.id))

    one = client.get(to_instrument).text
    assert headline(one, "effective_hours") == "14.0 h"
    assert f'href="/instruments/{history.microscope.id}" id="instrument-page"' in one
    assert f"/reports/instruments/{history.microscope.id}/usage.csv?" in one


def drill_link(html: str, key: str) -> str:
    row = html.split(f'<tr id="group-{key}">', 1)[1].split("</tr>", 1)[0]
    return row.split('class="drill" href="', 1)[1].split('"', 1)[0].replace("&amp;", "&")


def test_the_table_sorts_by_a_column_on_the_server(client: TestClient, history: Platform) -> None:
    login_page(client, history.planner.email)

    page = client.get(f"/reports?{YEAR_2026}&group_by=instrument&sort=effective_hours&order=desc")

    order = re.findall(r'<tr id="group-(\d+)">', page.text)
    p = history
    assert order == [
        str(i.id) for i in (p.microscope, p.diffractometer, p.spectrometer, p.cytometer)
    ]
    assert 'aria-sort="descending"' in page.text


def test_a_lab_manager_sees_only_its_own_facilities(client: TestClient, history: Platform) -> None:
    login_page(client, history.manager.email)

    page = client.get(f"/reports?{YEAR_2026}&group_by=facility")

    assert page.status_code == 200
    assert headline(page.text, "instruments") == "2"
    assert headline(page.text, "effective_hours") == "16.0 h"
    assert "两江材料平台" not in page.text
    assert "X射线衍射仪" not in page.text
    other = client.get(f"/reports?{YEAR_2026}&facility_id={history.liangjiang.id}")
    assert other.status_code == 404
    usage = client.get(f"/reports/instruments/{history.diffractometer.id}/usage.csv?{YEAR_2026}")
    assert usage.status_code == 404


def test_a_researcher_is_refused_and_a_visitor_is_asked_to_log_in(
    client: TestClient, history: Platform
) -> None:
    assert (
        client.get("/reports", follow_redirects=False)
        .headers["location"]
        .startswith("/login?next=/reports")
    )
    login_page(client, history.researcher.email)

    page = client.get("/reports")

    assert page.status_code == 403
    assert "利用率报表仅供规划人员、管理员和平台经理查看。" in page.text
    assert client.get("/reports/data.json").status_code == 403
    assert client.get("/reports/export.csv").status_code == 403


@pytest.mark.parametrize(
    ("query", "field", "reason"),
    [
        ("from=2026-12-31&until=2026-01-01", "until", "统计期的结束早于开始"),
        ("from=&until=2026-01-01", "from", "请填写统计期的第一天"),
        ("from=2026-01-01&until=", "until", "请填写统计期的最后一天"),
        ("from=2010-01-01&until=2026-01-01", "until", "一次最多统计十年"),
        ("from=2026-13-01&until=2026-12-31", "from", "日期格式为"),
        (f"{YEAR_2026}&group_by=building", "group_by", "请从列表中选择"),
        (f"{YEAR_2026}&period=week", "period", "请从列表中选择"),
        (f"{YEAR_2026}&threshold=0", "threshold", "使用率阈值"),
        (f"{YEAR_2026}&threshold=abc", "threshold", "使用率阈值"),
        (f"{YEAR_2026}&facility_id=x", "facility_id", "请填写整数"),
    ],
)
def test_bad_filters_are_refused_with_the_reason_next_to_the_field(
    client: TestClient, history: Platform, query: str, field: str, reason: str
) -> None:
    login_page(client, history.planner.email)

    page = client.get(f"/reports?{query}")

    assert page.status_code == 422
    error = page.text.split(f'id="f-{field}-error">', 1)[1].split("</p>", 1)[0]
    assert reason in error
    assert 'id="figure-' not in page.text
    assert client.get(f"/reports/data.json?{query}").status_code == 422


def test_the_ten_year_limit_in_words_is_the_reports_limit() -> None:
    assert MAX_REPORT_YEARS == 10  # PERIOD_MESSAGES says "ten years"


def test_an_unknown_sort_column_is_refused(client: TestClient, history: Platform) -> None:
    login_page(client, history.planner.email)

    page = client.get(f"/reports?{YEAR_2026}&sort=password")

    assert page.status_code == 422
    assert "表格不能按此列排序。" in page.text


def test_the_default_period_is_the_last_twelve_months(
    client: TestClient, history: Platform
) -> None:
    login_page(client, history.planner.email)

    page = client.get("/reports").text

    assert 'name="from" type="date" value="2025-12-01"' in page
    assert 'name="until" type="date" value="2026-11-30"' in page


def test_the_chart_data_holds_the_groups_the_trend_and_the_top_and_bottom_instruments(
    client: TestClient, history: Platform
) -> None:
    login_page(client, history.planner.email)

    data = client.get(f"/reports/data.json?{YEAR_2026}&group_by=cluster").json()

    assert {g["key"]: g["utilization"] for g in data["groups"]} == {
        "western_science_city": 0.4,  # 16 / 4,200
        "liangjiang": 0.5,  # 7 / 1,400
    }
    assert data["trend"]["periods"][:3] == ["2026-01", "2026-02", "2026-03"]
    assert len(data["trend"]["periods"]) == 12
    assert data["trend"]["effective_hours"][2] == 14.0
    assert data["trend"]["external_hours"][5] == 7.0
    assert [i["name"] for i in data["top"]] == ["场发射扫描电镜", "X射线衍射仪"]
    assert [i["name"] for i in data["bottom"]] == ["流式细胞仪", "红外光谱仪"]  # lowest first
    assert data["totals"]["effective_hours"] == 23.0
    assert data["text"]["utilization"] == "使用率"
    page = client.get(f"/reports?{YEAR_2026}&group_by=cluster").text
    carried = json.loads(html.unescape(page.split("data-charts='", 1)[1].split("'", 1)[0]))
    assert carried == {key: data[key] for key in carried}


def test_the_low_use_list_gives_reasons_and_marks_large_instruments(
    client: TestClient, history: Platform
) -> None:
    login_page(client, history.planner.email)

    page = client.get(f"/reports?{YEAR_2026}").text

    low = page.split('id="low-use"', 1)[1].split("</section>", 1)[0]
    microscope = low.split(f'id="low-{history.microscope.id}"', 1)[1].split("</li>\n", 1)[0]
    assert "大型仪器" in microscope
    assert "预约少" in microscope
    assert low.count('class="card" id="low-') == 4
    lower = client.get(f"/reports?{YEAR_2026}&threshold=0.3").text
    assert lower.split('id="low-use"', 1)[1].count('class="card" id="low-') == 2


def test_the_exports_download_the_current_view(client: TestClient, history: Platform) -> None:
    login_page(client, history.planner.email)
    page = client.get(f"/reports?{YEAR_2026}&group_by=facility").text
    csv_link = page.split('id="export-csv"', 1)[0].rsplit('href="', 1)[1].split('"', 1)[0]

    answer = client.get(csv_link.replace("&amp;", "&"))

    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/csv")
    assert "attachment" in answer.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(answer.content.decode("utf-8-sig"))))
    assert {row["name"] for row in rows} == {"分析测试中心", "两江材料平台", "生物医学平台"}
    assert len(rows) == 3 * 12
    assert sum(float(row["effective_hours"]) for row in rows) == pytest.approx(23.0)

    workbook = client.get(f"/reports/export.xlsx?{YEAR_2026}&group_by=facility")
    assert workbook.headers["content-type"] == report_pages.XLSX_TYPE
    assert "xl/workbook.xml" in zipfile.ZipFile(io.BytesIO(workbook.content)).namelist()


def test_the_usage_records_of_an_instrument_download_in_the_platforms_shape(
    client: TestClient, history: Platform
) -> None:
    login_page(client, history.manager.email)

    answer = client.get(f"/reports/instruments/{history.microscope.id}/usage.csv?{YEAR_2026}")

    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(answer.content.decode("utf-8-sig"))))
    assert [(r["date"], r["hours"], r["user"]) for r in rows] == [
        ("2026-03-02", "10.0", "张研究员"),
        ("2026-03-03", "4.0", "王工"),
    ]
    assert rows[1]["service_to"].startswith("校外")
    xlsx = client.get(f"/reports/instruments/{history.microscope.id}/usage.xlsx?{YEAR_2026}")
    assert xlsx.headers["content-type"] == report_pages.XLSX_TYPE
    assert client.get(f"/reports/instruments/{history.microscope.id}/usage.pdf").status_code == 404


def test_the_dashboard_has_no_form_that_writes(client: TestClient, history: Platform) -> None:
    login_page(client, history.planner.email)

    page = client.get(f"/reports?{YEAR_2026}").text
    main = page.split('<main id="main"', 1)[1].split("</main>", 1)[0]

    assert 'method="post"' not in main
    assert client.post("/reports", data={}).status_code in (403, 405)


def test_the_page_sends_as_many_statements_for_twenty_instruments_as_for_two(
    client: TestClient, session: Session, database: ConnectionBoundDatabase, platform: Platform
) -> None:
    login_page(client, platform.planner.email)

    def statements_with(count: int) -> int:
        facility = make_facility(
            session, organisation=platform.university, cluster=Cluster.GUANGYANG_BAY
        )
        for n in range(count):
            instrument = instrument_at(session, facility, f"计数仪器{count}-{n}")
            used(session, instrument, platform.engineer, f"2026-05-{n + 1:02d} 09:00", 1)
            booked(
                session,
                instrument,
                platform.researcher,
                BookingStatus.COMPLETED,
                "2026-05-20 09:00",
            )
        with counted_statements(database) as statements:
            page = client.get(f"/reports?{YEAR_2026}&group_by=instrument")
        assert page.status_code == 200
        return len(statements)

    assert statements_with(2) == statements_with(20)


@pytest.mark.parametrize(
    ("count", "top", "bottom"),
    [
        (0, [], []),
        (1, [0], []),
        (3, [0, 1], [2]),
        (10, [0, 1, 2, 3, 4], [9, 8, 7, 6, 5]),
        (12, [0, 1, 2, 3, 4], [11, 10, 9, 8, 7]),
    ],
)
def test_top_and_bottom_instruments_never_share_one(
    count: int, top: list[int], bottom: list[int]
) -> None:
    instruments = [
        {"key": str(n), "name": f"仪器{n:02d}", "utilization": 1 - n / 100} for n in range(count)
    ]
    instruments.append({"key": "x", "name": "未计", "utilization": None})

    best, least = report_pages.top_and_bottom(instruments)

    assert [int(i["key"]) for i in best] == top
    assert [int(i["key"]) for i in least] == bottom


def test_a_platform_without_sample_requests_has_a_dashboard_too(
    client: TestClient, session: Session
) -> None:
    facility = make_facility(session, cluster=Cluster.LIANGJIANG)
    instrument_at(session, facility, "无送样仪器")
    planner = make_user(session, roles=[Role.PLANNER])
    login_page(client, planner.email)

    page = client.get(f"/reports?{YEAR_2026}")

    assert page.status_code == 200
    assert headline(page.text, "turnaround_days") == "—"


def test_the_trend_is_per_quarter_or_year_on_request(client: TestClient, history: Platform) -> None:
    login_page(client, history.planner.email)

    quarters = client.get(f"/reports/data.json?{YEAR_2026}&period=quarter").json()["trend"]
    years = client.get(f"/reports/data.json?{YEAR_2026}&period=year").json()["trend"]

    assert quarters["periods"] == ["2026-Q1", "2026-Q2", "2026-Q3", "2026-Q4"]
    assert quarters["effective_hours"] == [14.0, 9.0, 0.0, 0.0]
    assert (years["periods"], years["effective_hours"]) == (["2026"], [23.0])
