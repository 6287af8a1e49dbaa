"""The lab manager pages: dashboard, approval queue, facility calendar, usage records.

A manager sees and decides its own facilities only; a decision on several requests applies to
all of them or to none.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, col, select

from booking.models import Booking, UsageRecord
from booking.rules import BookingStatus, OperatedBy
from core.accounts.models import Organisation, User
from core.accounts.rules import Role, ScopeKind
from core.accounts.schemas import RoleGrant
from core.audit import AuditEntry
from core.clock import frozen
from core.db import ConnectionBoundDatabase
from instruments.models import Facility, Instrument
from instruments.rules import InstrumentStatus
from tests.factories import csrf_from, login_page, make_organisation, make_user
from tests.instruments.factories import make_facility, make_instrument
from tests.querycount import counted_statements

SHANGHAI = ZoneInfo("Asia/Shanghai")
S = BookingStatus


def at(local: str) -> datetime:
    """A Shanghai wall-clock time such as "2026-12-01 10:00", as aware UTC."""
    return datetime.fromisoformat(local).replace(tzinfo=SHANGHAI).astimezone(UTC)


NOW = at("2026-11-30 09:00")  # a Monday


@pytest.fixture(autouse=True)
def frozen_now() -> Iterator[None]:
    with frozen(NOW):
        yield


def manager_of(session: Session, *facilities: Facility, **fields: object) -> User:
    return make_user(
        session,
        roles=[
            RoleGrant(role=Role.LAB_MANAGER, scope_kind=ScopeKind.FACILITY, scope_id=f.id)
            for f in facilities
        ],
        **fields,
    )


@dataclass
class Labs:
    """Manager Li runs two facilities (A and B), manager Wang a third (C)."""

    university: Organisation
    facility_a: Facility
    facility_b: Facility
    facility_c: Facility
    instrument_a: Instrument
    instrument_b: Instrument
    instrument_c: Instrument
    li: User
    wang: User
    researcher: User


@pytest.fixture
def labs(session: Session) -> Labs:
    university = make_organisation(session, name="重庆测试大学")
    a = make_facility(session, organisation=university, name="分析测试中心")
    b = make_facility(session, organisation=university, name="材料表征平台")
    c = make_facility(session, organisation=university, name="生物医学平台")
    return Labs(
        university=university,
        facility_a=a,
        facility_b=b,
        facility_c=c,
        instrument_a=make_instrument(session, facility=a, name="场发射扫描电镜"),
        instrument_b=make_instrument(session, facility=b, name="X射线衍射仪"),
        instrument_c=make_instrument(session, facility=c, name="流式细胞仪"),
        li=manager_of(session, a, b, name="李经理"),
        wang=manager_of(session, c, name="王经理"),
        researcher=make_user(
            session, roles=[Role.RESEARCHER], organisation=university, name="张研究员"
        ),
    )


def booking(
    session: Session,
    instrument: Instrument,
    user: User,
    status: BookingStatus,
    start: str,
    *,
    hours: int = 1,
    purpose: str = "",
    **fields: object,
) -> Booking:
    """A booking in ``status`` (written directly: earlier operations are not under test)."""
    begin = at(start)
    values: dict[str, object] = {
        "instrument_id": instrument.id,
        "facility_id": instrument.facility_id,
        "user_id": user.id,
        "organisation_id": user.organisation_id,
        "start_at": begin,
        "end_at": begin + timedelta(hours=hours),
        "held_until": begin + timedelta(hours=hours),
        "status": status,
        "operated_by": OperatedBy.SELF,
        "purpose": purpose,
        "expires_at": begin if status is S.PENDING else None,
        "created_by_id": user.id,
    }
    values.update(fields)
    made = Booking(**values)  # type: ignore[arg-type]
    session.add(made)
    session.flush()
    return made


def pending(session: Session, labs: Labs, instrument: Instrument, n: int) -> list[Booking]:
    """``n`` requests on consecutive mornings from Tuesday, each an hour."""
    return [
        booking(
            session,
            instrument,
            labs.researcher,
            S.PENDING,
            f"{(NOW + timedelta(days=i + 1)).astimezone(SHANGHAI):%Y-%m-%d} 10:00",
            purpose=f"样品测试 {i}",
        )
        for i in range(n)
    ]


def status_of(session: Session, made: Booking) -> BookingStatus:
    session.expire_all()
    found = session.get(Booking, made.id)
    assert found is not None
    return BookingStatus(found.status)


def decide(client: TestClient, data: dict[str, object]) -> object:
    token = csrf_from(client.get("/manage/approvals").text)
    return client.post(
        "/manage/approvals", data={**data, "csrf_token": token}, follow_redirects=False
    )


def figure(html: str, element_id: str) -> int:
    return int(html.split(f'id="{element_id}">', 1)[1].split("<", 1)[0])


# --- Who may open the manager pages ------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/manage", "/manage/approvals", "/manage/usage", "/desk"], ids=str
)
def test_researchers_and_planners_are_refused_the_manager_pages(
    client: TestClient, session: Session, labs: Labs, path: str
) -> None:
    planner = make_user(session, roles=[Role.PLANNER])
    for user in (labs.researcher, planner):
        client.cookies.clear()
        login_page(client, user.email)
        assert client.get(path).status_code == 403


def test_the_manager_pages_need_a_login(client: TestClient) -> None:
    answer = client.get("/manage/approvals", follow_redirects=False)
    assert answer.status_code == 303
    assert answer.headers["location"].startswith("/login?next=/manage/approvals")


# --- Dashboard ---------------------------------------------------------------------------


def test_the_dashboard_counts_the_managers_own_facilities_only(
    client: TestClient, session: Session, labs: Labs
) -> None:
    pending(session, labs, labs.instrument_a, 2)
    pending(session, labs, labs.instrument_b, 1)
    pending(session, labs, labs.instrument_c, 5)
    booking(session, labs.instrument_a, labs.researcher, S.CONFIRMED, "2026-11-30 14:00")
    booking(session, labs.instrument_c, labs.researcher, S.CONFIRMED, "2026-11-30 10:00")
    booking(session, labs.instrument_c, labs.researcher, S.IN_USE, "2026-11-30 08:30")
    booking(session, labs.instrument_a, labs.researcher, S.CONFIRMED, "2026-12-01 14:00")
    labs.instrument_b.status = InstrumentStatus.MAINTENANCE
    session.add(labs.instrument_b)
    session.flush()

    login_page(client, labs.li.email)
    li_page = client.get("/manage").text
    client.cookies.clear()
    login_page(client, labs.wang.email)
    wang_page = client.get("/manage").text

    assert (figure(li_page, "pending-count"), figure(li_page, "today-count")) == (3, 1)
    assert figure(li_page, "unavailable-count") == 1
    assert "X射线衍射仪" in li_page  # in maintenance
    assert "分析测试中心" in li_page
    assert "材料表征平台" in li_page
    assert "生物医学平台" not in li_page
    assert "流式细胞仪" not in li_page
    assert (figure(wang_page, "pending-count"), figure(wang_page, "today-count")) == (5, 2)
    assert figure(wang_page, "unavailable-count") == 0
    assert "分析测试中心" not in wang_page
    assert f"/manage/facilities/{labs.facility_c.id}/calendar" in wang_page
    assert f"/desk?facility_id={labs.facility_c.id}" in wang_page


def test_a_manager_narrows_the_dashboard_to_one_facility_but_not_to_anothers(
    client: TestClient, session: Session, labs: Labs
) -> None:
    pending(session, labs, labs.instrument_a, 2)
    pending(session, labs, labs.instrument_b, 1)
    login_page(client, labs.li.email)

    narrowed = client.get(f"/manage?facility_id={labs.facility_b.id}")

    assert figure(narrowed.text, "pending-count") == 1
    assert client.get(f"/manage?facility_id={labs.facility_c.id}").status_code == 404


def test_an_admin_sees_every_facility(client: TestClient, session: Session, labs: Labs) -> None:
    pending(session, labs, labs.instrument_a, 1)
    pending(session, labs, labs.instrument_c, 2)
    admin = make_user(session, roles=[Role.ADMIN])
    login_page(client, admin.email)

    page = client.get("/manage").text

    assert figure(page, "pending-count") >= 3
    assert "生物医学平台" in page
    assert "分析测试中心" in page


# --- Approval queue ----------------------------------------------------------------------


def test_the_queue_shows_who_asks_for_what_oldest_request_first(
    client: TestClient, session: Session, labs: Labs
) -> None:
    later, earlier = pending(session, labs, labs.instrument_a, 2)
    later.created_at, earlier.created_at = NOW - timedelta(hours=1), NOW - timedelta(hours=5)
    later.overrides = ["outside_opening_hours"]
    session.add_all([later, earlier])
    pending(session, labs, labs.instrument_c, 1)  # Wang's
    session.flush()
    login_page(client, labs.li.email)

    page = client.get("/manage/approvals").text

    assert page.index(f'id="request-{earlier.id}"') < page.index(f'id="request-{later.id}"')
    assert "张研究员" in page
    assert labs.researcher.email in page
    assert "重庆测试大学" in page
    assert "样品测试 0" in page
    assert "超出开放时间" in page  # the overridden rule in words, not its code
    assert "outside_opening_hours" not in page
    assert "流式细胞仪" not in page
    assert "(Asia/Shanghai)" in page


def test_the_queue_reads_in_english_too(client: TestClient, session: Session, labs: Labs) -> None:
    pending(session, labs, labs.instrument_a, 1)
    login_page(client, labs.li.email)
    client.post(
        "/lang",
        data={"lang": "en", "next": "/", "csrf_token": csrf_from(client.get("/").text)},
    )

    page = client.get("/manage/approvals").text

    assert "Approval queue" in page
    assert "Approve selected" in page
    assert "审批队列" not in page


def test_the_queue_filters_by_instrument(client: TestClient, session: Session, labs: Labs) -> None:
    [on_a] = pending(session, labs, labs.instrument_a, 1)
    [on_b] = pending(session, labs, labs.instrument_b, 1)
    login_page(client, labs.li.email)

    page = client.get(f"/manage/approvals?instrument_id={labs.instrument_b.id}").text

    assert f'id="request-{on_b.id}"' in page
    assert f'id="request-{on_a.id}"' not in page


def test_a_manager_approves_one_request(client: TestClient, session: Session, labs: Labs) -> None:
    [request] = pending(session, labs, labs.instrument_a, 1)
    login_page(client, labs.li.email)

    answer = decide(client, {"action": "approve", "booking_id": request.id})

    assert answer.status_code == 303  # type: ignore[attr-defined]
    assert status_of(session, request) is S.CONFIRMED
    decided = session.get(Booking, request.id)
    assert decided is not None
    assert decided.decided_by_id == labs.li.id
    assert "已批准：1" in client.get(answer.headers["location"]).text  # type: ignore[attr-defined]


def test_a_manager_approves_several_requests_at_once(
    client: TestClient, session: Session, labs: Labs
) -> None:
    requests = pending(session, labs, labs.instrument_a, 2) + pending(
        session, labs, labs.instrument_b, 1
    )
    login_page(client, labs.li.email)

    answer = decide(client, {"action": "approve", "booking_id": [r.id for r in requests]})

    assert answer.status_code == 303  # type: ignore[attr-defined]
    assert [status_of(session, r) for r in requests] == [S.CONFIRMED] * 3


def test_a_bulk_rejection_keeps_its_reason(
    client: TestClient, session: Session, labs: Labs
) -> None:
    requests = pending(session, labs, labs.instrument_a, 2)
    login_page(client, labs.li.email)

    answer = decide(
        client,
        {"action": "reject", "booking_id": [r.id for r in requests], "reason": "设备年检"},
    )

    assert answer.status_code == 303  # type: ignore[attr-defined]
    session.expire_all()
    for made in requests:
        found = session.get(Booking, made.id)
        assert found is not None
        assert (found.status, found.reason) == (S.REJECTED, "设备年检")


def test_rejecting_without_a_reason_is_refused_next_to_the_field(
    client: TestClient, session: Session, labs: Labs
) -> None:
    requests = pending(session, labs, labs.instrument_a, 2)
    login_page(client, labs.li.email)

    answer = decide(client, {"action": "reject", "booking_id": [r.id for r in requests]})

    assert answer.status_code == 422  # type: ignore[attr-defined]
    assert 'id="f-reason-error"' in answer.text  # type: ignore[attr-defined]
    assert "请说明拒绝的理由" in answer.text  # type: ignore[attr-defined]
    for made in requests:  # still selected, still pending
        assert f'value="{made.id}" form="bulk" id="pick-{made.id}" checked' in answer.text  # type: ignore[attr-defined]
        assert status_of(session, made) is S.PENDING


def test_rejecting_one_row_without_a_reason_shows_the_error_on_that_row(
    client: TestClient, session: Session, labs: Labs
) -> None:
    [request] = pending(session, labs, labs.instrument_a, 1)
    login_page(client, labs.li.email)

    answer = decide(client, {"action": "reject", "booking_id": request.id, "row": request.id})

    assert answer.status_code == 422  # type: ignore[attr-defined]
    assert f'id="f-reason-{request.id}-error"' in answer.text  # type: ignore[attr-defined]


def test_a_batch_with_another_managers_booking_is_refused_whole_and_changes_nothing(
    client: TestClient, session: Session, labs: Labs
) -> None:
    mine = pending(session, labs, labs.instrument_a, 2)
    [theirs] = pending(session, labs, labs.instrument_c, 1)
    login_page(client, labs.li.email)

    answer = decide(client, {"action": "approve", "booking_id": [*(r.id for r in mine), theirs.id]})

    assert answer.status_code == 404  # type: ignore[attr-defined]
    assert [status_of(session, r) for r in [*mine, theirs]] == [S.PENDING] * 3


def test_a_batch_with_an_already_decided_request_says_which_and_changes_nothing(
    client: TestClient, session: Session, labs: Labs
) -> None:
    waiting = pending(session, labs, labs.instrument_a, 2)
    decided = booking(
        session,
        labs.instrument_b,
        labs.researcher,
        S.REJECTED,
        "2026-12-02 15:00",
        decided_by_id=labs.wang.id,
    )
    login_page(client, labs.li.email)

    answer = decide(
        client, {"action": "approve", "booking_id": [*(r.id for r in waiting), decided.id]}
    )

    assert answer.status_code == 409  # type: ignore[attr-defined]
    assert "未做任何更改" in answer.text  # type: ignore[attr-defined]
    assert f"#{decided.id}" in answer.text
    assert "已被拒绝" in answer.text
    assert [status_of(session, r) for r in waiting] == [S.PENDING] * 2
    for made in waiting:  # ready to send again without the decided one
        assert f'id="pick-{made.id}" checked' in answer.text  # type: ignore[attr-defined]


def test_an_expired_request_in_a_batch_blocks_it(
    client: TestClient, session: Session, labs: Labs
) -> None:
    [waiting] = pending(session, labs, labs.instrument_a, 1)
    lapsed = booking(
        session,
        labs.instrument_a,
        labs.researcher,
        S.PENDING,
        "2026-12-03 10:00",
        expires_at=NOW - timedelta(minutes=1),
    )
    login_page(client, labs.li.email)

    answer = decide(client, {"action": "approve", "booking_id": [waiting.id, lapsed.id]})

    assert answer.status_code == 409  # type: ignore[attr-defined]
    assert "申请已过期" in answer.text  # type: ignore[attr-defined]
    assert status_of(session, waiting) is S.PENDING
    assert f'id="pick-{waiting.id}" checked' in answer.text  # type: ignore[attr-defined]
    assert f'id="pick-{lapsed.id}">' in answer.text  # type: ignore[attr-defined]


def test_sending_the_same_decision_twice_decides_once(
    client: TestClient, session: Session, labs: Labs
) -> None:
    requests = pending(session, labs, labs.instrument_a, 2)
    login_page(client, labs.li.email)
    token = csrf_from(client.get("/manage/approvals").text)
    form = {"action": "approve", "booking_id": [r.id for r in requests], "csrf_token": token}

    first = client.post("/manage/approvals", data=form, follow_redirects=False)
    second = client.post("/manage/approvals", data=form, follow_redirects=False)

    assert (first.status_code, second.status_code) == (303, 303)
    confirmations = session.exec(
        select(AuditEntry).where(
            AuditEntry.action == "booking.confirmed",
            col(AuditEntry.subject_id).in_([str(r.id) for r in requests]),
        )
    ).all()
    assert len(confirmations) == 2


def test_a_decision_without_the_csrf_token_is_refused(
    client: TestClient, session: Session, labs: Labs
) -> None:
    [request] = pending(session, labs, labs.instrument_a, 1)
    login_page(client, labs.li.email)

    answer = client.post("/manage/approvals", data={"action": "approve", "booking_id": request.id})

    assert answer.status_code == 403
    assert status_of(session, request) is S.PENDING


def test_every_form_of_the_manager_pages_carries_the_csrf_token(
    client: TestClient, session: Session, labs: Labs
) -> None:
    pending(session, labs, labs.instrument_a, 2)
    usage(session, labs.instrument_a, labs.researcher, "2026-11-27 09:00")
    login_page(client, labs.li.email)

    for path in ("/manage/approvals", "/manage/usage"):
        page = client.get(path).text
        tokens = [part.split('"', 1)[0] for part in page.split('name="csrf_token" value="')[1:]]
        assert len(tokens) > 3
        assert set(tokens) == {csrf_from(page)}


def test_a_researcher_cannot_decide(client: TestClient, session: Session, labs: Labs) -> None:
    [request] = pending(session, labs, labs.instrument_a, 1)
    login_page(client, labs.researcher.email)
    token = csrf_from(client.get("/account").text)

    answer = client.post(
        "/manage/approvals",
        data={"action": "approve", "booking_id": request.id, "csrf_token": token},
    )

    assert answer.status_code == 403
    assert status_of(session, request) is S.PENDING


def test_choosing_nothing_is_refused(client: TestClient, session: Session, labs: Labs) -> None:
    pending(session, labs, labs.instrument_a, 1)
    login_page(client, labs.li.email)

    assert decide(client, {"action": "approve"}).status_code == 422  # type: ignore[attr-defined]
    assert decide(client, {"action": "burn", "booking_id": 1}).status_code == 422  # type: ignore[attr-defined]


# --- Query counts ------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/manage/approvals", "/manage", "/desk"], ids=str)
def test_the_heaviest_pages_read_in_a_fixed_number_of_queries(
    client: TestClient,
    session: Session,
    database: ConnectionBoundDatabase,
    labs: Labs,
    path: str,
) -> None:
    login_page(client, labs.li.email)

    def statements_with(n: int) -> int:
        made = pending(session, labs, labs.instrument_a, n) + pending(
            session, labs, labs.instrument_b, n
        )
        for i, row in enumerate(made[:n]):  # some today, for the dashboard and the desk
            row.start_at = NOW + timedelta(hours=i)
            row.end_at = row.held_until = row.start_at + timedelta(hours=1)
            row.status = S.CONFIRMED if i % 2 else S.PENDING
            row.user_id = make_user(session, password=None, organisation=labs.university).id or 0
        session.flush()
        with counted_statements(database) as statements:
            assert client.get(path).status_code == 200
        for row in made:
            session.delete(row)
        session.flush()
        return len(statements)

    assert statements_with(2) == statements_with(20)


def test_the_usage_page_reads_in_a_fixed_number_of_queries(
    client: TestClient, session: Session, database: ConnectionBoundDatabase, labs: Labs
) -> None:
    login_page(client, labs.li.email)

    def statements_with(n: int) -> int:
        made = [
            usage(
                session,
                labs.instrument_a,
                make_user(session, password=None, organisation=labs.university),
                f"{(NOW - timedelta(days=i + 1)).astimezone(SHANGHAI):%Y-%m-%d} 09:00",
            )
            for i in range(n)
        ]
        with counted_statements(database) as statements:
            assert client.get("/manage/usage").status_code == 200
        for record in made:
            session.delete(record)
        session.flush()
        return len(statements)

    assert statements_with(2) == statements_with(20)


# --- Facility calendar -------------------------------------------------------------------


def test_the_facility_calendar_draws_a_lane_per_instrument_for_a_day(
    client: TestClient, session: Session, labs: Labs
) -> None:
    second = make_instrument(session, facility=labs.facility_a, name="透射电镜")
    booking(session, labs.instrument_a, labs.researcher, S.CONFIRMED, "2026-12-01 09:00", hours=2)
    booking(session, labs.instrument_a, labs.researcher, S.CONFIRMED, "2026-12-02 09:00")
    login_page(client, labs.li.email)

    page = client.get(f"/manage/facilities/{labs.facility_a.id}/calendar?day=2026-12-01")

    assert page.status_code == 200
    assert f'id="lane-{labs.instrument_a.id}"' in page.text
    assert f'id="lane-{second.id}"' in page.text
    # 09:00–11:00 on a grid from 08:00 in quarter hours: columns 5 to 13.
    assert "block from-5 to-13 status-confirmed" in page.text
    assert "2026-12-01 09:00–11:00 (Asia/Shanghai)" in page.text
    assert page.text.count("block from-") == 1
    assert "?day=2026-11-30" in page.text
    assert "?day=2026-12-02" in page.text


def test_the_calendar_feed_gives_managers_every_detail(
    client: TestClient, session: Session, labs: Labs
) -> None:
    second = make_instrument(session, facility=labs.facility_a, name="透射电镜")
    shown = booking(
        session, labs.instrument_a, labs.researcher, S.PENDING, "2026-12-01 10:00", purpose="成像"
    )
    other = booking(session, second, labs.researcher, S.CONFIRMED, "2026-12-01 13:00")
    booking(session, labs.instrument_a, labs.researcher, S.CANCELLED, "2026-12-01 15:00")
    booking(session, labs.instrument_a, labs.researcher, S.CONFIRMED, "2026-12-09 10:00")
    login_page(client, labs.li.email)
    url = f"/manage/facilities/{labs.facility_a.id}/calendar.json"
    window = {"start": "2026-11-30T00:00:00+08:00", "end": "2026-12-07T00:00:00+08:00"}

    events = client.get(url, params=window).json()
    filtered = client.get(url, params={**window, "instrument_id": second.id}).json()

    assert {e["id"] for e in events} == {f"booking-{shown.id}", f"booking-{other.id}"}
    detail = next(e for e in events if e["id"] == f"booking-{shown.id}")["extendedProps"]
    assert detail["user"] == "张研究员"
    assert detail["email"] == labs.researcher.email
    assert (detail["purpose"], detail["status"]) == ("成像", "pending")
    assert [e["id"] for e in filtered] == [f"booking-{other.id}"]


def test_the_calendar_is_the_facility_managers_only(
    client: TestClient, session: Session, labs: Labs
) -> None:
    window = {"start": "2026-11-30", "end": "2026-12-07"}
    login_page(client, labs.wang.email)
    assert client.get(f"/manage/facilities/{labs.facility_a.id}/calendar").status_code == 404
    assert (
        client.get(
            f"/manage/facilities/{labs.facility_a.id}/calendar.json", params=window
        ).status_code
        == 404
    )
    assert (
        client.get(
            f"/manage/facilities/{labs.facility_c.id}/calendar.json",
            params={**window, "instrument_id": labs.instrument_a.id},
        ).status_code
        == 404
    )
    client.cookies.clear()
    login_page(client, labs.researcher.email)
    assert client.get(f"/manage/facilities/{labs.facility_a.id}/calendar").status_code == 403


def test_the_calendar_feed_refuses_a_bad_window(
    client: TestClient, session: Session, labs: Labs
) -> None:
    login_page(client, labs.li.email)
    url = f"/manage/facilities/{labs.facility_a.id}/calendar.json"

    assert client.get(url, params={"start": "2026-11-30", "end": "2027-03-01"}).status_code == 422
    assert client.get(url, params={"start": "monday", "end": "2026-12-01"}).status_code == 422


# --- Usage records -----------------------------------------------------------------------


def usage(session: Session, instrument: Instrument, user: User, start: str) -> UsageRecord:
    record = UsageRecord(
        instrument_id=instrument.id or 0,
        user_id=user.id or 0,
        organisation_id=user.organisation_id,
        started_at=at(start),
        ended_at=at(start) + timedelta(hours=2),
        samples=3,
    )
    session.add(record)
    session.flush()
    return record


def test_the_usage_list_shows_the_managers_records_with_filters(
    client: TestClient, session: Session, labs: Labs
) -> None:
    early = usage(session, labs.instrument_a, labs.researcher, "2026-11-20 09:00")
    late = usage(session, labs.instrument_b, labs.researcher, "2026-11-27 09:00")
    foreign = usage(session, labs.instrument_c, labs.researcher, "2026-11-27 13:00")
    login_page(client, labs.li.email)

    everything = client.get("/manage/usage").text
    by_date = client.get("/manage/usage?from=2026-11-25&to=2026-11-30").text
    by_instrument = client.get(f"/manage/usage?instrument_id={labs.instrument_a.id}").text

    assert f'id="usage-{early.id}"' in everything
    assert f'id="usage-{late.id}"' in everything
    assert f'id="usage-{foreign.id}"' not in everything
    assert f'id="usage-{early.id}"' not in by_date
    assert f'id="usage-{late.id}"' in by_date
    assert f'id="usage-{late.id}"' not in by_instrument


def correct(client: TestClient, usage_id: int, **data: str) -> object:
    token = csrf_from(client.get("/manage/usage").text)
    return client.post(
        f"/manage/usage/{usage_id}/correct",
        data={**data, "csrf_token": token},
        follow_redirects=False,
    )


def test_a_correction_changes_the_record_and_is_audited(
    client: TestClient, session: Session, labs: Labs
) -> None:
    record = usage(session, labs.instrument_a, labs.researcher, "2026-11-27 09:00")
    login_page(client, labs.li.email)

    answer = correct(
        client,
        record.id or 0,
        started_at="2026-11-27T09:30",
        ended_at="2026-11-27T12:00",
        samples="5",
        note="用户忘记签退",
    )

    assert answer.status_code == 303  # type: ignore[attr-defined]
    session.expire_all()
    corrected = session.get(UsageRecord, record.id)
    assert corrected is not None
    assert (corrected.started_at, corrected.ended_at) == (
        at("2026-11-27 09:30"),
        at("2026-11-27 12:00"),
    )
    assert (corrected.samples, corrected.corrected_by_id) == (5, labs.li.id)
    entry = session.exec(
        select(AuditEntry).where(
            AuditEntry.action == "usage.corrected", AuditEntry.subject_id == str(record.id)
        )
    ).one()
    assert entry.actor_id == labs.li.id
    assert entry.data["note"] == "用户忘记签退"
    assert entry.data["before"]["started_at"] == at("2026-11-27 09:00").isoformat()


def test_a_correction_needs_a_reason_and_sane_times(
    client: TestClient, session: Session, labs: Labs
) -> None:
    record = usage(session, labs.instrument_a, labs.researcher, "2026-11-27 09:00")
    login_page(client, labs.li.email)

    no_reason = correct(
        client, record.id or 0, started_at="2026-11-27T09:30", ended_at="2026-11-27T12:00"
    )
    backwards = correct(
        client,
        record.id or 0,
        started_at="2026-11-27T13:00",
        ended_at="2026-11-27T12:00",
        note="改时间",
    )

    assert no_reason.status_code == 422  # type: ignore[attr-defined]
    assert f'id="f-note-{record.id}-error"' in no_reason.text  # type: ignore[attr-defined]
    assert 'value="2026-11-27T09:30"' in no_reason.text  # type: ignore[attr-defined]
    assert backwards.status_code == 422  # type: ignore[attr-defined]
    assert f'id="f-ended_at-{record.id}-error"' in backwards.text  # type: ignore[attr-defined]
    session.expire_all()
    unchanged = session.get(UsageRecord, record.id)
    assert unchanged is not None
    assert unchanged.corrected_at is None


def test_another_managers_usage_record_cannot_be_corrected(
    client: TestClient, session: Session, labs: Labs
) -> None:
    record = usage(session, labs.instrument_c, labs.researcher, "2026-11-27 09:00")
    login_page(client, labs.li.email)

    answer = correct(client, record.id or 0, started_at="2026-11-27T09:30", note="篡改")

    assert answer.status_code == 404  # type: ignore[attr-defined]


def walk_in(client: TestClient, **data: object) -> object:
    page = client.get("/manage/usage").text
    key = page.split('name="form_key" value="', 1)[1].split('"', 1)[0]
    form = {"csrf_token": csrf_from(page), "form_key": key, **data}
    return client.post("/manage/usage/walk-in", data=form, follow_redirects=False), form


def test_a_walk_in_use_is_recorded_once_however_often_it_is_sent(
    client: TestClient, session: Session, labs: Labs
) -> None:
    login_page(client, labs.li.email)

    first, form = walk_in(
        client,
        instrument_id=labs.instrument_a.id,
        email=labs.researcher.email,
        started_at="2026-11-30T07:00",
        ended_at="2026-11-30T08:30",
        samples="2",
        kind="use",
        note="临时上机",
    )
    again = client.post("/manage/usage/walk-in", data=form, follow_redirects=False)

    assert (first.status_code, again.status_code) == (303, 303)  # type: ignore[attr-defined]
    records = session.exec(
        select(UsageRecord).where(UsageRecord.instrument_id == labs.instrument_a.id)
    ).all()
    assert len(records) == 1
    assert (records[0].user_id, records[0].operator_id, records[0].samples) == (
        labs.researcher.id,
        labs.li.id,
        2,
    )
    assert records[0].started_at == at("2026-11-30 07:00")


def test_a_walk_in_with_an_unknown_user_is_refused_with_the_values_kept(
    client: TestClient, session: Session, labs: Labs
) -> None:
    login_page(client, labs.li.email)

    answer, _ = walk_in(
        client,
        instrument_id=labs.instrument_a.id,
        email="nobody@example.cn",
        started_at="2026-11-30T07:00",
        ended_at="2026-11-30T08:30",
    )

    assert answer.status_code == 422  # type: ignore[attr-defined]
    assert 'id="f-email-error"' in answer.text  # type: ignore[attr-defined]
    assert 'value="nobody@example.cn"' in answer.text  # type: ignore[attr-defined]


def test_a_walk_in_on_another_managers_instrument_is_not_found(
    client: TestClient, session: Session, labs: Labs
) -> None:
    login_page(client, labs.li.email)

    answer, _ = walk_in(
        client,
        instrument_id=labs.instrument_c.id,
        email=labs.researcher.email,
        started_at="2026-11-30T07:00",
        ended_at="2026-11-30T08:30",
    )

    assert answer.status_code == 404  # type: ignore[attr-defined]


# --- Review findings: bounds, walk-in lookup and key, labels, zones -------------------------

HUGE = str(2**40)


@pytest.mark.parametrize(
    "path",
    [
        "/manage?facility_id={huge}",
        "/manage?facility_id={sup}",
        "/manage/approvals?facility_id={huge}",
        "/manage/approvals?instrument_id={huge}",
        "/manage/usage?instrument_id={huge}",
        "/manage/usage?from=0001-01-01",
        "/manage/usage?to=9999-12-31",
        "/manage/facilities/{huge}/calendar",
        "/manage/facilities/{a}/calendar?day=9999-12-31",
        "/manage/facilities/{a}/calendar?day=0001-01-01",
        "/manage/facilities/{a}/calendar.json?start=0001-01-01&end=0001-01-05",
        "/manage/facilities/{a}/calendar.json?start=2026-11-30&end=2026-12-07&instrument_id={huge}",
        "/desk?instrument_id={huge}",
        "/desk?facility_id={sup}",
        "/checkin/{huge}",
        "/instruments/{huge}/qr.svg",
        "/manage/instruments/{huge}/qr",
    ],
)
def test_ids_and_days_beyond_range_are_refused_not_a_server_error(
    client: TestClient, session: Session, labs: Labs, path: str
) -> None:
    login_page(client, labs.li.email)

    answer = client.get(path.format(huge=HUGE, sup="²", a=labs.facility_a.id))

    assert answer.status_code in (404, 422)


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/manage/approvals", "booking_id"),
        ("/manage/usage/{huge}/correct", "note"),
        ("/manage/usage/walk-in", "instrument_id"),
        ("/desk/bookings/{huge}/check-in", "q"),
    ],
)
@pytest.mark.parametrize("value", [HUGE, "²"])
def test_posted_ids_beyond_range_are_refused_not_a_server_error(
    client: TestClient, session: Session, labs: Labs, path: str, field: str, value: str
) -> None:
    login_page(client, labs.li.email)
    token = csrf_from(client.get("/manage/usage").text)

    answer = client.post(
        path.format(huge=HUGE),
        data={"csrf_token": token, field: value, "action": "approve", "note": "x"},
        follow_redirects=False,
    )

    assert answer.status_code in (404, 422)


def test_samples_in_other_scripts_or_too_many_are_refused_next_to_the_field(
    client: TestClient, session: Session, labs: Labs
) -> None:
    login_page(client, labs.li.email)
    base = {
        "instrument_id": labs.instrument_a.id,
        "email": labs.researcher.email,
        "started_at": "2026-11-30T07:00",
        "ended_at": "2026-11-30T08:30",
    }

    for samples in ("²", "999999"):
        answer, _ = walk_in(client, **base, samples=samples)

        assert answer.status_code == 422  # type: ignore[attr-defined]
        assert 'id="f-samples-error"' in answer.text  # type: ignore[attr-defined]
        assert "请输入 0 到 100000 之间的整数" in answer.text  # type: ignore[attr-defined]
        assert "Input should be" not in answer.text  # type: ignore[attr-defined]


def test_a_walk_in_finds_the_user_by_exact_address_among_similar_ones(
    client: TestClient, session: Session, labs: Labs
) -> None:
    for n in range(25):  # addresses containing the wanted one, which a substring search ranks first
        make_user(session, email=f"a{n:02d}_b@example.cn")
    wanted = make_user(session, email="zz_b@example.cn")
    make_user(session, email="zzxb@example.cn")  # "_" must not match any character
    login_page(client, labs.li.email)

    answer, _ = walk_in(
        client,
        instrument_id=labs.instrument_a.id,
        email="ZZ_B@example.cn",
        started_at="2026-11-30T07:00",
        ended_at="2026-11-30T08:30",
    )
    missing, _ = walk_in(
        client,
        instrument_id=labs.instrument_a.id,
        email="zz%b@example.cn",
        started_at="2026-11-30T07:00",
        ended_at="2026-11-30T08:30",
    )

    assert answer.status_code == 303  # type: ignore[attr-defined]
    record = session.exec(
        select(UsageRecord).where(UsageRecord.instrument_id == labs.instrument_a.id)
    ).one()
    assert record.user_id == wanted.id
    assert missing.status_code == 422  # type: ignore[attr-defined]


def test_a_walk_in_form_sent_again_with_other_values_says_it_was_used(
    client: TestClient, session: Session, labs: Labs
) -> None:
    login_page(client, labs.li.email)
    first, form = walk_in(
        client,
        instrument_id=labs.instrument_a.id,
        email=labs.researcher.email,
        started_at="2026-11-30T07:00",
        ended_at="2026-11-30T08:30",
    )

    changed = client.post(
        "/manage/usage/walk-in",
        data={**form, "started_at": "2026-11-30T05:00", "ended_at": "2026-11-30T06:00"},
        follow_redirects=False,
    )

    assert first.status_code == 303  # type: ignore[attr-defined]
    assert changed.status_code == 422
    assert "此表单已经提交过" in changed.text
    records = session.exec(
        select(UsageRecord).where(UsageRecord.instrument_id == labs.instrument_a.id)
    ).all()
    assert [r.started_at for r in records] == [at("2026-11-30 07:00")]


def test_the_week_feed_names_statuses_and_outages_in_the_readers_language(
    client: TestClient, session: Session, labs: Labs
) -> None:
    shown = booking(session, labs.instrument_a, labs.researcher, S.PENDING, "2026-12-01 10:00")
    login_page(client, labs.li.email)
    url = f"/manage/facilities/{labs.facility_a.id}/calendar.json"
    window = {"start": "2026-11-30T00:00:00+08:00", "end": "2026-12-07T00:00:00+08:00"}

    events = client.get(url, params=window).json()
    too_long = client.get(url, params={"start": "2026-11-01", "end": "2027-03-01"})
    page = client.get(f"/manage/facilities/{labs.facility_a.id}/calendar").text

    event = next(e for e in events if e["id"] == f"booking-{shown.id}")
    assert event["extendedProps"]["status_label"] == "待审批"
    assert "待审批" in event["title"]
    assert too_long.status_code == 422
    assert "每次请查询 1 到 62 天" in too_long.text
    assert 'data-failure="本周日程加载失败' in page
    assert 'role="region"' in page


def test_today_is_each_facilitys_own_day(client: TestClient, session: Session, labs: Labs) -> None:
    labs.facility_a.timezone = "Europe/Berlin"  # 09:00 in Shanghai is 02:00 in Berlin
    session.add(labs.facility_a)
    session.flush()
    # Sunday 23:00 in Berlin: already Monday in Shanghai, but not "today" at the Berlin facility.
    sunday = booking(session, labs.instrument_a, labs.researcher, S.CONFIRMED, "2026-11-30 06:00")
    # Monday 10:00 in Berlin: Monday 17:00 in Shanghai.
    monday = booking(session, labs.instrument_a, labs.researcher, S.CONFIRMED, "2026-11-30 17:00")
    login_page(client, labs.li.email)

    dashboard = client.get("/manage", params={"facility_id": labs.facility_a.id}).text
    desk_page = client.get("/desk", params={"facility_id": labs.facility_a.id}).text

    assert "2026-11-30 (Europe/Berlin)" in dashboard
    assert f'id="desk-{monday.id}"' in desk_page
    assert f'id="desk-{sunday.id}"' not in desk_page
    assert "(Europe/Berlin)" in desk_page


@pytest.mark.parametrize("moment", ["0001-01-01T00:00", "9999-12-31T23:59"])
def test_a_walk_in_at_the_calendars_ends_is_refused_in_words(
    client: TestClient, session: Session, labs: Labs, moment: str
) -> None:
    login_page(client, labs.li.email)

    answer, _ = walk_in(
        client,
        instrument_id=labs.instrument_a.id,
        email=labs.researcher.email,
        started_at=moment,
        ended_at=moment,
    )

    assert answer.status_code == 422  # type: ignore[attr-defined]
    assert "Input should" not in answer.text  # type: ignore[attr-defined]
    assert session.exec(select(UsageRecord)).all() == []
