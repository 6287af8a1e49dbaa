"""No double booking, ever: many processes racing for one instrument, on both databases."""

from __future__ import annotations

import random
import subprocess
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from itertools import combinations
from pathlib import Path

import httpx
import pytest
from sqlmodel import col, func, select

from booking.models import Booking
from booking.rules import HELD_STATUSES, BookingStatus
from core import audit
from core.accounts import service as accounts
from core.accounts.rules import OrganisationType
from core.accounts.schemas import OrganisationCreate, UserCreate
from core.auth import service as auth
from core.clock import now
from core.db import Database
from core.settings import Settings
from instruments import service as catalogue
from instruments.rules import Category, OperationMode
from instruments.schemas import FacilityCreate, InstrumentCreate, OpeningSpanIn
from tests.servers import LABSHARE, REPO_ROOT, WAIT_S, labshare_env, served

pytestmark = pytest.mark.multiprocess

REQUESTS = 200
USERS = 10


def round_the_clock_instrument(
    database: Database, *, buffer_minutes: int = 0, **quotas: int
) -> int:
    with database.transaction() as session:
        organisation = accounts.create_organisation(
            session,
            actor_id=None,
            data=OrganisationCreate(
                name="并发测试大学", type=OrganisationType.UNIVERSITY, district="沙坪坝区"
            ),
        )
        facility = catalogue.create_facility(
            session,
            actor=None,
            data=FacilityCreate(
                organisation_id=organisation.id or 0,
                name="并发测试平台",
                district="沙坪坝区",
                opens_on_holidays=True,
                opening_hours=[
                    OpeningSpanIn(weekday=d, start="00:00", end="24:00") for d in range(7)
                ],
            ),
        )
        instrument = catalogue.create_instrument(
            session,
            actor=None,
            data=InstrumentCreate(
                facility_id=facility.id or 0,
                asset_code="RACE-1",
                name="抢手的电镜",
                category=Category.ANALYTICAL,
                operation_mode=OperationMode.SELF_OPERATED,
                requires_qualification=False,
                min_notice_minutes=0,
                buffer_minutes=buffer_minutes,
                max_duration_minutes=240,
                **quotas,
            ),
        )
        return instrument.id or 0


def tokens_for_users(database: Database, count: int) -> list[str]:
    with database.transaction() as session:
        tokens = []
        for n in range(count):
            user = accounts.create_user(
                session, actor_id=None, data=UserCreate(email=f"racer{n}@example.cn", name=f"抢{n}")
            )
            tokens.append(
                auth.issue_access_token(session, Settings(access_token_ttl_s=3600), user=user).token
            )
        return tokens


def request_booking(
    base_url: str, token: str, instrument_id: int, start: datetime, end: datetime
) -> tuple[int, dict]:
    """POST /api/v1/bookings: the status and the answer."""
    response = httpx.post(
        f"{base_url}/api/v1/bookings",
        json={"instrument_id": instrument_id, "start": start.isoformat(), "end": end.isoformat()},
        headers={"Authorization": f"Bearer {token}"},
        timeout=WAIT_S,
    )
    return response.status_code, response.json()


def race_hour_bookings(
    database: Database,
    tmp_path: Path,
    token: str,
    instrument_id: int,
    starts: list[datetime],
    *,
    creations_per_minute: int = 1000,
) -> list[tuple[int, dict]]:
    """One user's requests for an hour at each start, sent at once to 4 server processes."""
    with served(
        database.url,
        tmp_path / "server.log",
        workers=4,
        LABSHARE_BOOKING_CREATIONS_PER_MINUTE=str(creations_per_minute),
    ) as base_url:

        def book(start: datetime) -> tuple[int, dict]:
            return request_booking(
                base_url, token, instrument_id, start, start + timedelta(hours=1)
            )

        with ThreadPoolExecutor(max_workers=12) as pool:
            return list(pool.map(book, starts))


def assert_no_held_overlap(database: Database, instrument_id: int) -> list[Booking]:
    with database.transaction(write=False) as session:
        held = session.exec(
            select(Booking).where(
                Booking.instrument_id == instrument_id, col(Booking.status).in_(list(HELD_STATUSES))
            )
        ).all()
    for first, second in combinations(held, 2):
        assert first.held_until <= second.start_at or second.held_until <= first.start_at, (
            first,
            second,
        )
    return list(held)


def test_200_overlapping_requests_to_4_server_processes_store_no_overlap(
    fresh_database: Database, tmp_path: Path
) -> None:
    instrument_id = round_the_clock_instrument(fresh_database, buffer_minutes=30)
    tokens = tokens_for_users(fresh_database, USERS)
    base = (now() + timedelta(days=2)).replace(minute=0, second=0, microsecond=0)
    rng = random.Random(2026)
    plans = [
        (
            tokens[n % USERS],
            base + timedelta(minutes=30 * rng.randint(0, 40)),
            30 * rng.randint(2, 6),
        )
        for n in range(REQUESTS)
    ]

    with served(
        fresh_database.url,
        tmp_path / "server.log",
        workers=4,
        LABSHARE_BOOKING_CREATIONS_PER_MINUTE="1000",
    ) as base_url:

        def book(plan: tuple[str, datetime, int]) -> tuple[int, dict]:
            token, start, minutes = plan
            return request_booking(
                base_url, token, instrument_id, start, start + timedelta(minutes=minutes)
            )

        with ThreadPoolExecutor(max_workers=16) as pool:
            answers = list(pool.map(book, plans))

    statuses = [status for status, _ in answers]
    assert [a for a in answers if a[0] >= 500] == []
    assert set(statuses) <= {201, 409}, sorted(set(statuses))
    assert all(body["code"] == "overlap" for status, body in answers if status == 409)
    held = assert_no_held_overlap(fresh_database, instrument_id)
    created = sorted(body["id"] for status, body in answers if status == 201)
    assert created == sorted(b.id for b in held)
    assert len(created) >= 5  # some won, and the rest were told why not


def test_racing_requests_of_one_user_never_exceed_the_instruments_quotas(
    fresh_database: Database, tmp_path: Path
) -> None:
    # Each request alone fits; together they do not. Every check must see the bookings of the
    # requests that were checked before it, also when they are still being written.
    instrument_id = round_the_clock_instrument(fresh_database, user_future_bookings_limit=3)
    (token,) = tokens_for_users(fresh_database, 1)
    monday = (now() + timedelta(days=14)).replace(hour=0, minute=0, second=0, microsecond=0)
    monday -= timedelta(days=monday.weekday())
    slots = [monday + timedelta(hours=3 * n) for n in range(24)]

    answers = race_hour_bookings(fresh_database, tmp_path, token, instrument_id, slots)

    assert sorted(status for status, _ in answers) == [201] * 3 + [422] * 21
    refused = [body for status, body in answers if status == 422]
    assert all(
        "quota_future_bookings" in {problem["code"] for problem in body["errors"]}
        for body in refused
    ), refused
    assert len(assert_no_held_overlap(fresh_database, instrument_id)) == 3


def test_racing_requests_of_one_user_never_exceed_the_booking_rate_limit(
    fresh_database: Database, tmp_path: Path
) -> None:
    # Each request alone is under the limit; together they are not. Every count must see the
    # requests counted before it, also when they are still being written.
    instrument_id = round_the_clock_instrument(fresh_database)
    (token,) = tokens_for_users(fresh_database, 1)
    first = (now() + timedelta(days=3)).replace(minute=0, second=0, microsecond=0)
    slots = [first + timedelta(hours=2 * n) for n in range(24)]

    answers = race_hour_bookings(
        fresh_database, tmp_path, token, instrument_id, slots, creations_per_minute=3
    )

    assert sorted(status for status, _ in answers) == [201] * 3 + [429] * 21
    assert {body["code"] for status, body in answers if status == 429} == {"booking_rate"}
    assert len(assert_no_held_overlap(fresh_database, instrument_id)) == 3


def test_two_workers_expire_each_request_and_mark_each_no_show_exactly_once(
    fresh_database: Database,
) -> None:
    instrument_id = round_the_clock_instrument(fresh_database)
    past = datetime(2026, 1, 5, 1, tzinfo=UTC)
    with fresh_database.transaction() as session:
        user = accounts.create_user(
            session, actor_id=None, data=UserCreate(email="late@example.cn", name="迟到")
        )
        for n in range(60):
            start = past + timedelta(hours=n)
            session.add(
                Booking(
                    instrument_id=instrument_id,
                    facility_id=1,
                    user_id=user.id or 0,
                    start_at=start,
                    end_at=start + timedelta(minutes=30),
                    held_until=start + timedelta(minutes=30),
                    status=BookingStatus.PENDING if n % 2 else BookingStatus.CONFIRMED,
                    operated_by="self",
                    expires_at=start if n % 2 else None,
                )
            )
    env = labshare_env(fresh_database.url)
    workers = [
        subprocess.Popen(
            [str(LABSHARE), "worker", "--once"],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for _ in range(2)
    ]
    outputs = [w.communicate(timeout=WAIT_S)[0].decode() for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs
    with fresh_database.transaction(write=False) as session:
        by_status = dict(
            session.exec(select(Booking.status, func.count()).group_by(Booking.status)).all()
        )
        audited = dict(
            session.exec(
                select(audit.AuditEntry.action, func.count())
                .where(col(audit.AuditEntry.action).in_(["booking.expired", "booking.no_show"]))
                .group_by(audit.AuditEntry.action)
            ).all()
        )
    assert by_status == {BookingStatus.EXPIRED: 30, BookingStatus.NO_SHOW: 30}
    assert audited == {"booking.expired": 30, "booking.no_show": 30}


def test_racing_acceptances_never_exceed_a_days_sample_capacity(
    fresh_database: Database, tmp_path: Path
) -> None:
    from booking.models import ServiceCapacityDay, ServiceRequest, ServiceRequestStatus
    from core.accounts.rules import Role, ScopeKind
    from core.accounts.schemas import RoleGrant
    from instruments.schemas import TestingServiceCreate

    instrument_id = round_the_clock_instrument(fresh_database)
    day = (now() + timedelta(days=3)).date()
    with fresh_database.transaction() as session:
        service = catalogue.create_testing_service(
            session,
            actor=None,
            data=TestingServiceCreate(
                facility_id=1,
                name="拉伸试验",
                price_internal_fen=1,
                price_external_academic_fen=1,
                price_enterprise_fen=1,
                daily_sample_capacity=10,
                instrument_ids=[instrument_id],
            ),
        )
        requester = accounts.create_user(
            session, actor_id=None, data=UserCreate(email="sender@example.cn", name="送样人")
        )
        manager = accounts.create_user(
            session,
            actor_id=None,
            data=UserCreate(
                email="boss@example.cn",
                name="主管",
                roles=[RoleGrant(role=Role.LAB_MANAGER, scope_kind=ScopeKind.FACILITY, scope_id=1)],
            ),
        )
        token = auth.issue_access_token(session, Settings(), user=manager).token
        ids = []
        for _ in range(30):
            request = ServiceRequest(
                testing_service_id=service.id or 0,
                facility_id=1,
                user_id=requester.id or 0,
                sample_count=1,
                scheduled_date=day,
            )
            session.add(request)
            session.flush()
            ids.append(request.id)

    with served(fresh_database.url, tmp_path / "server.log", workers=4) as base_url:

        def accept(request_id: int) -> int:
            return httpx.post(
                f"{base_url}/api/v1/service-requests/{request_id}/accept",
                json={},
                headers={"Authorization": f"Bearer {token}"},
                timeout=WAIT_S,
            ).status_code

        with ThreadPoolExecutor(max_workers=12) as pool:
            statuses = list(pool.map(accept, ids))

    assert sorted(statuses) == [200] * 10 + [409] * 20
    with fresh_database.transaction(write=False) as session:
        accepted = session.exec(
            select(func.count())
            .select_from(ServiceRequest)
            .where(ServiceRequest.status == ServiceRequestStatus.ACCEPTED)
        ).one()
        counter = session.get(ServiceCapacityDay, (service.id, day))
    assert accepted == 10
    assert counter is not None
    assert counter.accepted_samples == 10


def test_a_retry_racing_its_first_attempt_gets_the_same_answer(
    fresh_database: Database, tmp_path: Path
) -> None:
    instrument_id = round_the_clock_instrument(fresh_database)
    token = tokens_for_users(fresh_database, 1)[0]
    start = (now() + timedelta(days=2)).replace(minute=0, second=0, microsecond=0)
    body = {
        "instrument_id": instrument_id,
        "start": start.isoformat(),
        "end": (start + timedelta(hours=1)).isoformat(),
    }
    with served(fresh_database.url, tmp_path / "server.log", workers=2) as base_url:

        def send(attempt: int) -> httpx.Response:
            return httpx.post(
                f"{base_url}/api/v1/bookings",
                json=body,
                timeout=WAIT_S,
                headers={"Authorization": f"Bearer {token}", "Idempotency-Key": "order-2026-001"},
            )

        with ThreadPoolExecutor(max_workers=4) as pool:
            answers = list(pool.map(send, range(4)))
    assert [a.status_code for a in answers] == [201] * 4, [a.text for a in answers]
    assert len({a.json()["id"] for a in answers}) == 1
    with fresh_database.transaction(write=False) as session:
        assert session.exec(select(func.count()).select_from(Booking)).one() == 1


def test_two_requests_racing_under_one_idempotency_key_book_once_and_say_the_key_is_taken(
    fresh_database: Database, tmp_path: Path
) -> None:
    instrument_id = round_the_clock_instrument(fresh_database)
    token = tokens_for_users(fresh_database, 1)[0]
    first = (now() + timedelta(days=2)).replace(minute=0, second=0, microsecond=0)
    keys = 12
    # Under each key two different requests (other hours), sent at the same time.
    sends = [
        (f"order-{k}", first + timedelta(hours=2 * k + other))
        for k in range(keys)
        for other in (0, 1)
    ]
    with served(fresh_database.url, tmp_path / "server.log", workers=2) as base_url:

        def send(plan: tuple[str, datetime]) -> tuple[str, httpx.Response]:
            key, start = plan
            body = {
                "instrument_id": instrument_id,
                "start": start.isoformat(),
                "end": (start + timedelta(hours=1)).isoformat(),
            }
            return key, httpx.post(
                f"{base_url}/api/v1/bookings",
                json=body,
                timeout=WAIT_S,
                headers={"Authorization": f"Bearer {token}", "Idempotency-Key": key},
            )

        with ThreadPoolExecutor(max_workers=4) as pool:
            answers = list(pool.map(send, sends))
    by_key: dict[str, list[int]] = {}
    for key, answer in answers:
        assert answer.status_code in (201, 422), answer.text
        if answer.status_code == 422:
            assert answer.json()["errors"][0]["code"] == "idempotency_key_reused"
        by_key.setdefault(key, []).append(answer.status_code)
    assert all(sorted(codes) == [201, 422] for codes in by_key.values()), by_key
    with fresh_database.transaction(write=False) as session:
        assert session.exec(select(func.count()).select_from(Booking)).one() == keys
