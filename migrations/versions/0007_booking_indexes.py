"""booking indexes

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-27 15:54:59.387043
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain CREATE INDEX: a batch operation would rebuild booking on SQLite and drop its triggers.
    op.create_index("ix_booking_created_by_created", "booking", ["created_by_id", "created_at"])
    op.create_index("ix_booking_user_status_start", "booking", ["user_id", "status", "start_at"])


def downgrade() -> None:
    op.drop_index("ix_booking_user_status_start", table_name="booking")
    op.drop_index("ix_booking_created_by_created", table_name="booking")
