"""Logging in through the API: bearer tokens, throttling, logout and personal tokens."""

from datetime import timedelta

from fastapi.testclient import TestClient
from sqlmodel import Session, col, func, select

from core import clock
from core.accounts.rules import Role
from core.accounts.schemas import UserUpdate
from core.accounts.service import update_user
from core.auth.models import LoginFailure
from tests.factories import PASSWORD, api_login, bearer, make_user


def failures_for(session: Session, key: str) -> int:
    return session.exec(
        select(func.count()).select_from(LoginFailure).where(col(LoginFailure.key) == key)
    ).one()


def test_the_right_password_gives_a_bearer_token_that_works(
    client: TestClient, session: Session
) -> None:
    user = make_user(session, email="wang.xiaoyu@cqu.edu.cn")

    answer = api_login(client, "Wang.Xiaoyu@CQU.edu.cn", PASSWORD)

    assert answer.status_code == 200
    body = answer.json()
    assert set(body) == {"access_token", "token_type", "expires_in"}
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 3600
    me = client.get("/api/v1/me", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert me.status_code == 200
    assert me.json()["id"] == user.id
    assert me.json()["email"] == "wang.xiaoyu@cqu.edu.cn"


def test_a_wrong_password_and_an_unknown_address_get_the_same_answer(
    client: TestClient, session: Session
) -> None:
    make_user(session, email="li.na@cqupt.edu.cn")

    wrong_password = api_login(client, "li.na@cqupt.edu.cn", "not the password")
    unknown_address = api_login(client, "nobody@cqupt.edu.cn", PASSWORD)

    assert wrong_password.status_code == unknown_address.status_code == 401
    assert wrong_password.json()["detail"] == unknown_address.json()["detail"]
    assert wrong_password.json()["code"] == unknown_address.json()["code"]


def test_a_deactivated_user_cannot_log_in(client: TestClient, session: Session) -> None:
    user = make_user(session)
    make_user(session, roles=[Role.ADMIN])  # someone else keeps the platform running
    update_user(session, actor_id=None, user_id=user.id, data=UserUpdate(is_active=False))

    answer = api_login(client, user.email, PASSWORD)

    assert answer.status_code == 401
    assert answer.json()["detail"] == "Incorrect e-mail address or password."


def test_five_failures_lock_the_account_even_against_the_right_password(
    client: TestClient, session: Session
) -> None:
    user = make_user(session)
    for _ in range(5):
        assert api_login(client, user.email, "guessing wrong").status_code == 401

    sixth = api_login(client, user.email, PASSWORD)

    assert sixth.status_code == 429
    assert sixth.json()["code"] == "login_throttled"
    assert 0 < int(sixth.headers["Retry-After"]) <= 15 * 60
    # The counters live in the database, so every server process sees them.
    assert failures_for(session, f"account:{user.email}") == 5


def test_the_account_lock_ends_with_the_window(client: TestClient, session: Session) -> None:
    user = make_user(session)
    start = clock.now()
    with clock.frozen(start):
        for _ in range(5):
            api_login(client, user.email, "guessing wrong")
    with clock.frozen(start + timedelta(minutes=14)):
        assert api_login(client, user.email, PASSWORD).status_code == 429
    with clock.frozen(start + timedelta(minutes=15, seconds=1)):
        assert api_login(client, user.email, PASSWORD).status_code == 200


def test_twenty_failures_from_one_address_throttle_that_address(
    client: TestClient, session: Session
) -> None:
    user = make_user(session)
    for n in range(20):
        assert api_login(client, f"guess{n}@example.cn", "guessing wrong").status_code == 401

    answer = api_login(client, user.email, PASSWORD)

    assert answer.status_code == 429
    assert "Retry-After" in answer.headers
    assert failures_for(session, "address:testclient") == 20


def test_an_access_token_expires_after_an_hour(client: TestClient, session: Session) -> None:
    user = make_user(session)
    issued_at = clock.now()
    with clock.frozen(issued_at):
        token = api_login(client, user.email, PASSWORD).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}

    with clock.frozen(issued_at + timedelta(minutes=59)):
        assert client.get("/api/v1/me", headers=headers).status_code == 200
    with clock.frozen(issued_at + timedelta(hours=1, seconds=1)):
        expired = client.get("/api/v1/me", headers=headers)
    assert expired.status_code == 401
    assert expired.headers["WWW-Authenticate"] == "Bearer"


def test_logout_revokes_the_token_on_the_server(client: TestClient, session: Session) -> None:
    user = make_user(session)
    token = api_login(client, user.email, PASSWORD).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}

    assert client.post("/api/v1/auth/logout", headers=headers).status_code == 204

    assert client.get("/api/v1/me", headers=headers).status_code == 401


def test_a_personal_token_is_shown_once_listed_without_its_secret_and_revocable(
    client: TestClient, session: Session
) -> None:
    user = make_user(session)
    headers = bearer(session, user)

    created = client.post(
        "/api/v1/auth/personal-tokens",
        json={"name": "LIMS sync", "expires_at": "2030-01-01T00:00:00+08:00"},
        headers=headers,
    )

    assert created.status_code == 201
    secret = created.json()["token"]
    assert secret.startswith("lsp_")
    assert created.json()["expires_at"] == "2029-12-31T16:00:00Z"
    listed = client.get("/api/v1/auth/personal-tokens", headers=headers)
    assert [t["name"] for t in listed.json()] == ["LIMS sync"]
    assert secret not in listed.text
    assert "token" not in listed.json()[0]
    assert listed.json()[0]["prefix"] == secret[:10]

    as_integration = {"Authorization": f"Bearer {secret}"}
    assert client.get("/api/v1/me", headers=as_integration).json()["id"] == user.id

    token_id = created.json()["id"]
    revoked = client.delete(f"/api/v1/auth/personal-tokens/{token_id}", headers=headers)
    assert revoked.status_code == 204
    assert client.get("/api/v1/me", headers=as_integration).status_code == 401
    assert client.get("/api/v1/auth/personal-tokens", headers=headers).json()[0]["revoked_at"]


def test_another_users_personal_token_is_not_found_even_for_an_admin(
    client: TestClient, session: Session
) -> None:
    owner = make_user(session)
    admin = make_user(session, roles=[Role.ADMIN])
    owner_headers = bearer(session, owner)
    created = client.post(
        "/api/v1/auth/personal-tokens", json={"name": "instrument PC"}, headers=owner_headers
    ).json()

    answer = client.delete(
        f"/api/v1/auth/personal-tokens/{created['id']}", headers=bearer(session, admin)
    )

    assert answer.status_code == 404
    still_works = {"Authorization": f"Bearer {created['token']}"}
    assert client.get("/api/v1/me", headers=still_works).status_code == 200
