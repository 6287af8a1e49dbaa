"""The researcher's catalogue, instrument page, availability calendar and booking request pages."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, func, select

from booking import service as booking_service
from booking.models import Booking, WaitlistEntry
from booking.rules import BookingStatus, OperatedBy
from booking.schemas import BookingCreate
from booking.service import BookingPolicy
from core.accounts.models import Organisation, User
from core.accounts.rules import OrganisationType, Role
from core.auth.principal import load_principal
from core.clock import frozen
from core.db import ConnectionBoundDatabase
from core.places import Cluster
from core.settings import Settings
from instruments import service as instruments
from instruments.models import Facility, Instrument
from instruments.rules import ApprovalMode, Category, InstrumentStatus, OperationMode
from instruments.schemas import QualificationGrant
from tests.factories import login_page, make_organisation, make_user
from tests.instruments.factories import make_facility, make_instrument, make_testing_service
from tests.querycount import counted_statements

SHANGHAI = ZoneInfo("Asia/Shanghai")


def at(local: str) -> datetime:
    """A Shanghai wall-clock time such as "2026-12-08 10:00", as aware UTC."""
    return datetime.fromisoformat(local).replace(tzinfo=SHANGHAI).astimezone(UTC)


NOW = at("2026-12-07 08:00")  # a Monday of an ordinary week; facilities open 09:00–17:00


@pytest.fixture(autouse=True)
def frozen_now() -> Iterator[None]:
    with frozen(NOW):
        yield


@dataclass
class Lab:
    university: Organisation
    facility: Facility
    instrument: Instrument  # both modes, confirmed at once for qualified users
    researcher: User  # of the university, qualified
    visitor: User  # of another university, not qualified
    engineer: User  # of a firm


def qualify(session: Session, user: User, instrument: Instrument) -> None:
    instruments.grant_qualification(
        session,
        actor=None,
        data=QualificationGrant(user_id=user.id or 0, instrument_id=instrument.id or 0),
    )


@pytest.fixture
def lab(session: Session) -> Lab:
    university = make_organisation(session, name="重庆测试大学")
    facility = make_facility(
        session,
        organisation=university,
        name="分析测试中心",
        district="沙坪坝区",
        cluster=Cluster.WESTERN_SCIENCE_CITY,
    )
    instrument = make_instrument(
        session,
        facility=facility,
        name="场发射扫描电子显微镜",
        name_en="Field emission SEM",
        keywords="电镜 SEM",
        price_internal_fen=20_000,
        price_external_academic_fen=40_000,
        price_enterprise_fen=60_000,
        staff_surcharge_fen=5_000,
        min_billing_minutes=30,
    )
    researcher = make_user(session, organisation=university, roles=[Role.RESEARCHER])
    qualify(session, researcher, instrument)
    visitor = make_user(
        session, organisation=make_organisation(session, name="另一所大学"), roles=[Role.RESEARCHER]
    )
    firm = make_organisation(session, name="测试科技有限公司", type=OrganisationType.ENTERPRISE)
    engineer = make_user(session, organisation=firm, roles=[Role.RESEARCHER])
    return Lab(university, facility, instrument, researcher, visitor, engineer)


def book_directly(
    session: Session, user: User, instrument: Instrument, start: str, end: str
) -> Booking:
    return booking_service.create_booking(
        session,
        actor=load_principal(session, user),
        data=BookingCreate(
            instrument_id=instrument.id or 0,
            start=at(start),
            end=at(end),
            operated_by=OperatedBy.STAFF,
        ),
        policy=BookingPolicy.from_settings(Settings()),
    )


def bookings_of(session: Session, user: User) -> list[Booking]:
    return list(session.exec(select(Booking).where(Booking.user_id == user.id)).all())


def confirmation(
    client: TestClient, instrument: Instrument, start: str, end: str
) -> httpx.Response:
    return client.get(
        f"/instruments/{instrument.id}/book",
        params={
            "start": at(start).astimezone(SHANGHAI).isoformat(),
            "end": at(end).astimezone(SHANGHAI).isoformat(),
        },
    )


def form_of(page: httpx.Response) -> dict[str, str]:
    """The hidden and filled fields of the booking form, as the browser would send them."""
    html = page.text.split('action="/instruments/', 1)[1].split('/book"', 1)[1]
    html = html.split("</form>", 1)[0]
    fields = dict(re.findall(r'<input[^>]*name="([^"]+)"[^>]*value="([^"]*)"', html))
    checked = re.findall(r'<input[^>]*type="radio" name="operated_by" value="(\w+)" checked', html)
    if checked:
        fields["operated_by"] = checked[0]
    return fields


def submit(
    client: TestClient, instrument: Instrument, page: httpx.Response, **changes: str
) -> httpx.Response:
    return client.post(
        f"/instruments/{instrument.id}/book",
        data={**form_of(page), **changes},
        follow_redirects=False,
    )


# --- The catalogue ----------------------------------------------------------------------------


def test_anyone_finds_an_instrument_by_its_abbreviation(client: TestClient, lab: Lab) -> None:
    page = client.get("/instruments", params={"q": "sem"})

    assert page.status_code == 200
    assert "场发射扫描电子显微镜" in page.text
    assert "找到 1 台仪器" in page.text
    assert f'href="/instruments/{lab.instrument.id}"' in page.text


def test_filters_narrow_the_results_and_the_count_says_how_many(
    client: TestClient, session: Session, lab: Lab
) -> None:
    make_instrument(
        session,
        facility=lab.facility,
        name="X射线衍射仪",
        keywords="XRD",
        category=Category.PHYSICAL_PROPERTY,
    )
    make_instrument(
        session,
        facility=lab.facility,
        name="核磁共振波谱仪",
        keywords="NMR",
        purchase_value_fen=300_000_000,
        operation_mode=OperationMode.STAFF_OPERATED,
    )
    elsewhere = make_facility(
        session, name="两江测试平台", district="渝北区", cluster=Cluster.LIANGJIANG
    )
    make_instrument(session, facility=elsewhere, name="液相色谱仪", keywords="HPLC")

    def count(**params: str) -> int:
        page = client.get("/instruments", params={**params, "facility_id": ""})
        assert page.status_code == 200, page.text
        found = re.search(r"找到 (\d+) 台仪器", page.text)
        assert found, page.text
        return int(found.group(1))

    assert count() >= 4
    assert count(cluster="liangjiang") == 1
    assert count(category="physical_property", cluster="western_science_city") == 1
    assert count(large="1", cluster="western_science_city") == 1
    assert (
        count(operation_mode="self_operated", cluster="western_science_city") == 2
    )  # "both" counts
    assert count(district="渝北区") == 1
    page = client.get("/instruments", params={"facility_id": str(lab.facility.id)})
    assert re.search(r"找到 3 台仪器", page.text)


def test_the_catalogue_pages_through_many_results(
    client: TestClient, session: Session, lab: Lab
) -> None:
    for n in range(25):
        make_instrument(
            session, facility=lab.facility, name=f"分页仪器{n:02d}", keywords="pagetest"
        )

    first = client.get("/instruments", params={"q": "pagetest"})
    second = client.get("/instruments", params={"q": "pagetest", "page": "2"})

    assert "找到 25 台仪器" in first.text
    # The pager's wording is shared with other pages; its numbers are what matter here.
    pager = first.text.split('<nav class="pagination"', 1)[1].split("</nav>", 1)[0]
    assert re.search(r"1\D+2", pager)
    assert first.text.count('class="card instrument-card"') == 20
    assert second.text.count('class="card instrument-card"') == 5
    assert "page=2" in first.text
    assert "q=pagetest" in first.text


def test_sorting_by_price_follows_the_users_own_price_list(
    client: TestClient, session: Session, lab: Lab
) -> None:
    for name, internal, enterprise in (("排序仪器甲", 100, 90_000), ("排序仪器乙", 50_000, 10_000)):
        make_instrument(
            session,
            facility=lab.facility,
            name=name,
            keywords="sortme",
            price_internal_fen=internal,
            price_external_academic_fen=internal,
            price_enterprise_fen=enterprise,
        )

    def order() -> list[str]:
        page = client.get("/instruments", params={"q": "sortme", "sort": "price"}).text
        return re.findall(r"排序仪器[甲乙]", page)

    assert order() == ["排序仪器甲", "排序仪器乙"]  # anonymous: the internal prices
    login_page(client, lab.engineer.email)
    assert order() == ["排序仪器乙", "排序仪器甲"]  # a firm: the enterprise prices


def test_bad_filters_are_shown_next_to_their_field(client: TestClient, lab: Lab) -> None:
    page = client.get("/instruments", params={"q": "x", "category": "teleporter", "page": "0"})

    assert page.status_code == 422
    assert "至少输入 2 个字符" in page.text
    assert "请选择给出的选项之一" in page.text


def test_htmx_gets_only_the_results(client: TestClient, lab: Lab) -> None:
    page = client.get("/instruments", params={"q": "电镜"}, headers={"HX-Request": "true"})

    assert page.status_code == 200
    assert page.text.lstrip().startswith('<section id="results"')
    assert "<html" not in page.text


def test_the_free_time_filter_keeps_instruments_free_long_enough(
    client: TestClient, session: Session, lab: Lab
) -> None:
    busy = make_instrument(session, facility=lab.facility, name="忙碌的电镜", keywords="电镜")
    book_directly(session, lab.researcher, busy, "2026-12-08 09:00", "2026-12-08 16:00")

    page = client.get(
        "/instruments",
        params={
            "q": "电镜",
            "free_from": "2026-12-08T09:00",
            "free_to": "2026-12-08T17:00",
            "free_minutes": "120",
        },
    )

    assert page.status_code == 200, page.text
    assert "找到 1 台仪器" in page.text
    assert "场发射扫描电子显微镜" in page.text
    assert "忙碌的电镜" not in page.text
    assert "2026-12-08 09:00 (Asia/Shanghai)" in page.text


def test_the_free_time_filter_needs_an_end_after_its_start(client: TestClient, lab: Lab) -> None:
    page = client.get(
        "/instruments", params={"free_from": "2026-12-08T09:00", "free_to": "2026-12-08T08:00"}
    )

    assert page.status_code == 422
    assert "结束时间必须晚于开始时间" in page.text


def test_the_search_page_reads_the_same_number_of_times_for_2_or_20_results(
    client: TestClient, session: Session, database: ConnectionBoundDatabase, lab: Lab
) -> None:
    login_page(client, lab.researcher.email)
    for n in range(2):
        make_instrument(session, facility=lab.facility, name=f"计数仪器{n}", keywords="countme")
    client.get("/instruments", params={"q": "countme"})  # warm caches
    with counted_statements(database) as few:
        assert "找到 2 台仪器" in client.get("/instruments", params={"q": "countme"}).text
    for n in range(2, 20):
        make_instrument(
            session, facility=make_facility(session), name=f"计数仪器{n}", keywords="countme"
        )
    with counted_statements(database) as many:
        assert "找到 20 台仪器" in client.get("/instruments", params={"q": "countme"}).text

    assert len(many) == len(few)


def test_the_instrument_page_and_its_calendar_read_as_often_for_few_or_many_rows(
    client: TestClient, session: Session, database: ConnectionBoundDatabase, lab: Lab
) -> None:
    login_page(client, lab.researcher.email)
    window = {"start": "2026-12-07T00:00:00+08:00", "end": "2026-12-14T00:00:00+08:00"}
    page_url = f"/instruments/{lab.instrument.id}"
    feed_url = f"{page_url}/calendar.json"

    def add(services: int, days: range) -> None:
        for _ in range(services):
            make_testing_service(session, facility=lab.facility, instruments=[lab.instrument])
        for day in days:
            for user, hour in ((lab.researcher, 10), (lab.visitor, 14)):
                book_directly(
                    session,
                    user,
                    lab.instrument,
                    f"2026-12-{day:02d} {hour}:00",
                    f"2026-12-{day:02d} {hour + 1}:00",
                )

    add(1, range(8, 9))
    client.get(page_url)
    client.get(feed_url, params=window)  # warm caches
    with counted_statements(database) as few:
        assert client.get(page_url).status_code == 200
        assert client.get(feed_url, params=window).status_code == 200
    add(10, range(9, 12))
    with counted_statements(database) as many:
        assert client.get(page_url).status_code == 200
        assert len(client.get(feed_url, params=window).json()) > 8

    assert len(many) == len(few)


def test_the_catalogue_may_require_a_login(
    session: Session, database: ConnectionBoundDatabase, lab: Lab
) -> None:
    from web.app import create_app

    settings = database.settings.model_copy(update={"catalogue_public": False})
    with TestClient(create_app(settings, database), base_url="https://testserver") as client:
        answer = client.get("/instruments", follow_redirects=False)
        feed = client.get(f"/instruments/{lab.instrument.id}/calendar.json", follow_redirects=False)

    assert answer.status_code == 303
    assert answer.headers["location"].startswith("/login?next=/instruments")
    assert feed.status_code == 404


# --- An instrument's page ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("who", "price", "kind"),
    [
        ("researcher", "¥200.00", "校内用户"),
        ("visitor", "¥400.00", "校外学术用户"),
        ("engineer", "¥600.00", "企业用户"),
    ],
)
def test_the_instrument_page_shows_the_price_of_the_users_customer_class(
    client: TestClient, lab: Lab, who: str, price: str, kind: str
) -> None:
    login_page(client, getattr(lab, who).email)

    page = client.get(f"/instruments/{lab.instrument.id}")

    assert page.status_code == 200
    assert f"您的价格：每小时 {price}" in page.text
    assert kind in page.text.split("您的价格", 1)[1].split("</p>", 1)[0]


def test_the_instrument_page_explains_rules_training_and_services(
    client: TestClient, session: Session, lab: Lab
) -> None:
    make_testing_service(
        session, facility=lab.facility, instruments=[lab.instrument], name="扫描电镜形貌分析"
    )
    anonymous = client.get(f"/instruments/{lab.instrument.id}").text
    login_page(client, lab.researcher.email)
    qualified = client.get(f"/instruments/{lab.instrument.id}").text

    assert "登录后查看" in anonymous
    assert "您已取得该仪器的使用资格" in qualified
    assert "扫描电镜形貌分析" in qualified
    assert "分析测试中心" in qualified
    assert "重庆测试大学" in qualified
    assert "开始前 24 小时之前取消免费" in qualified
    assert "迟于此取消按价格的 50% 收费" in qualified
    assert "由工作人员操作每小时加收 ¥50.00" in qualified
    assert "周一" in qualified
    assert "09:00–17:00" in qualified
    assert 'data-time-zone="Asia/Shanghai"' in qualified
    assert "/static/vendor/fullcalendar/all/global.js" in qualified


def test_the_instrument_page_speaks_english_when_asked(client: TestClient, lab: Lab) -> None:
    client.cookies.set("labshare_lang", "en", domain="testserver.local")

    page = client.get(f"/instruments/{lab.instrument.id}").text

    assert '<html lang="en">' in page
    assert "Booking rules" in page
    assert "Cancelling is free until 24 hours before the start." in page
    assert "Analytical instruments" in page  # the category's English name
    assert 'data-locale="en"' in page
    assert "locales/zh-cn" not in page


def test_a_user_without_training_is_told_so(client: TestClient, lab: Lab) -> None:
    login_page(client, lab.visitor.email)

    page = client.get(f"/instruments/{lab.instrument.id}").text

    assert "您没有该仪器的有效使用资格" in page
    assert "仍可预约由工作人员操作" in page


def test_retired_and_unknown_instruments_are_not_found(
    client: TestClient, session: Session, lab: Lab
) -> None:
    retired = make_instrument(session, facility=lab.facility, status=InstrumentStatus.RETIRED)
    login_page(client, lab.researcher.email)

    assert client.get(f"/instruments/{retired.id}").status_code == 404
    assert client.get("/instruments/999999").status_code == 404
    assert client.get(f"/instruments/{retired.id}/book").status_code == 404


# --- The calendar's data -------------------------------------------------------------------------


def test_the_calendar_shows_free_time_and_busy_time_without_who_booked_it(
    client: TestClient, session: Session, lab: Lab
) -> None:
    others = book_directly(
        session, lab.visitor, lab.instrument, "2026-12-08 10:00", "2026-12-08 11:00"
    )
    mine = book_directly(
        session, lab.researcher, lab.instrument, "2026-12-08 14:00", "2026-12-08 15:00"
    )
    login_page(client, lab.researcher.email)

    answer = client.get(
        f"/instruments/{lab.instrument.id}/calendar.json",
        params={"start": "2026-12-08T00:00:00+08:00", "end": "2026-12-09T00:00:00+08:00"},
    )

    assert answer.status_code == 200
    events = answer.json()
    free = [(e["start"], e["end"]) for e in events if e.get("display") == "background"]
    assert free == [
        (at("2026-12-08 09:00").isoformat(), at("2026-12-08 10:00").isoformat()),
        (at("2026-12-08 11:00").isoformat(), at("2026-12-08 14:00").isoformat()),
        (at("2026-12-08 15:00").isoformat(), at("2026-12-08 17:00").isoformat()),
    ]
    busy = [e for e in events if "slot-busy" in e.get("classNames", [])]
    assert busy == [
        {
            "start": at("2026-12-08 10:00").isoformat(),
            "end": at("2026-12-08 11:00").isoformat(),
            "title": "已被预约",
            "classNames": ["slot-busy"],
        }
    ]
    own = [e for e in events if "slot-mine" in e.get("classNames", [])]
    assert [(e["id"], e["url"]) for e in own] == [(str(mine.id), f"/my/bookings/{mine.id}")]
    assert f"/my/bookings/{others.id}" not in answer.text
    assert lab.visitor.name not in answer.text
    assert lab.visitor.email not in answer.text


def test_the_calendar_offers_no_free_time_before_the_minimum_notice(
    client: TestClient, lab: Lab
) -> None:
    with frozen(at("2026-12-08 10:10")):  # 60 minutes' notice: 11:10, on the next slot 11:30
        answer = client.get(
            f"/instruments/{lab.instrument.id}/calendar.json",
            params={"start": "2026-12-07T00:00:00+08:00", "end": "2026-12-09T00:00:00+08:00"},
        )

    free = [(e["start"], e["end"]) for e in answer.json() if e.get("display") == "background"]
    assert free == [(at("2026-12-08 11:30").isoformat(), at("2026-12-08 17:00").isoformat())]


def test_the_calendar_takes_fullcalendars_named_zone_form(client: TestClient, lab: Lab) -> None:
    answer = client.get(
        f"/instruments/{lab.instrument.id}/calendar.json",
        params={
            "start": "2026-12-08T00:00:00",
            "end": "2026-12-09T00:00:00",
            "timeZone": "Asia/Shanghai",
        },
    )

    assert answer.status_code == 200
    assert answer.json()[0]["start"] == at("2026-12-08 09:00").isoformat()


@pytest.mark.parametrize(
    "params",
    [
        {"start": "yesterday", "end": "2026-12-09T00:00:00+08:00"},
        {"start": "0001-01-01T00:00:00+08:00", "end": "2026-12-09T00:00:00+08:00"},
        {"end": "2026-12-09T00:00:00+08:00"},
        {"start": "2026-12-09T00:00:00+08:00", "end": "2026-12-08T00:00:00+08:00"},
        {"start": "2026-01-01T00:00:00+08:00", "end": "2026-12-31T00:00:00+08:00"},
        {"start": "2026-12-08T00:00:00", "end": "2026-12-09T00:00:00", "timeZone": "Mars/Olympus"},
    ],
)
def test_the_calendar_refuses_a_bad_window_with_a_reason(
    client: TestClient, lab: Lab, params: dict[str, str]
) -> None:
    answer = client.get(f"/instruments/{lab.instrument.id}/calendar.json", params=params)

    assert answer.status_code == 422
    body = answer.json()
    assert body["detail"]
    assert body["errors"][0]["field"] in ("start", "end", "timeZone")


def test_the_calendar_of_an_unknown_instrument_is_not_found(client: TestClient) -> None:
    answer = client.get(
        "/instruments/999999/calendar.json",
        params={"start": "2026-12-08T00:00:00+08:00", "end": "2026-12-09T00:00:00+08:00"},
    )

    assert answer.status_code == 404
    assert answer.json()["code"] == "not_found"


# --- Booking -------------------------------------------------------------------------------------


def test_a_qualified_researcher_confirms_and_gets_a_confirmed_booking(
    client: TestClient, session: Session, lab: Lab
) -> None:
    login_page(client, lab.researcher.email)
    page = confirmation(client, lab.instrument, "2026-12-08 10:00", "2026-12-08 12:00")
    assert page.status_code == 200
    assert "2026-12-08 10:00 (Asia/Shanghai) – 2026-12-08 12:00 (Asia/Shanghai)" in page.text
    assert "¥400.00" in page.text  # 2 h × ¥200 self-operated
    assert "¥500.00" in page.text  # plus ¥50/h staff surcharge

    answer = submit(client, lab.instrument, page, purpose="形貌观察", charge_account="KJ-2026-001")

    assert answer.status_code == 303
    [booking] = bookings_of(session, lab.researcher)
    assert answer.headers["location"] == f"/my/bookings/{booking.id}?created=1"
    assert booking.status == BookingStatus.CONFIRMED
    assert (booking.start_at, booking.end_at) == (at("2026-12-08 10:00"), at("2026-12-08 12:00"))
    assert booking.purpose == "形貌观察"
    assert booking.charge_account == "KJ-2026-001"
    assert booking.operated_by == OperatedBy.SELF
    # The account is offered again next time.
    again = confirmation(client, lab.instrument, "2026-12-09 10:00", "2026-12-09 11:00")
    assert '<option value="KJ-2026-001">' in again.text


def test_a_request_on_an_instrument_that_needs_approval_is_pending(
    client: TestClient, session: Session, lab: Lab
) -> None:
    instrument = make_instrument(session, facility=lab.facility, approval_mode=ApprovalMode.MANUAL)
    qualify(session, lab.researcher, instrument)
    login_page(client, lab.researcher.email)
    page = confirmation(client, instrument, "2026-12-08 10:00", "2026-12-08 11:00")

    answer = submit(client, instrument, page)

    assert answer.status_code == 303
    [booking] = bookings_of(session, lab.researcher)
    assert booking.status == BookingStatus.PENDING


def test_the_plain_time_form_books_in_the_facilitys_zone(
    client: TestClient, session: Session, lab: Lab
) -> None:
    login_page(client, lab.researcher.email)
    page = client.get(
        f"/instruments/{lab.instrument.id}/book",
        params={"start": "2026-12-08T13:00", "end": "2026-12-08T14:00"},
    )
    assert 'value="2026-12-08T13:00"' in page.text

    assert submit(client, lab.instrument, page).status_code == 303
    [booking] = bookings_of(session, lab.researcher)
    assert booking.start_at == at("2026-12-08 13:00")


def test_broken_rules_are_shown_next_to_their_fields_with_the_values_kept(
    client: TestClient, session: Session, lab: Lab
) -> None:
    login_page(client, lab.researcher.email)
    page = confirmation(client, lab.instrument, "2026-12-08 10:00", "2026-12-08 11:00")

    answer = submit(
        client,
        lab.instrument,
        page,
        start="2026-12-08T10:10",
        end="2026-12-08T20:00",
        purpose="保留的用途",
    )

    assert answer.status_code == 422
    start_errors = answer.text.split('id="f-start"', 1)[1].split("</div>", 1)[0]
    end_errors = answer.text.split('id="f-end"', 1)[1].split("</div>", 1)[0]
    assert "请从 30 分钟的时段边界开始" in start_errors
    assert "仪器在这段时间内并非全程开放" in start_errors
    assert "最多预约 480 分钟" in end_errors
    assert 'value="2026-12-08T10:10"' in answer.text
    assert "保留的用途" in answer.text
    assert bookings_of(session, lab.researcher) == []


def test_an_unqualified_self_operated_request_is_refused_next_to_the_operation_choice(
    client: TestClient, session: Session, lab: Lab
) -> None:
    login_page(client, lab.visitor.email)
    page = confirmation(client, lab.instrument, "2026-12-08 10:00", "2026-12-08 11:00")
    assert form_of(page)["operated_by"] == "staff"  # the default for someone without training

    answer = submit(client, lab.instrument, page, operated_by="self")

    assert answer.status_code == 403
    choice = answer.text.split("<legend>谁来操作仪器</legend>", 1)[1].split("</fieldset>", 1)[0]
    assert "需要有效的使用资格" in choice
    assert bookings_of(session, lab.visitor) == []
    # Operated by staff it goes through, as a request a manager approves.
    assert submit(client, lab.instrument, page, operated_by="staff").status_code == 303
    assert [b.status for b in bookings_of(session, lab.visitor)] == [BookingStatus.PENDING]


def test_a_taken_time_shows_the_conflict_without_the_other_booker_and_offers_the_waitlist(
    client: TestClient, session: Session, lab: Lab
) -> None:
    book_directly(session, lab.visitor, lab.instrument, "2026-12-08 10:30", "2026-12-08 11:30")
    login_page(client, lab.researcher.email)
    page = confirmation(client, lab.instrument, "2026-12-08 10:00", "2026-12-08 12:00")

    answer = submit(client, lab.instrument, page)

    assert answer.status_code == 409
    assert "这段时间已被占用" in answer.text
    assert (
        "仪器已被预约：2026-12-08 10:30 (Asia/Shanghai) 至 2026-12-08 11:30 (Asia/Shanghai)"
        in answer.text
    )
    assert lab.visitor.name not in answer.text
    assert lab.visitor.email not in answer.text
    waitlist = answer.text.split('action="/my/waitlist"', 1)[1].split("</form>", 1)[0]
    assert f'name="instrument_id" value="{lab.instrument.id}"' in waitlist
    assert 'name="start" value="2026-12-08T10:00:00+08:00"' in waitlist
    assert 'name="end" value="2026-12-08T12:00:00+08:00"' in waitlist
    assert 'name="csrf_token"' in waitlist
    assert bookings_of(session, lab.researcher) == []


def test_the_waitlist_offered_on_a_conflict_takes_the_researcher_in(
    client: TestClient, session: Session, lab: Lab
) -> None:
    book_directly(session, lab.visitor, lab.instrument, "2026-12-08 10:00", "2026-12-08 11:00")
    login_page(client, lab.researcher.email)
    page = confirmation(client, lab.instrument, "2026-12-08 10:00", "2026-12-08 11:00")
    conflict = submit(client, lab.instrument, page)
    form = conflict.text.split('action="/my/waitlist"', 1)[1].split("</form>", 1)[0]
    fields = dict(re.findall(r'name="([^"]+)" value="([^"]*)"', form))

    joined = client.post("/my/waitlist", data=fields, follow_redirects=False)

    assert joined.status_code == 303
    entries = session.exec(
        select(WaitlistEntry).where(WaitlistEntry.user_id == lab.researcher.id)
    ).all()
    assert [(e.start_at, e.end_at) for e in entries] == [
        (at("2026-12-08 10:00"), at("2026-12-08 11:00"))
    ]


def test_a_double_clicked_submit_makes_one_booking(
    client: TestClient, session: Session, lab: Lab
) -> None:
    login_page(client, lab.researcher.email)
    page = confirmation(client, lab.instrument, "2026-12-08 10:00", "2026-12-08 11:00")

    first = submit(client, lab.instrument, page)
    second = submit(client, lab.instrument, page)

    assert first.status_code == second.status_code == 303
    assert first.headers["location"] == second.headers["location"]
    assert len(bookings_of(session, lab.researcher)) == 1


def test_a_form_without_its_csrf_token_is_refused(
    client: TestClient, session: Session, lab: Lab
) -> None:
    login_page(client, lab.researcher.email)
    page = confirmation(client, lab.instrument, "2026-12-08 10:00", "2026-12-08 11:00")

    answer = submit(client, lab.instrument, page, csrf_token="")

    assert answer.status_code == 403
    assert bookings_of(session, lab.researcher) == []


def test_a_time_far_outside_any_calendar_is_refused_as_a_bad_time(
    client: TestClient, session: Session, lab: Lab
) -> None:
    login_page(client, lab.researcher.email)
    page = confirmation(client, lab.instrument, "2026-12-08 10:00", "2026-12-08 11:00")

    answer = submit(client, lab.instrument, page, start="9999-12-31T23:00", end="9999-12-31T23:30")

    assert answer.status_code == 422
    assert "请输入日期和时间" in answer.text.split('id="f-start"', 1)[1].split("</div>", 1)[0]
    assert bookings_of(session, lab.researcher) == []


def test_booking_an_unknown_or_retired_instrument_is_not_found(
    client: TestClient, session: Session, lab: Lab
) -> None:
    retired = make_instrument(session, facility=lab.facility)
    login_page(client, lab.researcher.email)
    page = confirmation(client, retired, "2026-12-08 10:00", "2026-12-08 11:00")
    instruments.update_instrument(
        session, actor=None, instrument_id=retired.id or 0, data=_retire()
    )

    assert submit(client, retired, page).status_code == 404
    assert (
        client.post(
            "/instruments/999999/book", data=form_of(page), follow_redirects=False
        ).status_code
        == 404
    )
    assert session.exec(select(func.count()).select_from(Booking)).one() == 0


def _retire() -> Any:
    from instruments.schemas import InstrumentUpdate

    return InstrumentUpdate(status=InstrumentStatus.RETIRED)


def test_booking_needs_a_login(client: TestClient, lab: Lab) -> None:
    answer = client.get(f"/instruments/{lab.instrument.id}/book", follow_redirects=False)

    assert answer.status_code == 303
    assert answer.headers["location"].startswith("/login?next=")


def test_a_bad_time_on_the_confirmation_page_is_named(client: TestClient, lab: Lab) -> None:
    login_page(client, lab.researcher.email)

    answer = client.get(
        f"/instruments/{lab.instrument.id}/book",
        params={"start": "soon", "end": "0001-01-01T00:00+08:00"},
    )

    assert answer.status_code == 422
    assert "请输入日期和时间" in answer.text


def test_the_booking_pages_use_no_inline_scripts_or_styles(client: TestClient, lab: Lab) -> None:
    login_page(client, lab.researcher.email)
    pages = [
        client.get("/instruments").text,
        client.get(f"/instruments/{lab.instrument.id}").text,
        confirmation(client, lab.instrument, "2026-12-08 10:00", "2026-12-08 11:00").text,
    ]

    for html in pages:
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html)
        assert " style=" not in html
        assert " onclick=" not in html
