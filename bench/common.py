"""Shared pieces of the benchmarks: databases, a served app, timing."""

from __future__ import annotations

import contextlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from core.db import Database
from core.settings import Settings
from web import dbschema

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 120  # a busy two-core machine starts several workers slowly


@contextlib.contextmanager
def fresh_database(kind: str, postgres_admin_url: str) -> Iterator[Database]:
    """A migrated database of the benchmark's own, dropped afterwards."""
    if kind == "sqlite":
        with tempfile.TemporaryDirectory() as directory:
            database = Database(
                Settings(database_url=f"sqlite:///{directory}/bench.db", log_json=False)
            )
            dbschema.upgrade(database)
            try:
                yield database
            finally:
                database.dispose()
        return
    name = f"labshare_bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(postgres_admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = make_url(postgres_admin_url).set(database=name).render_as_string(hide_password=False)
    database = Database(Settings(database_url=url, log_json=False))
    try:
        dbschema.upgrade(database)
        yield database
    finally:
        database.dispose()
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def served(database: Database, workers: int = 1) -> Iterator[str]:
    """``labshare serve`` on a free loopback port, stopped afterwards."""
    with served_process(database, workers) as (base, _):
        yield base


@contextlib.contextmanager
def served_process(
    database: Database, workers: int = 1, code: Path = ROOT
) -> Iterator[tuple[str, int]]:
    """``labshare serve`` of the code in ``code`` (``python -m`` imports from the working
    directory first) on a free loopback port: its base URL and process id."""
    port = free_port()
    env = os.environ | {
        "LABSHARE_DATABASE_URL": database.url,
        "LABSHARE_LOG_LEVEL": "WARNING",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "web.cli", "serve", "--port", str(port), "--workers", str(workers)],
        cwd=code,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
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
            raise RuntimeError(f"the server from {code} did not start")
        yield base, process.pid
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


def timed(call: Callable[[int], object], count: int) -> list[float]:
    """Milliseconds for each of ``count`` calls (after a few warm-up calls)."""
    for index in range(min(5, count)):
        call(index)
    samples = []
    for index in range(count):
        started = time.perf_counter()
        call(index)
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def p(samples: list[float], percentile: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(percentile / 100 * (len(ordered) - 1)))]


def summary(samples: list[float]) -> str:
    mean = statistics.fmean(samples)
    return f"p50 {p(samples, 50):7.2f} ms  p95 {p(samples, 95):7.2f} ms  mean {mean:7.2f} ms"
