"""covering indexes for the utilization reports

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-27 17:50:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

USAGE_COLUMNS = ["instrument_id", "kind", "organisation_id", "started_at", "ended_at"]
BOOKING_COLUMNS = [
    "instrument_id",
    "status",
    "late_cancellation",
    "replaced_by_id",
    "start_at",
    "end_at",
]


def upgrade() -> None:
    # Plain CREATE INDEX: a batch operation would rebuild booking on SQLite and drop its triggers.
    op.create_index("ix_usage_record_instrument_report", "usage_record", USAGE_COLUMNS)
    op.create_index("ix_booking_instrument_report", "booking", BOOKING_COLUMNS)


def downgrade() -> None:
    op.drop_index("ix_booking_instrument_report", table_name="booking")
    op.drop_index("ix_usage_record_instrument_report", table_name="usage_record")
