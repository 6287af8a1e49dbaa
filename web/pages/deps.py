"""Dependencies of pages: the logged-in user (or a redirect to the login page), CSRF checks."""

from __future__ import annotations

from datetime import date
from typing import Annotated
from urllib.parse import quote

from fastapi import Depends, Form, Request

from core.auth.principal import Principal, load_principal
from core.errors import DomainError, Problem
from web import csrf
from web.deps import MAX_ID, DbSession, PageSession, outlive_transaction, page_session
from web.messages import N_


class LoginRequired(Exception):
    """Answered with a redirect to the login page that comes back here afterwards."""

    def __init__(self, next_url: str) -> None:
        self.next_url = next_url


def login_url(next_url: str) -> str:
    return f"/login?next={quote(next_url, safe='/')}"


def page_principal(
    request: Request,
    session: DbSession,
    current: Annotated[PageSession | None, Depends(page_session)],
) -> Principal:
    if current is None:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise LoginRequired(target)
    principal = load_principal(session, current.user)
    outlive_transaction(session, *principal.assignments)
    request.state.principal = principal
    return principal


def optional_page_principal(
    request: Request,
    session: DbSession,
    current: Annotated[PageSession | None, Depends(page_session)],
) -> Principal | None:
    if current is None:
        return None
    principal = load_principal(session, current.user)
    outlive_transaction(session, *principal.assignments)
    request.state.principal = principal
    return principal


async def checked_csrf(
    request: Request,
    current: Annotated[PageSession | None, Depends(page_session)],
    csrf_token: Annotated[str | None, Form()] = None,
) -> None:
    csrf.check(request, csrf_token)


PagePrincipal = Annotated[Principal, Depends(page_principal)]
OptionalPagePrincipal = Annotated[Principal | None, Depends(optional_page_principal)]
CsrfChecked = Annotated[None, Depends(checked_csrf)]


def safe_next(next_url: str | None) -> str:
    """Only same-site paths may be redirected to after login (no open redirect)."""
    if (
        not next_url
        or not next_url.startswith("/")
        or next_url.startswith("//")
        or "\\" in next_url
    ):
        return "/"
    return next_url


def errors_by_field(exc: DomainError) -> dict[str, str | list[str]]:
    """A domain error's problems as the `errors` dict of _forms.html: field → message id.

    Problems tied to no field are joined under "" (shown above the form); the messages are
    English ids that the template translates.
    """
    errors: dict[str, str | list[str]] = {}
    general: list[str] = []
    for problem in exc.problems:
        if problem.field and problem.field not in errors:
            errors[problem.field] = problem.message
        elif not problem.field:
            general.append(problem.message)
    if not exc.problems:
        general.append(exc.detail)
    if general:
        errors[""] = general
    return errors


def parse_id(text: str | None) -> int | None:
    """An object id typed or posted as text: ASCII digits within MAX_ID, else None.

    ``str.isdigit`` also accepts "²" or Arabic-Indic digits, which ``int`` then refuses or
    reads as an id the database cannot hold; only 0-9 are taken here.
    """
    value = (text or "").strip()
    if not value or len(value) > 10 or not all("0" <= c <= "9" for c in value):
        return None
    number = int(value)
    return number if 1 <= number <= MAX_ID else None


# The years the platform plans for: a date outside them is refused next to its field.
EARLIEST_YEAR, LATEST_YEAR = 2000, 2100


def within_calendar(moment: date) -> bool:
    """Whether a date (or datetime) lies in the years the platform plans for."""
    return EARLIEST_YEAR <= moment.year <= LATEST_YEAR


MAX_SAMPLES = 100_000


def parse_samples(text: str, field: str, problems: list[Problem]) -> int | None:
    """A sample count typed in a form: ASCII digits 0..MAX_SAMPLES, else a problem on ``field``."""
    value = text.strip()
    if not value:
        return None
    if value.isascii() and value.isdigit() and len(value) <= 6 and int(value) <= MAX_SAMPLES:
        return int(value)
    problems.append(Problem("invalid_number", N_("Enter a whole number from 0 to 100000."), field))
    return None
