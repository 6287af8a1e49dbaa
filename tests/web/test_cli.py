"""The ``labshare`` command as an operator uses it, on an SQLite file of the test's own."""

from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from sqlmodel import func, select
from typer.testing import CliRunner, Result

from core.accounts.models import Organisation, User
from core.auth.service import authenticate
from core.db import Database
from core.errors import NotAuthenticated
from core.settings import Settings, get_settings
from web.cli import app
from web.demo import DEMO_PASSWORD, LOGINS, demo_email

runner = CliRunner()


@pytest.fixture
def database_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """LABSHARE_DATABASE_URL names an SQLite file that does not exist yet."""
    url = f"sqlite:///{tmp_path / 'labshare.db'}"
    monkeypatch.setenv("LABSHARE_DATABASE_URL", url)
    monkeypatch.setenv("LABSHARE_SQLITE_SYNCHRONOUS", "NORMAL")  # fast enough for tests
    get_settings.cache_clear()
    yield url
    get_settings.cache_clear()


@pytest.fixture
def migrated(database_url: str) -> str:
    assert labshare("db", "upgrade").exit_code == 0
    return database_url


@pytest.fixture
def uvicorn_runs(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, object]]:
    """Calls that would have started the server (none is actually started)."""
    calls: list[dict[str, object]] = []
    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: calls.append(kwargs))
    return calls


def labshare(*args: str) -> Result:
    return runner.invoke(app, list(args))


def said(result: Result) -> str:
    """What the command printed, with the terminal's line wrapping undone."""
    return " ".join(result.output.split())


def open_database(url: str) -> Database:
    return Database(Settings(database_url=url))


def count_users(url: str) -> int:
    database = open_database(url)
    try:
        with database.transaction(write=False) as session:
            return session.exec(select(func.count()).select_from(User)).one()
    finally:
        database.dispose()


def logs_in(url: str, email: str, password: str) -> bool:
    database = open_database(url)
    try:
        with database.transaction() as session:
            authenticate(
                session, database.settings, email=email, password=password, client_address="cli"
            )
        return True
    except NotAuthenticated:
        return False
    finally:
        database.dispose()


def test_serve_refuses_a_database_without_schema_and_says_what_to_run(
    database_url: str, uvicorn_runs: list[dict[str, object]]
) -> None:
    result = labshare("serve", "--port", "8765")

    assert result.exit_code != 0
    assert "labshare db upgrade" in said(result)
    assert uvicorn_runs == []


def test_serve_starts_the_server_on_a_migrated_database(
    migrated: str, uvicorn_runs: list[dict[str, object]]
) -> None:
    result = labshare("serve", "--port", "8765")

    assert result.exit_code == 0, result.output
    assert [(c["host"], c["port"]) for c in uvicorn_runs] == [("127.0.0.1", 8765)]


def test_db_upgrade_then_status_says_the_schema_is_current(database_url: str) -> None:
    assert labshare("db", "status").exit_code == 1

    upgraded = labshare("db", "upgrade")
    status = labshare("db", "status")

    assert upgraded.exit_code == 0, upgraded.output
    assert status.exit_code == 0, status.output
    assert "The schema is current" in said(status)


def test_users_create_makes_an_admin_who_can_log_in(migrated: str) -> None:
    result = labshare(
        "users", "create",
        "--email", "Admin@Example.cn", "--name", "平台管理员",
        "--role", "admin", "--password", "a long enough password",
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    assert logs_in(migrated, "admin@example.cn", "a long enough password")
    listed = labshare("users", "list", "--role", "admin")
    assert "admin@example.cn" in said(listed)


def test_users_create_refuses_a_taken_email_address(migrated: str) -> None:
    first = ["--name", "王晓雨", "--password", "a long enough password"]
    labshare("users", "create", "--email", "wang@example.cn", *first)

    again = labshare("users", "create", "--email", "WANG@example.cn", *first)

    assert again.exit_code == 2
    assert "already exists" in said(again)
    assert count_users(migrated) == 1


def test_users_create_without_a_password_or_a_terminal_fails_cleanly(migrated: str) -> None:
    result = labshare("users", "create", "--email", "li@example.cn", "--name", "李娜")

    assert result.exit_code == 1
    assert "--password" in said(result)
    assert "Traceback" not in result.output
    assert count_users(migrated) == 0


def test_users_create_refuses_a_malformed_email_address(migrated: str) -> None:
    result = labshare(
        "users", "create", "--email", "not-an-address", "--name", "某人",
        "--password", "a long enough password",
    )  # fmt: skip

    assert result.exit_code == 2
    assert "email" in said(result)
    assert count_users(migrated) == 0


def test_orgs_create_names_a_bad_credit_code(migrated: str) -> None:
    result = labshare(
        "orgs", "create", "--name", "重庆迎龙新材料股份有限公司", "--type", "enterprise",
        "--district", "南岸区", "--credit-code", "91350100M000100Y44",
    )  # fmt: skip

    assert result.exit_code == 2
    assert "credit_code" in said(result)
    assert "check character" in said(result)


def test_orgs_create_names_a_name_that_is_too_short(migrated: str) -> None:
    result = labshare(
        "orgs", "create", "--name", "渝", "--type", "university", "--district", "南岸区"
    )

    assert result.exit_code == 2, result.output
    assert "name" in said(result)
    assert "Traceback" not in result.output


def test_orgs_create_registers_an_organisation(migrated: str) -> None:
    result = labshare(
        "orgs", "create", "--name", "重庆交通大学", "--type", "university", "--district", "南岸区"
    )

    assert result.exit_code == 0, result.output
    database = open_database(migrated)
    with database.transaction(write=False) as session:
        organisation = session.exec(select(Organisation)).one()
    database.dispose()
    assert (organisation.name, organisation.cluster) == ("重庆交通大学", "guangyang_bay")


def test_demo_builds_the_documented_logins_and_reuses_them(database_url: str) -> None:
    built = labshare("demo", "--no-serve")

    assert built.exit_code == 0, built.output
    for local, _role in LOGINS:
        assert demo_email(local) in built.output
    assert len(LOGINS) == 6
    for local in ("admin", "manager", "researcher", "firm", "finance", "planner"):
        assert logs_in(database_url, demo_email(local), DEMO_PASSWORD), local
    users = count_users(database_url)

    again = labshare("demo", "--no-serve")

    assert again.exit_code == 0, again.output
    assert "Using the existing demo database" in said(again)
    assert count_users(database_url) == users


def test_demo_reset_refuses_a_database_that_is_not_a_demo(migrated: str) -> None:
    labshare(
        "users", "create", "--email", "admin@example.cn", "--name", "管理员",
        "--role", "admin", "--password", "a long enough password",
    )  # fmt: skip

    result = labshare("demo", "--reset", "--no-serve")

    assert result.exit_code != 0
    assert "not a demo database" in said(result)
    assert count_users(migrated) == 1
    assert logs_in(migrated, "admin@example.cn", "a long enough password")


def test_users_create_names_an_unknown_organisation_verbatim(migrated: str) -> None:
    result = labshare(
        "users", "create", "--email", "li@example.cn", "--name", "李娜", "--org", "[/重庆大学]",
        "--password", "a long enough password",
    )  # fmt: skip

    assert result.exit_code == 2, result.output
    assert "No organisation '[/重庆大学]'." in said(result)
    assert count_users(migrated) == 0
