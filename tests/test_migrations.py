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


def test_the_database_itself_refuses_overlapping_held_bookings(fresh_database: Database) -> None:
    """The guard works without the application: raw SQL meets the constraint or the trigger."""
    import sqlalchemy as sa
    from sqlalchemy.exc import IntegrityError

    from core.accounts.models import Organisation, User
    from instruments.models import Facility, Instrument

    with fresh_database.transaction() as session:
        organisation = Organisation(
            name="守卫大学", type="university", district="沙坪坝区", cluster="other"
        )
        session.add(organisation)
        session.flush()
        facility = Facility(
            organisation_id=organisation.id, name="守卫平台", district="沙坪坝区", cluster="other"
        )
        user = User(email="guard@example.cn", name="守卫")
        session.add_all([facility, user])
        session.flush()
        instrument = Instrument(
            facility_id=facility.id,
            asset_code="G-1",
            name="守卫仪器",
            category="analytical",
            operation_mode="both",
        )
        session.add(instrument)
        session.flush()
        ids = {"instrument": instrument.id, "facility": facility.id, "user": user.id}
    insert = sa.text(
        "INSERT INTO booking (instrument_id, facility_id, user_id, start_at, end_at, held_until,"
        " status, operated_by, purpose, charge_account, version, overrides, reason,"
        " late_cancellation, attention, created_at, updated_at) VALUES (:instrument, :facility,"
        " :user, :start, :end, :end, :status, 'self', '', '', 0, '[]', '', false, '', :start,"
        " :start)"
    )
    times = {
        "sqlite": (
            "2026-12-01 01:00:00.000000",
            "2026-12-01 03:00:00.000000",
            "2026-12-01 02:00:00.000000",
        ),
        "postgresql": (
            "2026-12-01 01:00:00+00",
            "2026-12-01 03:00:00+00",
            "2026-12-01 02:00:00+00",
        ),
    }
    first_start, first_end, second_start = times[fresh_database.dialect]
    with fresh_database.write_engine.begin() as connection:
        connection.execute(
            insert, ids | {"start": first_start, "end": first_end, "status": "confirmed"}
        )
        # A cancelled booking may lie anywhere.
        connection.execute(
            insert, ids | {"start": second_start, "end": first_end, "status": "cancelled"}
        )
    with pytest.raises(IntegrityError), fresh_database.write_engine.begin() as connection:
        connection.execute(
            insert, ids | {"start": second_start, "end": first_end, "status": "pending"}
        )
