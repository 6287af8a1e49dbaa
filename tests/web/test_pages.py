"""The pages as a browser uses them: login with CSRF, sessions and their timeouts, language."""

from collections.abc import Iterator
from datetime import timedelta

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlmodel import Session

from core import clock
from core.accounts.models import User
from core.auth.service import authenticate
from core.db import Database
from core.settings import Settings
from tests.factories import PASSWORD, csrf_from, login_page, make_user
from web.app import create_app
from web.csrf import ANON_COOKIE
from web.deps import SESSION_COOKIE


@pytest.fixture
def other_browser(app: FastAPI) -> Iterator[TestClient]:
    """A second browser with its own cookies, on the same server."""
    with TestClient(app, base_url="https://testserver") as browser:
        yield browser


def set_cookie_header(answer: httpx.Response, name: str) -> str:
    headers = answer.headers.get_list("set-cookie")
    matching = [h for h in headers if h.startswith(f"{name}=")]
    assert len(matching) == 1, headers
    return str(matching[0])


def use_session_cookie(client: TestClient, value: str) -> None:
    """Make ``client`` send exactly this session cookie, as an attacker replaying it would."""
    client.cookies.delete(SESSION_COOKIE)
    # The domain the test client files the server's cookies under, so a new one replaces it.
    client.cookies.set(SESSION_COOKIE, value, domain="testserver.local")


def post_form(
    client: TestClient, path: str, data: dict[str, str], page: str = "/"
) -> httpx.Response:
    """Submit a form found on ``page`` with that page's CSRF token."""
    token = csrf_from(client.get(page).text)
    return client.post(path, data={**data, "csrf_token": token}, follow_redirects=False)


def test_the_login_page_sets_an_anonymous_cookie_and_a_csrf_token(client: TestClient) -> None:
    page = client.get("/login")

    assert page.status_code == 200
    assert ANON_COOKIE in client.cookies
    assert len(csrf_from(page.text)) >= 32


def test_logging_in_without_the_csrf_token_is_refused(client: TestClient, session: Session) -> None:
    user = make_user(session)
    client.get("/login")

    answer = client.post(
        "/login", data={"email": user.email, "password": PASSWORD}, follow_redirects=False
    )

    assert answer.status_code == 403
    assert SESSION_COOKIE not in client.cookies


def test_logging_in_with_a_forged_csrf_token_is_refused(
    client: TestClient, session: Session
) -> None:
    user = make_user(session)
    client.get("/login")

    answer = client.post(
        "/login",
        data={"email": user.email, "password": PASSWORD, "csrf_token": "0" * 64},
        follow_redirects=False,
    )

    assert answer.status_code == 403
    assert SESSION_COOKIE not in client.cookies


def test_logging_in_sets_a_secure_session_cookie_and_shows_the_users_name(
    client: TestClient, session: Session
) -> None:
    user = make_user(session, name="王晓雨")

    answer = login_page(client, user.email)

    assert answer.status_code == 303
    assert answer.headers["location"] == "/"
    cookie = set_cookie_header(answer, SESSION_COOKIE).lower()
    assert "; secure" in cookie
    assert "; httponly" in cookie
    assert "; samesite=lax" in cookie
    assert "王晓雨" in client.get("/").text


def test_logging_in_again_replaces_the_session_id(client: TestClient, session: Session) -> None:
    user = make_user(session, name="王晓雨")
    login_page(client, user.email)
    before = client.cookies[SESSION_COOKIE]

    answer = post_form(
        client, "/login", {"email": user.email, "password": PASSWORD, "next": "/"}, page="/"
    )

    assert answer.status_code == 303
    after = client.cookies[SESSION_COOKIE]
    assert after != before
    # The id from before the login is dead, not merely replaced in this browser.
    use_session_cookie(client, before)
    assert "王晓雨" not in client.get("/").text


def test_a_planted_session_id_is_not_kept_at_login(client: TestClient, session: Session) -> None:
    user = make_user(session)
    use_session_cookie(client, "planted-by-an-attacker")

    login_page(client, user.email)

    assert client.cookies[SESSION_COOKIE] != "planted-by-an-attacker"


def test_logging_out_ends_the_session_on_the_server(
    client: TestClient, other_browser: TestClient, session: Session
) -> None:
    user = make_user(session, name="王晓雨")
    login_page(client, user.email)
    old_cookie = client.cookies[SESSION_COOKIE]
    use_session_cookie(other_browser, old_cookie)
    assert "王晓雨" in other_browser.get("/").text  # the cookie alone is the login

    answer = post_form(client, "/logout", {}, page="/")

    assert answer.status_code == 303
    assert "王晓雨" not in other_browser.get("/").text
    use_session_cookie(client, old_cookie)
    account = client.get("/account", follow_redirects=False)
    assert account.status_code == 303
    assert account.headers["location"] == "/login?next=/account"


def test_a_session_idles_out_after_two_hours(client: TestClient, session: Session) -> None:
    user = make_user(session, name="王晓雨")
    start = clock.now()
    with clock.frozen(start):
        login_page(client, user.email)
    with clock.frozen(start + timedelta(hours=1, minutes=59)):
        assert client.get("/account", follow_redirects=False).status_code == 200
    # Activity moved the idle deadline on.
    with clock.frozen(start + timedelta(hours=3, minutes=58)):
        assert client.get("/account", follow_redirects=False).status_code == 200
    with clock.frozen(start + timedelta(hours=5, minutes=59)):
        assert client.get("/account", follow_redirects=False).status_code == 303


def test_a_session_ends_after_twelve_hours_however_active(
    client: TestClient, session: Session
) -> None:
    user = make_user(session)
    start = clock.now()
    with clock.frozen(start):
        login_page(client, user.email)
    for hours in range(1, 12):
        with clock.frozen(start + timedelta(hours=hours)):
            assert client.get("/account", follow_redirects=False).status_code == 200
    with clock.frozen(start + timedelta(hours=12, seconds=1)):
        answer = client.get("/account", follow_redirects=False)
    assert answer.status_code == 303
    assert answer.headers["location"].startswith("/login")


def test_a_wrong_password_keeps_the_email_in_the_form(client: TestClient, session: Session) -> None:
    user = make_user(session, email="li.na@cqupt.edu.cn")

    answer = login_page(client, user.email, "not the password")

    assert answer.status_code == 401
    assert 'value="li.na@cqupt.edu.cn"' in answer.text
    assert "邮箱或密码不正确。" in answer.text
    assert SESSION_COOKIE not in client.cookies


def test_a_failed_login_is_explained_in_the_chosen_language(
    client: TestClient, session: Session
) -> None:
    user = make_user(session)
    post_form(client, "/lang", {"lang": "en", "next": "/login"}, page="/login")

    answer = login_page(client, user.email, "not the password")

    assert answer.status_code == 401
    assert "Incorrect e-mail address or password." in answer.text
    assert "邮箱或密码不正确" not in answer.text


def test_an_unknown_language_is_refused_in_the_current_language(client: TestClient) -> None:
    post_form(client, "/lang", {"lang": "en", "next": "/"})

    answer = post_form(client, "/lang", {"lang": "fr", "next": "/"})

    assert answer.status_code == 422
    assert "Unknown language." in answer.text


@pytest.mark.parametrize(
    "path", ["/", "/login", "/account", "/nowhere", "/healthz", "/api/v1/me", "/docs"]
)
def test_every_response_carries_the_security_headers(client: TestClient, path: str) -> None:
    answer = client.get(path, follow_redirects=False)

    policy = answer.headers["Content-Security-Policy"]
    assert "'unsafe-inline'" not in policy
    assert "frame-ancestors 'none'" in policy
    assert "script-src 'self'" in policy
    assert answer.headers["X-Content-Type-Options"] == "nosniff"
    assert answer.headers["Referrer-Policy"] == "same-origin"


@pytest.mark.parametrize("path", ["/api/v1/bug", "/bug"])
def test_even_an_unexpected_error_carries_the_security_headers_and_its_request_id(
    app: FastAPI, path: str
) -> None:
    def bug() -> None:
        raise RuntimeError("a bug")

    app.add_api_route(path, bug)
    with TestClient(app, base_url="https://testserver", raise_server_exceptions=False) as browser:
        answer = browser.get(path)

    assert answer.status_code == 500
    assert "'unsafe-inline'" not in answer.headers["Content-Security-Policy"]
    assert answer.headers["X-Content-Type-Options"] == "nosniff"
    assert answer.headers.get_list("X-Request-ID") == [answer.headers["X-Request-ID"]]
    if path.startswith("/api/"):
        assert answer.json()["request_id"] == answer.headers["X-Request-ID"]


def test_pages_are_in_chinese_until_english_is_chosen(client: TestClient) -> None:
    assert "登录" in client.get("/login").text

    answer = post_form(client, "/lang", {"lang": "en", "next": "/login"}, page="/login")

    assert answer.status_code == 303
    assert answer.headers["location"] == "/login"
    page = client.get("/login").text
    assert "Log in" in page
    assert "登录" not in page
    assert '<html lang="en">' in page


def test_a_logged_in_user_keeps_the_chosen_language(
    client: TestClient, other_browser: TestClient, session: Session
) -> None:
    user = make_user(session)
    login_page(client, user.email)

    post_form(client, "/lang", {"lang": "en", "next": "/"})

    session.refresh(user)
    assert user.locale == "en"
    # A new browser without the language cookie shows English once the user logs in.
    login_page(other_browser, user.email)
    assert "Log out" in other_browser.get("/").text


def change_password(client: TestClient, current: str, new: str) -> httpx.Response:
    return post_form(
        client,
        "/account/password",
        {"current_password": current, "new_password": new},
        page="/account",
    )


def test_changing_the_password_needs_the_current_one(client: TestClient, session: Session) -> None:
    user = make_user(session)
    login_page(client, user.email)

    answer = change_password(client, "not the password", "a brand new password")

    assert answer.status_code == 422
    assert 'id="current_password-error">当前密码不正确。' in answer.text
    assert 'id="new_password-error"' not in answer.text
    settings = Settings()
    assert authenticate(
        session, settings, email=user.email, password=PASSWORD, client_address="test"
    )


def test_changing_the_password_logs_out_the_other_sessions(
    client: TestClient, other_browser: TestClient, session: Session
) -> None:
    user = make_user(session, name="王晓雨")
    login_page(client, user.email)
    login_page(other_browser, user.email)

    answer = change_password(client, PASSWORD, "a brand new password")

    assert answer.status_code == 303
    assert answer.headers["location"] == "/account?changed=1"
    assert client.get("/account", follow_redirects=False).status_code == 200
    assert other_browser.get("/account", follow_redirects=False).status_code == 303
    session.expire_all()
    assert authenticate(
        session,
        Settings(),
        email=user.email,
        password="a brand new password",
        client_address="test",
    ) == session.get(User, user.id)


@pytest.mark.parametrize(
    ("next_url", "target"),
    [
        ("/account", "/account"),
        ("//evil.example", "/"),
        ("https://evil.example/", "/"),
        ("/\\evil.example", "/"),
    ],
)
def test_after_login_only_same_site_paths_are_followed(
    client: TestClient, session: Session, next_url: str, target: str
) -> None:
    user = make_user(session)

    answer = post_form(
        client, "/login", {"email": user.email, "password": PASSWORD, "next": next_url}, "/login"
    )

    assert answer.status_code == 303
    assert answer.headers["location"] == target


def test_the_login_form_carries_a_safe_next(client: TestClient) -> None:
    page = client.get("/login", params={"next": "//evil.example"})

    assert 'name="next" value="/"' in page.text


@pytest.fixture
def committed_user(fresh_database: Database) -> str:
    """A user committed to a database of the test's own; its e-mail address."""
    with fresh_database.transaction() as session:
        return make_user(session, name="王晓雨").email


def browser_on(database: Database) -> TestClient:
    """A browser on a server process of its own over ``database`` (nothing cached yet)."""
    return TestClient(create_app(database.settings, database), base_url="https://testserver")


def test_a_form_sent_after_some_idle_minutes_works_and_keeps_the_session_alive(
    fresh_database: Database, committed_user: str
) -> None:
    start = clock.now()
    with browser_on(fresh_database) as browser:
        with clock.frozen(start):
            login_page(browser, committed_user)
            token = csrf_from(browser.get("/").text)
        with clock.frozen(start + timedelta(minutes=30)):
            answer = browser.post(
                "/lang", data={"lang": "en", "csrf_token": token}, follow_redirects=False
            )
        assert answer.status_code == 303
        with clock.frozen(start + timedelta(hours=2, minutes=20)):
            assert "王晓雨" in browser.get("/").text


def test_a_login_form_from_before_a_restart_still_logs_in(
    fresh_database: Database, committed_user: str
) -> None:
    with browser_on(fresh_database) as before_restart:
        token = csrf_from(before_restart.get("/login").text)
        cookies = dict(before_restart.cookies)
    # The browser also still sends the id of a session that has ended since.
    cookies[SESSION_COOKIE] = "an-ended-session"

    with browser_on(Database(fresh_database.settings)) as after_restart:
        after_restart.cookies.update(cookies)
        answer = after_restart.post(
            "/login",
            data={"email": committed_user, "password": PASSWORD, "csrf_token": token},
            follow_redirects=False,
        )

    assert answer.status_code == 303
