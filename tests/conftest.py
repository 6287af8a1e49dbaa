"""Test databases: every storage test runs on SQLite and on PostgreSQL.

The schema comes from the Alembic migrations, built once per test session and engine; each
test runs inside one outer transaction that is rolled back at the end. PostgreSQL comes from
LABSHARE_TEST_POSTGRES_URL (an admin URL: the suite creates and drops its own database);
without it those tests skip, and with LABSHARE_REQUIRE_SERVICES=1 they fail instead.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.engine import make_url
from sqlmodel import Session

from core.db import ConnectionBoundDatabase, Database
from core.settings import Settings
from web import dbschema
from web.app import create_app

POSTGRES_ADMIN_URL = os.environ.get("LABSHARE_TEST_POSTGRES_URL")
REQUIRE_SERVICES = os.environ.get("LABSHARE_REQUIRE_SERVICES") == "1"


def missing_service(reason: str) -> None:
    """Skip, or fail when the run promised every service (CI)."""
    if REQUIRE_SERVICES:
        pytest.fail(f"{reason} (LABSHARE_REQUIRE_SERVICES=1 makes this a failure)")
    pytest.skip(reason)


def test_settings(url: str) -> Settings:
    return Settings(
        database_url=url,
        log_json=False,
        log_level="WARNING",
        # Fast enough for tests, still a real argon2/SQLite configuration.
        sqlite_synchronous="NORMAL",
    )


def make_sqlite_database(directory: Path) -> Database:
    database = Database(test_settings(f"sqlite:///{directory / 'labshare-test.db'}"))
    dbschema.upgrade(database)
    return database


class PostgresDatabases:
    """Creates fresh PostgreSQL databases from the admin URL and drops them afterwards."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self.engine = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
        self.created: list[str] = []

    def create(self) -> Database:
        name = f"labshare_test_{uuid.uuid4().hex[:12]}"
        with self.engine.connect() as connection:
            connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
        self.created.append(name)
        url = make_url(self.admin_url).set(database=name).render_as_string(hide_password=False)
        database = Database(test_settings(url))
        dbschema.upgrade(database)
        return database

    def drop_all(self) -> None:
        with self.engine.connect() as connection:
            for name in self.created:
                connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.engine.dispose()


@pytest.fixture(scope="session")
def postgres_databases() -> Iterator[PostgresDatabases]:
    if not POSTGRES_ADMIN_URL:
        missing_service("PostgreSQL not configured: set LABSHARE_TEST_POSTGRES_URL")
    databases = PostgresDatabases(POSTGRES_ADMIN_URL or "")
    try:
        with databases.engine.connect():
            pass
    except sa.exc.OperationalError as exc:
        missing_service(f"PostgreSQL unreachable at {POSTGRES_ADMIN_URL}: {exc.orig}")
    yield databases
    databases.drop_all()


@pytest.fixture(scope="session")
def migrated_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Database]:
    database = make_sqlite_database(tmp_path_factory.mktemp("sqlite"))
    yield database
    database.dispose()


@pytest.fixture(scope="session")
def migrated_postgres(postgres_databases: PostgresDatabases) -> Iterator[Database]:
    database = postgres_databases.create()
    yield database
    database.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def database(backend: str, request: pytest.FixtureRequest) -> Iterator[ConnectionBoundDatabase]:
    """A database whose every session joins one transaction, rolled back after the test."""
    base: Database = request.getfixturevalue(f"migrated_{backend}")
    connection = base.write_engine.connect()
    transaction = connection.begin()
    yield ConnectionBoundDatabase(base.settings, connection)
    transaction.rollback()
    connection.close()


@pytest.fixture
def session(database: ConnectionBoundDatabase) -> Iterator[Session]:
    with database.new_session() as session:
        yield session


@pytest.fixture
def fresh_database(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Database]:
    """A migrated database of the test's own with committed data (several processes use it)."""
    if backend == "sqlite":
        database = make_sqlite_database(tmp_path)
    else:
        database = request.getfixturevalue("postgres_databases").create()
    yield database
    database.dispose()


@pytest.fixture
def app(database: ConnectionBoundDatabase):  # type: ignore[no-untyped-def]
    return create_app(database.settings, database)


@pytest.fixture
def client(app) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    # https: the session cookie is Secure, as in production.
    with TestClient(app, base_url="https://testserver") as test_client:
        yield test_client
