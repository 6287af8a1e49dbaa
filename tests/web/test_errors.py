"""Values the database cannot hold are the caller's mistake: 422 with a reason, never a 500."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session

from core.accounts.rules import Role
from tests.factories import bearer, make_user


def test_an_id_past_the_databases_integer_range_is_refused_not_a_server_error(
    client: TestClient, session: Session
) -> None:
    researcher = make_user(session, roles=[Role.RESEARCHER])

    answer = client.get(
        "/api/v1/bookings", params={"instrument_id": 2**70}, headers=bearer(session, researcher)
    )

    assert answer.status_code == 422
    assert answer.json()["request_id"]


@pytest.mark.parametrize(
    ("method", "path", "field"),
    [
        ("GET", "/api/v1/bookings/2147483648", "booking_id"),
        ("POST", "/api/v1/bookings/2147483648/cancel", "booking_id"),
        ("GET", "/api/v1/instruments/9223372036854775807/availability", "instrument_id"),
        ("GET", "/api/v1/service-requests/0", "request_id"),
    ],
)
def test_a_path_id_no_object_can_have_is_refused_naming_it_alike_on_both_databases(
    client: TestClient, session: Session, method: str, path: str, field: str
) -> None:
    researcher = make_user(session, roles=[Role.RESEARCHER])

    answer = client.request(method, path, headers=bearer(session, researcher))

    assert answer.status_code == 422, answer.text
    assert f"path.{field}" in {error.get("field") for error in answer.json()["errors"]}


@pytest.mark.parametrize("raised", [OverflowError("date value out of range")])
def test_an_overflow_deep_in_a_route_is_answered_422(client: TestClient, raised: Exception) -> None:
    app = client.app

    @app.get("/test-only/overflow")  # type: ignore[attr-defined, untyped-decorator]
    def overflow() -> None:
        raise raised

    answer = client.get("/test-only/overflow", headers={"accept": "application/json"})

    assert answer.status_code == 422
    assert answer.json()["code"] == "value_out_of_range"
