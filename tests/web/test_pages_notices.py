"""The notification centre and e-mail settings pages."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlmodel import Session, select

from core import events
from core.accounts.rules import Role
from core.settings import Settings
from notifications import service as notifications
from notifications.models import NotificationPreference
from tests.factories import csrf_from, login_page, make_user


def test_a_user_reads_its_notices_and_marks_them_read(client: TestClient, session: Session) -> None:
    user = make_user(session, roles=[Role.RESEARCHER])
    notifications.fan_out(
        session, events.emit(session, "service_request.accepted", {"user_id": user.id}), Settings()
    )
    login_page(client, user.email)
    page = client.get("/notifications")
    assert page.status_code == 200
    assert "送样申请已受理" in page.text
    assert "1 条未读" in page.text
    assert client.post("/notifications/read", data={}).status_code == 403  # no CSRF token
    client.post("/notifications/read", data={"csrf_token": csrf_from(page.text)})
    assert "条未读" not in client.get("/notifications").text


def test_a_user_turns_reminder_emails_off(client: TestClient, session: Session) -> None:
    user = make_user(session, roles=[Role.RESEARCHER])
    login_page(client, user.email)
    page = client.get("/account/notifications")
    assert "预约提醒" in page.text
    answer = client.post(
        "/account/notifications",
        data={
            "csrf_token": csrf_from(page.text),
            "email": ["booking.requested", "service_request.submitted"],
        },
        follow_redirects=False,
    )
    assert answer.status_code == 303
    chosen = {
        p.topic: p.email
        for p in session.exec(
            select(NotificationPreference).where(NotificationPreference.user_id == user.id)
        ).all()
    }
    assert chosen == {
        "booking.reminder": False,
        "booking.requested": True,
        "service_request.submitted": True,
    }


def test_the_pages_need_a_login(client: TestClient) -> None:
    assert client.get("/notifications", follow_redirects=False).status_code == 303
