"""Booking speed: creating bookings under load, and free time over 200,000 held bookings.

Targets, on SQLite (1 server process) and PostgreSQL (2 server processes):

1. POST /api/v1/bookings with 1 and with 8 concurrent clients reaches at least 50 % of the
   CEILING's throughput, with a p99 latency within 2x the ceiling's. The ceiling is measured in
   the same run: a minimal FastAPI app defined in this file (``ceiling_app``), served by uvicorn
   with the same worker count on the same database, doing the same bearer-token check (one
   indexed SELECT on api_token.token_hash) and the same conflict-checked insert in raw SQL
   (SQLite: BEGIN IMMEDIATE, overlap SELECT, INSERT, COMMIT on one writer connection;
   PostgreSQL: INSERT ... ON CONFLICT DO NOTHING RETURNING id against the exclusion constraint).
   Both servers run side by side and take turns (``--rounds``, alternating which goes first),
   so a drift in the machine's speed slows both alike; the figures pool the rounds, and each
   round's ratio is printed beside them. A round is 2,000 requests a server: the machine stalls
   now and then for some 50 ms (a run of a dozen slow requests, whichever server is on), and
   over a few hundred requests the p99 was that stall's, decided by which server it fell on.
   Requests go to free slots spread over many instruments, from 2,000 users in turn (each under
   the default rate limit's 30 a minute); every 10th deliberately overlaps a held booking and
   must get 409. Any 5xx, or any answer other than 201/409, aborts the run.
2. With 5,000 instruments and 200,000 held bookings: a 14-day availability of one instrument
   p95 < 15 ms and the free-instrument search (GET /api/v1/availability, a q or category
   filter, min_minutes) p95 < 100 ms, in-process and over HTTP. In-process measures what the
   endpoint does (``booking.queries.first_free_instruments``: the first 50 free matches, read
   a chunk at a time); the free time of all (up to 500) matches is printed too, not a target.
   Baselines: the bare SQL select of the held ranges for the same window and instruments
   (in-process), a /healthz round trip (over HTTP).

Traffic goes to 127.0.0.1 only; each database is made for the run and dropped afterwards.

    .venv/bin/python bench/booking_load.py [--only sqlite|postgres] [--requests 2000]
        [--rounds 4] [--calls 100] [--instruments 5000] [--bookings 200000] [--max-seconds 120]
        [--postgres postgresql+psycopg://postgres@127.0.0.1:5432/postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import queue
import random
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import httpx
import sqlalchemy as sa
from fastapi import FastAPI, Header
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime, BaseModel
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.catalogue_search import KINDS
from bench.common import ROOT, START_TIMEOUT_S, free_port, fresh_database, p, served, timed
from booking import queries
from booking.models import HELD_SQL, Booking
from booking.rules import HELD_STATUSES, BookingStatus
from core.accounts import service as accounts
from core.accounts.rules import OrganisationType
from core.accounts.schemas import OrganisationCreate, UserCreate
from core.auth import service as auth
from core.clock import now
from core.db import Database, is_sqlite
from core.settings import Settings
from instruments import queries as catalogue
from instruments import service as instruments
from instruments.models import Instrument
from instruments.queries import InstrumentSearch
from instruments.rules import Category, OperationMode, OutageKind
from instruments.schemas import FacilityCreate, InstrumentCreate, OpeningSpanIn, OutageCreate

SEED_DAYS = 56  # held bookings fill days [0, 56) after the fixture's base day
SLOTS_PER_DAY = 2  # seeded: one morning and one afternoon slot a day, inside opening hours
LOAD_HOURS = range(12, 24, 2)  # UTC hours of created bookings: nights, outside seeded times
# The create load's requests go round 2,000 users: each sends one of every 2,000, at most 25
# a minute at these speeds (800 a second), under the default rate limit of 30 as real users
# are. A request counts its user's requests of the last minute (up to the limit); with 64
# users each sent up to 350-650 a minute, and every request counted hundreds of them, a cost
# no deployment has (its count stops at the limit).
USERS = 2000
CONFLICT_EVERY = 10
WARM_UP = 24
REQUEST_TIMEOUT_S = 30
TARGET_THROUGHPUT_SHARE = 0.5
TARGET_P99_FACTOR = 2.0
TARGET_AVAILABILITY_P95_MS = 15.0
TARGET_FREE_TIME_P95_MS = 100.0
FREE_TIME_DAYS = 7
FREE_TIME_MIN_MINUTES = 120
FREE_SEARCHES: list[dict[str, str]] = [
    {"q": "电镜"},
    {"category": Category.ANALYTICAL.value},
    {"q": "xrd"},
    {"category": Category.METROLOGY.value},
    {"q": "质谱"},
    {"q": "zeiss"},
]


# --- Fixture: 5,000 instruments, 200,000 held bookings, users with tokens -------------------


@dataclass
class Fixture:
    base: datetime  # 00:00 UTC of day 0 of the booked period
    instrument_ids: list[int]
    round_the_clock: list[int]  # bookable at any hour: the targets of the create load
    per_instrument: int
    tokens: list[str]
    index_of: dict[int, int] = field(default_factory=dict)

    def seeded(self, instrument_id: int, k: int) -> tuple[datetime, datetime]:
        """The k-th held booking made by the bulk load on an instrument."""
        return seeded_slot(self.base, self.index_of[instrument_id], k, self.per_instrument)

    def load_slot(self, s: int) -> tuple[int, datetime, datetime]:
        """Free slot number ``s`` for the create load: consecutive numbers, other instruments."""
        instrument_id = self.round_the_clock[s % len(self.round_the_clock)]
        day, hour = divmod(s // len(self.round_the_clock), len(LOAD_HOURS))
        if day >= SEED_DAYS:
            raise ValueError("not enough free slots: use fewer --requests")
        start = self.base + timedelta(days=day, hours=LOAD_HOURS[hour])
        return instrument_id, start, start + timedelta(minutes=60)


def seeded_slot(
    base: datetime, index: int, k: int, per_instrument: int
) -> tuple[datetime, datetime]:
    day, half = divmod(k * SEED_DAYS * SLOTS_PER_DAY // per_instrument, SLOTS_PER_DAY)
    # 09:00/09:30 or 14:00/14:30 in Shanghai, 60 to 120 minutes: inside the default hours.
    start = base + timedelta(days=day, hours=1 if half == 0 else 6, minutes=30 * (index % 2))
    return start, start + timedelta(minutes=60 + 30 * (k % 3))


def build(database: Database, instruments_count: int, bookings_count: int) -> Fixture:
    per_instrument = bookings_count // instruments_count
    if not 1 <= per_instrument <= SEED_DAYS * SLOTS_PER_DAY:
        raise SystemExit(f"--bookings must be 1 to {SEED_DAYS * SLOTS_PER_DAY} per instrument")
    base = (now() + timedelta(days=2)).replace(hour=0, minute=0, second=0, microsecond=0)
    started = time.perf_counter()
    facilities_count = max(2, instruments_count // 100)
    ids: list[int] = []
    round_the_clock: list[int] = []
    facility_of: dict[int, int] = {}
    with database.transaction() as session:
        facilities = []
        for f in range(facilities_count):
            organisation = accounts.create_organisation(
                session,
                actor_id=None,
                data=OrganisationCreate(
                    name=f"预约基准单位{f}", type=OrganisationType.UNIVERSITY, district="沙坪坝区"
                ),
            )
            always_open = f % 2 == 0
            facilities.append(
                instruments.create_facility(
                    session,
                    actor=None,
                    data=FacilityCreate(
                        organisation_id=organisation.id or 0,
                        name=f"预约基准平台{f}",
                        district="沙坪坝区",
                        opens_on_holidays=always_open,
                        # Half open round the clock, half the default weekday hours.
                        opening_hours=[
                            OpeningSpanIn(weekday=d, start="00:00", end="24:00") for d in range(7)
                        ]
                        if always_open
                        else None,
                    ),
                )
            )
        for n in range(instruments_count):
            name, keywords, model, maker = KINDS[n % len(KINDS)]
            facility = facilities[n % facilities_count]
            instrument = instruments.create_instrument(
                session,
                actor=None,
                data=InstrumentCreate(
                    facility_id=facility.id or 0,
                    asset_code=f"BK-{n:06d}",
                    name=f"{name}{n}",
                    keywords=keywords,
                    model=model,
                    manufacturer=maker,
                    category=list(Category)[n % len(Category)],
                    operation_mode=OperationMode.SELF_OPERATED if n % 2 else OperationMode.BOTH,
                    requires_qualification=False,
                    max_advance_days=SEED_DAYS + 30,
                    price_internal_fen=10_000,
                ),
            )
            instrument_id = instrument.id or 0
            ids.append(instrument_id)
            facility_of[instrument_id] = facility.id or 0
            if facility.opens_on_holidays:
                round_the_clock.append(instrument_id)
            elif n % 10 == 1:
                outage_start = base + timedelta(days=n % SEED_DAYS)
                instruments.create_outage(
                    session,
                    actor=None,
                    data=OutageCreate(
                        instrument_id=instrument_id,
                        start_at=outage_start,
                        end_at=outage_start + timedelta(hours=30),
                        kind=OutageKind.MAINTENANCE,
                    ),
                )
        users = [
            accounts.create_user(
                session,
                actor_id=None,
                data=UserCreate(email=f"booker{u}@example.cn", name=f"预约者{u}"),
            )
            for u in range(USERS)
        ]
        ttl = Settings(access_token_ttl_s=6 * 3600)
        tokens = [auth.issue_access_token(session, ttl, user=u).token for u in users]
    built = time.perf_counter()
    fixture = Fixture(base, ids, round_the_clock, per_instrument, tokens)
    fixture.index_of = {instrument_id: n for n, instrument_id in enumerate(ids)}
    user_ids = [u.id or 0 for u in users]
    created = now() - timedelta(days=20)
    rows: list[dict[str, Any]] = []
    table = Booking.__table__  # type: ignore[attr-defined]
    # Bulk, in a few transactions, bypassing the service: executemany of multi-row INSERTs.
    with database.write_engine.connect() as connection:
        for n, instrument_id in enumerate(ids):
            for k in range(per_instrument):
                start, end = seeded_slot(base, n, k, per_instrument)
                pending = (n + k) % 10 == 0
                rows.append(
                    {
                        "instrument_id": instrument_id,
                        "facility_id": facility_of[instrument_id],
                        "user_id": user_ids[(n * per_instrument + k) % USERS],
                        "start_at": start,
                        "end_at": end,
                        "held_until": end,
                        "status": BookingStatus.PENDING if pending else BookingStatus.CONFIRMED,
                        "operated_by": "self",
                        "overrides": [],
                        "expires_at": min(start, now() + timedelta(hours=48)) if pending else None,
                        "created_by_id": user_ids[(n * per_instrument + k) % USERS],
                        "created_at": created,
                        "updated_at": created,
                    }
                )
                if len(rows) == 50_000:
                    with connection.begin():
                        connection.execute(sa.insert(table), rows)
                    rows = []
        if rows:
            with connection.begin():
                connection.execute(sa.insert(table), rows)
    if database.dialect == "postgresql":
        # What autovacuum does soon after a bulk load; SQLite's app never runs ANALYZE.
        with database.write_engine.connect() as connection:
            connection.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("ANALYZE")
    print(
        f"  built {instruments_count} instruments ({len(round_the_clock)} open round the clock), "
        f"{USERS} users in {built - started:.1f} s; "
        f"{per_instrument * instruments_count} held bookings in {time.perf_counter() - built:.1f} s"
    )
    return fixture


# --- The ceiling: the same work in raw SQL, nothing else ------------------------------------

TOKEN_SQL = (
    "SELECT t.user_id, u.organisation_id FROM api_token AS t "
    "JOIN app_user AS u ON u.id = t.user_id "
    "WHERE t.token_hash = {p} AND t.revoked_at IS NULL "
    "AND (t.expires_at IS NULL OR t.expires_at > {now}) AND u.is_active"
)
BOOKING_COLUMNS = (
    "instrument_id, facility_id, user_id, organisation_id, start_at, end_at, held_until, status, "
    "operated_by, purpose, charge_account, version, overrides, reason, late_cancellation, "
    "attention, created_by_id, created_at, updated_at"
)
# The instruments of this benchmark have no buffer, so the held range ends at the end.
INSERT_SELECT = (
    f"INSERT INTO booking ({BOOKING_COLUMNS}) "
    "SELECT i.id, i.facility_id, {p}, {p}, {p}, {p}, {p}, 'confirmed', 'self', '', '', 0, '[]', "
    "'', {false}, '', {p}, {p}, {p} FROM instrument AS i WHERE i.id = {p}"
)
OVERLAP_SQL = (
    f"SELECT 1 FROM booking WHERE instrument_id = ? AND {HELD_SQL} "
    "AND start_at < ? AND held_until > ? LIMIT 1"
)


def _check_ceiling_columns() -> None:
    """Fail at start-up, not with 500s, if booking gained a column the ceiling must fill."""
    listed = {c.strip() for c in BOOKING_COLUMNS.split(",")}
    missing = [
        c.name
        for c in Booking.__table__.c  # type: ignore[attr-defined]
        if not c.nullable and c.server_default is None and c.name not in listed | {"id"}
    ]
    if missing:
        raise RuntimeError(f"the ceiling's INSERT lacks booking columns: {missing}")


def _sqlite_time(moment: datetime) -> str:
    # core.db.UTCDateTime's storage on SQLite: UTC wall time, SQLAlchemy's DATETIME format.
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


class SqliteCeiling:
    """One writer connection per process (as labshare's pool), token reads on their own."""

    def __init__(self, path: str, settings: Settings) -> None:
        self.path = path
        self.settings = settings
        self.writer = self._connect()
        self.write_lock = threading.Lock()
        self.readers = threading.local()
        self.token_sql = TOKEN_SQL.format(p="?", now="?")
        self.insert_sql = INSERT_SELECT.format(p="?", false="0")

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(
            self.path,
            isolation_level=None,
            check_same_thread=False,
            timeout=self.settings.sqlite_busy_timeout_ms / 1000,
        )
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA foreign_keys=ON")
        connection.execute(f"PRAGMA synchronous={self.settings.sqlite_synchronous}")
        return connection

    def user_of(self, token_hash: str) -> tuple[int, int | None] | None:
        reader = getattr(self.readers, "connection", None)
        if reader is None:
            reader = self.readers.connection = self._connect()
        row = reader.execute(self.token_sql, (token_hash, _sqlite_time(now()))).fetchone()
        return (row[0], row[1]) if row else None

    def book(
        self, user: tuple[int, int | None], instrument_id: int, start: datetime, end: datetime
    ) -> int | None:
        stamp = _sqlite_time(now())
        begin, until = _sqlite_time(start), _sqlite_time(end)
        with self.write_lock:
            self.writer.execute("BEGIN IMMEDIATE")
            try:
                if self.writer.execute(OVERLAP_SQL, (instrument_id, until, begin)).fetchone():
                    self.writer.execute("ROLLBACK")
                    return None
                cursor = self.writer.execute(
                    self.insert_sql,
                    (*user, begin, until, until, user[0], stamp, stamp, instrument_id),
                )
                self.writer.execute("COMMIT")
            except BaseException:
                self.writer.execute("ROLLBACK")
                raise
            return cursor.lastrowid


class PostgresCeiling:
    """Autocommit connections, one per request at a time from a small pool."""

    def __init__(self, conninfo: str) -> None:
        import psycopg

        self.connect = lambda: psycopg.connect(conninfo, autocommit=True)
        self.pool: queue.LifoQueue[Any] = queue.LifoQueue()
        self.token_sql = TOKEN_SQL.format(p="%s", now="now()")
        self.insert_sql = (
            INSERT_SELECT.format(p="%s", false="false") + " ON CONFLICT DO NOTHING RETURNING id"
        )

    @contextlib.contextmanager
    def connection(self) -> Iterator[Any]:
        try:
            connection = self.pool.get_nowait()
        except queue.Empty:
            connection = self.connect()
        try:
            yield connection
        finally:
            self.pool.put(connection)

    def user_of(self, token_hash: str) -> tuple[int, int | None] | None:
        with self.connection() as connection:
            row = connection.execute(self.token_sql, (token_hash,)).fetchone()
        return (row[0], row[1]) if row else None

    def book(
        self, user: tuple[int, int | None], instrument_id: int, start: datetime, end: datetime
    ) -> int | None:
        stamp = now()
        with self.connection() as connection:
            row = connection.execute(
                self.insert_sql, (*user, start, end, end, user[0], stamp, stamp, instrument_id)
            ).fetchone()
        return row[0] if row else None


class CeilingBooking(BaseModel):
    instrument_id: int
    start: AwareDatetime
    end: AwareDatetime


def ceiling_app() -> FastAPI:
    """The ceiling's app (a uvicorn factory); the database comes from BENCH_CEILING_DATABASE."""
    _check_ceiling_columns()
    url = os.environ["BENCH_CEILING_DATABASE"]
    store: SqliteCeiling | PostgresCeiling
    if is_sqlite(url):
        store = SqliteCeiling(make_url(url).database or "", Settings(database_url=url))
    else:
        store = PostgresCeiling(
            make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        )
    app = FastAPI()

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/book", status_code=201)
    def book(data: CeilingBooking, authorization: Annotated[str | None, Header()] = None) -> Any:
        scheme, _, token = (authorization or "").partition(" ")
        user = (
            store.user_of(hashlib.sha256(token.strip().encode()).hexdigest())
            if scheme.lower() == "bearer"
            else None
        )
        if user is None:
            return JSONResponse({"detail": "invalid token"}, status_code=401)
        if data.end <= data.start:
            return JSONResponse({"detail": "end before start"}, status_code=422)
        booking_id = store.book(user, data.instrument_id, data.start, data.end)
        if booking_id is None:
            return JSONResponse({"detail": "The time is already booked."}, status_code=409)
        return {"id": booking_id}

    return app


@contextlib.contextmanager
def ceiling_served(database: Database, workers: int) -> Iterator[str]:
    """``ceiling_app`` under uvicorn on a free loopback port, stopped afterwards."""
    port = free_port()
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "uvicorn", "bench.booking_load:ceiling_app", "--factory"),
                *("--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)),
                *("--log-level", "warning", "--no-access-log"),
            ],
            cwd=ROOT,
            env=os.environ | {"BENCH_CEILING_DATABASE": database.url},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + START_TIMEOUT_S
            while time.monotonic() < deadline and process.poll() is None:
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                        break
                time.sleep(0.2)
            else:
                log.seek(0)
                raise RuntimeError(f"the ceiling did not start:\n{log.read().decode()[-3000:]}")
            yield base
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()


@contextlib.contextmanager
def environment(**values: str) -> Iterator[None]:
    """Extra variables for the servers started inside the block."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


# --- The load: a lean HTTP/1.1 keep-alive client, so the client takes little of 2 cores -----


class LoadFailed(RuntimeError):
    pass


@dataclass
class Load:
    label: str
    clients: int
    elapsed_s: float
    latencies_ms: list[float]
    statuses: Counter[int]
    expected: Counter[int]
    client_cpu_s: float

    @property
    def throughput(self) -> float:
        return len(self.latencies_ms) / self.elapsed_s

    def line(self) -> str:
        other = sum(n for s, n in self.statuses.items() if s not in (201, 409))
        return (
            f"{self.throughput:7.1f} req/s  p50 {p(self.latencies_ms, 50):7.2f} ms  "
            f"p99 {p(self.latencies_ms, 99):7.2f} ms  "
            f"201/409/other {self.statuses[201]}/{self.statuses[409]}/{other}  "
            f"(client CPU {self.client_cpu_s / len(self.latencies_ms) * 1000:.2f} ms/req)"
        )


def pooled(loads: Sequence[Load]) -> Load:
    """The rounds of one measurement as one load: every request, the time of all rounds."""
    return Load(
        loads[0].label,
        loads[0].clients,
        sum(one.elapsed_s for one in loads),
        [latency for one in loads for latency in one.latencies_ms],
        sum((one.statuses for one in loads), Counter()),
        sum((one.expected for one in loads), Counter()),
        sum(one.client_cpu_s for one in loads),
    )


Plan = tuple[bytes, bytes, int]  # (authorization header value, JSON body, expected status)


def plans(fixture: Fixture, first_slot: int, count: int, salt: int) -> list[Plan]:
    """``count`` requests: free slots from ``first_slot`` on, every 10th a held slot instead."""
    result = []
    for r in range(count):
        if r % CONFLICT_EVERY == CONFLICT_EVERY - 1:
            instrument_id = fixture.round_the_clock[
                (r * 7919 + salt) % len(fixture.round_the_clock)
            ]
            start, end = fixture.seeded(instrument_id, (r + salt) % fixture.per_instrument)
            expected = 409
        else:
            instrument_id, start, end = fixture.load_slot(first_slot + r)
            expected = 201
        body = {"instrument_id": instrument_id, "start": start.isoformat(), "end": end.isoformat()}
        token = fixture.tokens[r % len(fixture.tokens)]
        result.append((f"Bearer {token}".encode(), json.dumps(body).encode(), expected))
    return result


async def _request(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes, plan: Plan
) -> tuple[int, bytes, bool]:
    authorization, body, _ = plan
    writer.write(
        head
        + b"Authorization: %s\r\nContent-Length: %d\r\n\r\n%s" % (authorization, len(body), body)
    )
    response = await reader.readuntil(b"\r\n\r\n")
    status = int(response[9:12])
    length, close = None, False
    for line in response.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"connection" and value.strip().lower() == b"close":
            close = True
    if length is None:
        raise LoadFailed(f"an answer without Content-Length: {response!r}")
    return status, await reader.readexactly(length), close


async def _drive(
    base: str, path: str, work: Sequence[Plan], clients: int, max_seconds: float
) -> tuple[float, list[float], Counter[int], Counter[int]]:
    url = httpx.URL(base)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {url.host}:{url.port}\r\nContent-Type: application/json\r\n"
    ).encode()
    pending = iter(work)
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    expected: Counter[int] = Counter()
    started = time.perf_counter()
    deadline = started + max_seconds

    async def client() -> None:
        reader, writer = await asyncio.open_connection(url.host, url.port)
        try:
            for plan in pending:
                if time.perf_counter() > deadline:
                    return
                sent = time.perf_counter()
                status, body, close = await asyncio.wait_for(
                    _request(reader, writer, head, plan), REQUEST_TIMEOUT_S
                )
                latencies.append((time.perf_counter() - sent) * 1000)
                statuses[status] += 1
                expected[plan[2]] += 1
                if status >= 500 or status not in (201, 409):
                    raise LoadFailed(f"{status} from {base}{path}: {body[:2000].decode()}")
                if close:
                    writer.close()
                    reader, writer = await asyncio.open_connection(url.host, url.port)
        finally:
            writer.close()

    await asyncio.gather(*(client() for _ in range(clients)))
    return time.perf_counter() - started, latencies, statuses, expected


def load(
    label: str, base: str, path: str, work: Sequence[Plan], clients: int, max_seconds: float
) -> Load:
    cpu = time.process_time()
    elapsed, latencies, statuses, expected = asyncio.run(
        _drive(base, path, work, clients, max_seconds)
    )
    result = Load(label, clients, elapsed, latencies, statuses, expected, time.process_time() - cpu)
    if len(latencies) < len(work):
        print(f"  ({label}: stopped after {max_seconds:.0f} s, {len(latencies)} requests)")
    if statuses[201] != expected[201] or statuses[409] != expected[409]:
        print(f"  ({label}: expected 201/409 {expected[201]}/{expected[409]})")
    return result


# --- Reads ----------------------------------------------------------------------------------


def _search(spec: dict[str, str]) -> InstrumentSearch:
    return InstrumentSearch(q=spec.get("q"), category=spec.get("category"))  # type: ignore[arg-type]


def reads(
    kind: str, database: Database, fixture: Fixture, calls: int
) -> list[tuple[str, list[float]]]:
    rng = random.Random(5)
    table = Booking.__table__  # type: ignore[attr-defined]
    held = [s.value for s in HELD_STATUSES]

    def window(days: int) -> tuple[datetime, datetime]:
        start = fixture.base + timedelta(days=rng.randint(0, SEED_DAYS - days), hours=16)
        return start, start + timedelta(days=days)

    def availability(_: int) -> object:
        start, end = window(14)
        with database.transaction(write=False) as session:
            return queries.availability(
                session, instrument_id=rng.choice(fixture.instrument_ids), start=start, end=end
            )

    def held_ranges_sql(_: int) -> object:
        start, end = window(14)
        with database.read_engine.connect() as connection:
            return connection.execute(
                sa.select(table.c.start_at, table.c.held_until).where(
                    table.c.instrument_id == rng.choice(fixture.instrument_ids),
                    table.c.status.in_(held),
                    table.c.start_at < end,
                    table.c.held_until > start,
                )
            ).all()

    def free_time(i: int) -> object:
        # What GET /api/v1/availability answers (its default limit of 50 instruments).
        start, end = window(FREE_TIME_DAYS)
        with database.transaction(write=False) as session:
            return queries.first_free_instruments(
                session,
                _search(FREE_SEARCHES[i % len(FREE_SEARCHES)]),
                start=start,
                end=end,
                min_minutes=FREE_TIME_MIN_MINUTES,
                limit=50,
            )

    def free_time_of_all_matches(i: int) -> object:
        start, end = window(FREE_TIME_DAYS)
        with database.transaction(write=False) as session:
            matches, _ = catalogue.search_instruments(
                session, _search(FREE_SEARCHES[i % len(FREE_SEARCHES)]), limit=500
            )
            return queries.free_time(
                session,
                instrument_ids=[m["id"] for m in matches],
                start=start,
                end=end,
                min_minutes=FREE_TIME_MIN_MINUTES,
            )

    def free_time_sql(i: int) -> object:
        start, end = window(FREE_TIME_DAYS)
        spec = FREE_SEARCHES[i % len(FREE_SEARCHES)]
        matching = sa.select(Instrument.id).limit(500)  # type: ignore[call-overload]
        if "q" in spec:
            matching = matching.where(Instrument.search_text.like(f"%{spec['q']}%"))  # type: ignore[attr-defined]
        else:
            matching = matching.where(Instrument.category == spec["category"])
        with database.read_engine.connect() as connection:
            return connection.execute(
                sa.select(table.c.instrument_id, table.c.start_at, table.c.held_until).where(
                    table.c.instrument_id.in_(matching.scalar_subquery()),
                    table.c.status.in_(held),
                    table.c.start_at < end,
                    table.c.held_until > start,
                )
            ).all()

    return [
        (f"{kind} 14-day availability, in-process", timed(availability, calls)),
        (f"{kind}   baseline: bare SQL held ranges", timed(held_ranges_sql, calls)),
        (f"{kind} free-time search, in-process", timed(free_time, calls)),
        (f"{kind}   baseline: bare SQL held ranges ", timed(free_time_sql, calls)),
        # Not a target: free time of every match (up to 500), no early stop.
        (f"{kind}   (free time of all matches, <= 500)", timed(free_time_of_all_matches, calls)),
    ]


def http_reads(kind: str, base: str, fixture: Fixture, calls: int) -> list[tuple[str, list[float]]]:
    rng = random.Random(6)

    def window(days: int) -> dict[str, str]:
        start = fixture.base + timedelta(days=rng.randint(0, SEED_DAYS - days), hours=16)
        return {"start": start.isoformat(), "end": (start + timedelta(days=days)).isoformat()}

    with httpx.Client(base_url=base, timeout=REQUEST_TIMEOUT_S) as client:

        def get(path: str, params: dict[str, Any]) -> object:
            response = client.get(path, params=params)
            if response.status_code != 200:
                raise LoadFailed(f"{response.status_code} from {path}: {response.text[:2000]}")
            return response

        def availability(_: int) -> object:
            instrument_id = rng.choice(fixture.instrument_ids)
            return get(f"/api/v1/instruments/{instrument_id}/availability", window(14))

        def free_time(i: int) -> object:
            params = window(FREE_TIME_DAYS) | FREE_SEARCHES[i % len(FREE_SEARCHES)]
            return get("/api/v1/availability", params | {"min_minutes": FREE_TIME_MIN_MINUTES})

        return [
            (f"{kind} 14-day availability over HTTP", timed(availability, calls)),
            (f"{kind} free-time search over HTTP", timed(free_time, calls)),
            (f"{kind}   baseline: /healthz", timed(lambda i: get("/healthz", {}), calls)),
        ]


# --- The run --------------------------------------------------------------------------------


@dataclass
class Report:
    rows: list[tuple[str, ...]] = field(default_factory=list)
    missed: int = 0

    def add(self, kind: str, measure: str, figure: str, against: str, ratio: str, ok: bool) -> None:
        self.missed += not ok
        self.rows.append((kind, measure, figure, against, ratio, "met" if ok else "MISSED"))

    def print(self) -> None:
        header = ("db", "measure", "labshare", "ceiling/baseline", "ratio", "target")
        widths = [max(len(r[i]) for r in [header, *self.rows]) for i in range(len(header))]
        for row in [header, *self.rows]:
            print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))


def run(kind: str, database: Database, args: argparse.Namespace, report: Report) -> None:
    fixture = build(database, args.instruments, args.bookings)
    workers = 1 if kind == "sqlite" else 2
    read_results = reads(kind, database, fixture, args.calls)
    for label, samples in read_results:
        print(f"  {label:48} p50 {p(samples, 50):7.2f} ms  p95 {p(samples, 95):7.2f} ms")

    requests = args.requests
    slot = 0
    rounds: dict[tuple[str, int], list[Load]] = {}

    def measure(name: str, base: str, path: str, clients: int, salt: int) -> None:
        nonlocal slot
        work = plans(fixture, slot, requests, salt)
        slot += requests
        result = load(f"{name}, {clients} clients", base, path, work, clients, args.max_seconds)
        rounds.setdefault((name, clients), []).append(result)
        round_number = len(rounds[name, clients])
        print(
            f"  {kind} create booking, {name}, {clients} client(s), round {round_number}:".ljust(62)
            + result.line()
        )

    # Servers see the rate limit raised: on a faster machine the load's users would pass 30
    # requests a minute, and a 429 would end the run.
    # Both servers run side by side and take turns, a round at a time, in alternating order:
    # this machine's speed drifts (by up to 2x within minutes), and so both see the same drift.
    with (
        environment(LABSHARE_BOOKING_CREATIONS_PER_MINUTE="1000000"),
        served(database, workers=workers) as labshare_base,
        ceiling_served(database, workers) as ceiling_base,
    ):
        http_results = http_reads(kind, labshare_base, fixture, args.calls)
        for label, samples in http_results:
            print(f"  {label:48} p50 {p(samples, 50):7.2f} ms  p95 {p(samples, 95):7.2f} ms")
        servers = [
            ("labshare", labshare_base, "/api/v1/bookings", 0),
            ("ceiling", ceiling_base, "/book", 100),
        ]
        for name, base, path, salt in servers:
            load(
                f"{name} warm-up",
                base,
                path,
                plans(fixture, slot, WARM_UP, salt),
                4,
                args.max_seconds,
            )
            slot += WARM_UP
        for round_index in range(args.rounds):
            for clients in (1, 8):
                turn = servers if round_index % 2 == 0 else servers[::-1]
                for name, base, path, salt in turn:
                    measure(name, base, path, clients, salt + clients + 10 * round_index)
    loads = {key: pooled(results) for key, results in rounds.items()}

    for clients in (1, 8):
        ours, ceiling = loads["labshare", clients], loads["ceiling", clients]
        share = ours.throughput / ceiling.throughput
        each_round = "/".join(
            f"{a.throughput / b.throughput:.0%}"
            for a, b in zip(rounds["labshare", clients], rounds["ceiling", clients], strict=True)
        )
        report.add(
            kind,
            f"create, {clients} client(s), {workers} worker(s): throughput",
            f"{ours.throughput:.1f} req/s",
            f"{ceiling.throughput:.1f} req/s",
            f"{share:.0%} (rounds {each_round})",
            share >= TARGET_THROUGHPUT_SHARE,
        )
        ours_p99, ceiling_p99 = p(ours.latencies_ms, 99), p(ceiling.latencies_ms, 99)
        report.add(
            kind,
            f"create, {clients} client(s): p99 (p50)",
            f"{ours_p99:.2f} ({p(ours.latencies_ms, 50):.2f}) ms",
            f"{ceiling_p99:.2f} ({p(ceiling.latencies_ms, 50):.2f}) ms",
            f"{ours_p99 / ceiling_p99:.2f}x",
            ours_p99 <= TARGET_P99_FACTOR * ceiling_p99,
        )
    by_label = dict(read_results + http_results)
    sql = [p(by_label[f"{kind}   baseline: bare SQL held ranges{n}"], 95) for n in ("", " ")]
    healthz = p(by_label[f"{kind}   baseline: /healthz"], 95)
    for label, baseline, against, limit in (
        ("14-day availability, in-process", sql[0], "SQL", TARGET_AVAILABILITY_P95_MS),
        ("free-time search, in-process", sql[1], "SQL", TARGET_FREE_TIME_P95_MS),
        ("14-day availability over HTTP", healthz, "/healthz", TARGET_AVAILABILITY_P95_MS),
        ("free-time search over HTTP", healthz, "/healthz", TARGET_FREE_TIME_P95_MS),
    ):
        figure = p(by_label[f"{kind} {label}"], 95)
        report.add(
            kind,
            f"{label}: p95",
            f"{figure:.2f} ms",
            f"{baseline:.2f} ms ({against})",
            f"{figure / baseline:.1f}x",
            figure < limit,
        )


def code_version() -> str:
    """The commit measured, and whether the working tree differed from it."""
    try:
        commit = (
            subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, check=True
            )
            .stdout.decode()
            .strip()
        )
        changed = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "not a git checkout"
    return f"commit {commit}" + (" with uncommitted changes" if changed else "")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--instruments", type=int, default=5000)
    parser.add_argument("--bookings", type=int, default=200_000)
    parser.add_argument(
        "--requests", type=int, default=2000, help="per load run (4 per round and database)"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=4,
        help="turns of each server (even: each goes first as often)",
    )
    parser.add_argument("--calls", type=int, default=100, help="per read measurement")
    parser.add_argument("--max-seconds", type=float, default=120, help="per load run")
    parser.add_argument(
        "--postgres", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    )
    parser.add_argument("--only", choices=["sqlite", "postgres"])
    args = parser.parse_args()
    if make_url(args.postgres).host not in ("127.0.0.1", "localhost", None):
        raise SystemExit("this benchmark talks to 127.0.0.1 only")
    report = Report()
    started = time.perf_counter()
    print(f"labshare at {ROOT}: {code_version()}; {os.cpu_count()} CPUs")
    for kind in ("sqlite", "postgres"):
        if args.only and kind != args.only:
            continue
        print(f"== {kind}")
        with fresh_database(kind, args.postgres) as database:
            run(kind, database, args, report)
    print(f"\n== summary ({time.perf_counter() - started:.0f} s)")
    print(
        f"targets: create throughput >= {TARGET_THROUGHPUT_SHARE:.0%} of the ceiling, p99 <= "
        f"{TARGET_P99_FACTOR:g}x the ceiling's; availability p95 < "
        f"{TARGET_AVAILABILITY_P95_MS:g} ms; free-time search ({FREE_TIME_DAYS} days, "
        f"min_minutes={FREE_TIME_MIN_MINUTES}) p95 < {TARGET_FREE_TIME_P95_MS:g} ms"
    )
    report.print()
    print(f"{report.missed} target(s) missed")


if __name__ == "__main__":
    main()
