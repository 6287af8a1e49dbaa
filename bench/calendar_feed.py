"""Calendar feed speed: an instrument's feed of 10,000 bookings over HTTP.

Targets (issue "Notifications and calendars"): the full feed served uncached in < 1 s, and a
repeat poll answered 304 in < 20 ms (with the same ETag, or with the Last-Modified date as
If-Modified-Since), on SQLite and on PostgreSQL. Baselines measured in the same run: a
/healthz round trip, and in-process the same feed written by the ``ics``-object writer that
the plain-text writer replaced (the ratio is printed). Both a subscriber's busy-only feed and
the facility manager's full-details feed (which also reads the bookers' names) are timed;
in-process figures are CPU time too, which other load on the machine barely moves.

    .venv/bin/python bench/calendar_feed.py [--bookings 10000] [--calls 20] [--polls 200]
        [--postgres postgresql+psycopg://postgres@127.0.0.1:5432/postgres] [--only sqlite]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import fresh_database, p, served, summary, timed
from booking.models import Booking
from booking.rules import BookingStatus, OperatedBy
from core.accounts import service as accounts
from core.accounts.models import User
from core.accounts.rules import OrganisationType, Role, ScopeKind
from core.accounts.schemas import OrganisationCreate, RoleGrant, UserCreate
from core.auth.principal import load_principal
from core.db import Database
from core.settings import Settings
from instruments import service
from instruments.models import Facility, Instrument
from instruments.rules import Category, OperationMode
from instruments.schemas import FacilityCreate, InstrumentCreate
from notifications import feeds, ics
from notifications.models import CalendarFeed, FeedKind

STATUSES = [BookingStatus.CONFIRMED] * 6 + [BookingStatus.PENDING, BookingStatus.COMPLETED]


def build(database: Database, bookings: int) -> tuple[str, str]:
    """An instrument with ``bookings`` bookings in its feed's window; two feeds' tokens."""
    started = time.perf_counter()
    with database.transaction() as session:
        organisation = accounts.create_organisation(
            session,
            actor_id=None,
            data=OrganisationCreate(
                name="基准大学", type=OrganisationType.UNIVERSITY, district="沙坪坝区"
            ),
        )
        facility = service.create_facility(
            session,
            actor=None,
            data=FacilityCreate(
                organisation_id=organisation.id or 0, name="基准平台", district="沙坪坝区"
            ),
        )
        instrument = service.create_instrument(
            session,
            actor=None,
            data=InstrumentCreate(
                facility_id=facility.id or 0,
                asset_code="CAL-000001",
                name="场发射扫描电子显微镜",
                category=Category.ANALYTICAL,
                operation_mode=OperationMode.BOTH,
                location="理学楼 B201",
                price_internal_fen=20_000,
            ),
        )

        def user(n: int, roles: list[RoleGrant]) -> int:
            created = accounts.create_user(
                session,
                actor_id=None,
                data=UserCreate(
                    email=f"bench{n}@example.cn",
                    name=f"用户{n}",
                    organisation_id=organisation.id,
                    password=None,
                    roles=roles,
                ),
            )
            return created.id or 0

        researchers = [user(n, [RoleGrant(role=Role.RESEARCHER)]) for n in range(50)]
        manager = user(
            99,
            [RoleGrant(role=Role.LAB_MANAGER, scope_kind=ScopeKind.FACILITY, scope_id=facility.id)],
        )
        # 40-minute bookings every 50 minutes from 29 days back: all inside the feed's window.
        written = datetime.now(UTC)
        first = written.replace(minute=0, second=0, microsecond=0) - timedelta(days=29)
        rows = []
        for n in range(bookings):
            start = first + timedelta(minutes=50 * n)
            rows.append(
                {
                    "instrument_id": instrument.id,
                    "facility_id": facility.id,
                    "user_id": researchers[n % len(researchers)],
                    "organisation_id": organisation.id,
                    "start_at": start,
                    "end_at": start + timedelta(minutes=40),
                    "held_until": start + timedelta(minutes=40),
                    "status": STATUSES[n % len(STATUSES)],
                    "operated_by": OperatedBy.SELF,
                    "purpose": f"样品测试 {n}：形貌观察, 能谱分析",
                    "version": n % 3,
                    "overrides": [],
                    # Written some days before it starts, and never after now.
                    "created_at": min(start - timedelta(days=3), written - timedelta(hours=2)),
                    "updated_at": min(start - timedelta(days=2), written - timedelta(hours=1)),
                }
            )
        session.execute(sa.insert(Booking), rows)
        subscriber = load_principal(session, accounts.get_user(session, researchers[0]))
        busy = feeds.create_feed(
            session, actor=subscriber, kind=FeedKind.INSTRUMENT, subject_id=instrument.id
        )
        full = feeds.create_feed(
            session,
            actor=load_principal(session, accounts.get_user(session, manager)),
            kind=FeedKind.INSTRUMENT,
            subject_id=instrument.id,
        )
        assert not busy.full_details
        assert full.full_details
        tokens = (busy.token, full.token)
        # Everything was set up an hour ago, so polls find a settled Last-Modified to send.
        for model in (User, Instrument, Facility):
            session.execute(sa.update(model).values(updated_at=written - timedelta(hours=1)))
        session.execute(sa.update(CalendarFeed).values(created_at=written - timedelta(hours=1)))
    print(f"  built {bookings} bookings in {time.perf_counter() - started:.1f} s")
    return tokens


def timed_with_cpu(call: Callable[[], None], count: int) -> tuple[list[float], list[float]]:
    """Wall and CPU milliseconds for each of ``count`` calls (after a warm-up call)."""
    call()
    wall, cpu = [], []
    for _ in range(count):
        started, cpu_started = time.perf_counter(), time.process_time()
        call()
        wall.append((time.perf_counter() - started) * 1000)
        cpu.append((time.process_time() - cpu_started) * 1000)
    return wall, cpu


@contextlib.contextmanager
def patched(module: object, name: str, value: object) -> Iterator[None]:
    saved = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, saved)


def run(
    kind: str, database: Database, tokens: tuple[str, str], bookings: int, calls: int, polls: int
) -> list[tuple[str, list[float]]]:
    results: list[tuple[str, list[float]]] = []
    host = feeds.calendar_host(Settings().base_url)

    def in_process(token: str) -> None:
        with database.transaction(write=False) as session:
            subscription = feeds.subscription(session, token=token)
            feeds.feed_state(session, subscription)
            text = feeds.render_feed(session, subscription, host=host)
        assert text.count("BEGIN:VEVENT") == bookings

    for label, token in (("busy-only", tokens[0]), ("manager's", tokens[1])):
        wall, cpu = timed_with_cpu(lambda t=token: in_process(t), calls)
        results.append((f"{kind} {label} feed, in-process", wall))
        results.append((f"{kind} {label} feed, in-process, CPU", cpu))
        # Baseline: the same feed written from ics content-line objects (the former writer).
        with patched(ics, "feed", ics.feed_with_ics):
            _, reference = timed_with_cpu(lambda t=token: in_process(t), calls)
        results.append((f"{kind} {label} feed, ics-object writer, CPU", reference))

    with served(database) as base, httpx.Client(base_url=base) as client:
        for label, token in (("busy-only", tokens[0]), ("manager's", tokens[1])):
            path = f"/calendar/{token}.ics"

            def full(i: int, path: str = path) -> object:
                response = client.get(path)
                assert response.status_code == 200, response.text
                assert response.text.count("BEGIN:VEVENT") == bookings
                return response

            first = client.get(path)
            etag, date = first.headers["etag"], first.headers["last-modified"]

            def poll(i: int, path: str = path, etag: str = etag) -> object:
                response = client.get(path, headers={"If-None-Match": etag})
                assert response.status_code == 304, response.status_code
                return response

            def dated_poll(i: int, path: str = path, date: str = date) -> object:
                response = client.get(path, headers={"If-Modified-Since": date})
                assert response.status_code == 304, response.status_code
                return response

            size = len(client.get(path).content)
            results.append(
                (f"{kind} {label} feed over HTTP ({size / 1e6:.1f} MB)", timed(full, calls))
            )
            results.append((f"{kind} {label} poll, same ETag -> 304", timed(poll, polls)))
            results.append(
                (f"{kind} {label} poll, If-Modified-Since -> 304", timed(dated_poll, polls))
            )
        results.append(
            (f"{kind} HTTP baseline: /healthz", timed(lambda i: client.get("/healthz"), polls))
        )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bookings", type=int, default=10_000)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--polls", type=int, default=200)
    parser.add_argument(
        "--postgres", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    )
    parser.add_argument("--only", choices=["sqlite", "postgres"])
    args = parser.parse_args()
    print("targets: full feed < 1000 ms, 304 poll < 20 ms (p95)")
    for kind in ("sqlite", "postgres"):
        if args.only and kind != args.only:
            continue
        print(f"== {kind}")
        with fresh_database(kind, args.postgres) as database:
            tokens = build(database, args.bookings)
            results = run(kind, database, tokens, args.bookings, args.calls, args.polls)
            for label, samples in results:
                print(f"  {label:50} {summary(samples)}")
            print_ratios(kind, dict(results))


def print_ratios(kind: str, results: dict[str, list[float]]) -> None:
    """Each figure against its baseline from the same run (medians)."""
    healthz = statistics.median(results[f"{kind} HTTP baseline: /healthz"])
    for label in ("busy-only", "manager's"):
        ours = statistics.median(results[f"{kind} {label} feed, in-process, CPU"])
        former = statistics.median(results[f"{kind} {label} feed, ics-object writer, CPU"])
        print(f"  {label} feed CPU: {ours / former:.2f}x the ics-object writer's")
        for poll in ("same ETag", "If-Modified-Since"):
            (samples,) = [v for k, v in results.items() if label in k and poll in k]
            print(
                f"  {label} poll ({poll}): p95 {p(samples, 95):.1f} ms,"
                f" {statistics.median(samples) / healthz:.1f}x /healthz (medians)"
            )


if __name__ == "__main__":
    main()
