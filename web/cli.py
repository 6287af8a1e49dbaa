"""The ``labshare`` command: serve, db, demo, users, organisations."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress
from rich.table import Table
from sqlmodel import select

from core.accounts import queries as account_queries
from core.accounts import service as accounts
from core.accounts.models import Organisation
from core.accounts.rules import OrganisationType, Role, ScopeKind
from core.accounts.schemas import OrganisationCreate, RoleGrant, UserCreate
from core.db import Database
from core.errors import DomainError
from core.settings import get_settings
from instruments import transfer
from web import dbschema
from web.logging import configure_logging

app = typer.Typer(
    help="labshare: shared scientific-instrument booking platform.", no_args_is_help=True
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
users_app = typer.Typer(help="User accounts.", no_args_is_help=True)
orgs_app = typer.Typer(help="Organisations.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(users_app, name="users")
app.add_typer(orgs_app, name="orgs")
report_app = typer.Typer(help="Utilization reports and usage-record exports.", no_args_is_help=True)
app.add_typer(report_app, name="report")
import_app = typer.Typer(help="Import data from CSV or XLSX files.", no_args_is_help=True)
export_app = typer.Typer(help="Export data to XLSX files.", no_args_is_help=True)
app.add_typer(import_app, name="import")
app.add_typer(export_app, name="export")

console = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


def _database() -> Database:
    return Database(get_settings())


def _fail(message: str, code: int = 1) -> typer.Exit:
    # Escaped: messages quote user input and pydantic's "[type=...]", which is not markup.
    err.print(f"[red]{escape(message)}[/red]")
    return typer.Exit(code)


def _domain_error(exc: DomainError) -> typer.Exit:
    lines = [exc.detail] + [
        f"  {p.field}: {p.message}" if p.field else f"  {p.message}" for p in exc.problems
    ]
    return _fail("\n".join(lines), 2)


def require_current_schema(database: Database) -> None:
    state = dbschema.schema_state(database)
    if not state.is_current:
        raise _fail(state.describe())


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 1,
) -> None:
    """Serve the web app and the API. Refuses a database whose schema is not current."""
    import uvicorn

    database = _database()
    require_current_schema(database)
    database.dispose()
    console.print(f"labshare on http://{host}:{port}/  (API docs: /docs)")
    uvicorn.run(
        "web.app:serving_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        proxy_headers=True,
        log_config=None,
    )


@app.command()
def worker(
    interval: Annotated[float, typer.Option(min=0.1, help="Seconds between rounds.")] = 15.0,
    once: Annotated[bool, typer.Option(help="Run one round and stop.")] = False,
) -> None:
    """Run the scheduled transitions: expire unanswered requests, mark no-shows, housekeeping."""
    from web import worker as scheduled

    settings = get_settings()
    configure_logging(settings.log_level, as_json=settings.log_json)
    database = _database()
    require_current_schema(database)
    if once:
        for name, count in scheduled.run_once(database, settings).items():
            console.print(f"{name}: {count}")
    else:
        console.print(f"labshare worker: a round every {interval:g} s (Ctrl-C stops)")
        scheduled.run_forever(database, settings, interval_s=interval)
    database.dispose()


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument()] = "head") -> None:
    """Create or update the schema by running the migrations."""
    database = _database()
    dbschema.upgrade(database, revision)
    console.print(dbschema.schema_state(database).describe())
    database.dispose()


@db_app.command("status")
def db_status() -> None:
    """Tell whether the schema is current."""
    database = _database()
    state = dbschema.schema_state(database)
    console.print(state.describe())
    database.dispose()
    if not state.is_current:
        raise typer.Exit(1)


@db_app.command("revision")
def db_revision(message: Annotated[str, typer.Option("--message", "-m")]) -> None:
    """(Developers) autogenerate a migration from the models against a current database."""
    dbschema.make_revision(_database(), message)


@app.command()
def demo(
    reset: Annotated[bool, typer.Option(help="Wipe and rebuild the demo database first.")] = False,
    serve_after: Annotated[
        bool, typer.Option("--serve/--no-serve", help="Serve it afterwards.")
    ] = True,
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8000,
) -> None:
    """Build the demo database (Chinese sample data, demo logins) and serve it."""
    from web import demo as demo_data

    database = _database()
    try:
        demo_data.prepare(database, reset=reset, say=console.print)
    except demo_data.NotADemoDatabase as exc:
        raise _fail(str(exc)) from exc
    console.print(demo_data.logins_text(port=port, host=host))
    database.dispose()
    if serve_after:
        serve(host=host, port=port, workers=1)


def _parse_role(text: str) -> RoleGrant:
    """``role`` or ``role:scope_kind:id``, e.g. ``lab_manager:facility:3``."""
    parts = text.split(":")
    try:
        role = Role(parts[0])
        kind = ScopeKind(parts[1]) if len(parts) > 1 else None
        scope_id = int(parts[2]) if len(parts) > 2 else None
    except (ValueError, IndexError) as exc:
        roles = ", ".join(r.value for r in Role)
        raise typer.BadParameter(f"{text!r}: use ROLE or ROLE:SCOPE:ID; roles: {roles}") from exc
    return RoleGrant(role=role, scope_kind=kind, scope_id=scope_id)


@users_app.command("create")
def users_create(
    email: Annotated[str, typer.Option(help="Login e-mail address.")],
    name: Annotated[str, typer.Option(help="Display name.")],
    org: Annotated[str | None, typer.Option(help="Organisation id or exact name.")] = None,
    role: Annotated[
        list[str] | None, typer.Option(help="ROLE or ROLE:SCOPE:ID; repeatable.")
    ] = None,
    locale: Annotated[str, typer.Option()] = "zh-CN",
    password: Annotated[
        str | None, typer.Option(help="Omit to be prompted (hidden).", show_default=False)
    ] = None,
) -> None:
    """Create a user account."""
    if password is None:
        if not sys.stdin.isatty():
            raise _fail("No --password given and no terminal to prompt on.")
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    grants = [_parse_role(r) for r in role or []]
    database = _database()
    require_current_schema(database)
    try:
        with database.transaction() as session:
            organisation_id = _resolve_org(session, org)
            user = accounts.create_user(
                session,
                actor_id=None,
                data=UserCreate(
                    email=email,
                    name=name,
                    organisation_id=organisation_id,
                    locale=locale,
                    password=password,
                    roles=grants,
                ),
            )
    except DomainError as exc:
        raise _domain_error(exc) from exc
    except ValueError as exc:
        raise _fail(str(exc), 2) from exc
    console.print(f"Created user {user.id}: {user.email}")


def _resolve_org(session: object, org: str | None) -> int | None:
    from sqlmodel import Session

    assert isinstance(session, Session)
    if org is None:
        return None
    query = select(Organisation.id).where(
        (Organisation.id == int(org)) if org.isdigit() else (Organisation.name == org)
    )
    found = session.exec(query).first()
    if found is None:
        raise _fail(f"No organisation {org!r}.", 2)
    return found


@users_app.command("list")
def users_list(
    role: Annotated[Role | None, typer.Option()] = None,
    limit: Annotated[int, typer.Option(max=500)] = 100,
) -> None:
    """List users with their roles."""
    database = _database()
    require_current_schema(database)
    with database.transaction(write=False) as session:
        rows, total = account_queries.list_users(session, role=role, limit=limit)
        roles = account_queries.assignments_by_user(session, [u.id or 0 for u in rows])
    table = Table("id", "email", "name", "roles", "active", title=f"{total} users")
    for user in rows:
        held = ", ".join(
            a.role + (f":{a.scope_kind}:{a.scope_id}" if a.scope_id else "")
            for a in roles.get(user.id or 0, [])
        )
        table.add_row(str(user.id), user.email, user.name, held, "yes" if user.is_active else "no")
    console.print(table)


@orgs_app.command("create")
def orgs_create(
    name: Annotated[str, typer.Option()],
    type: Annotated[OrganisationType, typer.Option()],
    district: Annotated[str, typer.Option(help="e.g. 沙坪坝区")],
    credit_code: Annotated[str | None, typer.Option(help="统一社会信用代码")] = None,
    sme: Annotated[bool, typer.Option()] = False,
    tech_sme: Annotated[bool, typer.Option()] = False,
) -> None:
    """Register an organisation."""
    database = _database()
    require_current_schema(database)
    try:
        with database.transaction() as session:
            organisation = accounts.create_organisation(
                session,
                actor_id=None,
                data=OrganisationCreate(
                    name=name,
                    type=type,
                    district=district,
                    credit_code=credit_code,
                    is_sme=sme,
                    is_tech_sme=tech_sme,
                ),
            )
    except DomainError as exc:
        raise _domain_error(exc) from exc
    except ValueError as exc:  # the schema's own checks (pydantic), e.g. a one-character name
        raise _fail(str(exc), 2) from exc
    console.print(f"Created organisation {organisation.id}: {organisation.name}")


@orgs_app.command("list")
def orgs_list() -> None:
    """List organisations."""
    database = _database()
    require_current_schema(database)
    with database.transaction(write=False) as session:
        rows, total = account_queries.list_organisations(session, limit=500)
    table = Table("id", "name", "type", "district", "cluster", title=f"{total} organisations")
    for row in rows:
        table.add_row(str(row.id), row.name, row.type, row.district, row.cluster)
    console.print(table)


@import_app.command("instruments")
def import_instruments(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help=".csv or .xlsx")],
    dry_run: Annotated[bool, typer.Option(help="Check every row, write nothing.")] = False,
) -> None:
    """Create or update instruments from a file (columns: docs/instrument-import.md).

    All or nothing: if any row has a problem, every problem is listed and nothing is imported.
    """
    database = _database()
    require_current_schema(database)
    try:
        rows = list(transfer.read_rows(file))
    except (ValueError, OSError) as exc:
        raise _fail(f"Cannot read {file}: {exc}", 2) from exc
    session = database.new_session()
    try:
        with Progress(console=err, transient=True) as progress:
            task = progress.add_task("Importing", total=max(len(rows) - 1, 0))
            report = transfer.import_instruments(
                session, rows, progress=lambda done: progress.update(task, completed=done)
            )
        if dry_run:
            session.rollback()
        else:
            session.commit()
    except transfer.ImportFailed as exc:
        session.rollback()
        for error in exc.report.errors:
            err.print(f"  {error}")
        raise _fail(
            f"{len(exc.report.errors)} problem(s) in {file}; nothing was imported.", 2
        ) from exc
    finally:
        session.close()
    verb = "Would import" if dry_run else "Imported"
    console.print(
        f"{verb} {report.rows} rows: {len(report.created)} new, {len(report.updated)} updated, "
        f"{len(report.unchanged)} unchanged."
    )


@export_app.command("instruments")
def export_instruments(
    file: Annotated[Path, typer.Argument(dir_okay=False, help="The .xlsx file to write")],
    facility: Annotated[list[int] | None, typer.Option(help="Only these facility ids.")] = None,
) -> None:
    """Write the instrument list to an XLSX file that imports back unchanged."""
    if file.suffix.lower() != ".xlsx":
        raise _fail("Export writes .xlsx files.", 2)
    database = _database()
    require_current_schema(database)
    with (
        database.transaction(write=False) as session,
        Progress(console=err, transient=True) as progress,
    ):
        task = progress.add_task("Exporting", total=None)
        count = transfer.export_instruments(
            session,
            file,
            facility_ids=facility,
            progress=lambda done: progress.update(task, completed=done),
        )
    console.print(f"Exported {count} instruments to {file}.")


def _report_dates(start: str, end: str) -> tuple[date, date]:
    """The period's dates, or exit 2 listing every problem (as the API's 422 does)."""
    from reports import rules as report_rules

    parsed: list[date | None] = []
    problems = []
    for name, text in (("--from", start), ("--to", end)):
        try:
            parsed.append(date.fromisoformat(text))
        except ValueError:
            parsed.append(None)
            problems.append(f"  {name}: {text!r} is not a date (YYYY-MM-DD).")
    if not problems:
        problems += [f"  {p.message}" for p in report_rules.period_problems(*parsed)]
    if problems:
        raise _fail("\n".join(["Bad period:", *problems]), 2)
    assert parsed[0] is not None
    assert parsed[1] is not None
    return parsed[0], parsed[1]


def _write_chunks(output: Path | None, chunks: Iterator[bytes]) -> None:
    if output is None:
        for chunk in chunks:
            sys.stdout.buffer.write(chunk)
        sys.stdout.buffer.flush()
        return
    with output.open("wb") as file:
        for chunk in chunks:
            file.write(chunk)


@report_app.command("utilization")
def report_utilization(
    start: Annotated[str, typer.Option("--from", help="First day (YYYY-MM-DD), included.")],
    end: Annotated[
        str, typer.Option("--to", help="First day after the period (YYYY-MM-DD), excluded.")
    ],
    group_by: Annotated[
        str, typer.Option(help="instrument, facility, organisation, category, cluster, district")
    ] = "facility",
    period: Annotated[str, typer.Option(help="month, quarter or year")] = "month",
    format: Annotated[
        str | None, typer.Option(help="csv, xlsx or json; default: the output's suffix")
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", dir_okay=False, help="Default: stdout.")
    ] = None,
) -> None:
    """Write the utilization report of every facility (the metrics of docs/metrics.md)."""
    import json
    from zoneinfo import ZoneInfo

    from reports import export as report_export
    from reports import queries as report_queries
    from reports.rules import GroupBy, PeriodKind, ReportFormat, ReportScope

    first, after = _report_dates(start, end)
    chosen = format or (output.suffix.lstrip(".").lower() if output else "json")
    problems = []
    for enum_class, value, name in (
        (GroupBy, group_by, "--group-by"),
        (PeriodKind, period, "--period"),
        (ReportFormat, chosen, "--format"),
    ):
        if value not in {member.value for member in enum_class}:
            allowed = ", ".join(member.value for member in enum_class)
            problems.append(f"  {name}: unknown {value!r}; use one of {allowed}.")
    if problems:
        raise _fail("\n".join(["Bad options:", *problems]), 2)
    fmt = ReportFormat(chosen)
    if fmt is ReportFormat.XLSX and output is None:
        raise _fail("An XLSX report needs --output FILE.", 2)
    settings = get_settings()
    database = _database()
    require_current_schema(database)
    try:
        with (
            database.transaction(write=False) as session,
            Progress(console=err, transient=True) as progress,
        ):
            task = progress.add_task("Computing the report", total=None)
            report = report_queries.utilization_report(
                session,
                start=first,
                end=after,
                group_by=GroupBy(group_by),
                period=PeriodKind(period),
                scope=ReportScope(None),
                zone=ZoneInfo(settings.timezone),
            )
            rows = len(report.labels) * len(report.buckets)
            progress.update(task, description="Writing", total=rows, completed=0)

            def advance(done: int) -> None:
                progress.update(task, completed=done)

            if fmt is ReportFormat.JSON:
                text = json.dumps(report.as_dict(), ensure_ascii=False, indent=2) + "\n"
                _write_chunks(output, iter([text.encode()]))
            elif fmt is ReportFormat.CSV:
                _write_chunks(output, report_export.report_csv(report, advance))
            else:
                _write_chunks(output, report_export.report_xlsx(report, advance))
    except DomainError as exc:
        raise _domain_error(exc) from exc
    finally:
        database.dispose()
    if output is not None:
        console.print(
            f"Wrote {len(report.labels)} groups × {len(report.buckets)} periods to {output}."
        )


@report_app.command("rebuild-totals")
def report_rebuild_totals(
    zone: Annotated[
        str | None, typer.Option(help="A time zone; default: LABSHARE_TIMEZONE.")
    ] = None,
) -> None:
    """Rebuild the month totals reports read, from the bookings and usage records.

    The database keeps them with every write; this is for data written with its triggers set
    aside (a bulk load), and says how many totals were off."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    from reports import month_totals

    settings = get_settings()
    try:
        chosen = ZoneInfo(zone or settings.timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise _fail(f"Unknown time zone: {zone}") from exc
    database = Database(settings)
    require_current_schema(database)
    with database.transaction() as session:
        differed = month_totals.rebuild_zone(session, chosen)
    database.dispose()
    console.print(f"Month totals of {chosen.key} rebuilt from the records: {differed} differed.")


@report_app.command("drop-totals")
def report_drop_totals(
    zone: Annotated[str, typer.Option(help="The time zone whose totals are no longer kept.")],
) -> None:
    """Stop keeping the month totals of a zone the platform no longer reports in (after a
    change of LABSHARE_TIMEZONE): writes stop paying for them."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    from reports import month_totals

    settings = get_settings()
    try:
        chosen = ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise _fail(f"Unknown time zone: {zone}") from exc
    if chosen.key == settings.timezone:
        raise _fail(f"{zone} is LABSHARE_TIMEZONE: its reports read these totals.", 2)
    database = Database(settings)
    require_current_schema(database)
    with database.transaction() as session:
        dropped = month_totals.drop_zone(session, chosen)
    database.dispose()
    console.print(
        f"Month totals of {chosen.key} dropped."
        if dropped
        else f"No month totals were kept for {chosen.key}."
    )


@report_app.command("usage-export")
def report_usage_export(
    instrument: Annotated[int, typer.Option(help="The instrument's id.")],
    start: Annotated[str, typer.Option("--from", help="First day (YYYY-MM-DD), included.")],
    end: Annotated[
        str, typer.Option("--to", help="First day after the period (YYYY-MM-DD), excluded.")
    ],
    output: Annotated[Path, typer.Option("--output", "-o", dir_okay=False, help=".csv or .xlsx")],
) -> None:
    """Write an instrument's usage records in the sharing platforms' shape
    (docs/usage-export.md)."""
    from reports import export as report_export
    from reports import queries as report_queries
    from reports.rules import ReportScope, local_midnight

    first, after = _report_dates(start, end)
    suffix = output.suffix.lower()
    if suffix not in (".csv", ".xlsx"):
        raise _fail("The output must be a .csv or .xlsx file.", 2)
    database = _database()
    require_current_schema(database)
    try:
        with (
            database.transaction(write=False) as session,
            Progress(console=err, transient=True) as progress,
        ):
            header = report_queries.usage_export_header(
                session, instrument_id=instrument, scope=ReportScope(None)
            )
            utc_start, utc_end = (
                local_midnight(first, header.zone),
                local_midnight(after, header.zone),
            )
            total = report_queries.count_usage_records(
                session, instrument_id=instrument, start=utc_start, end=utc_end
            )
            task = progress.add_task("Exporting", total=total)
            records = report_queries.usage_export_rows(
                session, instrument_id=instrument, start=utc_start, end=utc_end
            )

            def advance(done: int) -> None:
                progress.update(task, completed=done)

            writer = report_export.usage_csv if suffix == ".csv" else report_export.usage_xlsx
            _write_chunks(output, writer(header, records, advance))
    except DomainError as exc:
        raise _domain_error(exc) from exc
    finally:
        database.dispose()
    console.print(f"Exported {total} usage records of {header.asset_code} to {output}.")


if __name__ == "__main__":
    app()
