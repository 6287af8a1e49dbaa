"""instrument month totals kept by triggers, for the utilization reports

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-28 00:20:00.000000

Every insert, update and delete of a usage record or a booking adds its share to (or takes it
from) ``instrument_month``, one row per listed zone, local month and instrument, in the same
transaction. The triggers split a record by the months of ``report_month``; the platform's zone
is listed, and its totals built from the records already there, by
``reports.month_totals.ensure_zone`` (``labshare db upgrade`` calls it).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import core.db

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

USAGE_COLUMNS = (
    "usage_ms",
    "external_ms",
    "training_ms",
    "maintenance_ms",
    "usage_records",
    "usage_carried",
)
BOOKING_COLUMNS = (
    "booked_ms",
    "bookings_made",
    "bookings_completed",
    "no_shows",
    "late_cancellations",
)
COLUMNS = USAGE_COLUMNS + BOOKING_COLUMNS

BOOKED = "('confirmed', 'in_use', 'completed')"
MADE = "('confirmed', 'in_use', 'completed', 'no_show')"
NOT_EFFECTIVE = "('training', 'maintenance')"


class _Sql:
    """The few expressions that differ between the engines."""

    def __init__(self, dialect: str) -> None:
        self.sqlite = dialect == "sqlite"

    def later(self, a: str, b: str) -> str:
        return f"MAX({a}, {b})" if self.sqlite else f"GREATEST({a}, {b})"

    def earlier(self, a: str, b: str) -> str:
        return f"MIN({a}, {b})" if self.sqlite else f"LEAST({a}, {b})"

    def milliseconds(self, start: str, end: str) -> str:
        # SQLite's julianday counts whole milliseconds internally: the product is exact.
        if self.sqlite:
            return f"CAST(ROUND((julianday({end}) - julianday({start})) * 86400000.0) AS INTEGER)"
        return f"CAST(ROUND(EXTRACT(EPOCH FROM ({end}) - ({start})) * 1000) AS BIGINT)"

    def plus_32_days(self, value: str) -> str:
        return (
            f"datetime({value}, '+32 days')" if self.sqlite else f"({value} + interval '32 days')"
        )

    def clipped_ms(self, start: str, end: str) -> str:
        return self.milliseconds(self.later(start, "m.utc_start"), self.earlier(end, "m.utc_end"))

    def months_overlapping(self, start: str, end: str) -> str:
        # A month is at most 31 days and an hour long: the upper bound keeps the utc_end index
        # scan to the few months around the record.
        return (
            f"m.utc_end > {start} AND m.utc_start < {end} AND m.utc_end < {self.plus_32_days(end)}"
        )


def _upsert(row: str, values: dict[str, str], where: str) -> str:
    """Add ``values`` (one expression per column, over ``row`` and its month ``m``) to the
    totals of each listed month that ``where`` picks; the columns not named stay as they are."""
    names = ["zone", "month", "instrument_id", *values]
    updates = ", ".join(f"{c} = instrument_month.{c} + excluded.{c}" for c in values)
    return (
        f"INSERT INTO instrument_month ({', '.join(names)}) "
        f"SELECT m.zone, m.month, {row}.instrument_id, {', '.join(values.values())} "
        f"FROM report_month m WHERE {where} "
        f"ON CONFLICT (zone, month, instrument_id) DO UPDATE SET {updates}"
    )


def usage_share(sql: _Sql, row: str, sign: int) -> str:
    """The statement adding ``sign`` × the usage record ``row``'s share to its months."""
    ms = sql.clipped_ms(f"{row}.started_at", f"{row}.ended_at")
    owner = (
        "(SELECT f.organisation_id FROM instrument i JOIN facility f ON f.id = i.facility_id "
        f"WHERE i.id = {row}.instrument_id)"
    )
    external = (
        f"{row}.kind NOT IN {NOT_EFFECTIVE} AND ({row}.organisation_id IS NULL "
        f"OR {row}.organisation_id <> {owner})"
    )
    values = {
        "usage_ms": f"{sign} * {ms}",
        "external_ms": f"{sign} * CASE WHEN {external} THEN {ms} ELSE 0 END",
        "training_ms": f"{sign} * CASE WHEN {row}.kind = 'training' THEN {ms} ELSE 0 END",
        "maintenance_ms": f"{sign} * CASE WHEN {row}.kind = 'maintenance' THEN {ms} ELSE 0 END",
        "usage_records": f"{sign}",
        "usage_carried": f"{sign} * CASE WHEN {row}.started_at < m.utc_start THEN 1 ELSE 0 END",
    }
    return _upsert(row, values, sql.months_overlapping(f"{row}.started_at", f"{row}.ended_at"))


def booking_share(sql: _Sql, row: str, sign: int) -> str:
    """The statement adding ``sign`` × the booking ``row``'s share to its months."""
    ms = sql.clipped_ms(f"{row}.start_at", f"{row}.end_at")
    starts_here = f"{row}.start_at >= m.utc_start AND {row}.start_at < m.utc_end"
    late = (
        f"{row}.status = 'cancelled' AND {row}.late_cancellation AND {row}.replaced_by_id IS NULL"
    )
    values = {
        "booked_ms": f"{sign} * CASE WHEN {row}.status IN {BOOKED} THEN {ms} ELSE 0 END",
        "bookings_made": (
            f"{sign} * CASE WHEN {starts_here} AND {row}.status IN {MADE} THEN 1 ELSE 0 END"
        ),
        "bookings_completed": (
            f"{sign} * CASE WHEN {starts_here} AND {row}.status = 'completed' THEN 1 ELSE 0 END"
        ),
        "no_shows": f"{sign} * CASE WHEN {starts_here} AND {row}.status = 'no_show' THEN 1 ELSE 0 END",
        "late_cancellations": f"{sign} * CASE WHEN {starts_here} AND {late} THEN 1 ELSE 0 END",
    }
    # Requests, refusals and plain cancellations count nowhere: no row for them.
    where = (
        f"{sql.months_overlapping(f'{row}.start_at', f'{row}.end_at')} "
        f"AND ({row}.status IN {MADE} OR ({late}))"
    )
    return _upsert(row, values, where)


def external_recount(sql: _Sql, instruments: str) -> str:
    """Recompute external hours of ``instruments`` (a subquery of ids) from their records:
    "external" is relative to the owner of the instrument's facility, which just changed."""
    ms = sql.clipped_ms("u.started_at", "u.ended_at")
    return (
        "UPDATE instrument_month SET external_ms = COALESCE((SELECT SUM("
        f"{ms}) FROM usage_record u, report_month m, instrument i, facility f "
        "WHERE m.zone = instrument_month.zone AND m.month = instrument_month.month "
        "AND u.instrument_id = instrument_month.instrument_id "
        "AND u.started_at < m.utc_end AND u.ended_at > m.utc_start "
        "AND i.id = u.instrument_id AND f.id = i.facility_id "
        f"AND u.kind NOT IN {NOT_EFFECTIVE} "
        "AND (u.organisation_id IS NULL OR u.organisation_id <> f.organisation_id)), 0) "
        f"WHERE instrument_id IN ({instruments})"
    )


USAGE_CHANGES = "instrument_id, kind, organisation_id, started_at, ended_at"
BOOKING_CHANGES = "instrument_id, status, late_cancellation, replaced_by_id, start_at, end_at"
FACILITY_OF_INSTRUMENT = "SELECT NEW.id"
INSTRUMENTS_OF_FACILITY = "SELECT id FROM instrument WHERE facility_id = NEW.id"


def _sqlite_triggers(sql: _Sql) -> None:
    for table, share, changes in (
        ("usage_record", usage_share, USAGE_CHANGES),
        ("booking", booking_share, BOOKING_CHANGES),
    ):
        op.execute(
            f"CREATE TRIGGER {table}_month_totals_insert AFTER INSERT ON {table} "
            f"BEGIN {share(sql, 'NEW', 1)}; END"
        )
        op.execute(
            f"CREATE TRIGGER {table}_month_totals_delete AFTER DELETE ON {table} "
            f"BEGIN {share(sql, 'OLD', -1)}; END"
        )
        op.execute(
            f"CREATE TRIGGER {table}_month_totals_update AFTER UPDATE OF {changes} ON {table} "
            f"BEGIN {share(sql, 'OLD', -1)}; {share(sql, 'NEW', 1)}; END"
        )
    op.execute(
        "CREATE TRIGGER instrument_month_totals_moved AFTER UPDATE OF facility_id ON instrument "
        "WHEN NEW.facility_id IS NOT OLD.facility_id "
        f"BEGIN {external_recount(sql, FACILITY_OF_INSTRUMENT)}; END"
    )
    op.execute(
        "CREATE TRIGGER facility_month_totals_owner AFTER UPDATE OF organisation_id ON facility "
        "WHEN NEW.organisation_id IS NOT OLD.organisation_id "
        f"BEGIN {external_recount(sql, INSTRUMENTS_OF_FACILITY)}; END"
    )


def _postgresql_triggers(sql: _Sql) -> None:
    for table, share, changes in (
        ("usage_record", usage_share, USAGE_CHANGES),
        ("booking", booking_share, BOOKING_CHANGES),
    ):
        op.execute(
            f"CREATE FUNCTION {table}_month_totals() RETURNS trigger LANGUAGE plpgsql AS $$ "
            "BEGIN "
            f"IF TG_OP IN ('UPDATE', 'DELETE') THEN {share(sql, 'OLD', -1)}; END IF; "
            f"IF TG_OP IN ('UPDATE', 'INSERT') THEN {share(sql, 'NEW', 1)}; END IF; "
            "RETURN NULL; END $$"
        )
        op.execute(
            f"CREATE TRIGGER {table}_month_totals AFTER INSERT OR DELETE OR UPDATE OF {changes} "
            f"ON {table} FOR EACH ROW EXECUTE FUNCTION {table}_month_totals()"
        )
    for table, column, instruments in (
        ("instrument", "facility_id", FACILITY_OF_INSTRUMENT),
        ("facility", "organisation_id", INSTRUMENTS_OF_FACILITY),
    ):
        op.execute(
            f"CREATE FUNCTION {table}_month_totals() RETURNS trigger LANGUAGE plpgsql AS $$ "
            f"BEGIN {external_recount(sql, instruments)}; RETURN NULL; END $$"
        )
        op.execute(
            f"CREATE TRIGGER {table}_month_totals AFTER UPDATE OF {column} ON {table} "
            f"FOR EACH ROW WHEN (NEW.{column} IS DISTINCT FROM OLD.{column}) "
            f"EXECUTE FUNCTION {table}_month_totals()"
        )


def upgrade() -> None:
    op.create_table(
        "report_month",
        sa.Column("zone", sa.String(length=64), nullable=False),
        sa.Column("month", sa.Date(), nullable=False),
        sa.Column("utc_start", core.db.UTCDateTime(), nullable=False),
        sa.Column("utc_end", core.db.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("zone", "month", name=op.f("pk_report_month")),
    )
    op.create_index("ix_report_month_utc_end", "report_month", ["utc_end"])
    op.create_table(
        "instrument_month",
        sa.Column("zone", sa.String(length=64), nullable=False),
        sa.Column("month", sa.Date(), nullable=False),
        sa.Column("instrument_id", sa.Integer(), nullable=False),
        *(
            sa.Column(
                name,
                sa.BigInteger() if name.endswith("_ms") else sa.Integer(),
                server_default="0",
                nullable=False,
            )
            for name in COLUMNS
        ),
        sa.ForeignKeyConstraint(
            ["instrument_id"],
            ["instrument.id"],
            name=op.f("fk_instrument_month_instrument_id_instrument"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("zone", "month", "instrument_id", name=op.f("pk_instrument_month")),
    )
    sql = _Sql(op.get_bind().dialect.name)
    if sql.sqlite:
        _sqlite_triggers(sql)
    else:
        _postgresql_triggers(sql)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in ("usage_record", "booking", "instrument", "facility"):
            op.execute(f"DROP TRIGGER IF EXISTS {table}_month_totals ON {table}")
            op.execute(f"DROP FUNCTION IF EXISTS {table}_month_totals()")
    else:
        for table in ("usage_record", "booking"):
            for event in ("insert", "delete", "update"):
                op.execute(f"DROP TRIGGER IF EXISTS {table}_month_totals_{event}")
        op.execute("DROP TRIGGER IF EXISTS instrument_month_totals_moved")
        op.execute("DROP TRIGGER IF EXISTS facility_month_totals_owner")
    op.drop_table("instrument_month")
    op.drop_index("ix_report_month_utc_end", table_name="report_month")
    op.drop_table("report_month")
