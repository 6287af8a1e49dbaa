"""Organisations, users, roles and the audit log through the API: who may do what, bad input."""

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, SQLModel, func, select

from core.accounts.models import Organisation, RoleAssignment, User
from core.accounts.rules import OrganisationType, Role, ScopeKind
from core.accounts.schemas import RoleGrant
from core.auth.models import ApiToken
from tests.factories import bearer, make_organisation, make_user
from tests.instruments.factories import make_facility
from tests.servers import REPO_ROOT
from web.demo import make_credit_code

ENTERPRISE = {
    "name": "重庆明月湖智能装备有限公司",
    "type": "enterprise",
    "district": "两江新区",
    "credit_code": make_credit_code("500112", "MA5U7K3D"),
    "is_sme": True,
    "is_tech_sme": True,
}


def count(session: Session, model: type[SQLModel]) -> int:
    return session.exec(select(func.count()).select_from(model)).one()


def assert_error_body(answer: Any, status: int, code: str) -> dict[str, Any]:
    """Every error answers the same shape, tied to the request id of its response."""
    assert answer.status_code == status, answer.text
    body: dict[str, Any] = answer.json()
    assert set(body) == {"detail", "code", "errors", "request_id"}
    assert body["code"] == code
    assert body["detail"]
    assert body["request_id"] == answer.headers["X-Request-ID"]
    return body


def fields_of(body: dict[str, Any]) -> set[str]:
    return {e.get("field") for e in body["errors"]}


@pytest.fixture
def admin(session: Session) -> User:
    return make_user(session, roles=[Role.ADMIN], password=None)


def test_an_admin_registers_an_organisation_and_a_user_with_roles(
    client: TestClient, session: Session, admin: User
) -> None:
    headers = bearer(session, admin)

    organisation = client.post("/api/v1/organisations", json=ENTERPRISE, headers=headers)

    assert organisation.status_code == 201, organisation.text
    assert organisation.json()["cluster"] == "liangjiang"
    org_id = organisation.json()["id"]
    user = client.post(
        "/api/v1/users",
        json={
            "email": "chen.siyuan@mingyuehu.cn",
            "name": "陈思远",
            "organisation_id": org_id,
            "password": "a long enough password",
            "roles": [
                {"role": "researcher"},
                {"role": "finance", "scope_kind": "organisation", "scope_id": org_id},
            ],
        },
        headers=headers,
    )
    assert user.status_code == 201, user.text
    assert user.json()["organisation_id"] == org_id
    assert {(r["role"], r["scope_kind"], r["scope_id"]) for r in user.json()["roles"]} == {
        ("researcher", "platform", None),
        ("finance", "organisation", org_id),
    }
    assert "password" not in user.text


def test_users_are_listed_page_by_page(client: TestClient, session: Session, admin: User) -> None:
    for _ in range(4):
        make_user(session, password=None)
    headers = bearer(session, admin)

    first = client.get("/api/v1/users", params={"page": 1, "page_size": 2}, headers=headers)
    third = client.get("/api/v1/users", params={"page": 3, "page_size": 2}, headers=headers)

    assert first.status_code == 200
    assert first.json()["total"] == 5
    assert [u["id"] for u in first.json()["items"]] == [admin.id, admin.id + 1]
    assert len(third.json()["items"]) == 1
    assert first.json()["items"][0]["roles"][0]["role"] == "admin"
    too_big = client.get("/api/v1/users", params={"page_size": 501}, headers=headers)
    assert_error_body(too_big, 422, "validation_failed")
    assert fields_of(too_big.json()) == {"query.page_size"}


# Each role tries something it may not do and is refused.


def test_a_researcher_may_not_register_organisations(client: TestClient, session: Session) -> None:
    researcher = make_user(session, roles=[Role.RESEARCHER], password=None)
    before = count(session, Organisation)

    answer = client.post(
        "/api/v1/organisations", json=ENTERPRISE, headers=bearer(session, researcher)
    )

    assert_error_body(answer, 403, "forbidden")
    assert count(session, Organisation) == before


def test_a_lab_manager_may_not_create_users(client: TestClient, session: Session) -> None:
    facility = make_facility(session)
    manager = make_user(
        session,
        roles=[
            RoleGrant(role=Role.LAB_MANAGER, scope_kind=ScopeKind.FACILITY, scope_id=facility.id)
        ],
        password=None,
    )
    before = count(session, User)

    answer = client.post(
        "/api/v1/users",
        json={"email": "new@example.cn", "name": "新用户"},
        headers=bearer(session, manager),
    )

    assert_error_body(answer, 403, "forbidden")
    assert count(session, User) == before


def test_finance_may_not_read_the_audit_log(client: TestClient, session: Session) -> None:
    finance = make_user(session, roles=[Role.FINANCE], password=None)

    answer = client.get("/api/v1/audit", headers=bearer(session, finance))

    assert_error_body(answer, 403, "forbidden")


def test_a_planner_may_not_change_organisations(client: TestClient, session: Session) -> None:
    planner = make_user(session, roles=[Role.PLANNER], password=None)
    organisation = make_organisation(session, name="西南大学", district="北碚区")

    answer = client.patch(
        f"/api/v1/organisations/{organisation.id}",
        json={"name": "改名大学"},
        headers=bearer(session, planner),
    )

    assert_error_body(answer, 403, "forbidden")
    session.refresh(organisation)
    assert organisation.name == "西南大学"


def test_an_admin_may_not_revoke_another_users_personal_token(
    client: TestClient, session: Session, admin: User
) -> None:
    owner = make_user(session, password=None)
    token_id = client.post(
        "/api/v1/auth/personal-tokens", json={"name": "ELN"}, headers=bearer(session, owner)
    ).json()["id"]

    answer = client.delete(
        f"/api/v1/auth/personal-tokens/{token_id}", headers=bearer(session, admin)
    )

    assert_error_body(answer, 404, "not_found")
    assert session.get(ApiToken, token_id).revoked_at is None


def test_the_last_admin_keeps_the_admin_role(
    client: TestClient, session: Session, admin: User
) -> None:
    assignment = session.exec(
        select(RoleAssignment).where(RoleAssignment.user_id == admin.id)
    ).one()

    answer = client.delete(
        f"/api/v1/users/{admin.id}/roles/{assignment.id}", headers=bearer(session, admin)
    )

    assert_error_body(answer, 409, "last_admin")
    assert count(session, RoleAssignment) == 1


def test_a_researcher_sees_only_their_own_user(client: TestClient, session: Session) -> None:
    researcher = make_user(session, roles=[Role.RESEARCHER], password=None)
    other = make_user(session, password=None)
    headers = bearer(session, researcher)

    assert_error_body(client.get(f"/api/v1/users/{other.id}", headers=headers), 404, "not_found")
    own = client.get(f"/api/v1/users/{researcher.id}", headers=headers)
    assert own.status_code == 200
    assert own.json()["email"] == researcher.email


def test_without_a_token_the_api_asks_for_one(client: TestClient) -> None:
    answer = client.get("/api/v1/users")

    assert_error_body(answer, 401, "not_authenticated")
    assert answer.headers["WWW-Authenticate"] == "Bearer"


def test_a_bad_token_is_refused_like_no_token(client: TestClient) -> None:
    answer = client.get("/api/v1/me", headers={"Authorization": "Bearer lsa_forged"})

    assert_error_body(answer, 401, "invalid_token")
    assert answer.headers["WWW-Authenticate"] == "Bearer"


# Bad input: a clear answer and no half-written row.


def test_malformed_json_is_refused(client: TestClient, session: Session, admin: User) -> None:
    before = count(session, Organisation)

    answer = client.post(
        "/api/v1/organisations",
        content='{"name": "重庆大学", "type": '.encode(),
        headers={**bearer(session, admin), "Content-Type": "application/json"},
    )

    body = assert_error_body(answer, 422, "validation_failed")
    assert [e["code"] for e in body["errors"]] == ["malformed_json"]
    assert count(session, Organisation) == before


def test_a_value_of_the_wrong_type_names_its_field(
    client: TestClient, session: Session, admin: User
) -> None:
    before = count(session, Organisation)

    answer = client.post(
        "/api/v1/organisations",
        json={**ENTERPRISE, "is_sme": "perhaps"},
        headers=bearer(session, admin),
    )

    body = assert_error_body(answer, 422, "validation_failed")
    assert fields_of(body) == {"is_sme"}
    assert "is_sme" in body["detail"]
    assert count(session, Organisation) == before


def test_an_unknown_field_is_refused_by_name(
    client: TestClient, session: Session, admin: User
) -> None:
    before = count(session, User)

    answer = client.post(
        "/api/v1/users",
        json={"email": "x@example.cn", "name": "某人", "is_admin": True},
        headers=bearer(session, admin),
    )

    body = assert_error_body(answer, 422, "validation_failed")
    assert fields_of(body) == {"is_admin"}
    assert body["errors"][0]["message"] == "Unknown field."
    assert count(session, User) == before


def test_a_time_without_an_offset_is_refused(
    client: TestClient, session: Session, admin: User
) -> None:
    headers = bearer(session, admin)
    before = count(session, ApiToken)

    answer = client.post(
        "/api/v1/auth/personal-tokens",
        json={"name": "LIMS", "expires_at": "2030-01-01T00:00:00"},
        headers=headers,
    )

    body = assert_error_body(answer, 422, "validation_failed")
    assert fields_of(body) == {"expires_at"}
    assert "offset" in body["errors"][0]["message"]
    assert count(session, ApiToken) == before


def test_a_body_over_one_megabyte_is_refused(
    client: TestClient, session: Session, admin: User
) -> None:
    before = count(session, Organisation)
    huge = json.dumps({**ENTERPRISE, "name_en": "x" * (1024 * 1024)})

    answer = client.post(
        "/api/v1/organisations",
        content=huge.encode(),
        headers={**bearer(session, admin), "Content-Type": "application/json"},
    )

    assert_error_body(answer, 413, "body_too_large")
    assert count(session, Organisation) == before


def test_an_email_address_taken_in_another_case_is_a_conflict(
    client: TestClient, session: Session, admin: User
) -> None:
    make_user(session, email="wang.xiaoyu@cqu.edu.cn", password=None)
    before = count(session, User)

    answer = client.post(
        "/api/v1/users",
        json={"email": "Wang.Xiaoyu@CQU.edu.cn", "name": "王晓雨"},
        headers=bearer(session, admin),
    )

    body = assert_error_body(answer, 409, "duplicate_email")
    assert fields_of(body) == {"email"}
    assert count(session, User) == before


def test_an_invalid_credit_code_is_refused(
    client: TestClient, session: Session, admin: User
) -> None:
    before = count(session, Organisation)

    answer = client.post(
        "/api/v1/organisations",
        json={**ENTERPRISE, "credit_code": "91350100M000100Y44"},
        headers=bearer(session, admin),
    )

    body = assert_error_body(answer, 422, "validation_failed")
    assert fields_of(body) == {"credit_code"}
    assert body["errors"][0]["code"] == "invalid_credit_code"
    assert count(session, Organisation) == before


def test_every_problem_with_a_user_is_listed_at_once(
    client: TestClient, session: Session, admin: User
) -> None:
    before = (count(session, User), count(session, RoleAssignment))

    answer = client.post(
        "/api/v1/users",
        json={
            "email": "zhang.wei@swu.edu.cn",
            "name": "张伟",
            "locale": "fr",
            "password": "short",
            "organisation_id": 999999,
            "roles": [{"role": "planner", "scope_kind": "organisation", "scope_id": 1}],
        },
        headers=bearer(session, admin),
    )

    body = assert_error_body(answer, 422, "validation_failed")
    assert fields_of(body) == {"locale", "password", "organisation_id", "roles.0"}
    assert (count(session, User), count(session, RoleAssignment)) == before


def test_the_audit_log_lists_changes_with_filters(
    client: TestClient, session: Session, admin: User
) -> None:
    headers = bearer(session, admin)
    registered = client.post("/api/v1/organisations", json=ENTERPRISE, headers=headers)
    client.post(
        "/api/v1/users", json={"email": "a@example.cn", "name": "甲"}, headers=headers
    ).raise_for_status()
    make_user(session, password=None)  # created by the system, not by the admin

    by_admin = client.get("/api/v1/audit", params={"actor_id": admin.id}, headers=headers).json()
    users = client.get("/api/v1/audit", params={"action": "user."}, headers=headers).json()

    assert [e["action"] for e in by_admin["items"]] == ["user.created", "organisation.created"]
    assert by_admin["total"] == 2
    assert by_admin["items"][1]["subject_id"] == str(registered.json()["id"])
    # An entry leads to the request's log lines.
    assert by_admin["items"][1]["request_id"] == registered.headers["X-Request-ID"]
    # The admin itself and the two users created afterwards.
    assert users["total"] == 3
    assert {e["action"] for e in users["items"]} == {"user.created"}


def test_a_sane_request_id_from_the_caller_is_kept(client: TestClient) -> None:
    kept = client.get("/api/v1/me", headers={"X-Request-ID": "lims-sync-000123"})
    replaced = client.get("/api/v1/me", headers={"X-Request-ID": "<script> is not an id"})

    assert kept.headers["X-Request-ID"] == "lims-sync-000123"
    assert kept.json()["request_id"] == "lims-sync-000123"
    assert replaced.headers["X-Request-ID"] != "<script> is not an id"
    assert replaced.json()["request_id"] == replaced.headers["X-Request-ID"]


def test_every_request_gets_an_id_no_other_request_or_server_process_has(
    client: TestClient,
) -> None:
    given = [client.get("/healthz").headers["X-Request-ID"] for _ in range(3)]
    first_of_two_processes = [
        subprocess.run(
            [sys.executable, "-c", "from web.middleware import new_request_id as n; print(n())"],
            capture_output=True,
            text=True,
            check=True,
            cwd=REPO_ROOT,
        ).stdout.strip()
        for _ in range(2)
    ]

    ids = given + first_of_two_processes
    assert len(set(ids)) == 5
    assert all(re.fullmatch(r"[0-9a-f]{32}", request_id) for request_id in ids), ids


def test_an_unknown_api_path_answers_in_the_error_shape(client: TestClient) -> None:
    assert_error_body(client.get("/api/v1/nowhere"), 404, "not_found")
    assert_error_body(client.put("/api/v1/me"), 405, "method_not_allowed")


def test_organisation_types_are_listed_and_filtered(
    client: TestClient, session: Session, admin: User
) -> None:
    make_organisation(session, name="重庆大学")
    make_organisation(session, type=OrganisationType.ENTERPRISE, name="重庆迎龙新材料股份有限公司")

    answer = client.get(
        "/api/v1/organisations", params={"type": "enterprise"}, headers=bearer(session, admin)
    )

    assert answer.json()["total"] == 1
    assert answer.json()["items"][0]["name"] == "重庆迎龙新材料股份有限公司"


def test_a_streamed_body_over_one_megabyte_is_refused(
    client: TestClient, session: Session, admin: User
) -> None:
    before = count(session, Organisation)
    huge = json.dumps({**ENTERPRISE, "name_en": "x" * (1024 * 1024)}).encode()

    def chunks() -> Iterator[bytes]:
        # No Content-Length: the limit must hold while the body streams in.
        for start in range(0, len(huge), 64 * 1024):
            yield huge[start : start + 64 * 1024]

    answer = client.post(
        "/api/v1/organisations",
        content=chunks(),
        headers={**bearer(session, admin), "Content-Type": "application/json"},
    )

    assert_error_body(answer, 413, "body_too_large")
    assert count(session, Organisation) == before


@pytest.mark.parametrize("field", ["name", "district", "is_sme"])
def test_a_required_organisation_field_cannot_be_set_to_null(
    client: TestClient, session: Session, admin: User, field: str
) -> None:
    organisation = make_organisation(session, name="重庆师范大学")

    answer = client.patch(
        f"/api/v1/organisations/{organisation.id}",
        json={field: None},
        headers=bearer(session, admin),
    )

    body = assert_error_body(answer, 422, "validation_failed")
    assert fields_of(body) == {field}
    session.refresh(organisation)
    assert organisation.name == "重庆师范大学"


@pytest.mark.parametrize("field", ["name", "locale", "is_active"])
def test_a_required_user_field_cannot_be_set_to_null(
    client: TestClient, session: Session, admin: User, field: str
) -> None:
    user = make_user(session, name="李娜", password=None)

    answer = client.patch(
        f"/api/v1/users/{user.id}", json={field: None}, headers=bearer(session, admin)
    )

    body = assert_error_body(answer, 422, "validation_failed")
    assert fields_of(body) == {field}
    session.refresh(user)
    assert (user.name, user.locale, user.is_active) == ("李娜", "zh-CN", True)


def test_an_admin_changes_a_user_and_may_clear_optional_fields(
    client: TestClient, session: Session, admin: User
) -> None:
    organisation = make_organisation(session)
    user = make_user(session, organisation=organisation, password=None)

    answer = client.patch(
        f"/api/v1/users/{user.id}",
        json={"organisation_id": None, "locale": "en"},
        headers=bearer(session, admin),
    )

    assert answer.status_code == 200, answer.text
    assert (answer.json()["organisation_id"], answer.json()["locale"]) == (None, "en")
