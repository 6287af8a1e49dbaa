"""PostgreSQL: a trigram index for instrument search

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27 15:05:00

Search is a substring match on instrument.search_text. On PostgreSQL a trigram (pg_trgm) GIN
index answers patterns of three or more characters without reading the table; shorter ones
(two Chinese characters, 电镜) still scan, which the catalogue's size allows. SQLite scans.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "ix_instrument_search_text_trgm"


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        op.execute(f"CREATE INDEX {INDEX} ON instrument USING gin (search_text gin_trgm_ops)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP INDEX IF EXISTS {INDEX}")
