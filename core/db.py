"""Engines, sessions and column types shared by every domain.

SQLite is the embedded default and PostgreSQL the scale-out engine; the same code runs on both.
On SQLite every transaction that may write starts with ``BEGIN IMMEDIATE`` on the process's one
writer connection, so a read-then-write check (overlap, budget, capacity) cannot race another
writer, and writers of one process queue in the pool instead of spinning on SQLite's busy lock.
Services flush and never commit: the caller (a request, a job, a CLI command) owns the transaction.
"""

from __future__ import annotations

import collections
import contextlib
import copy
import enum
import functools
import time
import traceback
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar, cast

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.orm.attributes import instance_state
from sqlmodel import Session, SQLModel

from core.settings import Settings

# Stable constraint names, so Alembic migrations can address them on both engines.
SQLModel.metadata.naming_convention = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """An aware UTC datetime on both engines; a naive value is refused on the way in."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        # SQLite has no time zones; store UTC wall time so text comparisons order correctly.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def enum_type(enum_class: type[enum.Enum], length: int) -> sa.Enum:
    """A VARCHAR column holding an enum's values (not names), read back as the enum."""
    return sa.Enum(
        enum_class,
        native_enum=False,
        create_constraint=False,
        length=length,
        values_callable=lambda members: [member.value for member in members],
        validate_strings=True,
    )


def utc_column(*, nullable: bool = False, index: bool = False) -> Any:
    """A ``sa.Column`` of :class:`UTCDateTime`, for ``Field(sa_column=...)``."""
    return sa.Column(UTCDateTime(), nullable=nullable, index=index)


# Connections a pool opens beyond its size when busy (closed again when returned).
POOL_OVERFLOW = 10


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def _sqlite_engine(settings: Settings, *, writer: bool) -> Engine:
    url = make_url(settings.database_url)
    if url.database and url.database != ":memory:":
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(
        url,
        echo=settings.db_echo,
        connect_args={
            "check_same_thread": False,
            "timeout": settings.sqlite_busy_timeout_ms / 1000,
        },
        # One writer connection per process: writers queue here, not on SQLite's lock.
        pool_size=1 if writer else settings.db_pool_size,
        max_overflow=0 if writer else POOL_OVERFLOW,
        pool_timeout=60,
    )

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection: Any, _record: Any) -> None:
        # pysqlite's own transaction handling would defer BEGIN; we emit it ourselves below.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(settings.sqlite_busy_timeout_ms)}")
        cursor.execute(f"PRAGMA synchronous={settings.sqlite_synchronous}")
        cursor.close()

    begin = "BEGIN IMMEDIATE" if writer else "BEGIN"

    @event.listens_for(engine, "begin")
    def _begin(connection: Connection) -> None:
        # On the driver's connection: through SQLAlchemy's execution (a cursor, a context, the
        # events) it cost as much as a booking request's INSERT.
        connection.connection.driver_connection.execute(begin)  # type: ignore[union-attr]

    return engine


# A pooled connection that sat idle this long is tested before use; one in steady use is not.
IDLE_PING_S = 1.0


def _ping_when_idle(engine: Engine) -> None:
    """Like ``pool_pre_ping``, but without a round trip per checkout under load.

    A connection returned to the pool less than ``IDLE_PING_S`` ago was working then; one idle
    longer (the server restarted, a firewall dropped it) is pinged, and if it is dead the pool
    replaces it before anyone uses it. A connection that dies in between fails its statement,
    and SQLAlchemy then discards every pooled connection older than the failure.
    """

    @event.listens_for(engine, "checkin")
    def _returned(_dbapi_connection: Any, record: Any) -> None:
        record.info["returned_at"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checked_out(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        returned_at = record.info.get("returned_at")
        if returned_at is None or time.monotonic() - returned_at < IDLE_PING_S:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as exc:
            if engine.dialect.is_disconnect(exc, dbapi_connection, None):
                raise sa.exc.DisconnectionError(str(exc)) from exc
            raise


class HotStatement:
    """A Core statement for the hottest paths, run below SQLAlchemy's statement execution.

    ``Connection.execute`` costs several times what the database does for the small statements
    every booking request sends: an execution context, the parameters processed through the
    compiled statement, a result whose metadata is built anew on every run. Here the statement
    is compiled once per dialect; each run processes its parameters with the statement's own
    bind processors (values are stored exactly as ``execute`` stores them), sends the SQL on
    the connection's driver cursor, and types the rows with the statement's own result
    processors. A driver error is handled by the connection as for any statement (wrapped in
    SQLAlchemy's exception, a lost connection invalidated). Where anyone listens to the
    connection's statements (the query-count tests) or it logs them (``echo``), the statement
    goes through ``exec_driver_sql`` instead, and is seen and logged as any other.

    The statement's every parameter is a named ``bindparam`` or a literal; its rows are named
    tuples of its columns.
    """

    def __init__(self, statement: Any) -> None:
        self.statement = statement
        self._compiled: dict[str, _CompiledHot] = {}

    def rows(self, connection: Connection, parameters: dict[str, Any]) -> list[Any]:
        """The statement's rows (empty for one without any), typed as its columns are."""
        compiled = self._compiled.get(connection.dialect.name)
        if compiled is None:
            compiled = self._compiled[connection.dialect.name] = _CompiledHot.of(
                self.statement, connection.dialect
            )
        arguments = compiled.arguments(parameters)
        if _observed(connection):
            result = connection.exec_driver_sql(compiled.sql, arguments)
            if compiled.row is None:
                return []
            raw_rows = result.fetchall()
        else:
            cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
            try:
                cursor.execute(compiled.sql, arguments)
                if compiled.row is None:
                    return []
                raw_rows = cursor.fetchall()
            except connection.dialect.loaded_dbapi.Error as error:
                try:
                    connection._handle_dbapi_exception(error, compiled.sql, arguments, cursor, None)
                except sa.exc.DBAPIError as raised:
                    # SQLAlchemy's finished frames hold the error that holds them: a cycle of
                    # some 120 objects for the garbage collector, on every refusal a caller
                    # expects (an overlap on SQLite). They are let go here.
                    traceback.clear_frames(raised.__traceback__)
                    raise
                raise  # not reached: the line above raises SQLAlchemy's exception
            finally:
                cursor.close()
        make = compiled.row._make
        if not compiled.converted:
            return [make(raw) for raw in raw_rows]
        rows = []
        for raw in raw_rows:
            values = list(raw)
            for index, convert in compiled.converted:
                values[index] = convert(values[index])
            rows.append(make(values))
        return rows


def _observed(connection: Connection) -> bool:
    """Whether the connection's statements are listened to (the cursor events, where listeners
    see each statement's SQL) or logged, or it is outside a transaction (where SQLAlchemy would
    begin one)."""
    dispatch = connection.dispatch
    return bool(
        dispatch.before_cursor_execute
        or dispatch.after_cursor_execute
        or connection.engine.echo
        or not connection.in_transaction()
    )


@dataclass(frozen=True, eq=False)
class Preamble:
    """What a transaction needs before its later statements (a setting, a lock), as columns
    that the transaction's first statement evaluates besides its own: a round trip fewer than
    a statement of their own.

    The columns concern one subject (a user, say): ``columns(subject_id)`` gets its id as a
    column of the carrying statement, or as a parameter. They run only on ``dialects``. The
    step that runs them notes it (``note_ran``), and a later step that needs them asks
    ``ran_for`` whether they ran in this transaction, and for whom: a rollback undoes them, so
    after one (a retried unit of work) the answer is None, and the step runs them itself.
    """

    columns: Callable[[Any], Sequence[Any]]
    dialects: frozenset[str]

    def runs_on(self, session: Session) -> bool:
        return session.get_bind().dialect.name in self.dialects

    def note_ran(self, session: Session, subject_id: int) -> None:
        # A weak reference: the session holding its transaction strongly in ``info`` is a
        # reference cycle, left with its connection's objects (some 40) to the garbage
        # collector on every request: a server passed it every 12 booking requests (0.1-2 ms a
        # pass), every 67 without the cycle.
        session.info[self] = (weakref.ref(session.get_transaction()), subject_id)

    def ran_for(self, session: Session) -> int | None:
        """The subject the preamble ran for in the session's current transaction, if it did."""
        noted = session.info.get(self)
        transaction = session.get_transaction()
        if noted is None or transaction is None or noted[0]() is not transaction:
            return None
        subject_id: int = noted[1]
        return subject_id


@dataclass(frozen=True)
class _CompiledHot:
    sql: str
    # Per bound value, in the SQL's order: the parameter it takes (None: the statement's
    # literal), that literal, its bind processor.
    binds: tuple[tuple[str | None, Any, Any], ...]
    row: Any  # a named tuple class of the result's columns; None for a statement without rows
    # The result's columns read through a converter: (place, converter).
    converted: tuple[tuple[int, Any], ...]

    @classmethod
    def of(cls, statement: Any, dialect: sa.Dialect) -> _CompiledHot:
        compiled = statement.compile(dialect=_positional(dialect))
        binds = []
        for name in compiled.positiontup:
            bind = compiled.binds[name]
            if bind.expanding or bind.callable is not None:
                raise TypeError(f"{name}: an expanding or callable parameter is not supported")
            parameter = None if bind.unique else bind.key
            processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
            binds.append((parameter, bind.value, processor))
        columns = list(statement.exported_columns)  # a SELECT's, or the RETURNING columns
        # rename: a column without a name (a bare count) is field _0, _1 … by its place.
        row = (
            collections.namedtuple("Row", [str(c.key) for c in columns], rename=True)
            if columns
            else None
        )
        converters = (c.type.dialect_impl(dialect).result_processor(dialect, None) for c in columns)
        converted = tuple(
            (place, convert) for place, convert in enumerate(converters) if convert is not None
        )
        return cls(compiled.string, tuple(binds), row, converted)

    def arguments(self, parameters: dict[str, Any]) -> tuple[Any, ...]:
        """The driver's parameters, in order: each value processed as ``Connection.execute``
        would."""
        values = [
            literal if parameter is None else parameters[parameter]
            for parameter, literal, _ in self.binds
        ]
        return tuple(
            [
                value if processor is None else processor(value)
                for value, (_, _, processor) in zip(values, self.binds, strict=True)
            ]
        )


def _positional(dialect: sa.Dialect) -> sa.Dialect:
    """The dialect, compiling parameters by position: SQLite's ``?`` already; psycopg's
    ``%(name)s`` becomes ``%s``, so the driver takes the values in order instead of picking
    each out of a dict by name on every run. (A driver that takes only named parameters
    cannot run hot statements.)"""
    if dialect.positional:
        return dialect
    if dialect.paramstyle != "pyformat":
        raise TypeError(f"hot statements need positional parameters, not {dialect.paramstyle}")
    positional = copy.copy(dialect)
    positional.paramstyle, positional.positional = "format", True
    return positional


M = TypeVar("M", bound=SQLModel)


@functools.cache
def _configured_mapper(model: type[M]) -> sa.orm.Mapper[M]:
    # A process whose first ORM use is as_loaded has not set its mappers up yet (a query would).
    sa.orm.configure_mappers()
    return sa.inspect(model)


@functools.cache
def _column_keys(model: type[M]) -> frozenset[str]:
    return frozenset(str(c.key) for c in _configured_mapper(model).column_attrs)


def as_loaded(
    session: Session, model: type[M], values: dict[str, Any], *, replacing: bool = False
) -> M:
    """The object of a row read with Core (``values``: every column), as an ORM query would
    give it: the session's own if it holds that row already, else one made as the ORM makes a
    row it loads (no ``__init__``), put in the session as persistent. ``replacing``: the row
    was just written, so an object the session holds under its key is stale (its id reused
    after a savepoint rolled back) and leaves the session.

    For the hot paths: loading the same row through an ORM query costs several times the query.
    The ORM's load events and reconstructors do not run (no model here uses them).
    """
    if not values.keys() >= _column_keys(model):
        missing = sorted(_column_keys(model) - values.keys())
        raise TypeError(f"{model.__name__} columns missing: {missing}")
    mapper = _configured_mapper(model)
    key = mapper.identity_key_from_primary_key(
        tuple(values[str(c.key)] for c in mapper.primary_key)
    )
    held = session.identity_map.get(key)
    if held is not None:
        if not replacing:
            return cast(M, held)
        session.expunge(held)
    loaded: M = mapper.class_manager.new_instance()
    loaded.__dict__.update(values)
    # All that make_transient_to_detached does to a new object with every column set (none
    # to expire, nothing changed to commit), without deriving the key it has already.
    instance_state(loaded).key = key
    session.add(loaded)
    return loaded


def _roll_back_keeping_prepared_statements(engine: Engine) -> None:
    """Roll back a healthy PostgreSQL transaction without psycopg forgetting the connection's
    prepared statements.

    psycopg prepares a statement run five times on a connection, and PostgreSQL then plans it
    once instead of on every run. But on every rollback psycopg deallocates all of them, in case
    the transaction changed the schema they use: here every read request ends with a rollback,
    and so does every refused write (a 409: ``ON CONFLICT DO NOTHING`` raises no error), so the
    hot statements were planned anew almost every time (booking requests with one in ten
    refused: 39 % of the ceiling's throughput with this, 26 % without). A transaction that
    failed is rolled back by psycopg itself, forgetting them: that is how a connection recovers
    when a statement prepared before a schema change (a migration run by another process)
    fails with "cached plan must not change result type". Otherwise the rollback is the plain
    ROLLBACK command through psycopg's libpq connection, and PostgreSQL keeps prepared
    statements through it; anything unusual (a broken connection, a pipeline) is left to
    psycopg's rollback, which reports or handles it.
    """
    if engine.dialect.driver != "psycopg":
        return
    import psycopg
    from psycopg import pq

    psycopg_rollback = engine.dialect.do_rollback

    def do_rollback(dbapi_connection: Any) -> None:
        pgconn = dbapi_connection.pgconn
        status = pgconn.transaction_status
        if status == pq.TransactionStatus.IDLE:
            return
        if (
            status == pq.TransactionStatus.INTRANS
            and pgconn.pipeline_status == pq.PipelineStatus.OFF
        ):
            with contextlib.suppress(psycopg.Error):
                if pgconn.exec_(b"ROLLBACK").status == pq.ExecStatus.COMMAND_OK:
                    return
        psycopg_rollback(dbapi_connection)

    engine.dialect.do_rollback = do_rollback  # type: ignore[method-assign]


class Database:
    """The engines of one database and the sessions drawn from them."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.url = settings.database_url
        if is_sqlite(self.url):
            self.write_engine = _sqlite_engine(settings, writer=True)
            self.read_engine = _sqlite_engine(settings, writer=False)
        else:
            self.write_engine = sa.create_engine(
                self.url,
                echo=settings.db_echo,
                pool_size=settings.db_pool_size,
                max_overflow=POOL_OVERFLOW,
            )
            _ping_when_idle(self.write_engine)
            _roll_back_keeping_prepared_statements(self.write_engine)
            self.read_engine = self.write_engine

    @property
    def dialect(self) -> str:
        return self.write_engine.dialect.name

    @property
    def writer_connections(self) -> int:
        """How many writing connections the pool may open at once."""
        if self.dialect == "sqlite":
            return 1
        return self.settings.db_pool_size + POOL_OVERFLOW

    def new_session(self, *, write: bool = True) -> Session:
        """A session the caller commits or rolls back and closes."""
        engine = self.write_engine if write else self.read_engine
        return Session(engine, expire_on_commit=False)

    @contextmanager
    def transaction(self, *, write: bool = True) -> Iterator[Session]:
        """One unit of work: committed when the block ends, rolled back on an exception."""
        session = self.new_session(write=write)
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def dispose(self) -> None:
        self.write_engine.dispose()
        if self.read_engine is not self.write_engine:
            self.read_engine.dispose()


class ConnectionBoundDatabase(Database):
    """Every session joins one outer connection's transaction (tests roll it back at the end)."""

    def __init__(self, settings: Settings, connection: Connection) -> None:
        self.settings = settings
        self.url = settings.database_url
        self.connection = connection
        self.write_engine = self.read_engine = connection.engine

    def new_session(self, *, write: bool = True) -> Session:
        return Session(
            bind=self.connection, join_transaction_mode="create_savepoint", expire_on_commit=False
        )

    def dispose(self) -> None:
        """The outer connection belongs to whoever made it (the test), not to this object."""
