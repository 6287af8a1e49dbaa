"""FastAPI dependencies: the request's session, who is calling, pagination."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Query, Request
from sqlmodel import Session

from core.accounts.models import User
from core.auth import service as auth
from core.auth.models import WebSession
from core.auth.principal import Principal, load_principal
from core.db import Database
from core.errors import NotAuthenticated
from core.settings import Settings

SESSION_COOKIE = "labshare_session"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def get_database(request: Request) -> Database:
    database: Database = request.app.state.database
    return database


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def db_session(request: Request) -> Iterator[Session]:
    """The request's one session: a writer for unsafe methods, a reader otherwise.

    :class:`web.routing.TransactionalRoute` commits it; whatever is left uncommitted (an error
    answer) is rolled back when the session closes.
    """
    database = get_database(request)
    session = database.new_session(write=request.method not in SAFE_METHODS)
    request.state.db_session = session
    try:
        yield session
    finally:
        session.close()


DbSession = Annotated[Session, Depends(db_session)]
AppSettings = Annotated[Settings, Depends(get_settings)]


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def api_principal(request: Request, session: DbSession) -> Principal:
    """The caller of an API endpoint, from its bearer token (401 without a valid one)."""
    token = bearer_token(request)
    if token is None:
        raise NotAuthenticated()
    user = auth.user_for_token(session, token=token)
    principal = load_principal(session, user)
    request.state.principal = principal
    return principal


def optional_api_principal(request: Request, session: DbSession) -> Principal | None:
    """The caller if it sent a token; anonymous readers get None (a bad token is still 401)."""
    if bearer_token(request) is None:
        return None
    return api_principal(request, session)


ApiPrincipal = Annotated[Principal, Depends(api_principal)]
OptionalApiPrincipal = Annotated[Principal | None, Depends(optional_api_principal)]


@dataclass(frozen=True)
class PageSession:
    record: WebSession
    user: User


def page_session(request: Request, session: DbSession) -> PageSession | None:
    """The logged-in page user's session, if the cookie names a live one."""
    if hasattr(request.state, "page_session"):
        cached: PageSession | None = request.state.page_session
        return cached
    cookie = request.cookies.get(SESSION_COOKIE)
    found = None
    if cookie:
        resolved = auth.resolve_web_session(session, get_settings(request), cookie_value=cookie)
        if resolved is not None:
            record, user = resolved
            found = PageSession(record, user)
            if auth.session_needs_touch(record):
                # A short write of its own: page views run in read transactions.
                with get_database(request).transaction() as writer:
                    auth.touch_web_session(writer, session_id=record.id or 0)
    request.state.page_session = found
    return found


@dataclass(frozen=True)
class Page:
    """Pagination from ``page`` (1-based) and ``page_size`` (default 50, max 500)."""

    page: int
    page_size: int

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.page_size


def pagination(
    page: Annotated[int, Query(ge=1, description="1-based page number")] = 1,
    page_size: Annotated[int, Query(ge=1, le=500)] = 50,
) -> Page:
    return Page(page, page_size)


Pagination = Annotated[Page, Depends(pagination)]
