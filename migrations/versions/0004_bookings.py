"""bookings

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27 15:22:41.222860
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

import core.db

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

HELD = "status IN ('offered', 'pending', 'confirmed', 'in_use')"
# On SQLite, a later batch_alter_table("booking") rebuilds the table and drops these triggers:
# a migration that alters booking must create them again.


def upgrade() -> None:
    op.create_table(
        "outbox_event",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("topic", sqlmodel.sql.sqltypes.AutoString(length=80), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("dedupe_key", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
        sa.Column(
            "status",
            sa.Enum(
                "pending", "delivered", "failed", name="eventstatus", native_enum=False, length=20
            ),
            nullable=False,
        ),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("available_at", core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("claimed_by", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=True),
        sa.Column("lease_until", core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("delivered_at", core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_error", sqlmodel.sql.sqltypes.AutoString(length=2000), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox_event")),
        sa.UniqueConstraint("dedupe_key", name=op.f("uq_outbox_event_dedupe_key")),
    )
    with op.batch_alter_table("outbox_event", schema=None) as batch_op:
        batch_op.create_index(
            "ix_outbox_event_status_available_at", ["status", "available_at"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_outbox_event_topic"), ["topic"], unique=False)

    op.create_table(
        "idempotency_record",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("key", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("request_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=False),
        sa.Column("response", sa.JSON(), nullable=False),
        sa.Column("created_at", core.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["app_user.id"], name=op.f("fk_idempotency_record_user_id_app_user")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_idempotency_record")),
        sa.UniqueConstraint("user_id", "key", name="uq_idempotency_record_user_key"),
    )
    op.create_table(
        "booking_series",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("instrument_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("frequency", sqlmodel.sql.sqltypes.AutoString(length=10), nullable=False),
        sa.Column("interval", sa.Integer(), nullable=False),
        sa.Column("occurrences", sa.Integer(), nullable=False),
        sa.Column("created_at", core.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["instrument_id"],
            ["instrument.id"],
            name=op.f("fk_booking_series_instrument_id_instrument"),
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["app_user.id"], name=op.f("fk_booking_series_user_id_app_user")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_booking_series")),
    )
    with op.batch_alter_table("booking_series", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_booking_series_instrument_id"), ["instrument_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_booking_series_user_id"), ["user_id"], unique=False)

    op.create_table(
        "booking",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("instrument_id", sa.Integer(), nullable=False),
        sa.Column("facility_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("organisation_id", sa.Integer(), nullable=True),
        sa.Column("start_at", core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("end_at", core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("held_until", core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "offered",
                "pending",
                "confirmed",
                "in_use",
                "completed",
                "no_show",
                "cancelled",
                "rejected",
                "expired",
                name="bookingstatus",
                native_enum=False,
                length=20,
            ),
            nullable=False,
        ),
        sa.Column(
            "operated_by",
            sa.Enum("self", "staff", name="operatedby", native_enum=False, length=10),
            nullable=False,
        ),
        sa.Column("purpose", sqlmodel.sql.sqltypes.AutoString(length=1000), nullable=False),
        sa.Column("charge_account", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("sample_count", sa.Integer(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("overrides", sa.JSON(), nullable=False),
        sa.Column("expires_at", core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("decided_by_id", sa.Integer(), nullable=True),
        sa.Column("decided_at", core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("reason", sqlmodel.sql.sqltypes.AutoString(length=1000), nullable=False),
        sa.Column("late_cancellation", sa.Boolean(), nullable=False),
        sa.Column("replaced_by_id", sa.Integer(), nullable=True),
        sa.Column("series_id", sa.Integer(), nullable=True),
        sa.Column("attention", sqlmodel.sql.sqltypes.AutoString(length=300), nullable=False),
        sa.Column("offer_expires_at", core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("checked_in_at", core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_by_id", sa.Integer(), nullable=True),
        sa.Column("created_at", core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", core.db.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint("end_at > start_at", name=op.f("ck_booking_time_order")),
        sa.CheckConstraint("held_until >= end_at", name=op.f("ck_booking_held_after_end")),
        sa.ForeignKeyConstraint(
            ["created_by_id"], ["app_user.id"], name=op.f("fk_booking_created_by_id_app_user")
        ),
        sa.ForeignKeyConstraint(
            ["decided_by_id"], ["app_user.id"], name=op.f("fk_booking_decided_by_id_app_user")
        ),
        sa.ForeignKeyConstraint(
            ["facility_id"], ["facility.id"], name=op.f("fk_booking_facility_id_facility")
        ),
        sa.ForeignKeyConstraint(
            ["instrument_id"], ["instrument.id"], name=op.f("fk_booking_instrument_id_instrument")
        ),
        sa.ForeignKeyConstraint(
            ["organisation_id"],
            ["organisation.id"],
            name=op.f("fk_booking_organisation_id_organisation"),
        ),
        sa.ForeignKeyConstraint(
            ["replaced_by_id"], ["booking.id"], name=op.f("fk_booking_replaced_by_id_booking")
        ),
        sa.ForeignKeyConstraint(
            ["series_id"], ["booking_series.id"], name=op.f("fk_booking_series_id_booking_series")
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["app_user.id"], name=op.f("fk_booking_user_id_app_user")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_booking")),
    )
    with op.batch_alter_table("booking", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_booking_facility_id"), ["facility_id"], unique=False)
        batch_op.create_index(
            "ix_booking_instrument_held", ["instrument_id", "start_at", "held_until"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_booking_organisation_id"), ["organisation_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_booking_series_id"), ["series_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_booking_start_at"), ["start_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_booking_status"), ["status"], unique=False)
        batch_op.create_index("ix_booking_user_created", ["user_id", "created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_booking_user_id"), ["user_id"], unique=False)

    op.create_table(
        "usage_record",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("booking_id", sa.Integer(), nullable=True),
        sa.Column("instrument_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("organisation_id", sa.Integer(), nullable=True),
        sa.Column("operator_id", sa.Integer(), nullable=True),
        sa.Column("started_at", core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("ended_at", core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("samples", sa.Integer(), nullable=True),
        sa.Column("kind", sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
        sa.Column("note", sqlmodel.sql.sqltypes.AutoString(length=1000), nullable=False),
        sa.Column("corrected_by_id", sa.Integer(), nullable=True),
        sa.Column("corrected_at", core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", core.db.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint("ended_at > started_at", name=op.f("ck_usage_record_time_order")),
        sa.ForeignKeyConstraint(
            ["booking_id"], ["booking.id"], name=op.f("fk_usage_record_booking_id_booking")
        ),
        sa.ForeignKeyConstraint(
            ["corrected_by_id"],
            ["app_user.id"],
            name=op.f("fk_usage_record_corrected_by_id_app_user"),
        ),
        sa.ForeignKeyConstraint(
            ["instrument_id"],
            ["instrument.id"],
            name=op.f("fk_usage_record_instrument_id_instrument"),
        ),
        sa.ForeignKeyConstraint(
            ["operator_id"], ["app_user.id"], name=op.f("fk_usage_record_operator_id_app_user")
        ),
        sa.ForeignKeyConstraint(
            ["organisation_id"],
            ["organisation.id"],
            name=op.f("fk_usage_record_organisation_id_organisation"),
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["app_user.id"], name=op.f("fk_usage_record_user_id_app_user")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_usage_record")),
        sa.UniqueConstraint("booking_id", name=op.f("uq_usage_record_booking_id")),
    )
    with op.batch_alter_table("usage_record", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_usage_record_instrument_id"), ["instrument_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_usage_record_organisation_id"), ["organisation_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_usage_record_started_at"), ["started_at"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_usage_record_user_id"), ["user_id"], unique=False)

    op.create_table(
        "waitlist_entry",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("instrument_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("start_at", core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("end_at", core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "waiting",
                "offered",
                "accepted",
                "expired",
                "cancelled",
                name="waitliststatus",
                native_enum=False,
                length=20,
            ),
            nullable=False,
        ),
        sa.Column("offered_booking_id", sa.Integer(), nullable=True),
        sa.Column("created_at", core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", core.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["instrument_id"],
            ["instrument.id"],
            name=op.f("fk_waitlist_entry_instrument_id_instrument"),
        ),
        sa.ForeignKeyConstraint(
            ["offered_booking_id"],
            ["booking.id"],
            name=op.f("fk_waitlist_entry_offered_booking_id_booking"),
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["app_user.id"], name=op.f("fk_waitlist_entry_user_id_app_user")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_waitlist_entry")),
    )
    with op.batch_alter_table("waitlist_entry", schema=None) as batch_op:
        batch_op.create_index(
            "ix_waitlist_entry_instrument_status", ["instrument_id", "status"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_waitlist_entry_user_id"), ["user_id"], unique=False)

    # No two held bookings of one instrument overlap, counting buffers: the database itself
    # refuses it, whatever the application does.
    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE EXTENSION IF NOT EXISTS btree_gist")
        op.execute(
            "ALTER TABLE booking ADD CONSTRAINT booking_no_overlap EXCLUDE USING gist "
            "(instrument_id WITH =, tstzrange(start_at, held_until, '[)') WITH &&) "
            f"WHERE ({HELD})"
        )
    else:
        overlapping = (
            "SELECT 1 FROM booking AS other WHERE other.instrument_id = NEW.instrument_id "
            f"AND other.id IS NOT NEW.id AND other.{HELD} "
            "AND other.start_at < NEW.held_until AND other.held_until > NEW.start_at"
        )
        for event in ("INSERT", "UPDATE OF status, start_at, held_until, instrument_id"):
            name = "booking_no_overlap_" + event.split()[0].lower()
            op.execute(
                f"CREATE TRIGGER {name} BEFORE {event} ON booking "
                f"WHEN NEW.{HELD} BEGIN "
                f"SELECT RAISE(ABORT, 'booking overlap') WHERE EXISTS ({overlapping}); END"
            )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE booking DROP CONSTRAINT IF EXISTS booking_no_overlap")
    else:
        op.execute("DROP TRIGGER IF EXISTS booking_no_overlap_insert")
        op.execute("DROP TRIGGER IF EXISTS booking_no_overlap_update")
    with op.batch_alter_table("waitlist_entry", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_waitlist_entry_user_id"))
        batch_op.drop_index("ix_waitlist_entry_instrument_status")

    op.drop_table("waitlist_entry")
    with op.batch_alter_table("usage_record", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_usage_record_user_id"))
        batch_op.drop_index(batch_op.f("ix_usage_record_started_at"))
        batch_op.drop_index(batch_op.f("ix_usage_record_organisation_id"))
        batch_op.drop_index(batch_op.f("ix_usage_record_instrument_id"))

    op.drop_table("usage_record")
    with op.batch_alter_table("booking", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_booking_user_id"))
        batch_op.drop_index("ix_booking_user_created")
        batch_op.drop_index(batch_op.f("ix_booking_status"))
        batch_op.drop_index(batch_op.f("ix_booking_start_at"))
        batch_op.drop_index(batch_op.f("ix_booking_series_id"))
        batch_op.drop_index(batch_op.f("ix_booking_organisation_id"))
        batch_op.drop_index("ix_booking_instrument_held")
        batch_op.drop_index(batch_op.f("ix_booking_facility_id"))

    op.drop_table("booking")
    with op.batch_alter_table("booking_series", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_booking_series_user_id"))
        batch_op.drop_index(batch_op.f("ix_booking_series_instrument_id"))

    op.drop_table("booking_series")
    op.drop_table("idempotency_record")
    with op.batch_alter_table("outbox_event", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_outbox_event_topic"))
        batch_op.drop_index("ix_outbox_event_status_available_at")

    op.drop_table("outbox_event")
