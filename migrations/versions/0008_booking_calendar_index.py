"""booking index for calendar feed polls

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-27 17:40:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = ["instrument_id", "start_at", "end_at", "updated_at", "version", "id"]


def upgrade() -> None:
    # Plain CREATE INDEX: a batch operation would rebuild booking on SQLite and drop its triggers.
    op.create_index("ix_booking_instrument_calendar", "booking", COLUMNS)


def downgrade() -> None:
    op.drop_index("ix_booking_instrument_calendar", table_name="booking")
