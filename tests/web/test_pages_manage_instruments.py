"""Lab manager pages: instruments, opening hours and closures, outages, qualifications, testing
services and sample service requests, as a manager uses them in a browser."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, col, select

from booking import requests as service_requests
from booking.models import Booking, ServiceRequestFile, ServiceRequestStatus
from booking.requests import ServiceRequestCreate
from booking.rules import BookingStatus, OperatedBy
from core.accounts.models import User
from core.accounts.rules import Role, ScopeKind
from core.accounts.schemas import RoleGrant
from core.auth.principal import load_principal
from core.db import ConnectionBoundDatabase
from instruments.models import (
    Facility,
    FacilityClosure,
    Instrument,
    OpeningSpan,
    Outage,
    PriceChange,
    Qualification,
    TestingService,
)
from instruments.models import TestingServiceInstrument as ServiceInstrumentLink
from tests.factories import csrf_from, login_page, make_user
from tests.instruments.factories import make_facility, make_instrument, make_testing_service
from tests.querycount import counted_statements

PDF = b"%PDF-1.7\n% a report\n"


@dataclass
class Lab:
    facility: Facility
    instrument: Instrument
    manager: User
    other_facility: Facility
    other_instrument: Instrument


def manager_of(session: Session, facility: Facility) -> User:
    return make_user(
        session,
        roles=[
            RoleGrant(role=Role.LAB_MANAGER, scope_kind=ScopeKind.FACILITY, scope_id=facility.id)
        ],
    )


@pytest.fixture
def lab(session: Session) -> Lab:
    facility = make_facility(session)
    other_facility = make_facility(session)
    return Lab(
        facility=facility,
        instrument=make_instrument(session, facility=facility),
        manager=manager_of(session, facility),
        other_facility=other_facility,
        other_instrument=make_instrument(session, facility=other_facility),
    )


@pytest.fixture
def manager_client(client: TestClient, lab: Lab) -> TestClient:
    assert login_page(client, lab.manager.email).status_code == 303
    return client


def form_of(client: TestClient, path: str) -> dict[str, str]:
    """The values a page's form shows, as a browser would send them back unchanged."""
    import html.parser

    class Fields(html.parser.HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.values: dict[str, str] = {}
            self.select: str | None = None
            self.textarea: str | None = None

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            a = {k: v or "" for k, v in attrs}
            if tag == "input" and a.get("name"):
                if a.get("type") == "checkbox":
                    if "checked" in a:
                        self.values[a["name"]] = a.get("value", "on")
                else:
                    self.values.setdefault(a["name"], a.get("value", ""))
            elif tag == "select":
                self.select = a.get("name")
            elif tag == "option" and self.select and "selected" in a:
                self.values[self.select] = a.get("value", "")
            elif tag == "textarea":
                self.textarea = a.get("name")
                self.values[self.textarea or ""] = ""

        def handle_endtag(self, tag: str) -> None:
            if tag == "select":
                self.select = None
            elif tag == "textarea":
                self.textarea = None

        def handle_data(self, data: str) -> None:
            if self.textarea:
                self.values[self.textarea] += data

    page = client.get(path)
    assert page.status_code == 200, page.text
    parser = Fields()
    parser.feed(page.text.split("<main", 1)[1])
    return parser.values


# --- Instruments ---------------------------------------------------------------------------


def test_a_manager_edits_rules_and_prices_in_yuan_stored_in_fen(
    manager_client: TestClient, session: Session, lab: Lab
) -> None:
    path = f"/manage/instruments/{lab.instrument.id}/edit"
    form = form_of(manager_client, path)
    assert form["price_internal_yuan"] == "100.00"
    form |= {
        "price_internal_yuan": "123.45",
        "price_enterprise_yuan": "1,000.1",
        "staff_surcharge_yuan": "20",
        "min_charge_yuan": "0.01",
        "purchase_value_yuan": "650000",
        "slot_minutes": "15",
        "min_duration_minutes": "60",
        "max_duration_minutes": "240",
        "buffer_minutes": "15",
        "approval_mode": "manual",
        "user_weekly_hours_limit": "10",
        "status": "maintenance",
    }

    answer = manager_client.post(path, data=form, follow_redirects=False)

    assert answer.status_code == 303, answer.text
    session.refresh(lab.instrument)
    instrument = lab.instrument
    assert instrument.price_internal_fen == 12_345
    assert instrument.price_enterprise_fen == 100_010
    assert instrument.staff_surcharge_fen == 2_000
    assert instrument.min_charge_fen == 1
    assert instrument.purchase_value_fen == 65_000_000
    assert instrument.is_large
    assert (instrument.slot_minutes, instrument.min_duration_minutes) == (15, 60)
    assert instrument.approval_mode == "manual"
    assert instrument.user_weekly_hours_limit == 10
    assert instrument.status == "maintenance"
    history = session.exec(
        select(PriceChange)
        .where(PriceChange.instrument_id == instrument.id)
        .order_by(col(PriceChange.id))
    ).all()
    assert [h.prices["price_internal_fen"] for h in history] == [10_000, 12_345]
    shown = manager_client.get(answer.headers["location"])
    assert "123.45" in shown.text
    assert "已保存" in shown.text


def test_a_price_past_what_the_database_holds_is_a_422_page_not_a_server_error(
    manager_client: TestClient, lab: Lab
) -> None:
    path = f"/manage/instruments/{lab.instrument.id}/edit"
    form = form_of(manager_client, path) | {"price_internal_yuan": "99999999999999999999"}

    answer = manager_client.post(path, data=form, follow_redirects=False)

    assert answer.status_code == 422, answer.text
    assert "<html" in answer.text.lower()


def test_saving_an_unchanged_form_records_no_price_change(
    manager_client: TestClient, session: Session, lab: Lab
) -> None:
    path = f"/manage/instruments/{lab.instrument.id}/edit"
    answer = manager_client.post(path, data=form_of(manager_client, path), follow_redirects=False)

    assert answer.status_code == 303
    assert (
        len(
            session.exec(
                select(PriceChange).where(PriceChange.instrument_id == lab.instrument.id)
            ).all()
        )
        == 1
    )


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("price_internal_yuan", "12.345", "最多两位小数"),
        ("price_internal_yuan", "-5", "不能为负数"),
        ("price_external_academic_yuan", "abc", "最多两位小数"),
        ("slot_minutes", "7", "整除一天"),
        ("max_duration_minutes", "ten", "整数"),
        ("late_cancel_charge_percent", "150", "过大"),
        ("name", "", "必填"),
        ("photo_url", "not a url", "网址"),
    ],
)
def test_an_invalid_value_is_refused_next_to_its_field_and_the_input_is_kept(
    manager_client: TestClient, session: Session, lab: Lab, field: str, value: str, message: str
) -> None:
    path = f"/manage/instruments/{lab.instrument.id}/edit"
    form = form_of(manager_client, path) | {field: value, "keywords": "电镜 SEM"}

    answer = manager_client.post(path, data=form)

    assert answer.status_code == 422
    error = answer.text.split(f'id="f-{field}-error"', 1)[1].split("</p>", 1)[0]
    assert message in error
    assert f'value="{value}"' in answer.text or f">{value}</textarea>" in answer.text
    assert 'value="电镜 SEM"' in answer.text
    session.refresh(lab.instrument)
    assert lab.instrument.keywords == ""


def test_another_facilitys_instrument_is_not_found(
    manager_client: TestClient, session: Session, lab: Lab
) -> None:
    path = f"/manage/instruments/{lab.other_instrument.id}/edit"
    assert manager_client.get(path).status_code == 404
    token = csrf_from(manager_client.get("/manage/instruments").text)
    answer = manager_client.post(path, data={"csrf_token": token, "name": "改名"})
    assert answer.status_code == 404
    listing = manager_client.get("/manage/instruments")
    assert lab.instrument.name in listing.text
    assert lab.other_instrument.name not in listing.text
    assert (
        manager_client.get(f"/manage/facilities/{lab.other_facility.id}/hours").status_code == 404
    )
    assert (
        manager_client.get(f"/manage/facilities/{lab.other_facility.id}/services").status_code
        == 404
    )


def test_moving_an_instrument_to_a_facility_one_does_not_manage_is_not_found(
    manager_client: TestClient, session: Session, lab: Lab
) -> None:
    path = f"/manage/instruments/{lab.instrument.id}/edit"
    form = form_of(manager_client, path) | {"facility_id": str(lab.other_facility.id)}

    assert manager_client.post(path, data=form).status_code == 404
    session.refresh(lab.instrument)
    assert lab.instrument.facility_id == lab.facility.id


def test_a_researcher_may_not_open_the_management_pages(
    client: TestClient, session: Session, lab: Lab
) -> None:
    researcher = make_user(session, roles=[Role.RESEARCHER])
    login_page(client, researcher.email)
    for path in (
        "/manage/instruments",
        f"/manage/instruments/{lab.instrument.id}/edit",
        f"/manage/facilities/{lab.facility.id}/hours",
        "/manage/outages",
        "/manage/qualifications",
        "/manage/service-requests",
    ):
        assert client.get(path).status_code == 403, path


def test_an_admin_manages_every_facility(client: TestClient, session: Session, lab: Lab) -> None:
    admin = make_user(session, roles=[Role.ADMIN])
    login_page(client, admin.email)
    listing = client.get("/manage/instruments")
    assert lab.instrument.name in listing.text
    assert lab.other_instrument.name in listing.text
    assert client.get(f"/manage/instruments/{lab.other_instrument.id}/edit").status_code == 200


def test_a_form_without_its_csrf_token_is_refused(
    manager_client: TestClient, session: Session, lab: Lab
) -> None:
    path = f"/manage/instruments/{lab.instrument.id}/edit"
    form = form_of(manager_client, path)
    del form["csrf_token"]

    assert manager_client.post(path, data=form | {"name": "无令牌"}).status_code == 403
    session.refresh(lab.instrument)
    assert lab.instrument.name != "无令牌"


def new_instrument_form(client: TestClient, lab: Lab, **values: str) -> dict[str, str]:
    form = form_of(client, f"/manage/instruments/new?facility_id={lab.facility.id}")
    return form | {
        "name": "场发射扫描电子显微镜",
        "name_en": "Field-emission SEM",
        "keywords": "电镜 SEM FE-SEM",
        "asset_code": "NEW-0001",
        "category": "analytical",
        "operation_mode": "both",
        "price_internal_yuan": "300",
        "price_external_academic_yuan": "450.50",
        "price_enterprise_yuan": "600",
        "staff_surcharge_yuan": "100",
        "min_charge_yuan": "150",
        **values,
    }


def test_a_manager_adds_an_instrument_and_a_double_submit_makes_one(
    manager_client: TestClient, session: Session, lab: Lab
) -> None:
    blank = form_of(manager_client, "/manage/instruments/new")
    assert (blank["name"], blank["slot_minutes"], blank["price_internal_yuan"]) == (
        "",
        "30",
        "0.00",
    )
    form = new_instrument_form(manager_client, lab)
    assert form["form_token"]

    first = manager_client.post("/manage/instruments/new", data=form, follow_redirects=False)
    second = manager_client.post("/manage/instruments/new", data=form, follow_redirects=False)

    assert first.status_code == second.status_code == 303
    assert first.headers["location"] == second.headers["location"]
    created = session.exec(select(Instrument).where(Instrument.asset_code == "NEW-0001")).all()
    assert len(created) == 1
    assert created[0].price_external_academic_fen == 45_050
    assert created[0].facility_id == lab.facility.id
    assert created[0].rated_annual_hours == 1400
    # Back, edited, sent again with the same form token: refused, not taken for the first.
    edited = manager_client.post(
        "/manage/instruments/new", data={**form, "asset_code": "NEW-0002"}, follow_redirects=False
    )
    assert edited.status_code == 422
    assert not session.exec(select(Instrument).where(Instrument.asset_code == "NEW-0002")).all()


def test_a_second_form_with_a_taken_asset_code_is_refused_next_to_the_field(
    manager_client: TestClient, session: Session, lab: Lab
) -> None:
    form = new_instrument_form(manager_client, lab, asset_code=lab.instrument.asset_code)

    answer = manager_client.post("/manage/instruments/new", data=form)

    assert answer.status_code == 409
    assert "已登记" in answer.text.split('id="f-asset_code-error"', 1)[1].split("</p>")[0]


def test_a_new_instrument_in_another_facility_is_not_found(
    manager_client: TestClient, session: Session, lab: Lab
) -> None:
    form = new_instrument_form(manager_client, lab, facility_id=str(lab.other_facility.id))

    assert manager_client.post("/manage/instruments/new", data=form).status_code == 404
    assert (
        session.exec(select(Instrument).where(Instrument.asset_code == "NEW-0001")).first() is None
    )


def test_the_instrument_list_filters_and_reads_the_same_number_of_statements_for_2_or_20(
    manager_client: TestClient, session: Session, lab: Lab, database: ConnectionBoundDatabase
) -> None:
    make_instrument(session, facility=lab.facility, name="维护中的仪器", status="maintenance")
    with counted_statements(database) as few:
        assert manager_client.get("/manage/instruments").status_code == 200
    for _ in range(18):
        make_instrument(session, facility=lab.facility)
    with counted_statements(database) as many:
        listing = manager_client.get("/manage/instruments")
    assert listing.text.count("/edit") >= 20
    assert len(many) == len(few)

    filtered = manager_client.get("/manage/instruments?status=maintenance")
    assert "维护中的仪器" in filtered.text
    assert lab.instrument.name not in filtered.text


# --- Opening hours and closures --------------------------------------------------------------


def test_opening_hours_with_two_intervals_a_day_and_a_closure(
    manager_client: TestClient, session: Session, lab: Lab
) -> None:
    path = f"/manage/facilities/{lab.facility.id}/hours"
    page = manager_client.get(path)
    assert "Asia/Shanghai" in page.text
    token = csrf_from(page.text)
    answer = manager_client.post(
        path,
        data={
            "csrf_token": token,
            "start_0": ["08:30", "14:00", ""],
            "end_0": ["12:00", "17:30", ""],
            "start_5": ["09:00"],
            "end_5": ["24:00"],
            "opens_on_holidays": "on",
        },
        follow_redirects=False,
    )
    assert answer.status_code == 303, answer.text
    spans = session.exec(
        select(OpeningSpan)
        .where(OpeningSpan.facility_id == lab.facility.id)
        .order_by(col(OpeningSpan.weekday), col(OpeningSpan.start_minute))
    ).all()
    assert [(s.weekday, s.start_minute, s.end_minute) for s in spans] == [
        (0, 510, 720),
        (0, 840, 1050),
        (5, 540, 1440),
    ]
    session.refresh(lab.facility)
    assert lab.facility.opens_on_holidays

    shown = manager_client.get(path)
    assert 'value="14:00"' in shown.text
    assert 'value="24:00"' in shown.text

    closure_form = form_of(manager_client, path)
    added = manager_client.post(
        f"/manage/facilities/{lab.facility.id}/closures",
        data={
            "csrf_token": token,
            "form_token": closure_form["form_token"],
            "start_date": "2026-12-24",
            "end_date": "2026-12-26",
            "reason": "设备年检",
        },
        follow_redirects=False,
    )
    assert added.status_code == 303
    closures = session.exec(
        select(FacilityClosure).where(FacilityClosure.facility_id == lab.facility.id)
    ).all()
    assert [(str(c.start_date), str(c.end_date), c.reason) for c in closures] == [
        ("2026-12-24", "2026-12-26", "设备年检")
    ]
    assert "设备年检" in manager_client.get(path).text

    removed = manager_client.post(
        f"/manage/facilities/{lab.facility.id}/closures/{closures[0].id}/delete",
        data={"csrf_token": token},
        follow_redirects=False,
    )
    assert removed.status_code == 303
    assert (
        session.exec(
            select(FacilityClosure).where(FacilityClosure.facility_id == lab.facility.id)
        ).all()
        == []
    )


@pytest.mark.parametrize(
    ("starts", "ends", "message"),
    [
        (["12:00"], ["08:00"], "结束时间必须晚于开始时间"),
        (["08:00", "11:00"], ["12:00", "14:00"], "不得重叠"),
        (["08:00"], [""], "开始和结束"),
        (["8h"], ["12:00"], "08:30"),
    ],
)
def test_invalid_opening_hours_are_refused_next_to_the_weekday(
    manager_client: TestClient,
    session: Session,
    lab: Lab,
    starts: list[str],
    ends: list[str],
    message: str,
) -> None:
    path = f"/manage/facilities/{lab.facility.id}/hours"
    token = csrf_from(manager_client.get(path).text)

    answer = manager_client.post(
        path,
        data={
            "csrf_token": token,
            "start_2": starts,
            "end_2": ends,
            "start_0": ["09:00"],
            "end_0": ["10:00"],
        },
    )

    assert answer.status_code == 422
    assert message in answer.text.split('id="day-2-error"', 1)[1].split("</p>", 1)[0]
    assert f'value="{starts[0]}"' in answer.text
    spans = session.exec(
        select(OpeningSpan).where(OpeningSpan.facility_id == lab.facility.id)
    ).all()
    assert len(spans) == 5  # Monday to Friday 09:00–17:00, unchanged


def test_a_closure_ending_before_it_starts_is_refused_and_another_facilitys_is_not_found(
    manager_client: TestClient, session: Session, lab: Lab
) -> None:
    path = f"/manage/facilities/{lab.facility.id}/hours"
    token = csrf_from(manager_client.get(path).text)
    answer = manager_client.post(
        f"/manage/facilities/{lab.facility.id}/closures",
        data={"csrf_token": token, "start_date": "2026-12-26", "end_date": "2026-12-24"},
    )
    assert answer.status_code == 422
    assert "早于" in answer.text.split('id="f-end_date-error"', 1)[1].split("</p>", 1)[0]

    foreign = FacilityClosure(
        facility_id=lab.other_facility.id,
        start_date=datetime(2026, 12, 1, tzinfo=UTC).date(),
        end_date=datetime(2026, 12, 2, tzinfo=UTC).date(),
    )
    session.add(foreign)
    session.flush()
    tampered = manager_client.post(
        f"/manage/facilities/{lab.facility.id}/closures/{foreign.id}/delete",
        data={"csrf_token": token},
    )
    assert tampered.status_code == 404
    assert session.get(FacilityClosure, foreign.id) is not None


# --- Outages -----------------------------------------------------------------------------


def booking_on(session: Session, instrument: Instrument, user: User, start: datetime) -> Booking:
    booking = Booking(
        instrument_id=instrument.id,
        facility_id=instrument.facility_id,
        user_id=user.id,
        start_at=start,
        end_at=start + timedelta(hours=2),
        held_until=start + timedelta(hours=2),
        status=BookingStatus.CONFIRMED,
        operated_by=OperatedBy.SELF,
    )
    session.add(booking)
    session.flush()
    return booking


def test_an_outage_shows_the_bookings_it_falls_on_and_flags_them(
    manager_client: TestClient, session: Session, lab: Lab
) -> None:
    researcher = make_user(session, roles=[Role.RESEARCHER], name="受影响的用户")
    start = datetime.now(UTC).replace(microsecond=0, second=0) + timedelta(days=3)
    hit = booking_on(session, lab.instrument, researcher, start)
    booking_on(session, lab.instrument, researcher, start + timedelta(days=5))  # after it
    local = start.astimezone(UTC) + timedelta(hours=8)  # Asia/Shanghai
    form = form_of(manager_client, "/manage/outages") | {
        "target": f"instrument:{lab.instrument.id}",
        "start": (local - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M"),
        "end": (local + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M"),
        "kind": "repair",
        "note": "更换灯丝",
    }

    preview = manager_client.post("/manage/outages", data=form)

    assert preview.status_code == 200
    assert preview.text.count('class="affected-booking"') == 1
    assert "受影响的用户" in preview.text
    assert "标记" in preview.text  # flagged for the manager, as the platform is set up
    assert session.exec(select(Outage)).all() == []

    confirmed = form | {"confirm": "1"}
    first = manager_client.post("/manage/outages", data=confirmed, follow_redirects=False)
    again = manager_client.post("/manage/outages", data=confirmed, follow_redirects=False)
    assert first.status_code == again.status_code == 303
    assert first.headers["location"] == again.headers["location"]
    outages = session.exec(select(Outage)).all()
    assert len(outages) == 1
    assert outages[0].start_at == start - timedelta(hours=1)
    session.refresh(hit)
    assert hit.attention.startswith("Outage (repair)")

    detail = manager_client.get(first.headers["location"])
    assert "受影响的用户" in detail.text
    assert detail.text.count('class="affected-booking"') == 1
    listing = manager_client.get("/manage/outages")
    assert f"/manage/outages/{outages[0].id}" in listing.text

    deleted = manager_client.post(
        f"/manage/outages/{outages[0].id}/delete",
        data={"csrf_token": form["csrf_token"]},
        follow_redirects=False,
    )
    assert deleted.status_code == 303
    assert session.exec(select(Outage)).all() == []


def test_an_outage_that_ends_before_it_starts_or_on_another_facility_is_refused(
    manager_client: TestClient, session: Session, lab: Lab
) -> None:
    form = form_of(manager_client, "/manage/outages") | {
        "target": f"facility:{lab.facility.id}",
        "start": "2030-01-02T10:00",
        "end": "2030-01-01T10:00",
        "kind": "maintenance",
    }
    inverted = manager_client.post("/manage/outages", data=form)
    assert inverted.status_code == 422
    assert "结束" in inverted.text.split('id="f-end-error"', 1)[1].split("</p>", 1)[0]
    assert 'value="2030-01-02T10:00"' in inverted.text

    foreign = form | {"target": f"instrument:{lab.other_instrument.id}", "end": "2030-01-03T10:00"}
    assert manager_client.post("/manage/outages", data=foreign).status_code == 404

    outage = Outage(
        facility_id=lab.other_facility.id,
        start_at=datetime(2030, 1, 1, tzinfo=UTC),
        end_at=datetime(2030, 1, 2, tzinfo=UTC),
        kind="repair",
    )
    session.add(outage)
    session.flush()
    assert manager_client.get(f"/manage/outages/{outage.id}").status_code == 404
    deleted = manager_client.post(
        f"/manage/outages/{outage.id}/delete", data={"csrf_token": form["csrf_token"]}
    )
    assert deleted.status_code == 404


# --- Qualifications ------------------------------------------------------------------------


def test_a_manager_grants_and_revokes_a_qualification_and_the_history_stays(
    manager_client: TestClient, session: Session, lab: Lab
) -> None:
    trainee = make_user(session, roles=[Role.RESEARCHER], name="培训学员")
    form = form_of(manager_client, "/manage/qualifications")
    expiry = (datetime.now(UTC) + timedelta(days=365)).date().isoformat()
    grant = form | {
        "email": trainee.email.upper(),
        "instrument_id": str(lab.instrument.id),
        "expires_on": expiry,
        "note": "2026 秋季培训",
    }
    first = manager_client.post("/manage/qualifications", data=grant, follow_redirects=False)
    again = manager_client.post("/manage/qualifications", data=grant, follow_redirects=False)
    assert first.status_code == again.status_code == 303
    records = session.exec(select(Qualification).where(Qualification.user_id == trainee.id)).all()
    assert len(records) == 1
    assert records[0].expires_at is not None

    listing = manager_client.get("/manage/qualifications?email=" + trainee.email)
    assert "培训学员" in listing.text
    assert "有效" in listing.text

    without_reason = manager_client.post(
        f"/manage/qualifications/{records[0].id}/revoke", data={"csrf_token": form["csrf_token"]}
    )
    assert without_reason.status_code == 422
    revoked = manager_client.post(
        f"/manage/qualifications/{records[0].id}/revoke",
        data={"csrf_token": form["csrf_token"], "reason": "多次违规操作"},
        follow_redirects=False,
    )
    assert revoked.status_code == 303
    session.refresh(records[0])
    assert records[0].revoked_at is not None
    assert "多次违规操作" in records[0].note

    regranted = form_of(manager_client, "/manage/qualifications") | {
        "email": trainee.email,
        "instrument_id": str(lab.instrument.id),
    }
    manager_client.post("/manage/qualifications", data=regranted)
    history = manager_client.get(f"/manage/qualifications?instrument_id={lab.instrument.id}")
    assert history.text.count('class="qualification"') == 2
    assert "多次违规操作" in history.text


def test_granting_to_an_unknown_address_or_on_another_facility_is_refused(
    manager_client: TestClient, session: Session, lab: Lab
) -> None:
    form = form_of(manager_client, "/manage/qualifications") | {
        "email": "nobody@example.cn",
        "instrument_id": str(lab.instrument.id),
    }
    unknown = manager_client.post("/manage/qualifications", data=form)
    assert unknown.status_code == 422
    assert 'value="nobody@example.cn"' in unknown.text
    assert (
        "没有使用该电子邮箱的用户"
        in unknown.text.split('id="f-email-error"', 1)[1].split("</p>", 1)[0]
    )

    trainee = make_user(session, roles=[Role.RESEARCHER])
    foreign = form | {"email": trainee.email, "instrument_id": str(lab.other_instrument.id)}
    assert manager_client.post("/manage/qualifications", data=foreign).status_code == 404
    assert (
        session.exec(select(Qualification).where(Qualification.user_id == trainee.id)).all() == []
    )


# --- Testing services ----------------------------------------------------------------------


def test_a_manager_adds_and_edits_a_testing_service(
    manager_client: TestClient, session: Session, lab: Lab
) -> None:
    base = f"/manage/facilities/{lab.facility.id}/services"
    form = form_of(manager_client, f"{base}/new") | {
        "name": "扫描电镜形貌观察",
        "method_standard": "GB/T 16594-2008",
        "price_internal_yuan": "200",
        "price_external_academic_yuan": "300.5",
        "price_enterprise_yuan": "480",
        "turnaround_days": "3",
        "daily_sample_capacity": "12",
        "cma_accredited": "on",
        "instrument_ids": [str(lab.instrument.id)],
    }
    first = manager_client.post(f"{base}/new", data=form, follow_redirects=False)
    again = manager_client.post(f"{base}/new", data=form, follow_redirects=False)
    assert first.status_code == again.status_code == 303
    created = session.exec(
        select(TestingService).where(TestingService.name == "扫描电镜形貌观察")
    ).all()
    assert len(created) == 1
    service = created[0]
    assert (service.price_external_academic_fen, service.daily_sample_capacity) == (30_050, 12)
    assert service.cma_accredited
    assert not service.cnas_accredited

    edit = f"{base}/{service.id}/edit"
    changed = form_of(manager_client, edit) | {
        "price_enterprise_yuan": "500",
        "cnas_accredited": "on",
    }
    assert changed["instrument_ids"] == str(lab.instrument.id)
    assert manager_client.post(edit, data=changed, follow_redirects=False).status_code == 303
    session.refresh(service)
    assert service.price_enterprise_fen == 50_000
    assert service.cnas_accredited
    links = session.exec(
        select(ServiceInstrumentLink.instrument_id).where(
            ServiceInstrumentLink.testing_service_id == service.id
        )
    ).all()
    assert links == [lab.instrument.id]

    wrong = changed | {"instrument_ids": [str(lab.other_instrument.id)], "turnaround_days": "0"}
    refused = manager_client.post(edit, data=wrong)
    assert refused.status_code == 422
    assert 'id="f-turnaround_days-error"' in refused.text

    foreign = make_testing_service(session, facility=lab.other_facility)
    assert manager_client.get(f"{base}/{foreign.id}/edit").status_code == 404


# --- Sample service requests ---------------------------------------------------------------


@pytest.fixture
def submitted(session: Session, lab: Lab) -> dict:
    testing = make_testing_service(
        session, facility=lab.facility, instruments=[lab.instrument], daily_sample_capacity=5
    )
    requester = make_user(session, roles=[Role.RESEARCHER], name="送样人")
    principal = load_principal(session, requester)

    def submit(samples: int) -> int:
        return service_requests.submit(
            session,
            actor=principal,
            data=ServiceRequestCreate(testing_service_id=testing.id, sample_count=samples),
        ).id

    return {"testing": testing, "submit": submit, "requester": requester}


def test_a_manager_accepts_starts_reports_and_completes_a_request(
    manager_client: TestClient, session: Session, lab: Lab, submitted: dict
) -> None:
    request_id = submitted["submit"](3)
    listing = manager_client.get("/manage/service-requests?status=submitted")
    assert f"/manage/service-requests/{request_id}" in listing.text
    assert "送样人" in listing.text
    path = f"/manage/service-requests/{request_id}"
    token = csrf_from(manager_client.get(path).text)

    assert manager_client.post(f"{path}/accept", data={"csrf_token": token}).status_code == 200
    assert manager_client.post(f"{path}/start", data={"csrf_token": token}).status_code == 200
    uploaded = manager_client.post(
        f"{path}/report",
        data={"csrf_token": token},
        files={"file": ("报告.pdf", PDF, "application/pdf")},
        follow_redirects=False,
    )
    assert uploaded.status_code == 303
    page = manager_client.get(path)
    assert "报告.pdf" in page.text
    stored = session.exec(
        select(ServiceRequestFile).where(ServiceRequestFile.service_request_id == request_id)
    ).one()
    download = manager_client.get(f"{path}/files/{stored.id}")
    assert download.content == PDF
    assert manager_client.post(f"{path}/complete", data={"csrf_token": token}).status_code == 200
    found = service_requests.visible_request(session, actor=None, request_id=request_id)
    session.refresh(found)
    assert found.status is ServiceRequestStatus.COMPLETED


def test_a_report_that_is_not_what_it_claims_is_refused(
    manager_client: TestClient, session: Session, submitted: dict
) -> None:
    request_id = submitted["submit"](1)
    path = f"/manage/service-requests/{request_id}"
    token = csrf_from(manager_client.get(path).text)
    manager_client.post(f"{path}/accept", data={"csrf_token": token})
    manager_client.post(f"{path}/start", data={"csrf_token": token})

    answer = manager_client.post(
        f"{path}/report",
        data={"csrf_token": token},
        files={"file": ("report.pdf", b"MZ not a pdf", "application/pdf")},
    )

    assert answer.status_code == 422
    assert "PDF" in answer.text.split('id="f-file-error"', 1)[1].split("</p>", 1)[0]


def test_accepting_beyond_the_daily_capacity_and_rejecting_with_a_reason(
    manager_client: TestClient, session: Session, submitted: dict
) -> None:
    day = (datetime.now(UTC) + timedelta(days=2)).date().isoformat()
    first, second = submitted["submit"](4), submitted["submit"](3)
    token = csrf_from(manager_client.get(f"/manage/service-requests/{first}").text)
    accepted = manager_client.post(
        f"/manage/service-requests/{first}/accept",
        data={"csrf_token": token, "day": day},
        follow_redirects=False,
    )
    assert accepted.status_code == 303

    full = manager_client.post(
        f"/manage/service-requests/{second}/accept", data={"csrf_token": token, "day": day}
    )
    assert full.status_code == 409
    assert "另选一天" in full.text

    no_reason = manager_client.post(
        f"/manage/service-requests/{second}/reject", data={"csrf_token": token}
    )
    assert no_reason.status_code == 422
    rejected = manager_client.post(
        f"/manage/service-requests/{second}/reject",
        data={"csrf_token": token, "reason": "样品不符合要求"},
        follow_redirects=False,
    )
    assert rejected.status_code == 303
    found = service_requests.visible_request(session, actor=None, request_id=second)
    session.refresh(found)
    assert (found.status, found.reason) == (ServiceRequestStatus.REJECTED, "样品不符合要求")


def test_another_facilitys_request_is_not_found(
    client: TestClient, session: Session, lab: Lab, submitted: dict
) -> None:
    request_id = submitted["submit"](1)
    stranger = manager_of(session, lab.other_facility)
    login_page(client, stranger.email)
    assert client.get(f"/manage/service-requests/{request_id}").status_code == 404
    token = csrf_from(client.get("/manage/service-requests").text)
    assert (
        f"/manage/service-requests/{request_id}" not in client.get("/manage/service-requests").text
    )
    answer = client.post(
        f"/manage/service-requests/{request_id}/accept", data={"csrf_token": token}
    )
    assert answer.status_code == 404


# --- Across the pages ----------------------------------------------------------------------


def test_every_form_without_its_csrf_token_is_refused(
    manager_client: TestClient, session: Session, lab: Lab
) -> None:
    facility = lab.facility.id
    for path in (
        "/manage/instruments/new",
        f"/manage/facilities/{facility}/hours",
        f"/manage/facilities/{facility}/closures",
        f"/manage/facilities/{facility}/services/new",
        "/manage/outages",
        "/manage/qualifications",
    ):
        assert manager_client.post(path, data={"name": "x"}).status_code == 403, path


def grow(session: Session, lab: Lab, count: int) -> None:
    """``count`` more outages, qualifications and sample requests in the manager's facility."""
    testing = make_testing_service(session, facility=lab.facility, daily_sample_capacity=100)
    for n in range(count):
        user = make_user(session, roles=[Role.RESEARCHER])
        start = datetime(2030, 1, 1, tzinfo=UTC) + timedelta(days=n)
        session.add(
            Outage(
                facility_id=lab.facility.id,
                instrument_id=lab.instrument.id if n % 2 else None,
                start_at=start,
                end_at=start + timedelta(hours=4),
                kind="maintenance",
            )
        )
        session.add(Qualification(user_id=user.id, instrument_id=lab.instrument.id))
        service_requests.submit(
            session,
            actor=load_principal(session, user),
            data=ServiceRequestCreate(testing_service_id=testing.id, sample_count=1),
        )
    session.flush()


@pytest.mark.parametrize(
    "path", ["/manage/outages", "/manage/qualifications", "/manage/service-requests"]
)
def test_the_lists_read_the_same_number_of_statements_for_2_or_20_rows(
    manager_client: TestClient,
    session: Session,
    lab: Lab,
    database: ConnectionBoundDatabase,
    path: str,
) -> None:
    grow(session, lab, 2)
    with counted_statements(database) as few:
        assert manager_client.get(path).status_code == 200
    grow(session, lab, 18)
    with counted_statements(database) as many:
        page = manager_client.get(path)
    assert page.status_code == 200
    assert page.text.count("<tr") >= 21
    assert len(many) == len(few)


def test_where_the_platform_cancels_bookings_under_an_outage_the_page_says_so_and_does_it(
    manager_client: TestClient, session: Session, lab: Lab
) -> None:
    app = manager_client.app
    app.state.settings = app.state.settings.model_copy(update={"outage_bookings_action": "cancel"})  # type: ignore[attr-defined]
    researcher = make_user(session, roles=[Role.RESEARCHER])
    start = datetime.now(UTC).replace(microsecond=0, second=0) + timedelta(days=4)
    booking = booking_on(session, lab.instrument, researcher, start)
    local = start + timedelta(hours=8)  # Asia/Shanghai
    form = form_of(manager_client, "/manage/outages") | {
        "target": f"facility:{lab.facility.id}",
        "start": local.strftime("%Y-%m-%dT%H:%M"),
        "end": (local + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M"),
        "kind": "maintenance",
    }

    preview = manager_client.post("/manage/outages", data=form)
    assert "将以停机为理由被取消" in preview.text
    confirmed = manager_client.post("/manage/outages", data=form | {"confirm": "1"})

    assert confirmed.status_code == 200
    session.refresh(booking)
    assert booking.status == BookingStatus.CANCELLED
    assert "已取消：" in confirmed.text


# --- Input a database cannot hold, repeated clicks, messages per language --------------------

HUGE = str(2**40)


@pytest.mark.parametrize("bad", [HUGE, "²"])
def test_ids_past_the_database_range_or_not_ascii_digits_answer_4xx_not_500(
    manager_client: TestClient, lab: Lab, bad: str
) -> None:
    facility, instrument = lab.facility.id, lab.instrument.id
    for path in (
        f"/manage/instruments?page={bad}",
        f"/manage/instruments?facility_id={bad}",
        f"/manage/facilities/{facility}/hours",
        f"/manage/qualifications?instrument_id={bad}",
        f"/manage/qualifications?page={bad}",
        f"/manage/outages?upcoming={bad}&past={bad}",
        f"/manage/service-requests?page={bad}",
    ):
        assert manager_client.get(path).status_code < 500, path
    for path in (
        f"/manage/instruments/{bad}/edit",
        f"/manage/facilities/{bad}/hours",
        f"/manage/outages/{bad}",
        f"/manage/service-requests/{bad}",
        f"/manage/facilities/{facility}/services/{bad}/edit",
    ):
        assert 400 <= manager_client.get(path).status_code < 500, path
    form = form_of(manager_client, "/manage/qualifications")
    token = form["csrf_token"]
    posts = {
        "/manage/qualifications": form | {"email": lab.manager.email, "instrument_id": bad},
        f"/manage/qualifications/{bad}/revoke": {"csrf_token": token, "reason": "r"},
        "/manage/outages": {
            "csrf_token": token,
            "target": f"instrument:{bad}",
            "start": "2030-01-01T10:00",
            "end": "2030-01-02T10:00",
            "kind": "repair",
        },
        f"/manage/outages/{bad}/delete": {"csrf_token": token},
        f"/manage/facilities/{facility}/closures/{bad}/delete": {"csrf_token": token},
        f"/manage/service-requests/{bad}/accept": {"csrf_token": token},
        f"/manage/service-requests/{bad}/reject": {"csrf_token": token, "reason": "r"},
        f"/manage/instruments/{instrument}/edit": {"csrf_token": token, "facility_id": bad},
    }
    for path, data in posts.items():
        assert manager_client.post(path, data=data).status_code < 500, path


@pytest.mark.parametrize("moment", ["0001-01-01", "9999-12-31"])
def test_dates_at_the_ends_of_the_calendar_are_refused_next_to_their_field(
    manager_client: TestClient, session: Session, lab: Lab, moment: str
) -> None:
    trainee = make_user(session, roles=[Role.RESEARCHER])
    form = form_of(manager_client, "/manage/qualifications") | {
        "email": trainee.email,
        "instrument_id": str(lab.instrument.id),
        "expires_on": moment,
    }
    granted = manager_client.post("/manage/qualifications", data=form)
    assert granted.status_code == 422
    assert "2000" in granted.text.split('id="f-expires_on-error"', 1)[1].split("</p>", 1)[0]

    outage = form_of(manager_client, "/manage/outages") | {
        "target": f"instrument:{lab.instrument.id}",
        "start": f"{moment}T00:00",
        "end": "2030-01-02T10:00",
        "kind": "repair",
    }
    recorded = manager_client.post("/manage/outages", data=outage)
    assert recorded.status_code == 422
    assert "2000" in recorded.text.split('id="f-start-error"', 1)[1].split("</p>", 1)[0]


def test_a_qualification_shows_the_last_day_it_is_valid_not_the_midnight_after(
    manager_client: TestClient, session: Session, lab: Lab
) -> None:
    trainee = make_user(session, roles=[Role.RESEARCHER])
    form = form_of(manager_client, "/manage/qualifications") | {
        "email": trainee.email,
        "instrument_id": str(lab.instrument.id),
        "expires_on": "2099-12-31",
    }
    assert manager_client.post("/manage/qualifications", data=form).status_code == 200
    listing = manager_client.get(f"/manage/qualifications?email={trainee.email}")
    assert "2099-12-31" in listing.text
    assert "2100-01-01" not in listing.text


def test_a_second_click_on_a_request_action_lands_where_the_first_went(
    manager_client: TestClient, submitted: dict
) -> None:
    request_id = submitted["submit"](1)
    path = f"/manage/service-requests/{request_id}"
    token = csrf_from(manager_client.get(path).text)
    for action, data in (
        ("accept", {}),
        ("start", {}),
    ):
        for _ in range(2):
            answer = manager_client.post(
                f"{path}/{action}", data={"csrf_token": token} | data, follow_redirects=False
            )
            assert answer.status_code == 303, (action, answer.text[:300])
            assert answer.headers["location"].startswith(path + "?done=")

    for _ in range(2):
        uploaded = manager_client.post(
            f"{path}/report",
            data={"csrf_token": token},
            files={"file": ("报告.pdf", PDF, "application/pdf")},
            follow_redirects=False,
        )
        assert uploaded.status_code == 303, uploaded.text[:300]
    assert manager_client.get(path).text.count("报告.pdf") == 1

    rejected_id = submitted["submit"](1)
    for _ in range(2):
        answer = manager_client.post(
            f"/manage/service-requests/{rejected_id}/reject",
            data={"csrf_token": token, "reason": "样品不符合要求"},
            follow_redirects=False,
        )
        assert answer.status_code == 303


def test_a_second_click_on_delete_or_revoke_lands_where_the_first_went(
    manager_client: TestClient, session: Session, lab: Lab
) -> None:
    outage = Outage(
        facility_id=lab.facility.id,
        instrument_id=lab.instrument.id,
        start_at=datetime(2030, 1, 1, tzinfo=UTC),
        end_at=datetime(2030, 1, 2, tzinfo=UTC),
        kind="repair",
    )
    closure = FacilityClosure(
        facility_id=lab.facility.id,
        start_date=datetime(2030, 2, 1, tzinfo=UTC).date(),
        end_date=datetime(2030, 2, 2, tzinfo=UTC).date(),
    )
    trainee = make_user(session, roles=[Role.RESEARCHER])
    qualification = Qualification(
        user_id=trainee.id, instrument_id=lab.instrument.id, granted_by_id=lab.manager.id
    )
    session.add_all([outage, closure, qualification])
    session.flush()
    token = csrf_from(manager_client.get("/manage/outages").text)
    for path, data in (
        (f"/manage/outages/{outage.id}/delete", {}),
        (f"/manage/facilities/{lab.facility.id}/closures/{closure.id}/delete", {}),
        (f"/manage/qualifications/{qualification.id}/revoke", {"reason": "离职"}),
    ):
        first, second = (
            manager_client.post(path, data={"csrf_token": token} | data, follow_redirects=False)
            for _ in range(2)
        )
        assert first.status_code == second.status_code == 303, (path, second.text[:300])
        assert first.headers["location"] == second.headers["location"]
        assert manager_client.get(second.headers["location"]).status_code == 200


def test_a_refused_action_is_explained_in_chinese(
    client: TestClient, session: Session, lab: Lab
) -> None:
    researcher = make_user(session, roles=[Role.RESEARCHER])
    assert login_page(client, researcher.email).status_code == 303
    token = csrf_from(client.get("/account").text)
    for path in (f"/manage/instruments/{lab.instrument.id}/edit", "/manage/outages"):
        refused = client.post(path, data={"csrf_token": token, "target": "facility:1"})
        assert refused.status_code == 403
        assert "管理员" in refused.text
        assert "change it" not in refused.text
        assert "record outages" not in refused.text


def test_emptying_the_photo_address_saves_an_empty_one(
    manager_client: TestClient, session: Session, lab: Lab
) -> None:
    lab.instrument.photo_url = "https://example.cn/photo.png"
    session.add(lab.instrument)
    session.flush()
    path = f"/manage/instruments/{lab.instrument.id}/edit"
    form = form_of(manager_client, path) | {"photo_url": ""}
    saved = manager_client.post(path, data=form, follow_redirects=False)
    assert saved.status_code == 303, saved.text
    session.refresh(lab.instrument)
    assert lab.instrument.photo_url == ""
