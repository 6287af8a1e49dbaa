"""Dependencies of pages: the logged-in user (or a redirect to the login page), CSRF checks."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from fastapi import Depends, Form, Request

from core.auth.principal import Principal, load_principal
from web import csrf
from web.deps import DbSession, PageSession, page_session


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
    request.state.principal = principal
    return principal


def checked_csrf(
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
