"""The notification centre, e-mail preferences, webhooks and the admin's delivery tools."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session

from booking import service as bookings
from booking.schemas import BookingCreate
from booking.service import BookingPolicy
from core.accounts.rules import Role, ScopeKind
from core.accounts.schemas import RoleGrant
from core.auth.principal import load_principal
from core.clock import frozen
from core.settings import Settings
from notifications import service as notifications
from tests.factories import bearer, make_user
from tests.instruments.factories import make_facility, make_instrument
from tests.notifications.smtp import SmtpServer

NOW = datetime(2026, 11, 30, 1, tzinfo=UTC)


@pytest.fixture
def people(session: Session) -> dict:
    facility = make_facility(session)
    instrument = make_instrument(
        session, facility=facility, requires_qualification=False, min_notice_minutes=0
    )
    researcher = make_user(session, password=None, roles=[Role.RESEARCHER])
    with frozen(NOW):
        bookings.create_booking(
            session,
            actor=load_principal(session, researcher),
            policy=BookingPolicy.from_settings(Settings()),
            data=BookingCreate(
                instrument_id=instrument.id,
                start=NOW + timedelta(days=1),
                end=NOW + timedelta(days=1, hours=1),
            ),
        )
        notifications.dispatch_events(session, Settings())
    manager = make_user(
        session,
        password=None,
        roles=[
            RoleGrant(role=Role.LAB_MANAGER, scope_kind=ScopeKind.FACILITY, scope_id=facility.id)
        ],
    )
    return {
        "facility": facility,
        "researcher": bearer(session, researcher),
        "manager": bearer(session, manager),
        "admin": bearer(session, make_user(session, password=None, roles=[Role.ADMIN])),
    }


def test_the_notification_centre_counts_and_marks_read(client: TestClient, people: dict) -> None:
    mine = client.get("/api/v1/notifications", headers=people["researcher"]).json()
    assert (mine["total"], mine["unread"]) == (1, 1)
    assert mine["items"][0]["topic"] == "booking.confirmed"
    notice = mine["items"][0]["id"]
    assert (
        client.post(f"/api/v1/notifications/{notice}/read", headers=people["manager"]).status_code
        == 404
    )
    assert (
        client.post(
            f"/api/v1/notifications/{notice}/read", headers=people["researcher"]
        ).status_code
        == 204
    )
    assert client.get("/api/v1/notifications", headers=people["researcher"]).json()["unread"] == 0


def test_optional_emails_can_be_turned_off_and_decisions_cannot(
    client: TestClient, people: dict
) -> None:
    answer = client.put(
        "/api/v1/me/notification-preferences",
        json=[{"topic": "booking.reminder", "email": False}],
        headers=people["researcher"],
    )
    assert answer.status_code == 200
    assert {"topic": "booking.reminder", "email": False} in answer.json()
    refused = client.put(
        "/api/v1/me/notification-preferences",
        json=[{"topic": "booking.cancelled", "email": False}],
        headers=people["researcher"],
    )
    assert refused.status_code == 422


def test_a_manager_adds_a_webhook_and_gets_its_secret_once(
    client: TestClient, people: dict
) -> None:
    created = client.post(
        "/api/v1/webhooks",
        json={"facility_id": people["facility"].id, "url": "https://lims.example.cn/hook"},
        headers=people["manager"],
    )
    assert created.status_code == 201
    assert len(created.json()["secret"]) >= 40
    assert (
        client.post(
            "/api/v1/webhooks",
            json={"facility_id": people["facility"].id, "url": "https://x.example.cn/"},
            headers=people["researcher"],
        ).status_code
        == 403
    )


def test_the_admin_sends_a_test_email_and_sees_the_servers_answer(
    client: TestClient, people: dict
) -> None:
    server = SmtpServer()
    server.start()
    try:
        client.app.state.settings = client.app.state.settings.model_copy(
            update={"smtp_host": "127.0.0.1", "smtp_port": server.port}
        )
        answer = client.post(
            "/api/v1/admin/test-email", json={"to": "ops@example.cn"}, headers=people["admin"]
        )
        assert answer.json()["ok"] is True
        assert answer.json()["answer"].startswith("250")
        assert server.received[0].recipients == ["ops@example.cn"]
        server.handler.refused.add("nobody@example.cn")
        refused = client.post(
            "/api/v1/admin/test-email", json={"to": "nobody@example.cn"}, headers=people["admin"]
        )
        assert refused.json()["ok"] is False
        assert (
            client.post(
                "/api/v1/admin/test-email", json={"to": "a@b.cn"}, headers=people["manager"]
            ).status_code
            == 403
        )
    finally:
        server.stop()


def test_only_admins_see_failed_deliveries(client: TestClient, people: dict) -> None:
    assert client.get("/api/v1/admin/deliveries", headers=people["admin"]).status_code == 200
    assert client.get("/api/v1/admin/deliveries", headers=people["manager"]).status_code == 403
