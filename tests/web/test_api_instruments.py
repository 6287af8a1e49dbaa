"""The catalogue API as researchers, lab managers and integrations use it."""

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, func, select

from core.accounts.rules import OrganisationType, Role, ScopeKind
from core.accounts.schemas import RoleGrant
from instruments.models import Instrument, OpeningSpan
from tests.factories import bearer, make_organisation, make_user
from tests.instruments.factories import make_facility, make_instrument

NEW_INSTRUMENT: dict[str, Any] = {
    "asset_code": "CQU-XRD-01",
    "name": "X射线衍射仪",
    "name_en": "X-ray diffractometer",
    "keywords": "XRD 衍射",
    "category": "analytical",
    "operation_mode": "both",
    "purchase_value_fen": 120_000_000,
    "price_internal_fen": 8_000,
    "price_external_academic_fen": 12_000,
    "price_enterprise_fen": 20_000,
}


@pytest.fixture
def world(session: Session) -> dict[str, Any]:
    university = make_organisation(session, name="重庆大学测试", district="沙坪坝区")
    firm = make_organisation(session, type=OrganisationType.ENTERPRISE, district="两江新区")
    facility = make_facility(session, organisation=university)
    other_facility = make_facility(session)
    manager = make_user(
        session,
        password=None,
        organisation=university,
        roles=[
            RoleGrant(role=Role.LAB_MANAGER, scope_kind=ScopeKind.FACILITY, scope_id=facility.id)
        ],
    )
    return {
        "facility": facility,
        "other_facility": other_facility,
        "instrument": make_instrument(
            session, facility=facility, keywords="电镜 SEM", name="扫描电镜"
        ),
        "foreign_instrument": make_instrument(session, facility=other_facility),
        "manager": bearer(session, manager),
        "admin": bearer(session, make_user(session, password=None, roles=[Role.ADMIN])),
        "researcher": bearer(
            session, make_user(session, organisation=university, roles=[Role.RESEARCHER])
        ),
        "firm_researcher": bearer(
            session, make_user(session, organisation=firm, roles=[Role.RESEARCHER])
        ),
    }


def test_anyone_can_search_the_catalogue(client: TestClient, world: dict) -> None:
    response = client.get("/api/v1/instruments", params={"q": "SEM"})
    assert response.status_code == 200
    body = response.json()
    assert body["total"] == 1
    assert body["items"][0]["name"] == "扫描电镜"
    assert body["items"][0]["facility_name"] == world["facility"].name


def test_the_catalogue_can_be_closed_to_anonymous_readers(client: TestClient, world: dict) -> None:
    client.app.state.settings = client.app.state.settings.model_copy(
        update={"catalogue_public": False}
    )
    assert client.get("/api/v1/instruments").status_code == 401
    assert client.get("/api/v1/instruments", headers=world["researcher"]).status_code == 200


def test_each_caller_sees_its_own_price(client: TestClient, world: dict) -> None:
    url = f"/api/v1/instruments/{world['instrument'].id}"
    anonymous = client.get(url).json()["prices"]
    assert anonymous["your_class"] is None
    internal = client.get(url, headers=world["researcher"]).json()["prices"]
    assert (internal["your_class"], internal["your_price_fen"]) == ("internal", 10_000)
    firm = client.get(url, headers=world["firm_researcher"]).json()["prices"]
    assert (firm["your_class"], firm["your_price_fen"]) == ("enterprise", 30_000)


def test_a_lab_manager_lists_an_instrument_in_its_facility(
    client: TestClient, world: dict, session: Session
) -> None:
    response = client.post(
        "/api/v1/instruments",
        json=NEW_INSTRUMENT | {"facility_id": world["facility"].id},
        headers=world["manager"],
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["is_large"] is True
    assert body["rules"]["slot_minutes"] == 30
    assert client.get("/api/v1/instruments", params={"q": "xrd"}).json()["total"] == 1


def test_a_lab_manager_editing_another_facilitys_instrument_gets_404(
    client: TestClient, world: dict
) -> None:
    response = client.patch(
        f"/api/v1/instruments/{world['foreign_instrument'].id}",
        json={"location": "A101"},
        headers=world["manager"],
    )
    assert response.status_code == 404
    response = client.post(
        "/api/v1/instruments",
        json=NEW_INSTRUMENT | {"facility_id": world["other_facility"].id},
        headers=world["manager"],
    )
    assert response.status_code == 404


def test_a_researcher_calling_a_management_endpoint_gets_403(
    client: TestClient, world: dict
) -> None:
    response = client.patch(
        f"/api/v1/instruments/{world['instrument'].id}",
        json={"location": "A101"},
        headers=world["researcher"],
    )
    assert response.status_code == 403
    assert response.json()["code"] == "forbidden"
    assert (
        client.post(
            "/api/v1/outages",
            json={
                "instrument_id": world["instrument"].id,
                "start_at": "2026-12-01T09:00:00+08:00",
                "end_at": "2026-12-01T12:00:00+08:00",
                "kind": "repair",
            },
            headers=world["researcher"],
        ).status_code
        == 403
    )


def test_a_planner_may_read_but_not_write(
    client: TestClient, world: dict, session: Session
) -> None:
    planner = bearer(session, make_user(session, password=None, roles=[Role.PLANNER]))
    assert (
        client.get(f"/api/v1/instruments/{world['instrument'].id}", headers=planner).status_code
        == 200
    )
    assert (
        client.post(
            f"/api/v1/instruments/{world['instrument'].id}/retire", headers=planner
        ).status_code
        == 403
    )


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"price_internal_fen": -1}, "price_internal_fen"),
        ({"price_enterprise_fen": 12.5}, "price_enterprise_fen"),
        ({"category": "光谱仪器"}, "category"),
        ({"operation_mode": "sometimes"}, "operation_mode"),
        ({"slot_minutes": 2}, "slot_minutes"),
        ({"photo_url": "not a url"}, "photo_url"),
        ({"unknown_field": 1}, "unknown_field"),
    ],
)
def test_bad_instrument_input_is_422_naming_the_field_and_stores_nothing(
    client: TestClient, world: dict, session: Session, change: dict, field: str
) -> None:
    before = session.exec(select(func.count()).select_from(Instrument)).one()
    response = client.post(
        "/api/v1/instruments",
        json=NEW_INSTRUMENT | {"facility_id": world["facility"].id} | change,
        headers=world["manager"],
    )
    assert response.status_code == 422, response.text
    assert field in [e.get("field") for e in response.json()["errors"]]
    assert session.exec(select(func.count()).select_from(Instrument)).one() == before


def test_a_duplicate_asset_code_is_a_conflict(client: TestClient, world: dict) -> None:
    body = NEW_INSTRUMENT | {"facility_id": world["facility"].id}
    assert (
        client.post("/api/v1/instruments", json=body, headers=world["manager"]).status_code == 201
    )
    response = client.post("/api/v1/instruments", json=body, headers=world["manager"])
    assert response.status_code == 409
    assert response.json()["code"] == "duplicate_asset_code"


@pytest.mark.parametrize(
    ("spans", "code"),
    [
        (
            [
                {"weekday": 0, "start": "08:00", "end": "12:00"},
                {"weekday": 0, "start": "11:30", "end": "14:00"},
            ],
            "overlapping_hours",
        ),
        ([{"weekday": 2, "start": "17:00", "end": "09:00"}], "end_not_after_start"),
        ([{"weekday": 2, "start": "25:00", "end": "26:00"}], "invalid_time"),
    ],
)
def test_bad_opening_hours_are_refused_and_the_old_ones_kept(
    client: TestClient, world: dict, session: Session, spans: list, code: str
) -> None:
    facility_id = world["facility"].id
    response = client.put(
        f"/api/v1/facilities/{facility_id}/opening-hours", json=spans, headers=world["manager"]
    )
    assert response.status_code == 422
    assert code in [e["code"] for e in response.json()["errors"]]
    kept = session.exec(
        select(func.count()).select_from(OpeningSpan).where(OpeningSpan.facility_id == facility_id)
    ).one()
    assert kept == 5


def test_a_manager_sets_opening_hours_and_open_intervals_follow(
    client: TestClient, world: dict
) -> None:
    facility_id = world["facility"].id
    response = client.put(
        f"/api/v1/facilities/{facility_id}/opening-hours",
        json=[{"weekday": 0, "start": "08:00", "end": "24:00"}],
        headers=world["manager"],
    )
    assert response.status_code == 200
    assert response.json()["opening_hours"] == [{"weekday": 0, "start": "08:00", "end": "24:00"}]
    intervals = client.get(
        f"/api/v1/instruments/{world['instrument'].id}/open-intervals",
        params={"start": "2026-11-30T00:00:00+08:00", "end": "2026-12-07T00:00:00+08:00"},
    ).json()["open"]
    assert intervals == [{"start": "2026-11-30T00:00:00Z", "end": "2026-11-30T16:00:00Z"}]


def test_a_time_without_an_offset_is_422(client: TestClient, world: dict) -> None:
    response = client.get(
        f"/api/v1/instruments/{world['instrument'].id}/open-intervals",
        params={"start": "2026-11-30T00:00:00", "end": "2026-12-07T00:00:00+08:00"},
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "query.start"
    outage = client.post(
        "/api/v1/outages",
        json={
            "instrument_id": world["instrument"].id,
            "start_at": "2026-12-01T09:00:00",
            "end_at": "2026-12-01T12:00:00+08:00",
            "kind": "repair",
        },
        headers=world["manager"],
    )
    assert outage.status_code == 422


def test_an_outage_ending_before_it_starts_is_422(client: TestClient, world: dict) -> None:
    response = client.post(
        "/api/v1/outages",
        json={
            "instrument_id": world["instrument"].id,
            "start_at": "2026-12-01T12:00:00+08:00",
            "end_at": "2026-12-01T09:00:00+08:00",
            "kind": "repair",
        },
        headers=world["manager"],
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "end_at"


def test_outages_are_public_and_span_days(client: TestClient, world: dict) -> None:
    created = client.post(
        "/api/v1/outages",
        json={
            "facility_id": world["facility"].id,
            "start_at": "2026-12-01T18:00:00+08:00",
            "end_at": "2026-12-04T09:00:00+08:00",
            "kind": "maintenance",
            "note": "年度维护",
        },
        headers=world["manager"],
    )
    assert created.status_code == 201
    listed = client.get("/api/v1/outages", params={"instrument_id": world["instrument"].id}).json()
    assert listed["total"] == 1
    assert listed["items"][0]["note"] == "年度维护"
    assert (
        client.delete(
            f"/api/v1/outages/{created.json()['id']}", headers=world["manager"]
        ).status_code
        == 204
    )


def test_qualifications_are_granted_by_the_manager_and_seen_by_their_holder(
    client: TestClient, world: dict, session: Session
) -> None:
    holder = make_user(session, password=None, roles=[Role.RESEARCHER])
    granted = client.post(
        "/api/v1/qualifications",
        json={
            "user_id": holder.id,
            "instrument_id": world["instrument"].id,
            "expires_at": "2030-01-01T00:00:00+08:00",
        },
        headers=world["manager"],
    )
    assert granted.status_code == 201, granted.text
    own = client.get("/api/v1/qualifications", headers=bearer(session, holder)).json()
    assert [q["instrument_id"] for q in own["items"]] == [world["instrument"].id]
    # Another researcher neither sees them nor may ask for them.
    assert client.get("/api/v1/qualifications", headers=world["researcher"]).json()["total"] == 0
    assert (
        client.get(
            "/api/v1/qualifications", params={"user_id": holder.id}, headers=world["researcher"]
        ).status_code
        == 404
    )
    assert (
        client.post(
            "/api/v1/qualifications",
            json={"user_id": holder.id, "instrument_id": world["foreign_instrument"].id},
            headers=world["manager"],
        ).status_code
        == 404
    )
    revoked = client.post(
        f"/api/v1/qualifications/{granted.json()['id']}/revoke",
        json={"reason": "培训过期"},
        headers=world["manager"],
    )
    assert revoked.json()["is_valid"] is False


def test_admins_register_facilities_and_appoint_managers(
    client: TestClient, world: dict, session: Session
) -> None:
    organisation = make_organisation(session)
    created = client.post(
        "/api/v1/facilities",
        json={"organisation_id": organisation.id, "name": "明月湖检测平台", "district": "两江新区"},
        headers=world["admin"],
    )
    assert created.status_code == 201, created.text
    assert created.json()["cluster"] == "liangjiang"
    user = make_user(session, password=None)
    appointed = client.post(
        f"/api/v1/facilities/{created.json()['id']}/managers",
        json={"user_id": user.id},
        headers=world["admin"],
    )
    assert appointed.status_code == 201
    assert (
        client.post(
            "/api/v1/facilities",
            json={"organisation_id": organisation.id, "name": "x平台", "district": "两江新区"},
            headers=world["manager"],
        ).status_code
        == 403
    )


def test_testing_services_list_their_instruments(client: TestClient, world: dict) -> None:
    created = client.post(
        "/api/v1/testing-services",
        json={
            "facility_id": world["facility"].id,
            "name": "SEM 形貌观察",
            "method_standard": "GB/T 16594-2008",
            "price_internal_fen": 20_000,
            "price_external_academic_fen": 30_000,
            "price_enterprise_fen": 45_000,
            "daily_sample_capacity": 12,
            "cma_accredited": True,
            "instrument_ids": [world["instrument"].id],
        },
        headers=world["manager"],
    )
    assert created.status_code == 201, created.text
    listed = client.get(
        "/api/v1/testing-services", params={"instrument_id": world["instrument"].id}
    ).json()
    assert listed["items"][0]["instrument_ids"] == [world["instrument"].id]
    assert (
        client.get("/api/v1/instruments", params={"has_testing_service": True}).json()["total"] == 1
    )


def test_a_one_character_search_is_422(client: TestClient) -> None:
    response = client.get("/api/v1/instruments", params={"q": "镜"})
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "q"


def test_categories_are_the_national_classification(client: TestClient) -> None:
    categories = client.get("/api/v1/categories").json()
    assert len(categories) == 15
    assert {
        "code": "analytical",
        "name_zh": "分析仪器",
        "name_en": "Analytical instruments",
    } in categories
