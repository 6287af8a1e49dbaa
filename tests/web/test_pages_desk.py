"""The check-in desk, instrument QR codes and the check-in page a QR code opens."""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import timedelta
from unittest import mock

import pytest
import segno
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from booking.models import Booking, UsageRecord
from booking.rules import BookingStatus
from core.accounts.rules import Role
from core.clock import frozen
from tests.factories import csrf_from, login_page, make_user
from tests.web.test_pages_manage import NOW, Labs, booking, status_of
from tests.web.test_pages_manage import labs as labs
from web.pages import desk

S = BookingStatus
BASE_URL = "http://127.0.0.1:8000"  # the default settings' base_url


@pytest.fixture(autouse=True)
def frozen_now() -> Iterator[None]:
    with frozen(NOW):  # Monday 2026-11-30 09:00 in Shanghai
        yield


def post(client: TestClient, path: str, page: str, **data: object) -> object:
    token = csrf_from(client.get(page).text)
    return client.post(path, data={**data, "csrf_token": token}, follow_redirects=False)


def usage_of(session: Session, made: Booking) -> list[UsageRecord]:
    return list(session.exec(select(UsageRecord).where(UsageRecord.booking_id == made.id)).all())


# --- The desk ----------------------------------------------------------------------------


def test_the_desk_lists_todays_bookings_of_the_managers_facilities(
    client: TestClient, session: Session, labs: Labs
) -> None:
    colleague = make_user(session, name="赵同学", email="zhao@example.cn")
    now_due = booking(session, labs.instrument_a, labs.researcher, S.CONFIRMED, "2026-11-30 09:00")
    running = booking(session, labs.instrument_b, colleague, S.IN_USE, "2026-11-30 08:00", hours=3)
    tomorrow = booking(session, labs.instrument_a, labs.researcher, S.CONFIRMED, "2026-12-01 09:00")
    elsewhere = booking(
        session, labs.instrument_c, labs.researcher, S.CONFIRMED, "2026-11-30 10:00"
    )
    login_page(client, labs.li.email)

    page = client.get("/desk").text
    by_name = client.get("/desk", params={"q": "赵"}).text
    by_email = client.get("/desk", params={"q": "ZHAO@example"}).text
    by_instrument = client.get("/desk", params={"instrument_id": labs.instrument_a.id}).text

    assert f'id="desk-{now_due.id}"' in page
    assert f'id="desk-{running.id}"' in page
    assert f'id="desk-{tomorrow.id}"' not in page
    assert f'id="desk-{elsewhere.id}"' not in page
    assert f"/desk/bookings/{now_due.id}/check-in" in page
    assert f"/desk/bookings/{running.id}/check-out" in page
    assert f'id="desk-{running.id}"' in by_name
    assert f'id="desk-{now_due.id}"' not in by_name
    assert f'id="desk-{running.id}"' in by_email
    assert f'id="desk-{now_due.id}"' not in by_email
    assert f'id="desk-{now_due.id}"' in by_instrument
    assert f'id="desk-{running.id}"' not in by_instrument


def test_the_desk_checks_a_user_in_and_out_once(
    client: TestClient, session: Session, labs: Labs
) -> None:
    due = booking(session, labs.instrument_a, labs.researcher, S.CONFIRMED, "2026-11-30 09:00")
    login_page(client, labs.li.email)

    checked_in = post(client, f"/desk/bookings/{due.id}/check-in", "/desk")
    assert checked_in.status_code == 303  # type: ignore[attr-defined]
    assert status_of(session, due) is S.IN_USE

    with frozen(NOW + timedelta(minutes=50)):
        out = post(client, f"/desk/bookings/{due.id}/check-out", "/desk", samples=4)
        again = post(client, f"/desk/bookings/{due.id}/check-out", "/desk", samples=4)

    assert (out.status_code, again.status_code) == (303, 303)  # type: ignore[attr-defined]
    assert status_of(session, due) is S.COMPLETED
    [record] = usage_of(session, due)
    assert record.samples == 4
    assert (record.started_at, record.ended_at) == (NOW, NOW + timedelta(minutes=50))


def test_every_desk_form_carries_the_csrf_token(
    client: TestClient, session: Session, labs: Labs
) -> None:
    booking(session, labs.instrument_a, labs.researcher, S.CONFIRMED, "2026-11-30 09:00")
    booking(session, labs.instrument_b, labs.researcher, S.IN_USE, "2026-11-30 08:00")
    login_page(client, labs.li.email)

    page = client.get("/desk").text
    tokens = [part.split('"', 1)[0] for part in page.split('name="csrf_token" value="')[1:]]

    assert len(tokens) == 4  # language switch, log out, check in, check out
    assert set(tokens) == {csrf_from(page)}


def test_the_desk_keeps_its_search_after_a_check_in(
    client: TestClient, session: Session, labs: Labs
) -> None:
    due = booking(session, labs.instrument_a, labs.researcher, S.CONFIRMED, "2026-11-30 09:00")
    login_page(client, labs.li.email)

    answer = post(client, f"/desk/bookings/{due.id}/check-in", "/desk", q="张 & 李")

    assert answer.headers["location"] == "/desk?done=check-in&q=%E5%BC%A0+%26+%E6%9D%8E"  # type: ignore[attr-defined]


def test_checking_in_too_early_says_so(client: TestClient, session: Session, labs: Labs) -> None:
    later = booking(session, labs.instrument_a, labs.researcher, S.CONFIRMED, "2026-11-30 15:00")
    login_page(client, labs.li.email)

    answer = post(client, f"/desk/bookings/{later.id}/check-in", "/desk")

    assert answer.status_code == 409  # type: ignore[attr-defined]
    assert "签到在预约开始前不久开放" in answer.text  # type: ignore[attr-defined]
    assert status_of(session, later) is S.CONFIRMED


def test_the_desk_cannot_touch_another_managers_booking(
    client: TestClient, session: Session, labs: Labs
) -> None:
    theirs = booking(session, labs.instrument_c, labs.researcher, S.CONFIRMED, "2026-11-30 09:00")
    login_page(client, labs.li.email)

    answer = post(client, f"/desk/bookings/{theirs.id}/check-in", "/desk")

    assert answer.status_code == 404  # type: ignore[attr-defined]
    assert status_of(session, theirs) is S.CONFIRMED


def test_a_desk_action_without_the_csrf_token_is_refused(
    client: TestClient, session: Session, labs: Labs
) -> None:
    due = booking(session, labs.instrument_a, labs.researcher, S.CONFIRMED, "2026-11-30 09:00")
    login_page(client, labs.li.email)

    assert client.post(f"/desk/bookings/{due.id}/check-in").status_code == 403
    assert status_of(session, due) is S.CONFIRMED


# --- QR codes ----------------------------------------------------------------------------


def test_the_qr_code_is_an_svg_of_the_instruments_check_in_address(
    client: TestClient, labs: Labs
) -> None:
    url = f"{BASE_URL}/checkin/{labs.instrument_a.id}"
    with mock.patch.object(desk.segno, "make", wraps=segno.make) as make:
        answer = client.get(f"/instruments/{labs.instrument_a.id}/qr.svg")

    assert answer.status_code == 200
    assert answer.headers["content-type"] == "image/svg+xml"
    assert answer.content.lstrip().startswith((b"<?xml", b"<svg"))
    make.assert_called_once_with(url, error="m")
    expected = io.BytesIO()
    segno.make(url, error="m").save(expected, kind="svg", scale=8, border=4, title=url)
    assert answer.content == expected.getvalue()  # the code of the check-in address itself
    assert "max-age" in answer.headers["cache-control"]
    cached = client.get(
        f"/instruments/{labs.instrument_a.id}/qr.svg",
        headers={"If-None-Match": answer.headers["etag"]},
    )
    assert cached.status_code == 304


def test_a_missing_instrument_has_no_qr_code(client: TestClient) -> None:
    assert client.get("/instruments/999999/qr.svg").status_code == 404


def test_a_manager_prints_the_qr_sheet_of_its_own_instruments_only(
    client: TestClient, session: Session, labs: Labs
) -> None:
    login_page(client, labs.li.email)

    sheet = client.get(f"/manage/instruments/{labs.instrument_a.id}/qr")
    foreign = client.get(f"/manage/instruments/{labs.instrument_c.id}/qr")

    assert sheet.status_code == 200
    assert f'src="/instruments/{labs.instrument_a.id}/qr.svg"' in sheet.text
    assert f"{BASE_URL}/checkin/{labs.instrument_a.id}" in sheet.text
    assert foreign.status_code == 404
    client.cookies.clear()
    login_page(client, labs.researcher.email)
    assert client.get(f"/manage/instruments/{labs.instrument_a.id}/qr").status_code == 403


# --- Check-in by QR code -----------------------------------------------------------------


def test_a_researcher_checks_in_and_out_after_scanning(
    client: TestClient, session: Session, labs: Labs
) -> None:
    mine = booking(session, labs.instrument_a, labs.researcher, S.CONFIRMED, "2026-11-30 09:00")
    login_page(client, labs.researcher.email)
    path = f"/checkin/{labs.instrument_a.id}"

    page = client.get(path)
    assert page.status_code == 200
    assert f'value="{mine.id}"' in page.text
    assert f"{path}/check-in" in page.text

    answer = post(client, f"{path}/check-in", path, booking_id=mine.id)
    assert answer.status_code == 303  # type: ignore[attr-defined]
    assert status_of(session, mine) is S.IN_USE
    assert f"{path}/check-out" in client.get(path).text

    with frozen(NOW + timedelta(minutes=40)):
        out = post(client, f"{path}/check-out", path, booking_id=mine.id, samples=2)
    assert out.status_code == 303  # type: ignore[attr-defined]
    assert status_of(session, mine) is S.COMPLETED
    [record] = usage_of(session, mine)
    assert (record.samples, record.user_id) == (2, labs.researcher.id)


def test_a_researcher_without_a_booking_today_is_told_so(
    client: TestClient, session: Session, labs: Labs
) -> None:
    booking(session, labs.instrument_a, labs.researcher, S.CONFIRMED, "2026-12-01 09:00")
    booking(session, labs.instrument_a, labs.researcher, S.COMPLETED, "2026-11-30 07:00")
    login_page(client, labs.researcher.email)

    page = client.get(f"/checkin/{labs.instrument_a.id}")

    assert page.status_code == 200
    assert 'id="no-booking"' in page.text
    assert "你今天在这台仪器上没有待使用的预约" in page.text
    assert "/check-in" not in page.text


def test_someone_elses_booking_cannot_be_checked_in_by_qr(
    client: TestClient, session: Session, labs: Labs
) -> None:
    theirs = booking(session, labs.instrument_a, labs.researcher, S.CONFIRMED, "2026-11-30 09:00")
    stranger = make_user(session, roles=[Role.RESEARCHER])
    login_page(client, stranger.email)
    path = f"/checkin/{labs.instrument_a.id}"

    answer = post(client, f"{path}/check-in", path, booking_id=theirs.id)
    on_other_instrument = post(
        client, f"/checkin/{labs.instrument_b.id}/check-in", path, booking_id=theirs.id
    )

    assert answer.status_code == 404  # type: ignore[attr-defined]
    assert on_other_instrument.status_code == 404  # type: ignore[attr-defined]
    assert status_of(session, theirs) is S.CONFIRMED


def test_scanning_before_logging_in_leads_back_after_login(client: TestClient, labs: Labs) -> None:
    answer = client.get(f"/checkin/{labs.instrument_a.id}", follow_redirects=False)

    assert answer.status_code == 303
    assert answer.headers["location"] == f"/login?next=/checkin/{labs.instrument_a.id}"


def test_times_on_the_check_in_page_name_the_facility_zone(
    client: TestClient, session: Session, labs: Labs
) -> None:
    booking(session, labs.instrument_a, labs.researcher, S.CONFIRMED, "2026-11-30 09:00")
    login_page(client, labs.researcher.email)

    page = client.get(f"/checkin/{labs.instrument_a.id}").text

    assert "2026-11-30 09:00–10:00 (Asia/Shanghai)" in page


@pytest.mark.parametrize("samples", ["²", "-1", "999999", "drei"])
def test_a_bad_sample_count_at_the_desk_is_shown_next_to_that_rows_field(
    client: TestClient, session: Session, labs: Labs, samples: str
) -> None:
    running = booking(session, labs.instrument_a, labs.researcher, S.IN_USE, "2026-11-30 08:00")
    login_page(client, labs.li.email)

    answer = post(client, f"/desk/bookings/{running.id}/check-out", "/desk", samples=samples)

    assert answer.status_code == 422  # type: ignore[attr-defined]
    text = answer.text  # type: ignore[attr-defined]
    assert f'id="samples-{running.id}-error"' in text
    assert "请输入 0 到 100000 之间的整数" in text
    assert f'value="{samples}"' in text
    assert status_of(session, running) is S.IN_USE


def test_a_bad_sample_count_after_scanning_is_shown_next_to_the_field(
    client: TestClient, session: Session, labs: Labs
) -> None:
    mine = booking(session, labs.instrument_a, labs.researcher, S.IN_USE, "2026-11-30 08:00")
    login_page(client, labs.researcher.email)
    path = f"/checkin/{labs.instrument_a.id}"

    answer = post(client, f"{path}/check-out", path, booking_id=mine.id, samples="999999")
    huge = post(client, f"{path}/check-out", path, booking_id=2**40, samples="1")

    assert answer.status_code == 422  # type: ignore[attr-defined]
    assert 'id="f-samples-error"' in answer.text  # type: ignore[attr-defined]
    assert 'value="999999"' in answer.text  # type: ignore[attr-defined]
    assert huge.status_code == 422  # type: ignore[attr-defined]
    assert status_of(session, mine) is S.IN_USE


def test_each_desk_button_names_whom_it_is_for(
    client: TestClient, session: Session, labs: Labs
) -> None:
    booking(session, labs.instrument_a, labs.researcher, S.CONFIRMED, "2026-11-30 09:00")
    login_page(client, labs.li.email)

    page = client.get("/desk").text

    assert '<span class="visually-hidden">: 张研究员' in page
