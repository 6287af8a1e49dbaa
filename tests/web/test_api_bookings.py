"""The booking API as researchers, lab managers and the instrument's QR code use it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, func, select

from booking.models import Booking
from core.accounts.models import User
from core.accounts.rules import Role, ScopeKind
from core.accounts.schemas import RoleGrant
from core.clock import frozen
from core.settings import Settings
from instruments import service as instruments
from instruments.models import Instrument
from instruments.schemas import QualificationGrant
from tests.factories import bearer, make_organisation, make_user
from tests.instruments.factories import make_facility, make_instrument

SHANGHAI = ZoneInfo("Asia/Shanghai")
NOW = datetime(2026, 11, 30, 9, 0, tzinfo=SHANGHAI)  # a Monday; the facility opens 09:00–17:00
# Tokens that outlive the test's moves of the frozen clock.
TOKENS = Settings(access_token_ttl_s=7 * 24 * 3600)


@pytest.fixture(autouse=True)
def frozen_now() -> Iterator[None]:
    with frozen(NOW):
        yield


@dataclass
class World:
    instrument: Instrument
    other_instrument: Instrument  # in the same facility
    foreign_instrument: Instrument  # in a facility the manager does not manage
    facility_id: int
    researcher: User
    colleague: User
    outsider: User  # another organisation, books the foreign instrument
    as_researcher: dict[str, str]
    as_colleague: dict[str, str]
    as_outsider: dict[str, str]
    as_manager: dict[str, str]


@pytest.fixture
def world(session: Session) -> World:
    university = make_organisation(session)
    facility = make_facility(session, organisation=university)
    instrument = make_instrument(session, facility=facility, name="扫描电镜", keywords="SEM")
    other_instrument = make_instrument(session, facility=facility, name="X射线衍射仪")
    foreign_instrument = make_instrument(session, name="核磁共振谱仪")
    manager = make_user(
        session,
        password=None,
        organisation=university,
        roles=[
            RoleGrant(role=Role.LAB_MANAGER, scope_kind=ScopeKind.FACILITY, scope_id=facility.id)
        ],
    )
    researcher, colleague = (
        make_user(session, password=None, organisation=university, roles=[Role.RESEARCHER])
        for _ in range(2)
    )
    outsider = make_user(
        session, password=None, organisation=make_organisation(session), roles=[Role.RESEARCHER]
    )
    for user in (researcher, colleague, outsider):
        for target in (instrument, other_instrument, foreign_instrument):
            instruments.grant_qualification(
                session,
                actor=None,
                data=QualificationGrant(user_id=user.id or 0, instrument_id=target.id or 0),
            )
    return World(
        instrument=instrument,
        other_instrument=other_instrument,
        foreign_instrument=foreign_instrument,
        facility_id=facility.id or 0,
        researcher=researcher,
        colleague=colleague,
        outsider=outsider,
        as_researcher=bearer(session, researcher, TOKENS),
        as_colleague=bearer(session, colleague, TOKENS),
        as_outsider=bearer(session, outsider, TOKENS),
        as_manager=bearer(session, manager, TOKENS),
    )


def request_booking(
    client: TestClient,
    headers: dict[str, str],
    instrument: Instrument,
    start: str = "2026-12-01T10:00:00+08:00",
    end: str = "2026-12-01T12:00:00+08:00",
    extra_headers: dict[str, str] | None = None,
    **fields: Any,
) -> Any:
    return client.post(
        "/api/v1/bookings",
        json={"instrument_id": instrument.id, "start": start, "end": end} | fields,
        headers=headers | (extra_headers or {}),
    )


def booked(client: TestClient, headers: dict[str, str], instrument: Instrument, **kw: Any) -> int:
    response = request_booking(client, headers, instrument, **kw)
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def bookings_of(session: Session, user: User) -> int:
    return session.exec(
        select(func.count()).select_from(Booking).where(Booking.user_id == user.id)
    ).one()


def error_codes(response: Any) -> list[tuple[str, str | None]]:
    return [(e["code"], e.get("field")) for e in response.json()["errors"]]


# --- Requesting -----------------------------------------------------------------------------


def test_a_booking_request_is_created_with_its_status_and_utc_times(
    client: TestClient, world: World
) -> None:
    response = request_booking(client, world.as_researcher, world.instrument, purpose="XRD 物相")
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["status"] == "confirmed"
    assert (body["start"], body["end"]) == ("2026-12-01T02:00:00Z", "2026-12-01T04:00:00Z")
    assert body["held_until"] == "2026-12-01T04:00:00Z"
    assert (body["user_id"], body["instrument_id"]) == (world.researcher.id, world.instrument.id)
    assert body["purpose"] == "XRD 物相"
    staff = request_booking(
        client,
        world.as_researcher,
        world.instrument,
        start="2026-12-03T10:00:00+08:00",
        end="2026-12-03T11:00:00+08:00",
        operated_by="staff",
    )
    assert staff.status_code == 201
    assert (staff.json()["status"], staff.json()["expires_at"]) == (
        "pending",
        "2026-12-02T01:00:00Z",
    )


def test_a_time_without_an_offset_is_422_naming_the_field(
    client: TestClient, world: World, session: Session
) -> None:
    response = request_booking(
        client, world.as_researcher, world.instrument, start="2026-12-01T10:00:00"
    )
    assert response.status_code == 422
    assert response.json()["code"] == "validation_failed"
    assert [e.get("field") for e in response.json()["errors"]] == ["start"]
    assert bookings_of(session, world.researcher) == 0


def test_a_nul_character_in_a_text_is_422_naming_the_field(
    client: TestClient, world: World, session: Session
) -> None:
    response = request_booking(client, world.as_researcher, world.instrument, purpose="a\x00b")
    assert response.status_code == 422
    assert [e["field"] for e in response.json()["errors"]] == ["purpose"]
    assert bookings_of(session, world.researcher) == 0


@pytest.mark.parametrize(
    "end", ["2026-12-01T09:00:00+08:00", "2026-12-01T10:00:00+08:00"], ids=["before", "at start"]
)
def test_an_end_not_after_the_start_is_422(
    client: TestClient, world: World, session: Session, end: str
) -> None:
    response = request_booking(client, world.as_researcher, world.instrument, end=end)
    assert response.status_code == 422
    assert error_codes(response) == [("end_not_after_start", "end")]
    assert bookings_of(session, world.researcher) == 0


def test_a_booking_in_the_past_is_422(client: TestClient, world: World) -> None:
    response = request_booking(
        client,
        world.as_researcher,
        world.instrument,
        start="2026-11-27T10:00:00+08:00",
        end="2026-11-27T11:00:00+08:00",
    )
    assert response.status_code == 422
    assert error_codes(response) == [("in_past", "start")]


def test_a_request_not_sent_as_a_booking_is_422_naming_what_is_wrong(
    client: TestClient, world: World, session: Session
) -> None:
    valid = {"instrument_id": world.instrument.id, "start": "2026-12-01T10:00:00+08:00"}
    valid |= {"end": "2026-12-01T12:00:00+08:00"}
    as_json = world.as_researcher | {"Content-Type": "application/json"}
    for content, headers, expected in (
        (b'{"instrument_id": 1,', as_json, ("malformed_json", None)),
        (
            json.dumps(valid).encode(),
            world.as_researcher | {"Content-Type": "text/plain"},
            ("model_attributes_type", None),
        ),
        (json.dumps(valid | {"colour": "red"}).encode(), as_json, ("extra_forbidden", "colour")),
        (b"", as_json, ("missing", None)),
        (
            json.dumps(valid).encode(),
            as_json | {"Idempotency-Key": "k" * 201},
            ("string_too_long", "header.idempotency-key"),
        ),
    ):
        response = client.post("/api/v1/bookings", content=content, headers=headers)
        assert response.status_code == 422, (content, headers, response.text)
        assert expected in error_codes(response), response.text
    assert bookings_of(session, world.researcher) == 0
    # A JSON body is one whatever its character set is said to be.
    charset = world.as_researcher | {"Content-Type": "application/json; charset=utf-8"}
    response = client.post("/api/v1/bookings", content=json.dumps(valid), headers=charset)
    assert response.status_code == 201, response.text


def test_booking_without_a_valid_token_is_401_and_books_nothing(
    client: TestClient, world: World, session: Session
) -> None:
    revoked = client.post("/api/v1/auth/logout", headers=world.as_colleague)
    assert revoked.status_code < 300, revoked.text
    for headers, code in (
        ({}, "not_authenticated"),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, "not_authenticated"),
        ({"Authorization": "Bearer not-a-token"}, "invalid_token"),
        (world.as_colleague, "invalid_token"),
    ):
        response = request_booking(client, headers, world.instrument)
        assert response.status_code == 401, (headers, response.text)
        assert response.json()["code"] == code
    # Without a token the caller learns nothing about the body, not even that it is wrong.
    assert request_booking(client, {}, world.instrument, start="tomorrow").status_code == 401
    assert bookings_of(session, world.colleague) == 0


def test_booking_a_missing_instrument_is_404(client: TestClient, world: World) -> None:
    response = client.post(
        "/api/v1/bookings",
        json={
            "instrument_id": 999_999,
            "start": "2026-12-01T10:00:00+08:00",
            "end": "2026-12-01T11:00:00+08:00",
        },
        headers=world.as_researcher,
    )
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


def test_operating_without_a_qualification_or_overriding_rules_is_403(
    client: TestClient, world: World, session: Session
) -> None:
    untrained = make_user(session, password=None, roles=[Role.RESEARCHER])
    response = request_booking(client, bearer(session, untrained, TOKENS), world.instrument)
    assert (response.status_code, response.json()["code"]) == (403, "not_qualified")
    override = request_booking(
        client,
        world.as_researcher,
        world.instrument,
        end="2026-12-01T18:00:00+08:00",
        override=["outside_opening_hours"],
    )
    assert override.status_code == 403
    assert bookings_of(session, untrained) + bookings_of(session, world.researcher) == 0


def test_a_taken_time_is_409_naming_the_interval_only(client: TestClient, world: World) -> None:
    booked(client, world.as_colleague, world.instrument)
    response = request_booking(
        client,
        world.as_researcher,
        world.instrument,
        start="2026-12-01T11:00:00+08:00",
        end="2026-12-01T13:00:00+08:00",
    )
    assert response.status_code == 409
    body = response.json()
    assert body["code"] == "overlap"
    assert "2026-12-01T02:00:00+00:00" in body["errors"][0]["message"]
    assert world.colleague.email not in response.text
    assert world.colleague.name not in response.text


def test_a_retry_with_the_same_idempotency_key_gets_the_first_answer(
    client: TestClient, world: World, session: Session
) -> None:
    key = {"Idempotency-Key": "3f1c9b0e-booking-1"}
    first = request_booking(client, world.as_researcher, world.instrument, extra_headers=key)
    retry = request_booking(client, world.as_researcher, world.instrument, extra_headers=key)
    assert (first.status_code, retry.status_code) == (201, 201)
    assert retry.json() == first.json()
    assert bookings_of(session, world.researcher) == 1
    changed = request_booking(
        client,
        world.as_researcher,
        world.instrument,
        start="2026-12-02T10:00:00+08:00",
        end="2026-12-02T12:00:00+08:00",
        extra_headers=key,
    )
    assert changed.status_code == 422
    assert changed.json()["code"] == "validation_failed"
    assert [e["code"] for e in changed.json()["errors"]] == ["idempotency_key_reused"]
    assert bookings_of(session, world.researcher) == 1


def test_too_many_requests_in_a_minute_are_429_with_retry_after(
    client: TestClient, world: World, session: Session
) -> None:
    client.app.state.settings = client.app.state.settings.model_copy(  # type: ignore[attr-defined]
        update={"booking_creations_per_minute": 2}
    )
    for day in ("01", "02"):
        booked(
            client,
            world.as_researcher,
            world.instrument,
            start=f"2026-12-{day}T10:00:00+08:00",
            end=f"2026-12-{day}T11:00:00+08:00",
        )
    response = request_booking(
        client,
        world.as_researcher,
        world.instrument,
        start="2026-12-03T10:00:00+08:00",
        end="2026-12-03T11:00:00+08:00",
    )
    assert response.status_code == 429
    assert int(response.headers["Retry-After"]) > 0
    assert response.json()["code"] == "booking_rate"
    assert bookings_of(session, world.researcher) == 2
    with frozen(datetime(2026, 11, 30, 9, 1, tzinfo=SHANGHAI)):  # a minute later
        assert (
            request_booking(
                client,
                world.as_researcher,
                world.instrument,
                start="2026-12-03T10:00:00+08:00",
                end="2026-12-03T11:00:00+08:00",
            ).status_code
            == 201
        )


# --- Who may see and decide -----------------------------------------------------------------


def test_a_researcher_approving_its_own_request_is_403(client: TestClient, world: World) -> None:
    booking_id = booked(client, world.as_researcher, world.instrument, operated_by="staff")
    response = client.post(
        f"/api/v1/bookings/{booking_id}/approve", json={}, headers=world.as_researcher
    )
    assert response.status_code == 403
    assert response.json()["code"] == "forbidden"
    mine = client.get(f"/api/v1/bookings/{booking_id}", headers=world.as_researcher)
    assert mine.json()["status"] == "pending"


def test_a_lab_manager_approves_and_rejects_requests(client: TestClient, world: World) -> None:
    approve_id = booked(client, world.as_researcher, world.instrument, operated_by="staff")
    reject_id = booked(client, world.as_colleague, world.other_instrument, operated_by="staff")
    approved = client.post(
        f"/api/v1/bookings/{approve_id}/approve", json={}, headers=world.as_manager
    )
    assert (approved.status_code, approved.json()["status"]) == (200, "confirmed")
    again = client.post(f"/api/v1/bookings/{approve_id}/approve", json={}, headers=world.as_manager)
    assert (again.status_code, again.json()["code"]) == (409, "wrong_status")
    without_reason = client.post(
        f"/api/v1/bookings/{reject_id}/reject", json={}, headers=world.as_manager
    )
    assert without_reason.status_code == 422
    rejected = client.post(
        f"/api/v1/bookings/{reject_id}/reject",
        json={"reason": "Sample type not supported."},
        headers=world.as_manager,
    )
    assert rejected.status_code == 200
    assert (rejected.json()["status"], rejected.json()["reason"]) == (
        "rejected",
        "Sample type not supported.",
    )


def test_another_researcher_can_neither_read_nor_cancel_someones_booking(
    client: TestClient, world: World
) -> None:
    booking_id = booked(client, world.as_researcher, world.instrument)
    url = f"/api/v1/bookings/{booking_id}"
    assert client.get(url, headers=world.as_colleague).status_code == 404
    cancel = client.post(f"{url}/cancel", json={}, headers=world.as_colleague)
    assert (cancel.status_code, cancel.json()["code"]) == (404, "not_found")
    assert client.get(url, headers=world.as_researcher).json()["status"] == "confirmed"
    cancelled = client.post(f"{url}/cancel", json={}, headers=world.as_researcher)
    assert (cancelled.status_code, cancelled.json()["status"]) == (200, "cancelled")
    assert cancelled.json()["late_cancellation"] is False  # over 24 hours before the start


def test_lists_show_each_caller_what_it_may_see(client: TestClient, world: World) -> None:
    mine = {
        booked(client, world.as_researcher, world.instrument),
        booked(client, world.as_researcher, world.other_instrument, operated_by="staff"),
    }
    colleagues = booked(
        client,
        world.as_colleague,
        world.other_instrument,
        operated_by="staff",
        start="2026-12-02T10:00:00+08:00",
        end="2026-12-02T11:00:00+08:00",
    )
    booked(client, world.as_outsider, world.foreign_instrument, operated_by="staff")

    as_researcher = client.get("/api/v1/bookings", headers=world.as_researcher).json()
    assert as_researcher["total"] == 2
    assert {b["id"] for b in as_researcher["items"]} == mine

    as_manager = client.get("/api/v1/bookings", headers=world.as_manager).json()
    assert {b["id"] for b in as_manager["items"]} == mine | {colleagues}

    queue = client.get("/api/v1/bookings", params={"queue": "true"}, headers=world.as_manager)
    assert {b["status"] for b in queue.json()["items"]} == {"pending"}
    assert queue.json()["total"] == 2  # the foreign facility's request is not its to decide
    assert client.get(
        "/api/v1/bookings", params={"queue": "true"}, headers=world.as_researcher
    ).json() == {"items": [], "total": 0}

    page = client.get(
        "/api/v1/bookings", params={"page": 2, "page_size": 2}, headers=world.as_manager
    ).json()
    assert (len(page["items"]), page["total"]) == (1, 3)
    filtered = client.get(
        "/api/v1/bookings",
        params={"instrument_id": world.instrument.id, "status": "confirmed"},
        headers=world.as_manager,
    ).json()
    assert filtered["total"] == 1


def test_a_list_asked_for_an_end_before_its_start_is_422(client: TestClient, world: World) -> None:
    response = client.get(
        "/api/v1/bookings",
        params={"start": "2026-12-03T00:00:00Z", "end": "2026-12-01T00:00:00Z"},
        headers=world.as_researcher,
    )
    assert response.status_code == 422
    assert error_codes(response) == [("end_not_after_start", "end")]


def test_bulk_decisions_answer_for_each_request(client: TestClient, world: World) -> None:
    first = booked(client, world.as_researcher, world.instrument, operated_by="staff")
    second = booked(client, world.as_colleague, world.other_instrument, operated_by="staff")
    confirmed = booked(
        client,
        world.as_researcher,
        world.instrument,
        start="2026-12-02T10:00:00+08:00",
        end="2026-12-02T11:00:00+08:00",
    )
    foreign = booked(client, world.as_outsider, world.foreign_instrument, operated_by="staff")
    response = client.post(
        "/api/v1/bookings/approve",
        json={"ids": [first, second, confirmed, foreign]},
        headers=world.as_manager,
    )
    assert response.status_code == 200
    assert [(r["id"], r["ok"], r["status"], r["code"]) for r in response.json()] == [
        (first, True, "confirmed", None),
        (second, True, "confirmed", None),
        (confirmed, False, None, "wrong_status"),
        (foreign, False, None, "not_found"),
    ]
    pending = booked(
        client,
        world.as_researcher,
        world.other_instrument,
        operated_by="staff",
        start="2026-12-02T10:00:00+08:00",
        end="2026-12-02T11:00:00+08:00",
    )
    no_reason = client.post(
        "/api/v1/bookings/reject", json={"ids": [pending]}, headers=world.as_manager
    )
    assert no_reason.status_code == 422
    rejected = client.post(
        "/api/v1/bookings/reject",
        json={"ids": [pending, first], "reason": "Closed for calibration."},
        headers=world.as_manager,
    )
    assert [(r["ok"], r["status"] or r["code"]) for r in rejected.json()] == [
        (True, "rejected"),
        (False, "wrong_status"),
    ]


# --- Changing and using ---------------------------------------------------------------------


def test_a_move_answers_with_the_new_booking_and_cancels_the_old(
    client: TestClient, world: World
) -> None:
    old_id = booked(client, world.as_researcher, world.instrument)
    response = client.post(
        f"/api/v1/bookings/{old_id}/move",
        json={"start": "2026-12-02T14:00:00+08:00", "end": "2026-12-02T16:00:00+08:00"},
        headers=world.as_researcher,
    )
    assert response.status_code == 201, response.text
    new = response.json()
    assert (new["status"], new["start"]) == ("confirmed", "2026-12-02T06:00:00Z")
    old = client.get(f"/api/v1/bookings/{old_id}", headers=world.as_researcher).json()
    assert (old["status"], old["reason"], old["replaced_by_id"]) == (
        "cancelled",
        "moved",
        new["id"],
    )


def test_the_instrument_qr_code_checks_in_the_callers_due_booking(
    client: TestClient, world: World
) -> None:
    booking_id = booked(
        client,
        world.as_researcher,
        world.instrument,
        start="2026-11-30T10:00:00+08:00",
        end="2026-11-30T11:00:00+08:00",
    )
    url = f"/api/v1/instruments/{world.instrument.id}/check-in"
    with frozen(datetime(2026, 11, 30, 9, 44, tzinfo=SHANGHAI)):
        too_early = client.post(url, headers=world.as_researcher)
    assert (too_early.status_code, too_early.json()["code"]) == (409, "no_booking_now")
    with frozen(datetime(2026, 11, 30, 9, 45, tzinfo=SHANGHAI)):
        not_theirs = client.post(url, headers=world.as_colleague)
        response = client.post(url, headers=world.as_researcher)
    assert not_theirs.status_code == 409
    missing = client.post("/api/v1/instruments/999999/check-in", headers=world.as_researcher)
    assert (missing.status_code, missing.json()["code"]) == (404, "not_found")
    assert response.status_code == 200, response.text
    assert (response.json()["id"], response.json()["status"]) == (booking_id, "in_use")
    assert response.json()["checked_in_at"] == "2026-11-30T01:45:00Z"

    with frozen(datetime(2026, 11, 30, 11, 5, tzinfo=SHANGHAI)):
        checked_out = client.post(
            f"/api/v1/bookings/{booking_id}/check-out",
            json={"samples": 2},
            headers=world.as_researcher,
        )
    assert checked_out.status_code == 200, checked_out.text
    usage = checked_out.json()
    assert (usage["booking_id"], usage["user_id"], usage["samples"]) == (
        booking_id,
        world.researcher.id,
        2,
    )
    assert (usage["started_at"], usage["ended_at"]) == (
        "2026-11-30T01:45:00Z",
        "2026-11-30T03:05:00Z",
    )
    records = client.get("/api/v1/usage-records", headers=world.as_researcher).json()
    assert [r["id"] for r in records["items"]] == [usage["id"]]


# --- Free time ------------------------------------------------------------------------------

DAY = {"start": "2026-12-01T00:00:00+08:00", "end": "2026-12-02T00:00:00+08:00"}


def test_an_instruments_availability_is_its_open_time_minus_bookings(
    client: TestClient, world: World
) -> None:
    booked(client, world.as_researcher, world.instrument)  # 10:00–12:00
    url = f"/api/v1/instruments/{world.instrument.id}/availability"
    response = client.get(url, params=DAY)
    assert response.status_code == 200
    assert response.json() == {
        "free": [
            {"start": "2026-12-01T01:00:00Z", "end": "2026-12-01T02:00:00Z"},
            {"start": "2026-12-01T04:00:00Z", "end": "2026-12-01T09:00:00Z"},
        ]
    }
    long_enough = client.get(url, params=DAY | {"min_minutes": 120}).json()["free"]
    assert long_enough == [{"start": "2026-12-01T04:00:00Z", "end": "2026-12-01T09:00:00Z"}]
    assert client.get("/api/v1/instruments/999999/availability", params=DAY).status_code == 404


def test_an_availability_asked_for_wrongly_is_refused_naming_what_is_wrong(
    client: TestClient, world: World
) -> None:
    url = f"/api/v1/instruments/{world.instrument.id}/availability"
    for path, params, expected in (
        (url, DAY | {"start": "2026-12-01T00:00:00"}, ("timezone_aware", "query.start")),
        (url, {"start": DAY["start"]}, ("missing", "query.end")),
        (url, DAY | {"min_minutes": "-1"}, ("greater_than_equal", "query.min_minutes")),
        (url, DAY | {"min_minutes": "soon"}, ("int_parsing", "query.min_minutes")),
        ("/api/v1/instruments/0/availability", DAY, ("greater_than_equal", "path.instrument_id")),
        ("/api/v1/instruments/x1/availability", DAY, ("int_parsing", "path.instrument_id")),
        (url, {"start": DAY["end"], "end": DAY["start"]}, ("end_not_after_start", "end")),
    ):
        response = client.get(path, params=params)
        assert response.status_code == 422, (path, params, response.text)
        assert expected in error_codes(response), response.text
    bad_token = {"Authorization": "Bearer not-a-token"}
    assert client.get(url, params=DAY, headers=bad_token).status_code == 401


def test_an_availability_is_the_same_answer_however_its_request_is_spelled(
    client: TestClient, world: World
) -> None:
    """The endpoint answers plainly spelled requests itself, and leaves the rest (an id with a
    leading zero, say) to FastAPI: both give one answer; a closed catalogue, only to users."""
    booked(client, world.as_researcher, world.instrument)
    plain = client.get(f"/api/v1/instruments/{world.instrument.id}/availability", params=DAY)
    padded = client.get(f"/api/v1/instruments/0{world.instrument.id}/availability", params=DAY)
    assert plain.status_code == padded.status_code == 200
    assert plain.json() == padded.json()
    assert plain.headers["content-type"] == padded.headers["content-type"] == "application/json"
    client.app.state.settings = client.app.state.settings.model_copy(
        update={"catalogue_public": False}
    )
    url = f"/api/v1/instruments/{world.instrument.id}/availability"
    assert client.get(url, params=DAY).status_code == 404
    assert client.get(url, params=DAY, headers=world.as_researcher).json() == plain.json()


def test_free_instruments_are_found_by_how_long_they_are_free(
    client: TestClient, world: World
) -> None:
    booked(  # leaves the SEM free 09:00–10:00 and 16:00–17:00 only
        client,
        world.as_researcher,
        world.instrument,
        start="2026-12-01T10:00:00+08:00",
        end="2026-12-01T16:00:00+08:00",
    )
    found = client.get("/api/v1/availability", params=DAY | {"min_minutes": 120})
    assert found.status_code == 200
    names = {i["name"] for i in found.json()}
    assert names == {"X射线衍射仪", "核磁共振谱仪"}
    in_facility = client.get(
        "/api/v1/availability",
        params=DAY | {"min_minutes": 60, "facility_id": world.facility_id},
    ).json()
    assert {i["name"]: len(i["free"]) for i in in_facility} == {"扫描电镜": 2, "X射线衍射仪": 1}
    by_keyword = client.get("/api/v1/availability", params=DAY | {"q": "SEM"}).json()
    assert [(i["instrument_id"], i["free"][0]["start"]) for i in by_keyword] == [
        (world.instrument.id, "2026-12-01T01:00:00Z")
    ]


# --- Errors ---------------------------------------------------------------------------------


def test_every_error_body_has_detail_code_errors_and_request_id(
    client: TestClient, world: World
) -> None:
    client.app.state.settings = client.app.state.settings.model_copy(  # type: ignore[attr-defined]
        update={"booking_creations_per_minute": 1}
    )
    booking_id = booked(client, world.as_researcher, world.instrument, operated_by="staff")
    answers = {
        401: client.get("/api/v1/bookings"),
        403: client.post(f"/api/v1/bookings/{booking_id}/approve", headers=world.as_researcher),
        404: client.get(f"/api/v1/bookings/{booking_id}", headers=world.as_colleague),
        409: client.post(f"/api/v1/bookings/{booking_id}/check-out", headers=world.as_researcher),
        422: request_booking(client, world.as_colleague, world.instrument, start="tomorrow"),
        429: request_booking(client, world.as_researcher, world.other_instrument),
    }
    for status_code, response in answers.items():
        assert response.status_code == status_code, response.text
        body = response.json()
        assert set(body) == {"detail", "code", "errors", "request_id"}, status_code
        assert all(isinstance(body[key], str) and body[key] for key in ("detail", "code"))
        assert body["request_id"] == response.headers["x-request-id"]
        assert isinstance(body["errors"], list)
