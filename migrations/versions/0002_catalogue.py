"""catalogue

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27 14:44:25.469046
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

import core.db

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "facility",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("organisation_id", sa.Integer(), nullable=False),
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("name_en", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
        sa.Column("description", sqlmodel.sql.sqltypes.AutoString(length=4000), nullable=False),
        sa.Column("address", sqlmodel.sql.sqltypes.AutoString(length=300), nullable=False),
        sa.Column("district", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("cluster", sa.String(length=40), nullable=False),
        sa.Column("contact_name", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
        sa.Column("contact_phone", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("contact_email", sqlmodel.sql.sqltypes.AutoString(length=254), nullable=False),
        sa.Column("timezone", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("opens_on_holidays", sa.Boolean(), nullable=False),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("calendar_token", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("created_at", core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", core.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["organisation_id"],
            ["organisation.id"],
            name=op.f("fk_facility_organisation_id_organisation"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_facility")),
        sa.UniqueConstraint("name", name=op.f("uq_facility_name")),
    )
    with op.batch_alter_table("facility", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_facility_cluster"), ["cluster"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_facility_organisation_id"), ["organisation_id"], unique=False
        )

    op.create_table(
        "facility_closure",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("facility_id", sa.Integer(), nullable=False),
        sa.Column("start_date", sa.Date(), nullable=False),
        sa.Column("end_date", sa.Date(), nullable=False),
        sa.Column("reason", sqlmodel.sql.sqltypes.AutoString(length=300), nullable=False),
        sa.CheckConstraint("end_date >= start_date", name=op.f("ck_facility_closure_date_order")),
        sa.ForeignKeyConstraint(
            ["facility_id"],
            ["facility.id"],
            name=op.f("fk_facility_closure_facility_id_facility"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_facility_closure")),
    )
    with op.batch_alter_table("facility_closure", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_facility_closure_facility_id"), ["facility_id"], unique=False
        )

    op.create_table(
        "instrument",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("facility_id", sa.Integer(), nullable=False),
        sa.Column("asset_code", sqlmodel.sql.sqltypes.AutoString(length=60), nullable=False),
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("name_en", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("keywords", sqlmodel.sql.sqltypes.AutoString(length=1000), nullable=False),
        sa.Column("model", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("manufacturer", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("country_of_origin", sqlmodel.sql.sqltypes.AutoString(length=60), nullable=False),
        sa.Column("category", sa.String(length=40), nullable=False),
        sa.Column("purchase_value_fen", sa.BigInteger(), nullable=True),
        sa.Column("purchase_date", sa.Date(), nullable=True),
        sa.Column("is_large", sa.Boolean(), nullable=False),
        sa.Column("location", sqlmodel.sql.sqltypes.AutoString(length=300), nullable=False),
        sa.Column("description", sqlmodel.sql.sqltypes.AutoString(length=8000), nullable=False),
        sa.Column("specifications", sqlmodel.sql.sqltypes.AutoString(length=8000), nullable=False),
        sa.Column("photo_url", sqlmodel.sql.sqltypes.AutoString(length=500), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("operation_mode", sa.String(length=20), nullable=False),
        sa.Column("special_purpose", sa.Boolean(), nullable=False),
        sa.Column("rated_annual_hours", sa.Integer(), nullable=False),
        sa.Column("slot_minutes", sa.Integer(), nullable=False),
        sa.Column("min_duration_minutes", sa.Integer(), nullable=False),
        sa.Column("max_duration_minutes", sa.Integer(), nullable=False),
        sa.Column("max_advance_days", sa.Integer(), nullable=False),
        sa.Column("min_notice_minutes", sa.Integer(), nullable=False),
        sa.Column("buffer_minutes", sa.Integer(), nullable=False),
        sa.Column("approval_mode", sa.String(length=30), nullable=False),
        sa.Column("cancellation_deadline_hours", sa.Integer(), nullable=False),
        sa.Column("late_cancel_charge_percent", sa.Integer(), nullable=False),
        sa.Column("no_show_charge_percent", sa.Integer(), nullable=False),
        sa.Column("unattended_runs_allowed", sa.Boolean(), nullable=False),
        sa.Column("requires_qualification", sa.Boolean(), nullable=False),
        sa.Column("user_weekly_hours_limit", sa.Integer(), nullable=True),
        sa.Column("user_future_bookings_limit", sa.Integer(), nullable=True),
        sa.Column("organisation_weekly_hours_limit", sa.Integer(), nullable=True),
        sa.Column("price_internal_fen", sa.BigInteger(), nullable=False),
        sa.Column("price_external_academic_fen", sa.BigInteger(), nullable=False),
        sa.Column("price_enterprise_fen", sa.BigInteger(), nullable=False),
        sa.Column("staff_surcharge_fen", sa.BigInteger(), nullable=False),
        sa.Column("min_billing_minutes", sa.Integer(), nullable=False),
        sa.Column("min_charge_fen", sa.BigInteger(), nullable=False),
        sa.Column("search_text", sa.Text(), nullable=False),
        sa.Column("created_at", core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", core.db.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "price_internal_fen >= 0 AND price_external_academic_fen >= 0 AND price_enterprise_fen >= 0 AND staff_surcharge_fen >= 0 AND min_charge_fen >= 0",
            name=op.f("ck_instrument_prices_not_negative"),
        ),
        sa.ForeignKeyConstraint(
            ["facility_id"], ["facility.id"], name=op.f("fk_instrument_facility_id_facility")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_instrument")),
        sa.UniqueConstraint("asset_code", name=op.f("uq_instrument_asset_code")),
    )
    with op.batch_alter_table("instrument", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_instrument_category"), ["category"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_instrument_facility_id"), ["facility_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_instrument_is_large"), ["is_large"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_instrument_operation_mode"), ["operation_mode"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_instrument_status"), ["status"], unique=False)

    op.create_table(
        "opening_span",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("facility_id", sa.Integer(), nullable=False),
        sa.Column("weekday", sa.Integer(), nullable=False),
        sa.Column("start_minute", sa.Integer(), nullable=False),
        sa.Column("end_minute", sa.Integer(), nullable=False),
        sa.CheckConstraint(
            "start_minute >= 0 AND end_minute <= 1440 AND end_minute > start_minute",
            name=op.f("ck_opening_span_minute_range"),
        ),
        sa.CheckConstraint("weekday BETWEEN 0 AND 6", name=op.f("ck_opening_span_weekday_range")),
        sa.ForeignKeyConstraint(
            ["facility_id"],
            ["facility.id"],
            name=op.f("fk_opening_span_facility_id_facility"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_opening_span")),
    )
    with op.batch_alter_table("opening_span", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_opening_span_facility_id"), ["facility_id"], unique=False
        )

    op.create_table(
        "testing_service",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("facility_id", sa.Integer(), nullable=False),
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("name_en", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("method_standard", sqlmodel.sql.sqltypes.AutoString(length=300), nullable=False),
        sa.Column("description", sqlmodel.sql.sqltypes.AutoString(length=4000), nullable=False),
        sa.Column("price_internal_fen", sa.BigInteger(), nullable=False),
        sa.Column("price_external_academic_fen", sa.BigInteger(), nullable=False),
        sa.Column("price_enterprise_fen", sa.BigInteger(), nullable=False),
        sa.Column("turnaround_days", sa.Integer(), nullable=False),
        sa.Column("daily_sample_capacity", sa.Integer(), nullable=False),
        sa.Column("cma_accredited", sa.Boolean(), nullable=False),
        sa.Column("cnas_accredited", sa.Boolean(), nullable=False),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("created_at", core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", core.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["facility_id"], ["facility.id"], name=op.f("fk_testing_service_facility_id_facility")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_testing_service")),
    )
    with op.batch_alter_table("testing_service", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_testing_service_facility_id"), ["facility_id"], unique=False
        )

    op.create_table(
        "outage",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("facility_id", sa.Integer(), nullable=False),
        sa.Column("instrument_id", sa.Integer(), nullable=True),
        sa.Column("start_at", core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("end_at", core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("note", sqlmodel.sql.sqltypes.AutoString(length=1000), nullable=False),
        sa.Column("created_by_id", sa.Integer(), nullable=True),
        sa.Column("created_at", core.db.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint("end_at > start_at", name=op.f("ck_outage_time_order")),
        sa.ForeignKeyConstraint(
            ["created_by_id"], ["app_user.id"], name=op.f("fk_outage_created_by_id_app_user")
        ),
        sa.ForeignKeyConstraint(
            ["facility_id"], ["facility.id"], name=op.f("fk_outage_facility_id_facility")
        ),
        sa.ForeignKeyConstraint(
            ["instrument_id"], ["instrument.id"], name=op.f("fk_outage_instrument_id_instrument")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outage")),
    )
    with op.batch_alter_table("outage", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_outage_end_at"), ["end_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_outage_facility_id"), ["facility_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_outage_instrument_id"), ["instrument_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_outage_start_at"), ["start_at"], unique=False)

    op.create_table(
        "price_change",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("instrument_id", sa.Integer(), nullable=False),
        sa.Column("effective_at", core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("prices", sa.JSON(), nullable=False),
        sa.Column("changed_by_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["changed_by_id"], ["app_user.id"], name=op.f("fk_price_change_changed_by_id_app_user")
        ),
        sa.ForeignKeyConstraint(
            ["instrument_id"],
            ["instrument.id"],
            name=op.f("fk_price_change_instrument_id_instrument"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_price_change")),
    )
    with op.batch_alter_table("price_change", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_price_change_instrument_id"), ["instrument_id"], unique=False
        )

    op.create_table(
        "qualification",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("instrument_id", sa.Integer(), nullable=False),
        sa.Column("granted_at", core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("granted_by_id", sa.Integer(), nullable=True),
        sa.Column("expires_at", core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("revoked_by_id", sa.Integer(), nullable=True),
        sa.Column("note", sqlmodel.sql.sqltypes.AutoString(length=500), nullable=False),
        sa.ForeignKeyConstraint(
            ["granted_by_id"], ["app_user.id"], name=op.f("fk_qualification_granted_by_id_app_user")
        ),
        sa.ForeignKeyConstraint(
            ["instrument_id"],
            ["instrument.id"],
            name=op.f("fk_qualification_instrument_id_instrument"),
        ),
        sa.ForeignKeyConstraint(
            ["revoked_by_id"], ["app_user.id"], name=op.f("fk_qualification_revoked_by_id_app_user")
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["app_user.id"], name=op.f("fk_qualification_user_id_app_user")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_qualification")),
    )
    with op.batch_alter_table("qualification", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_qualification_instrument_id"), ["instrument_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_qualification_user_id"), ["user_id"], unique=False)
        batch_op.create_index(
            "ix_qualification_user_instrument", ["user_id", "instrument_id"], unique=False
        )

    op.create_table(
        "testing_service_instrument",
        sa.Column("testing_service_id", sa.Integer(), nullable=False),
        sa.Column("instrument_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["instrument_id"],
            ["instrument.id"],
            name=op.f("fk_testing_service_instrument_instrument_id_instrument"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["testing_service_id"],
            ["testing_service.id"],
            name=op.f("fk_testing_service_instrument_testing_service_id_testing_service"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "testing_service_id", "instrument_id", name=op.f("pk_testing_service_instrument")
        ),
    )
    with op.batch_alter_table("testing_service_instrument", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_testing_service_instrument_instrument_id"),
            ["instrument_id"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("testing_service_instrument", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_testing_service_instrument_instrument_id"))

    op.drop_table("testing_service_instrument")
    with op.batch_alter_table("qualification", schema=None) as batch_op:
        batch_op.drop_index("ix_qualification_user_instrument")
        batch_op.drop_index(batch_op.f("ix_qualification_user_id"))
        batch_op.drop_index(batch_op.f("ix_qualification_instrument_id"))

    op.drop_table("qualification")
    with op.batch_alter_table("price_change", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_price_change_instrument_id"))

    op.drop_table("price_change")
    with op.batch_alter_table("outage", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_outage_start_at"))
        batch_op.drop_index(batch_op.f("ix_outage_instrument_id"))
        batch_op.drop_index(batch_op.f("ix_outage_facility_id"))
        batch_op.drop_index(batch_op.f("ix_outage_end_at"))

    op.drop_table("outage")
    with op.batch_alter_table("testing_service", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_testing_service_facility_id"))

    op.drop_table("testing_service")
    with op.batch_alter_table("opening_span", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_opening_span_facility_id"))

    op.drop_table("opening_span")
    with op.batch_alter_table("instrument", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_instrument_status"))
        batch_op.drop_index(batch_op.f("ix_instrument_operation_mode"))
        batch_op.drop_index(batch_op.f("ix_instrument_is_large"))
        batch_op.drop_index(batch_op.f("ix_instrument_facility_id"))
        batch_op.drop_index(batch_op.f("ix_instrument_category"))

    op.drop_table("instrument")
    with op.batch_alter_table("facility_closure", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_facility_closure_facility_id"))

    op.drop_table("facility_closure")
    with op.batch_alter_table("facility", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_facility_organisation_id"))
        batch_op.drop_index(batch_op.f("ix_facility_cluster"))

    op.drop_table("facility")
