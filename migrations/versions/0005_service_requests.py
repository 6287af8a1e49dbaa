"""service requests

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27 15:26:41.278776
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

import core.db

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "service_capacity_day",
        sa.Column("testing_service_id", sa.Integer(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("accepted_samples", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["testing_service_id"],
            ["testing_service.id"],
            name=op.f("fk_service_capacity_day_testing_service_id_testing_service"),
        ),
        sa.PrimaryKeyConstraint("testing_service_id", "day", name=op.f("pk_service_capacity_day")),
    )
    op.create_table(
        "service_request",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("testing_service_id", sa.Integer(), nullable=False),
        sa.Column("facility_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("organisation_id", sa.Integer(), nullable=True),
        sa.Column("sample_count", sa.Integer(), nullable=False),
        sa.Column("description", sqlmodel.sql.sqltypes.AutoString(length=4000), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "submitted",
                "accepted",
                "in_progress",
                "reported",
                "completed",
                "rejected",
                "cancelled",
                name="servicerequeststatus",
                native_enum=False,
                length=20,
            ),
            nullable=False,
        ),
        sa.Column("scheduled_date", sa.Date(), nullable=True),
        sa.Column("reason", sqlmodel.sql.sqltypes.AutoString(length=1000), nullable=False),
        sa.Column("decided_by_id", sa.Integer(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("submitted_at", core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("accepted_at", core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("started_at", core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("reported_at", core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("completed_at", core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("updated_at", core.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["decided_by_id"],
            ["app_user.id"],
            name=op.f("fk_service_request_decided_by_id_app_user"),
        ),
        sa.ForeignKeyConstraint(
            ["facility_id"], ["facility.id"], name=op.f("fk_service_request_facility_id_facility")
        ),
        sa.ForeignKeyConstraint(
            ["organisation_id"],
            ["organisation.id"],
            name=op.f("fk_service_request_organisation_id_organisation"),
        ),
        sa.ForeignKeyConstraint(
            ["testing_service_id"],
            ["testing_service.id"],
            name=op.f("fk_service_request_testing_service_id_testing_service"),
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["app_user.id"], name=op.f("fk_service_request_user_id_app_user")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_service_request")),
    )
    with op.batch_alter_table("service_request", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_service_request_facility_id"), ["facility_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_service_request_organisation_id"), ["organisation_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_service_request_status"), ["status"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_service_request_testing_service_id"),
            ["testing_service_id"],
            unique=False,
        )
        batch_op.create_index(batch_op.f("ix_service_request_user_id"), ["user_id"], unique=False)

    op.create_table(
        "service_request_file",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("service_request_id", sa.Integer(), nullable=False),
        sa.Column("kind", sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
        sa.Column("filename", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
        sa.Column("content_type", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("sha256", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("content", sa.LargeBinary(), nullable=False),
        sa.Column("uploaded_by_id", sa.Integer(), nullable=True),
        sa.Column("uploaded_at", core.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["service_request_id"],
            ["service_request.id"],
            name=op.f("fk_service_request_file_service_request_id_service_request"),
        ),
        sa.ForeignKeyConstraint(
            ["uploaded_by_id"],
            ["app_user.id"],
            name=op.f("fk_service_request_file_uploaded_by_id_app_user"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_service_request_file")),
    )
    with op.batch_alter_table("service_request_file", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_service_request_file_service_request_id"),
            ["service_request_id"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("service_request_file", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_service_request_file_service_request_id"))

    op.drop_table("service_request_file")
    with op.batch_alter_table("service_request", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_service_request_user_id"))
        batch_op.drop_index(batch_op.f("ix_service_request_testing_service_id"))
        batch_op.drop_index(batch_op.f("ix_service_request_status"))
        batch_op.drop_index(batch_op.f("ix_service_request_organisation_id"))
        batch_op.drop_index(batch_op.f("ix_service_request_facility_id"))

    op.drop_table("service_request")
    op.drop_table("service_capacity_day")
