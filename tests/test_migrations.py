"""The migrations are the schema: they build exactly what the models describe, and go back."""

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlmodel import SQLModel

import migrations.models
from core.db import Database
from web import dbschema


@pytest.mark.filterwarnings("ignore::sqlalchemy.exc.SAWarning", "ignore::UserWarning")
def test_the_migrated_schema_matches_the_models(fresh_database: Database) -> None:
    with fresh_database.write_engine.connect() as connection:
        context = MigrationContext.configure(
            connection,
            opts={"compare_type": True, "include_object": migrations.models.include_object},
        )
        assert compare_metadata(context, SQLModel.metadata) == []


def test_every_migration_can_be_undone_and_redone(fresh_database: Database) -> None:
    config = dbschema.alembic_config(fresh_database)
    with fresh_database.write_engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "base")
    assert dbschema.schema_state(fresh_database).current is None
    dbschema.upgrade(fresh_database)
    assert dbschema.schema_state(fresh_database).is_current
