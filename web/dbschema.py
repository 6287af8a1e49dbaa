"""Running the Alembic migrations and telling whether a database is up to date."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.exc import SQLAlchemyError

import migrations
from core.db import Database
from reports import month_totals

UPGRADE_HINT = "Run `labshare db upgrade` to create or update the schema."


def alembic_config(database: Database) -> Config:
    config = Config()
    config.set_main_option("script_location", str(Path(migrations.__file__).parent))
    config.set_main_option("sqlalchemy.url", database.url)
    return config


def upgrade(database: Database, revision: str = "head") -> None:
    config = alembic_config(database)
    with database.write_engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
    if schema_state(database).is_current:
        # The platform's zone gets its month totals (built from the records the first time).
        with database.transaction() as session:
            month_totals.ensure_zone(session, ZoneInfo(database.settings.timezone))
    refresh_statistics(database)


def refresh_statistics(database: Database) -> None:
    """SQLite keeps no statistics unless asked; without them it may pick a poor index (e.g. a
    status index over the instrument-and-time one). PostgreSQL's autovacuum does this itself."""
    if database.dialect == "sqlite":
        with database.write_engine.begin() as connection:
            connection.exec_driver_sql("ANALYZE")


def make_revision(database: Database, message: str) -> None:
    """Autogenerate a migration from the difference between the models and ``database``."""
    config = alembic_config(database)
    with database.write_engine.begin() as connection:
        config.attributes["connection"] = connection
        command.revision(config, message=message, autogenerate=True)


@dataclass(frozen=True)
class SchemaState:
    current: str | None
    head: str | None
    error: str | None = None

    @property
    def is_current(self) -> bool:
        return self.error is None and self.current == self.head

    def describe(self) -> str:
        if self.error:
            return f"Database unreachable: {self.error}"
        if self.current is None:
            return f"The database has no schema yet. {UPGRADE_HINT}"
        if self.current != self.head:
            return f"The schema is at {self.current}, the code expects {self.head}. {UPGRADE_HINT}"
        return f"The schema is current ({self.current})."


def schema_state(database: Database) -> SchemaState:
    head = ScriptDirectory.from_config(alembic_config(database)).get_current_head()
    try:
        # Through a session, like every other read: a database bound to one connection (tests)
        # answers on it instead of waiting for a second one from the pool.
        with database.new_session(write=False) as session:
            current = MigrationContext.configure(session.connection()).get_current_revision()
    except SQLAlchemyError as exc:
        return SchemaState(None, head, error=str(exc.__cause__ or exc).splitlines()[0])
    return SchemaState(current, head)
