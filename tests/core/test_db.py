import gc
import weakref
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from sqlmodel import Session

from core import audit
from core.accounts import service as accounts
from core.accounts.models import User
from core.accounts.schemas import UserCreate
from core.auth.service import issue_access_token, principal_for_token
from core.clock import now
from core.db import ConnectionBoundDatabase, Database, HotStatement, Preamble, as_loaded
from core.settings import Settings
from tests.factories import make_user
from tests.querycount import counted_statements


def test_sqlite_is_tuned_for_a_web_server_and_durable_by_default(tmp_path: Path) -> None:
    database = Database(Settings(database_url=f"sqlite:///{tmp_path / 'x.db'}"))
    with database.write_engine.connect() as connection:
        pragma = lambda name: connection.exec_driver_sql(f"PRAGMA {name}").scalar()  # noqa: E731
        assert pragma("journal_mode") == "wal"
        assert pragma("foreign_keys") == 1
        assert pragma("busy_timeout") == 10_000
        assert pragma("synchronous") == 2  # FULL
    database.dispose()


def test_the_writer_pool_has_one_connection_per_process(tmp_path: Path) -> None:
    database = Database(Settings(database_url=f"sqlite:///{tmp_path / 'x.db'}"))
    assert database.write_engine.pool.size() == 1
    database.dispose()


def test_a_naive_datetime_never_reaches_the_database(session: Session) -> None:
    entry = audit.AuditEntry(
        action="x",
        subject_type="x",
        subject_id="1",
        occurred_at=datetime(2026, 1, 1),  # noqa: DTZ001
    )
    session.add(entry)
    with pytest.raises(Exception, match="naive datetime"):
        session.flush()
    session.rollback()


def test_datetimes_come_back_aware_in_utc(session: Session) -> None:
    entry = audit.record(session, actor_id=None, action="x", subject_type="x", subject_id=1)
    session.expire_all()
    loaded = session.get(audit.AuditEntry, entry.id)
    assert loaded.occurred_at.tzinfo is not None
    assert loaded.occurred_at.utcoffset().total_seconds() == 0


def test_a_row_read_with_core_becomes_the_object_a_query_would_give(session: Session) -> None:
    accounts.create_user(
        session, actor_id=None, data=UserCreate(email="core@example.cn", name="核心")
    )
    session.flush()
    session.expunge_all()
    table = User.__table__  # type: ignore[attr-defined]
    row = session.connection().execute(sa.select(table)).mappings().one()

    loaded = as_loaded(session, User, dict(row))

    assert loaded in session
    assert session.get(User, row["id"]) is loaded
    assert (loaded.email, loaded.created_at) == (row["email"], row["created_at"])
    # Changed and flushed like any loaded object.
    loaded.name = "改名"
    session.flush()
    assert session.connection().execute(sa.select(table.c.name)).scalar_one() == "改名"
    # A row the session holds already comes back as the session's own object.
    assert as_loaded(session, User, dict(row)) is loaded


def test_a_row_read_with_core_needs_every_column_and_may_replace_what_the_session_holds(
    session: Session,
) -> None:
    accounts.create_user(
        session, actor_id=None, data=UserCreate(email="stale@example.cn", name="旧")
    )
    session.flush()
    session.expunge_all()
    table = User.__table__  # type: ignore[attr-defined]
    row = dict(session.connection().execute(sa.select(table)).mappings().one())
    without_email = {name: value for name, value in row.items() if name != "email"}
    with pytest.raises(TypeError, match="email"):
        as_loaded(session, User, without_email)

    held = as_loaded(session, User, row)
    written = as_loaded(session, User, row | {"name": "新"}, replacing=True)

    assert written is not held
    assert held not in session
    assert session.get(User, row["id"]) is written
    assert written.name == "新"


def test_on_postgresql_a_rollback_keeps_the_connections_prepared_statements(
    migrated_postgres: Database,
) -> None:
    users = User.__table__  # type: ignore[attr-defined]
    count_users = sa.select(sa.func.count()).select_from(users)
    prepared = "SELECT count(*) FROM pg_prepared_statements"
    with migrated_postgres.write_engine.connect() as connection:
        for _ in range(6):  # psycopg prepares a statement on its sixth run on a connection
            connection.execute(count_users).scalar_one()
            connection.rollback()
        before = connection.exec_driver_sql(prepared).scalar_one()
        assert before >= 1
        users_before = connection.execute(count_users).scalar_one()
        connection.execute(
            sa.insert(users).values(
                email="rolled-back@example.cn",
                name="撤销",
                locale="zh-CN",
                is_active=True,
                created_at=now(),
                updated_at=now(),
            )
        )
        connection.rollback()

        assert connection.execute(count_users).scalar_one() == users_before
        assert connection.exec_driver_sql(prepared).scalar_one() == before


def test_on_postgresql_a_connection_recovers_from_a_schema_change_under_its_statements(
    migrated_postgres: Database,
) -> None:
    """A statement prepared before a migration changed its result fails once ("cached plan must
    not change result type"); the failed transaction's rollback forgets the prepared
    statements, and the next run works."""
    engine = migrated_postgres.write_engine
    with engine.begin() as setup:
        setup.exec_driver_sql("CREATE TABLE plan_probe (id integer, name varchar(10))")
        setup.exec_driver_sql("INSERT INTO plan_probe VALUES (1, 'a')")
    read = sa.text("SELECT * FROM plan_probe WHERE id = :id")
    try:
        with engine.connect() as connection:
            for _ in range(6):  # prepared on the sixth run
                connection.execute(read, {"id": 1}).all()
                connection.rollback()
            with engine.begin() as migration:  # another connection, as a migration would
                migration.exec_driver_sql("ALTER TABLE plan_probe ALTER COLUMN name TYPE text")
            with pytest.raises(sa.exc.DBAPIError, match="cached plan must not change"):
                connection.execute(read, {"id": 1}).all()
            connection.rollback()

            assert connection.execute(read, {"id": 1}).all() == [(1, "a")]
    finally:
        with engine.begin() as cleanup:
            cleanup.exec_driver_sql("DROP TABLE plan_probe")


# --- Hot statements: below SQLAlchemy's execution, the same values in and out ----------------

AUDIT: sa.Table = audit.AuditEntry.__table__  # type: ignore[attr-defined]
NEW_ENTRY = (
    sa.insert(AUDIT)
    .values(
        occurred_at=sa.bindparam("occurred_at"),
        actor_id=None,
        action=sa.bindparam("action"),
        subject_type="hot",  # a literal of the statement
        subject_id=sa.bindparam("subject_id"),
        data=sa.bindparam("data"),
        request_id=sa.bindparam("action"),  # a parameter used twice
    )
    .returning(AUDIT.c.id)
)
ENTRIES = (
    sa.select(AUDIT.c.id, AUDIT.c.occurred_at, AUDIT.c.data, AUDIT.c.request_id.label("request"))
    .where(AUDIT.c.subject_type == "hot", AUDIT.c.action == sa.bindparam("action"))
    .order_by(AUDIT.c.id)
)
STORED = sa.select(
    sa.cast(AUDIT.c.occurred_at, sa.String), sa.cast(AUDIT.c.data, sa.String), AUDIT.c.request_id
).where(AUDIT.c.id == sa.bindparam("id"))


def test_a_hot_statement_stores_and_reads_values_exactly_as_sqlalchemy_does(
    session: Session,
) -> None:
    connection = session.connection()
    values = {
        "occurred_at": datetime(2026, 5, 1, 9, 30, 15, 250, tzinfo=ZoneInfo("Asia/Shanghai")),
        "action": "hot.tested",
        "data": {"status": "confirmed", "overrides": ["min_notice"], "note": "预约", "none": None},
    }
    hot = HotStatement(NEW_ENTRY).rows(connection, values | {"subject_id": "1"})
    core_id = connection.execute(NEW_ENTRY, values | {"subject_id": "2"}).scalar_one()

    assert [type(row.id) for row in hot] == [int]
    stored = [connection.execute(STORED, {"id": i}).one() for i in (hot[0].id, core_id)]
    assert stored[0] == stored[1]  # the same text in the database, byte for byte
    read = HotStatement(ENTRIES).rows(connection, {"action": "hot.tested"})
    assert read == [tuple(row) for row in connection.execute(ENTRIES, {"action": "hot.tested"})]
    first = read[0]
    assert first.occurred_at == values["occurred_at"]
    assert first.occurred_at.tzinfo is UTC
    assert first.data == values["data"]
    assert first.request == "hot.tested"


def test_a_hot_statement_is_seen_by_those_counting_statements(
    database: ConnectionBoundDatabase,
) -> None:
    with database.new_session() as session, counted_statements(database) as statements:
        HotStatement(ENTRIES).rows(session.connection(), {"action": "hot.counted"})
    assert len(statements) == 1
    assert "FROM audit_entry" in statements[0]


def test_a_driver_error_in_a_hot_statement_is_sqlalchemys_error(session: Session) -> None:
    with pytest.raises(sa.exc.IntegrityError):
        HotStatement(NEW_ENTRY).rows(
            session.connection(),
            {"occurred_at": now(), "action": None, "subject_id": "1", "data": {}},
        )
    session.rollback()


def test_a_hot_statement_refuses_a_parameter_it_cannot_bind_ahead(session: Session) -> None:
    by_actions = sa.select(AUDIT.c.id).where(
        AUDIT.c.action.in_(sa.bindparam("actions", expanding=True))
    )
    with pytest.raises(TypeError, match="expanding"):
        HotStatement(by_actions).rows(session.connection(), {"actions": ["a", "b"]})


def test_a_session_that_ran_a_preamble_is_freed_when_it_is_closed_not_by_the_collector(
    database: ConnectionBoundDatabase, session: Session
) -> None:
    # A request's session left in a reference cycle takes its transaction and connection objects
    # with it to the garbage collector, whose passes then come often enough to slow requests.
    token = issue_access_token(session, Settings(), user=make_user(session, password=None)).token
    preamble = Preamble(lambda user_id: [user_id], frozenset({"sqlite", "postgresql"}))
    gc.disable()
    try:
        request_session = database.new_session()
        found = principal_for_token(request_session, token=token, preamble=preamble)
        assert preamble.ran_for(request_session) == found.user_id
        request_session.commit()
        request_session.close()
        freed = weakref.ref(request_session)
        del request_session
        assert freed() is None
    finally:
        gc.enable()


def test_a_preamble_found_with_the_caller_holds_for_the_caller_until_the_transaction_ends(
    session: Session,
) -> None:
    caller = make_user(session, password=None)
    token = issue_access_token(session, Settings(), user=caller).token
    everywhere = Preamble(lambda user_id: [user_id * 2], frozenset({"sqlite", "postgresql"}))
    elsewhere = Preamble(lambda user_id: [user_id], frozenset({"oracle"}))
    assert everywhere.ran_for(session) is None

    found = principal_for_token(session, token=token, preamble=everywhere)
    principal_for_token(session, token=token, preamble=elsewhere)

    assert everywhere.ran_for(session) == found.user_id == caller.id
    assert elsewhere.ran_for(session) is None  # not for this database: not run
    session.rollback()  # which undoes what the preamble did
    assert everywhere.ran_for(session) is None
