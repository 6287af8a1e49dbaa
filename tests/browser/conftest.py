"""Pages in a real browser: Playwright drives Debian's chromium (never a downloaded browser).

One `labshare serve` process per test module, on a migrated SQLite file of its own; tests seed
it through `seed_session()` (committed data) and drive it through `page` / `phone_page`.
Screenshots go to test-output/screenshots/ (or $LABSHARE_TEST_OUTPUT/screenshots/).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session

from core.db import Database
from tests.conftest import make_sqlite_database, missing_service
from tests.servers import REPO_ROOT, served

CHROMIUM = os.environ.get("LABSHARE_TEST_CHROMIUM", "/usr/bin/chromium")
SCREENSHOTS = (
    Path(os.environ.get("LABSHARE_TEST_OUTPUT", REPO_ROOT / "test-output")) / "screenshots"
)
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 900}

pytestmark = pytest.mark.browser


@pytest.fixture(scope="session")
def chromium() -> Iterator[Any]:
    if shutil.which(CHROMIUM) is None and not Path(CHROMIUM).exists():
        missing_service(f"no chromium at {CHROMIUM} (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:  # pragma: no cover - the test extra installs it
        missing_service("playwright is not installed (pip install -e '.[test]')")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def browser_database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Database]:
    """The live server's database: a migrated SQLite file with committed data."""
    database = make_sqlite_database(tmp_path_factory.mktemp("browser"))
    yield database
    database.dispose()


@pytest.fixture(scope="module")
def live_server(
    browser_database: Database, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """`labshare serve` on loopback over the module's database; yields its base URL."""
    log = tmp_path_factory.mktemp("browser-log") / "server.log"
    # Plain http on loopback: chromium would keep Secure cookies on 127.0.0.1, but a test
    # should not depend on that browser exception.
    with served(
        str(browser_database.settings.database_url), log, LABSHARE_COOKIE_SECURE="false"
    ) as base_url:
        yield base_url


@pytest.fixture
def seed_session(browser_database: Database) -> Callable[[], AbstractContextManager[Session]]:
    """`with seed_session() as s: ...; s.commit()` writes data the live server sees."""
    return browser_database.new_session


def _new_page(chromium: Any, live_server: str, viewport: dict[str, int]) -> Iterator[Any]:
    context = chromium.new_context(
        base_url=live_server, viewport=viewport, locale="zh-CN", timezone_id="Asia/Shanghai"
    )
    context.set_default_timeout(15_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on(
        "console",
        lambda message: errors.append(message.text) if message.type == "error" else None,
    )
    page.script_errors = errors
    yield page
    context.close()


@pytest.fixture
def page(chromium: Any, live_server: str) -> Iterator[Any]:
    """A desktop browser tab with its own cookies. `page.script_errors` lists JS errors."""
    yield from _new_page(chromium, live_server, DESKTOP)


@pytest.fixture
def phone_page(chromium: Any, live_server: str) -> Iterator[Any]:
    """A phone-sized browser tab (390 × 844) with its own cookies."""
    yield from _new_page(chromium, live_server, PHONE)


def screenshot(page: Any, name: str) -> Path:
    """Save a full-page screenshot of a key page under the test output folder."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def log_in(page: Any, email: str, password: str) -> None:
    """Through the login form, as a person does."""
    page.goto("/login")
    page.locator("#email").fill(email)
    page.locator("#password").fill(password)
    page.locator("form[action='/login'] button[type=submit]").click()
    page.wait_for_load_state("networkidle")
