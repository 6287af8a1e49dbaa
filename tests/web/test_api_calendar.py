"""Calendar feeds over HTTP, on SQLite and PostgreSQL: managing subscriptions, serving
/calendar/{token}.ics without a login, 404 for dead tokens, ETag and 304."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from booking.models import Booking
from booking.rules import BookingStatus, OperatedBy
from core.accounts.models import RoleAssignment, User
from core.accounts.rules import Role, ScopeKind
from core.accounts.schemas import RoleGrant
from core.clock import frozen
from instruments.models import Facility, Instrument
from notifications import feeds
from tests.factories import bearer, make_user
from tests.instruments.factories import make_facility, make_instrument
from tests.notifications.calendars import events, parse

NOW = datetime(2026, 11, 30, 1, 0, tzinfo=UTC)
BASE_URL = "http://127.0.0.1:8000"  # the test settings' default base_url
HOST = "127.0.0.1"


@pytest.fixture(autouse=True)
def frozen_now() -> Iterator[None]:
    with frozen(NOW):
        yield


def booked(session: Session, instrument: Instrument, user: User, hours_ahead: int) -> Booking:
    start = NOW + timedelta(hours=hours_ahead)
    booking = Booking(
        instrument_id=instrument.id or 0,
        facility_id=instrument.facility_id,
        user_id=user.id or 0,
        start_at=start,
        end_at=start + timedelta(hours=1),
        held_until=start + timedelta(hours=1),
        status=BookingStatus.CONFIRMED,
        operated_by=OperatedBy.SELF,
        purpose="课题组内部样品",
    )
    session.add(booking)
    session.flush()
    return booking


class Lab:
    def __init__(self, session: Session) -> None:
        self.facility: Facility = make_facility(session)
        self.instrument = make_instrument(session, facility=self.facility)
        self.manager = make_user(
            session,
            name="管理员王",
            roles=[
                RoleGrant(
                    role=Role.LAB_MANAGER, scope_kind=ScopeKind.FACILITY, scope_id=self.facility.id
                )
            ],
        )
        self.researcher = make_user(session, name="张三", roles=[Role.RESEARCHER])
        self.subscriber = make_user(session, name="王五", roles=[Role.RESEARCHER])


@pytest.fixture
def lab(session: Session) -> Lab:
    return Lab(session)


def create(client: TestClient, headers: dict[str, str], **body: Any) -> dict[str, Any]:
    response = client.post("/api/v1/calendar-feeds", json=body, headers=headers)
    assert response.status_code == 201, response.text
    answer: dict[str, Any] = response.json()
    return answer


def path_of(feed: dict[str, Any]) -> str:
    return "/calendar/" + feed["url"].rsplit("/calendar/", 1)[1]


def test_creating_a_feed_answers_its_webcal_and_https_links(
    client: TestClient, session: Session, lab: Lab
) -> None:
    headers = bearer(session, lab.subscriber)

    feed = create(client, headers, kind="instrument", subject_id=lab.instrument.id)

    token = feed["url"].removeprefix("webcal://127.0.0.1:8000/calendar/").removesuffix(".ics")
    assert re.fullmatch(r"[A-Za-z0-9_-]{43,}", token)
    assert feed["url"] == f"webcal://127.0.0.1:8000/calendar/{token}.ics"
    assert feed["https_url"] == f"{BASE_URL}/calendar/{token}.ics"
    assert (feed["kind"], feed["subject_id"], feed["full_details"]) == (
        "instrument",
        lab.instrument.id,
        False,
    )
    again = create(client, headers, kind="instrument", subject_id=lab.instrument.id)
    assert again["url"] != feed["url"]


def test_feed_links_follow_the_configured_base_url() -> None:
    webcal, https = feeds.feed_urls("https://lab.example.cn/share/", "abc")

    assert webcal == "webcal://lab.example.cn/share/calendar/abc.ics"
    assert https == "https://lab.example.cn/share/calendar/abc.ics"
    assert feeds.calendar_host("https://lab.example.cn:8443/share") == "lab.example.cn"


def test_managing_feeds_needs_a_login(client: TestClient) -> None:
    assert client.post("/api/v1/calendar-feeds", json={"kind": "user"}).status_code == 401
    assert client.get("/api/v1/calendar-feeds").status_code == 401


def test_bad_feed_requests_are_422_or_404(client: TestClient, session: Session, lab: Lab) -> None:
    headers = bearer(session, lab.subscriber)
    post = client.post

    assert post("/api/v1/calendar-feeds", json={"kind": "room"}, headers=headers).status_code == 422
    missing = post("/api/v1/calendar-feeds", json={"kind": "facility"}, headers=headers)
    assert missing.status_code == 422
    assert missing.json()["errors"][0]["field"] == "subject_id"
    others = post(
        "/api/v1/calendar-feeds",
        json={"kind": "user", "subject_id": lab.researcher.id},
        headers=headers,
    )
    assert others.status_code == 422
    unknown = post(
        "/api/v1/calendar-feeds", json={"kind": "instrument", "subject_id": 999999}, headers=headers
    )
    assert unknown.status_code == 404


def test_the_list_revoke_and_regenerate(client: TestClient, session: Session, lab: Lab) -> None:
    headers = bearer(session, lab.researcher)
    mine = create(client, headers, kind="user")
    facility = create(client, headers, kind="facility", subject_id=lab.facility.id)
    assert client.get(path_of(mine)).status_code == 200

    listed = client.get("/api/v1/calendar-feeds", headers=headers).json()
    assert listed["total"] == 2
    assert [f["id"] for f in listed["items"]] == [mine["id"], facility["id"]]

    regenerated = client.post(f"/api/v1/calendar-feeds/{mine['id']}/regenerate", headers=headers)
    assert regenerated.status_code == 200
    assert regenerated.json()["id"] == mine["id"]
    assert regenerated.json()["url"] != mine["url"]
    assert client.get(path_of(mine)).status_code == 404
    assert client.get(path_of(regenerated.json())).status_code == 200

    deleted = client.delete(f"/api/v1/calendar-feeds/{facility['id']}", headers=headers)
    assert deleted.status_code == 204
    assert deleted.content == b""
    assert client.get(path_of(facility)).status_code == 404
    listed = client.get("/api/v1/calendar-feeds", headers=headers).json()
    assert [f["id"] for f in listed["items"]] == [mine["id"]]
    # Somebody else's feed is as invisible as a missing one.
    stranger = bearer(session, lab.subscriber)
    assert (
        client.delete(f"/api/v1/calendar-feeds/{mine['id']}", headers=stranger).status_code == 404
    )
    assert (
        client.post(f"/api/v1/calendar-feeds/{mine['id']}/regenerate", headers=stranger).status_code
        == 404
    )


def test_a_feed_is_served_without_login_as_text_calendar(
    client: TestClient, session: Session, lab: Lab
) -> None:
    booking = booked(session, lab.instrument, lab.researcher, hours_ahead=25)
    feed = create(client, bearer(session, lab.researcher), kind="user")

    with frozen(NOW + feeds.SETTLED_AFTER):
        response = client.get(path_of(feed))

    assert response.status_code == 200
    assert response.headers["content-type"] == "text/calendar; charset=utf-8"
    assert response.headers["etag"].startswith('"')
    assert parsedate_to_datetime(response.headers["last-modified"]) == max(
        booking.updated_at, NOW
    ).replace(microsecond=0)
    calendar = parse(response.text)
    assert str(calendar["METHOD"]) == "PUBLISH"
    (vevent,) = calendar.walk("VEVENT")
    assert str(vevent["UID"]) == f"booking-{booking.id}@{HOST}"
    assert "预约人：张三" in str(vevent["DESCRIPTION"])


def test_an_unknown_token_is_a_json_404(client: TestClient) -> None:
    response = client.get(f"/calendar/{feeds.new_token()}.ics")

    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    assert response.json()["code"] == "not_found"


def test_a_non_managers_instrument_feed_holds_no_personal_data(
    client: TestClient, session: Session, lab: Lab
) -> None:
    booked(session, lab.instrument, lab.researcher, hours_ahead=25)
    feed = create(
        client, bearer(session, lab.subscriber), kind="instrument", subject_id=lab.instrument.id
    )
    managers = create(
        client, bearer(session, lab.manager), kind="instrument", subject_id=lab.instrument.id
    )

    body = client.get(path_of(feed)).text
    full = client.get(path_of(managers)).text

    assert [str(e["SUMMARY"]) for e in events(body)] == ["已预约"]
    for personal in (lab.researcher.name, lab.researcher.email, "课题组内部样品", "mailto"):
        assert personal not in body
    assert managers["full_details"] is True
    assert "张三" in full
    assert "课题组内部样品" in full


def test_a_poll_with_the_current_etag_is_304_without_building_the_calendar(
    client: TestClient, session: Session, lab: Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    booking = booked(session, lab.instrument, lab.researcher, hours_ahead=25)
    feed = create(client, bearer(session, lab.researcher), kind="user")
    first = client.get(path_of(feed))
    etag = first.headers["etag"]

    def must_not_build(*args: Any, **kwargs: Any) -> str:
        raise AssertionError("the calendar was built for a 304")

    monkeypatch.setattr(feeds, "render_feed", must_not_build)
    for header in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        again = client.get(path_of(feed), headers={"If-None-Match": header})
        assert again.status_code == 304
        assert again.content == b""
        assert again.headers["etag"] == etag
    monkeypatch.undo()

    stale = client.get(path_of(feed), headers={"If-None-Match": '"other"'})
    assert stale.status_code == 200
    assert stale.headers["etag"] == etag
    assert stale.text == first.text

    with frozen(NOW + timedelta(minutes=1)):
        headers = bearer(session, lab.researcher)
        cancelled = client.post(f"/api/v1/bookings/{booking.id}/cancel", json={}, headers=headers)
        assert cancelled.status_code == 200, cancelled.text
        changed = client.get(path_of(feed), headers={"If-None-Match": etag})
    assert changed.status_code == 200
    assert changed.headers["etag"] != etag
    (vevent,) = events(changed.text)
    assert str(vevent["STATUS"]) == "CANCELLED"
    assert int(vevent["SEQUENCE"]) == 1


def test_a_poll_with_if_modified_since_is_304_once_the_feed_has_settled(
    client: TestClient, session: Session, lab: Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    booking = booked(session, lab.instrument, lab.researcher, hours_ahead=25)
    feed = create(client, bearer(session, lab.researcher), kind="user")
    # Just changed: a change stamped a moment ago may still be committing, so no date yet.
    assert "last-modified" not in client.get(path_of(feed)).headers
    later = NOW + feeds.SETTLED_AFTER + timedelta(seconds=5)
    with frozen(later):
        first = client.get(path_of(feed))
    date = first.headers["last-modified"]
    assert parsedate_to_datetime(date) == NOW

    def must_not_build(*args: Any, **kwargs: Any) -> str:
        raise AssertionError("the calendar was built for a 304")

    monkeypatch.setattr(feeds, "render_feed", must_not_build)
    with frozen(later + timedelta(hours=1)):
        again = client.get(path_of(feed), headers={"If-Modified-Since": date})
        assert again.status_code == 304
        assert again.content == b""
        assert again.headers["last-modified"] == date
        assert again.headers["etag"] == first.headers["etag"]
    monkeypatch.undo()

    with frozen(later + timedelta(hours=1)):
        for refused in (
            "Mon, 30 Nov 2026 00:59:59 GMT",  # a copy older than the last change
            "not a date",
            "Tue, 01 Dec 2026 12:00:00 GMT",  # from the future
        ):
            response = client.get(path_of(feed), headers={"If-Modified-Since": refused})
            assert response.status_code == 200, refused
            assert response.text == first.text
        # If-None-Match decides when both are sent, even against a matching date.
        both = {"If-None-Match": '"other"', "If-Modified-Since": date}
        assert client.get(path_of(feed), headers=both).status_code == 200

        headers = bearer(session, lab.researcher)
        cancelled = client.post(f"/api/v1/bookings/{booking.id}/cancel", json={}, headers=headers)
        assert cancelled.status_code == 200, cancelled.text
        changed = client.get(path_of(feed), headers={"If-Modified-Since": date})
    assert changed.status_code == 200
    assert "last-modified" not in changed.headers  # changed a moment ago: not settled yet
    (vevent,) = events(changed.text)
    assert str(vevent["STATUS"]) == "CANCELLED"


def test_a_manager_who_lost_the_role_gets_no_304_for_a_date(
    client: TestClient, session: Session, lab: Lab
) -> None:
    booked(session, lab.instrument, lab.researcher, hours_ahead=25)
    manager = bearer(session, lab.manager)
    feed = create(client, manager, kind="instrument", subject_id=lab.instrument.id)
    later = NOW + feeds.SETTLED_AFTER
    with frozen(later):
        full = client.get(path_of(feed))
    date = full.headers["last-modified"]
    assert "张三" in full.text
    (assignment,) = [a for a in session.exec(select(RoleAssignment)) if a.user_id == lab.manager.id]
    session.delete(assignment)  # no row records when the details went away
    session.flush()

    with frozen(later + timedelta(hours=1)):
        response = client.get(path_of(feed), headers={"If-Modified-Since": date})

    assert response.status_code == 200
    assert "last-modified" not in response.headers
    assert "张三" not in response.text
