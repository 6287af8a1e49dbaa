from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection
from sqlmodel import SQLModel

import migrations.models
from core.db import Database
from core.settings import Settings

config = context.config
target_metadata = SQLModel.metadata


def run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        include_object=migrations.models.include_object,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    run_migrations(connection)
else:
    database = Database(Settings(database_url=config.get_main_option("sqlalchemy.url") or ""))
    with database.write_engine.connect() as new_connection:
        run_migrations(new_connection)
        new_connection.commit()
    database.dispose()
