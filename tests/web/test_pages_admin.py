"""The admin pages: organisations, users and their roles, failed notifications, the audit log."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, col, func, select

from core import audit, events
from core.accounts.models import Organisation, RoleAssignment, User
from core.accounts.rules import OrganisationType, Role, ScopeKind
from core.accounts.schemas import RoleGrant
from core.auth.service import authenticate
from core.db import ConnectionBoundDatabase
from core.settings import Settings
from notifications.models import Channel, Delivery, DeliveryStatus
from tests.factories import csrf_from, login_page, make_organisation, make_user
from tests.instruments.factories import make_facility
from tests.querycount import counted_statements
from web.demo import make_credit_code

ADMIN_PAGES = [
    "/admin",
    "/admin/organisations",
    "/admin/organisations/new",
    "/admin/users",
    "/admin/users/new",
    "/admin/deliveries",
    "/admin/audit",
]


@pytest.fixture
def admin(client: TestClient, session: Session) -> User:
    user = make_user(session, roles=[Role.ADMIN], name="管理员甲")
    assert login_page(client, user.email).status_code == 303
    return user


def form_of(html: str, action: str) -> dict[str, str]:
    """The hidden fields of the form posting to ``action`` (CSRF token, form key)."""
    match = re.search(rf'<form[^>]*action="{re.escape(action)}"(.*?)</form>', html, re.S)
    assert match, f"no form posting to {action}"
    return dict(re.findall(r'type="hidden" name="([^"]+)" value="([^"]*)"', match.group(1)))


def submit(client: TestClient, page: str, action: str, data: dict[str, Any]) -> httpx.Response:
    """Fill in the form found on ``page`` and send it, as a browser would."""
    hidden = form_of(client.get(page).text, action)
    return client.post(action, data={**hidden, **data}, follow_redirects=False)


def count(session: Session, model: type, *where: Any) -> int:
    return int(session.exec(select(func.count()).select_from(model).where(*where)).one())


def enterprise_values(**overrides: str) -> dict[str, str]:
    values = {
        "name": "重庆测试科技有限公司",
        "type": "enterprise",
        "credit_code": make_credit_code("500106", "MA7TEL01"),
        "district": "沙坪坝区",
        "is_sme": "on",
    }
    values.update(overrides)
    return values


# ---- who may come in ----------------------------------------------------------------------


@pytest.mark.parametrize("path", ADMIN_PAGES)
def test_strangers_are_sent_to_the_login_page(client: TestClient, path: str) -> None:
    answer = client.get(path, follow_redirects=False)

    assert answer.status_code == 303
    assert answer.headers["location"].startswith("/login?next=")


def test_only_admins_may_open_the_admin_pages(client: TestClient, session: Session) -> None:
    manager = make_user(session, roles=[Role.RESEARCHER, Role.PLANNER])
    login_page(client, manager.email)

    for path in ADMIN_PAGES:
        assert client.get(path).status_code == 403, path
    csrf = csrf_from(client.get("/account").text)
    assert client.post("/admin/users", data={"csrf_token": csrf}).status_code == 403
    assert count(session, User) == 1


def test_the_overview_counts_and_links(client: TestClient, session: Session, admin: User) -> None:
    make_organisation(session)
    make_user(session)

    page = client.get("/admin")

    assert page.status_code == 200
    assert 'href="/admin/users/new"' in page.text
    assert "管理" in page.text
    assert f'<p class="figure">{count(session, Organisation)}</p>' in page.text


# ---- organisations --------------------------------------------------------------------------


def test_an_admin_registers_an_enterprise(
    client: TestClient, session: Session, admin: User
) -> None:
    answer = submit(client, "/admin/organisations/new", "/admin/organisations", enterprise_values())

    assert answer.status_code == 303
    organisation = session.exec(
        select(Organisation).where(Organisation.name == "重庆测试科技有限公司")
    ).one()
    assert organisation.type == OrganisationType.ENTERPRISE
    assert organisation.is_sme
    assert not organisation.is_tech_sme
    assert organisation.cluster == "western_science_city"  # from the district
    assert answer.headers["location"] == f"/admin/organisations/{organisation.id}?saved=1"
    entries, _total = audit.list_entries(session, action="organisation.created")
    assert [e.actor_id for e in entries] == [admin.id]


def test_an_invalid_credit_code_is_shown_next_to_its_field_with_the_values_kept(
    client: TestClient, session: Session, admin: User
) -> None:
    bad_code = make_credit_code("500106", "MA7TEL01")[:17] + "0"
    if make_credit_code("500106", "MA7TEL01").endswith("0"):
        bad_code = bad_code[:17] + "1"

    answer = submit(
        client,
        "/admin/organisations/new",
        "/admin/organisations",
        enterprise_values(credit_code=bad_code, controlling_group="测试集团"),
    )

    assert answer.status_code == 422
    error = re.search(r'id="f-credit_code-error">([^<]*)<', answer.text)
    assert error
    assert "校验" in error.group(1)
    assert f'value="{bad_code}"' in answer.text
    assert 'value="测试集团"' in answer.text
    assert 'value="重庆测试科技有限公司"' in answer.text
    assert count(session, Organisation, Organisation.name == "重庆测试科技有限公司") == 0


def test_a_double_submitted_registration_makes_one_organisation(
    client: TestClient, session: Session, admin: User
) -> None:
    hidden = form_of(client.get("/admin/organisations/new").text, "/admin/organisations")
    data = {**hidden, **enterprise_values()}

    first = client.post("/admin/organisations", data=data, follow_redirects=False)
    second = client.post("/admin/organisations", data=data, follow_redirects=False)

    assert first.status_code == second.status_code == 303
    assert first.headers["location"] == second.headers["location"]
    assert count(session, Organisation, Organisation.name == "重庆测试科技有限公司") == 1
    # Back, edited, sent again with the same form key: refused, not taken for the first.
    edited = client.post(
        "/admin/organisations", data={**data, "name": "另一家公司"}, follow_redirects=False
    )
    assert edited.status_code == 422
    assert count(session, Organisation, Organisation.name == "另一家公司") == 0


def test_a_form_without_its_csrf_token_is_refused(
    client: TestClient, session: Session, admin: User
) -> None:
    answer = client.post("/admin/organisations", data=enterprise_values(), follow_redirects=False)

    assert answer.status_code == 403
    assert count(session, Organisation, Organisation.name == "重庆测试科技有限公司") == 0


def test_an_admin_edits_an_organisation(client: TestClient, session: Session, admin: User) -> None:
    organisation = make_organisation(session, name="重庆某大学")
    path = f"/admin/organisations/{organisation.id}"

    answer = submit(
        client,
        path,
        path,
        {
            "name": "重庆某某大学",
            "district": "南岸区",
            "cluster": "",
            "controlling_group": "某集团",
        },
    )

    assert answer.status_code == 303
    session.refresh(organisation)
    assert (organisation.name, organisation.district) == ("重庆某某大学", "南岸区")
    assert organisation.cluster == "guangyang_bay"
    assert organisation.controlling_group == "某集团"
    assert client.get("/admin/organisations/999999").status_code == 404


def test_a_duplicate_organisation_name_is_shown_next_to_the_name(
    client: TestClient, session: Session, admin: User
) -> None:
    make_organisation(session, name="重庆甲大学")
    other = make_organisation(session, name="重庆乙大学")
    path = f"/admin/organisations/{other.id}"

    answer = submit(client, path, path, {"name": "重庆甲大学", "district": "沙坪坝区"})

    assert answer.status_code == 409
    assert re.search(r'id="f-name-error">已[^<]*登记', answer.text)
    session.refresh(other)
    assert other.name == "重庆乙大学"


def test_the_organisation_list_searches_and_pages(
    client: TestClient, session: Session, admin: User
) -> None:
    for n in range(55):
        make_organisation(session, name=f"翻页大学{n:02d}")
    make_organisation(session, name="别的学院")

    first = client.get("/admin/organisations", params={"q": "翻页"})
    second = client.get("/admin/organisations", params={"q": "翻页", "page": 2})

    assert first.text.count("翻页大学") == 50
    assert "别的学院" not in first.text
    assert "page=2" in first.text
    assert "q=%E7%BF%BB%E9%A1%B5" in first.text
    assert second.text.count("翻页大学") == 5
    assert client.get("/admin/organisations", params={"page": 0}).status_code == 422


# ---- users and roles -----------------------------------------------------------------------


def test_an_admin_creates_a_user_with_a_password(
    client: TestClient, session: Session, admin: User
) -> None:
    organisation = make_organisation(session)

    answer = submit(
        client,
        "/admin/users/new",
        "/admin/users",
        {
            "email": "New.Person@Example.cn",
            "name": "新用户",
            "organisation_id": str(organisation.id),
            "locale": "en",
            "role": "researcher",
            "password": "a long enough password",
        },
    )

    assert answer.status_code == 303
    user = session.exec(select(User).where(User.email == "new.person@example.cn")).one()
    assert (user.name, user.organisation_id, user.locale) == ("新用户", organisation.id, "en")
    roles = session.exec(select(RoleAssignment.role).where(RoleAssignment.user_id == user.id))
    assert list(roles) == [Role.RESEARCHER]
    assert authenticate(
        session,
        Settings(),
        email="new.person@example.cn",
        password="a long enough password",
        client_address="test",
    )
    page = client.get(answer.headers["location"])
    assert "新用户" in page.text
    assert "secret" not in page.text


def test_a_generated_password_is_shown_once(
    client: TestClient, session: Session, admin: User
) -> None:
    answer = submit(
        client, "/admin/users/new", "/admin/users", {"email": "gen@example.cn", "name": "生成"}
    )
    assert answer.status_code == 303

    first = client.get(answer.headers["location"])
    shown = re.search(r'<code class="secret">([^<]+)</code>', first.text)
    again = client.get(answer.headers["location"])

    assert shown
    assert first.headers["cache-control"] == "no-store"
    assert '<code class="secret">' not in again.text
    assert authenticate(
        session, Settings(), email="gen@example.cn", password=shown.group(1), client_address="t"
    )


def test_a_taken_email_is_shown_next_to_its_field_with_the_values_kept(
    client: TestClient, session: Session, admin: User
) -> None:
    make_user(session, email="taken@example.cn")

    answer = submit(
        client,
        "/admin/users/new",
        "/admin/users",
        {"email": "Taken@example.cn", "name": "重名者", "password": "a long enough password"},
    )

    assert answer.status_code == 409
    assert re.search(r'id="f-email-error">已[^<]*登记', answer.text)
    assert 'value="Taken@example.cn"' in answer.text
    assert 'value="重名者"' in answer.text
    assert "a long enough password" not in answer.text  # passwords are never sent back
    assert count(session, User, User.email == "taken@example.cn") == 1


def test_bad_user_input_is_shown_next_to_each_field(
    client: TestClient, session: Session, admin: User
) -> None:
    answer = submit(
        client,
        "/admin/users/new",
        "/admin/users",
        {"email": "not-an-address", "name": "", "password": "short"},
    )

    assert answer.status_code == 422
    assert 'id="f-email-error"' in answer.text
    assert 'id="f-name-error"' in answer.text


def test_a_double_submitted_user_form_makes_one_user(
    client: TestClient, session: Session, admin: User
) -> None:
    hidden = form_of(client.get("/admin/users/new").text, "/admin/users")
    data = {**hidden, "email": "twice@example.cn", "name": "两次", "password": "x" * 12}

    first = client.post("/admin/users", data=data, follow_redirects=False)
    second = client.post("/admin/users", data=data, follow_redirects=False)

    assert first.status_code == second.status_code == 303
    assert first.headers["location"] == second.headers["location"]
    assert count(session, User, User.email == "twice@example.cn") == 1


def test_an_admin_edits_and_deactivates_a_user(
    client: TestClient, session: Session, admin: User
) -> None:
    user = make_user(session, name="旧名")
    organisation = make_organisation(session)
    path = f"/admin/users/{user.id}"

    answer = submit(
        client,
        path,
        path,
        {"name": "新名", "locale": "en", "organisation_id": str(organisation.id)},
    )

    assert answer.status_code == 303
    session.refresh(user)
    assert (user.name, user.locale, user.organisation_id) == ("新名", "en", organisation.id)
    assert user.is_active is False  # the box was left unticked
    assert client.get("/admin/users/999999").status_code == 404


def test_the_last_admin_cannot_be_deactivated(
    client: TestClient, session: Session, admin: User
) -> None:
    path = f"/admin/users/{admin.id}"

    answer = submit(client, path, path, {"name": admin.name, "locale": "zh-CN"})

    assert answer.status_code == 409
    assert "至少" in answer.text
    session.refresh(admin)
    assert admin.is_active


def test_an_admin_grants_and_revokes_a_facility_role(
    client: TestClient, session: Session, admin: User
) -> None:
    user = make_user(session)
    facility = make_facility(session)
    path = f"/admin/users/{user.id}"

    granted = submit(
        client,
        path,
        f"{path}/roles",
        {"role": "lab_manager", "scope": f"facility:{facility.id}"},
    )

    assert granted.status_code == 303
    assignment = session.exec(select(RoleAssignment).where(RoleAssignment.user_id == user.id)).one()
    assert (assignment.role, assignment.scope_kind, assignment.scope_id) == (
        Role.LAB_MANAGER,
        ScopeKind.FACILITY,
        facility.id,
    )
    assert facility.name in client.get(path).text

    revoke = f"{path}/roles/{assignment.id}/revoke"
    assert submit(client, path, revoke, {}).status_code == 303
    assert count(session, RoleAssignment, RoleAssignment.user_id == user.id) == 0


def test_a_role_in_the_wrong_scope_is_refused_with_a_reason(
    client: TestClient, session: Session, admin: User
) -> None:
    user = make_user(session)
    path = f"/admin/users/{user.id}"

    answer = submit(client, path, f"{path}/roles", {"role": "lab_manager", "scope": "platform"})

    assert answer.status_code == 422
    assert re.search(r'id="f-role-error">[^<]+<', answer.text)
    assert count(session, RoleAssignment, RoleAssignment.user_id == user.id) == 0


def test_revoking_another_users_role_through_a_tampered_id_is_not_found(
    client: TestClient, session: Session, admin: User
) -> None:
    victim = make_user(session, roles=[Role.PLANNER])
    bystander = make_user(session)
    assignment = session.exec(
        select(RoleAssignment).where(RoleAssignment.user_id == victim.id)
    ).one()
    csrf = csrf_from(client.get(f"/admin/users/{bystander.id}").text)

    answer = client.post(
        f"/admin/users/{bystander.id}/roles/{assignment.id}/revoke",
        data={"csrf_token": csrf},
        follow_redirects=False,
    )

    assert answer.status_code == 404
    assert count(session, RoleAssignment, RoleAssignment.user_id == victim.id) == 1


def test_the_user_list_filters_by_name_organisation_and_role(
    client: TestClient, session: Session, admin: User
) -> None:
    organisation = make_organisation(session, name="筛选大学")
    make_user(session, name="张三", organisation=organisation, roles=[Role.RESEARCHER])
    make_user(session, name="李四", email="lisi@example.cn", roles=[Role.PLANNER])

    by_name = client.get("/admin/users", params={"q": "张"}).text
    by_email = client.get("/admin/users", params={"q": "LISI@"}).text
    by_org = client.get("/admin/users", params={"organisation_id": organisation.id}).text
    by_role = client.get("/admin/users", params={"role": "planner"}).text

    assert "张三" in by_name
    assert "李四" not in by_name
    assert "李四" in by_email
    assert "张三" not in by_email
    assert "张三" in by_org
    assert "筛选大学" in by_org
    assert "李四" not in by_org
    assert "李四" in by_role
    assert "张三" not in by_role


def test_the_user_list_sends_the_same_queries_for_2_and_20_users(
    client: TestClient, session: Session, database: ConnectionBoundDatabase, admin: User
) -> None:
    def statements_for_list() -> int:
        with counted_statements(database) as statements:
            assert client.get("/admin/users").status_code == 200
        return len(statements)

    organisation = make_organisation(session)
    make_user(session, organisation=organisation, roles=[Role.RESEARCHER])
    few = statements_for_list()
    for n in range(18):
        make_user(
            session,
            organisation=make_organisation(session),
            roles=[Role.RESEARCHER, RoleGrant(role=Role.FINANCE, scope_kind=ScopeKind.PLATFORM)]
            if n % 2
            else [Role.PLANNER],
        )
    many = statements_for_list()

    assert count(session, User) == 20
    assert few == many


# ---- failed notifications ----------------------------------------------------------------


def park_a_delivery(session: Session, recipient: str = "someone@example.cn") -> Delivery:
    event = events.emit(session, "booking.confirmed", {"booking_id": 1})
    assert event is not None
    assert event.id is not None
    delivery = Delivery(
        event_id=event.id,
        channel=Channel.EMAIL,
        recipient=recipient,
        status=DeliveryStatus.FAILED,
        attempts=8,
        last_error="550 mailbox unavailable",
    )
    session.add(delivery)
    session.flush()
    return delivery


def test_a_failed_delivery_is_shown_with_its_error_and_retried(
    client: TestClient, session: Session, admin: User
) -> None:
    delivery = park_a_delivery(session)

    page = client.get("/admin/deliveries")
    answer = submit(client, "/admin/deliveries", f"/admin/deliveries/{delivery.id}/retry", {})

    assert "550 mailbox unavailable" in page.text
    assert "someone@example.cn" in page.text
    assert answer.status_code == 303
    session.refresh(delivery)
    assert (delivery.status, delivery.attempts) == (DeliveryStatus.PENDING, 0)
    assert "550 mailbox unavailable" not in client.get("/admin/deliveries").text
    # Retrying it again is a conflict, not a crash.
    again = client.post(
        f"/admin/deliveries/{delivery.id}/retry",
        data={"csrf_token": csrf_from(page.text)},
        follow_redirects=False,
    )
    assert again.status_code == 409


def test_all_failed_deliveries_are_retried_at_once(
    client: TestClient, session: Session, admin: User
) -> None:
    parked = [park_a_delivery(session, f"r{n}@example.cn") for n in range(3)]

    answer = submit(client, "/admin/deliveries", "/admin/deliveries/retry-all", {})

    assert answer.status_code == 303
    ids = [d.id for d in parked]
    assert count(session, Delivery, col(Delivery.id).in_(ids), Delivery.status == "pending") == 3
    assert client.post("/admin/deliveries/retry-all", data={}).status_code == 403


# ---- audit log ---------------------------------------------------------------------------


def test_the_audit_log_filters_by_entity_and_actor(
    client: TestClient, session: Session, admin: User
) -> None:
    organisation = make_organisation(session, name="审计大学")
    path = f"/admin/organisations/{organisation.id}"
    submit(client, path, path, {"name": "审计大学二", "district": "沙坪坝区"})

    by_entity = client.get(
        "/admin/audit", params={"subject_type": "organisation", "subject_id": organisation.id}
    )
    by_actor = client.get("/admin/audit", params={"actor": admin.email})
    unknown_actor = client.get("/admin/audit", params={"actor": "nobody@example.cn"})

    assert by_entity.status_code == 200
    assert "organisation.created" in by_entity.text
    assert "organisation.updated" in by_entity.text
    assert "organisation.updated" in by_actor.text
    assert "organisation.created" not in by_actor.text  # created by the factory, not the admin
    assert unknown_actor.status_code == 422
    assert 'id="f-actor-error"' in unknown_actor.text


# ---- ids no database holds ----------------------------------------------------------------

BAD_IDS = [str(2**40), "²"]


@pytest.mark.parametrize("bad", BAD_IDS)
@pytest.mark.parametrize(
    ("method", "path", "data"),
    [
        ("get", "/admin/users/{bad}", {}),
        ("get", "/admin/organisations/{bad}", {}),
        ("get", "/admin/users?organisation_id={bad}", {}),
        ("get", "/admin/audit?actor={bad}", {}),
        ("post", "/admin/users/{bad}", {"name": "某人", "locale": "zh-CN"}),
        ("post", "/admin/organisations/{bad}", {"name": "某单位"}),
        ("post", "/admin/users/{user}/roles", {"role": "lab_manager", "scope": "facility:{bad}"}),
        ("post", "/admin/users/{user}/roles", {"role": "finance", "scope": "organisation:{bad}"}),
        ("post", "/admin/users/{user}/roles/{bad}/revoke", {}),
        ("post", "/admin/users", {"email": "n@ex.cn", "name": "N", "organisation_id": "{bad}"}),
        ("post", "/admin/users/{user}", {"name": "M", "locale": "en", "organisation_id": "{bad}"}),
        ("post", "/admin/deliveries/{bad}/retry", {}),
    ],
)  # fmt: skip
def test_an_id_no_database_holds_is_refused_not_a_crash(
    client: TestClient,
    session: Session,
    admin: User,
    method: str,
    path: str,
    data: dict[str, str],
    bad: str,
) -> None:
    user = make_user(session)
    url = path.format(bad=bad, user=user.id)
    token = csrf_from(client.get("/admin/users/new").text)

    if method == "get":
        answer = client.get(url, follow_redirects=False)
    else:
        posted = {k: v.format(bad=bad) for k, v in data.items()}
        answer = client.post(url, data={"csrf_token": token, **posted}, follow_redirects=False)

    assert answer.status_code < 500
    if method == "post":
        assert answer.status_code in (404, 422)


def test_a_refused_role_keeps_the_chosen_role_and_scope(
    client: TestClient, session: Session, admin: User
) -> None:
    user = make_user(session)
    facility = make_facility(session)
    path = f"/admin/users/{user.id}"

    answer = submit(
        client, path, f"{path}/roles", {"role": "planner", "scope": f"facility:{facility.id}"}
    )

    assert answer.status_code == 422
    assert '<option value="planner" selected>' in answer.text
    assert f'<option value="facility:{facility.id}" selected>' in answer.text


def test_failed_deliveries_name_their_event_and_channel_in_words(
    client: TestClient, session: Session, admin: User
) -> None:
    park_a_delivery(session, "first@example.cn")
    park_a_delivery(session, "second@example.cn")

    page = client.get("/admin/deliveries").text

    assert "booking.confirmed" not in page
    assert ">email<" not in page
    names = re.findall(r"<button type=\"submit\">(.*?)</button>", page, re.S)
    retry_names = [re.sub(r"<[^>]+>", "", n) for n in names if "visually-hidden" in n]
    assert len(retry_names) == 2
    assert len(set(retry_names)) == 2
