"""FastAPI dependencies: the request's session, who is calling, pagination."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Path, Query, Request
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool

from core.accounts.models import User
from core.auth import service as auth
from core.auth.models import WebSession
from core.auth.principal import Principal
from core.db import Database, Preamble
from core.errors import NotAuthenticated
from core.settings import Settings

SESSION_COOKIE = "labshare_session"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
T = TypeVar("T")


# Dependencies that do no I/O are coroutines: FastAPI runs a plain function in the thread pool,
# one hop there and back (about 0.3 ms on this machine) for reading an attribute.


def database_of(request: Request) -> Database:
    database: Database = request.app.state.database
    return database


def settings_of(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_database(request: Request) -> Database:
    return database_of(request)


async def get_settings(request: Request) -> Settings:
    return settings_of(request)


async def db_session(request: Request) -> AsyncIterator[Session]:
    """The request's one session: a writer for unsafe methods, a reader otherwise.

    :class:`web.routing.TransactionalRoute` commits it; whatever is left uncommitted (an error
    answer) is rolled back when the session closes. Making a session does no I/O, so this runs
    on the event loop; only closing one that still holds a transaction (rolling it back and
    returning the connection) goes to a thread.
    """
    database = database_of(request)
    session = database.new_session(write=request.method not in SAFE_METHODS)
    request.state.db_session = session
    try:
        yield session
    finally:
        if session.in_transaction():
            await run_in_threadpool(session.close)
        else:
            session.close()


async def in_writer_turn(request: Request, work: Callable[..., T], *args: object) -> T:
    """Run a unit of work that writes, ``work(session, *args)``, on the app's writer threads
    with a session of its own, and end the session there (committed if the work answered,
    rolled back if it raised, then closed), so the connection is free before the answer is
    sent. Units queue for the writer threads in arrival order: on SQLite there is one, on
    PostgreSQL one per connection the pool may open.

    SQLite has one writer connection per process, so these requests are served one after
    another whatever happens. Left to the thread pool, each waits in its own thread on the
    connection pool's lock, where a late one may take the connection ahead of an earlier one
    and the threads contend for the interpreter: with 8 clients creating bookings the p99 was
    2.5x the median. They queue instead for the process's one writer thread, which takes the
    next as soon as one ends: queued on the event loop (an asyncio lock), the writer sat idle
    between two writes until the loop had handed the turn on, and 8 clients got fewer bookings
    a second than one (340 against 440 a second; with the writer thread, 445). On PostgreSQL
    the writer threads are a plain executor rather than the framework's thread pool, whose
    capacity limiter and cancel scopes cost 2 % of a booking request's instructions. The
    session is not a dependency of the endpoint: on the busiest write, resolving it (and
    closing it after the answer) was a noticeable part of the request's time.
    """
    database = database_of(request)

    def work_then_end_session() -> T:
        # Made here, so a request cancelled while it waits for its turn leaves no session.
        session = database.new_session()
        try:
            answer = work(session, *args)
            if session.in_transaction():
                session.commit()
            return answer
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    # In the request's context (its request id goes into audit entries), as the thread pool
    # would run it. A request cancelled while it waits for its turn is taken off the queue.
    in_context = contextvars.copy_context().run
    return await asyncio.wrap_future(
        writer_of(request.app).submit(in_context, work_then_end_session)
    )


def writer_of(app: Any) -> ThreadPoolExecutor:
    """The app's writer threads, taking the writes queued for them in arrival order: one for
    SQLite's one writer connection, else as many as the connection pool may open. (They start
    with the first writes; ``stop_writer`` ends them when the app stops.)"""
    state = app.state
    writer: ThreadPoolExecutor | None = getattr(state, "writer_threads", None)
    if writer is None:
        database: Database = state.database
        writer = state.writer_threads = ThreadPoolExecutor(
            database.writer_connections, thread_name_prefix="writer"
        )
    return writer


def stop_writer(app: Any) -> None:
    """End the app's writer threads after the writes already queued."""
    writer: ThreadPoolExecutor | None = getattr(app.state, "writer_threads", None)
    if writer is not None:
        app.state.writer_threads = None
        writer.shutdown(wait=True)


DbSession = Annotated[Session, Depends(db_session)]
AppSettings = Annotated[Settings, Depends(get_settings)]

# The largest id a database integer column holds: a larger one names no object, and is refused
# (422, naming the parameter) before any query, alike on SQLite and PostgreSQL.
MAX_ID = 2**31 - 1
ObjectId = Annotated[int, Path(ge=1, le=MAX_ID)]


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def api_principal(request: Request, session: DbSession) -> Principal:
    """The caller of an API endpoint, from its bearer token (401 without a valid one)."""
    return principal_of_token(request, session, _token_or_401(request))


def principal_of_token(
    request: Request, session: Session, token: str, *, preamble: Preamble | None = None
) -> Principal:
    """The token's principal (``auth.principal_for_token``, with the caller's ``preamble``),
    noted on the request."""
    principal = auth.principal_for_token(session, token=token, preamble=preamble)
    request.state.principal = principal
    return principal


def _token_or_401(request: Request) -> str:
    token = bearer_token(request)
    if token is None:
        raise NotAuthenticated()
    return token


async def required_bearer_token(request: Request) -> str:
    """The bearer token, not yet checked (401 without one): for an endpoint that looks it up
    in its own thread, saving the thread-pool round trip of :func:`api_principal`."""
    return _token_or_401(request)


async def optional_api_principal(request: Request, session: DbSession) -> Principal | None:
    """The caller if it sent a token; anonymous readers get None (a bad token is still 401)."""
    if bearer_token(request) is None:
        return None
    return await run_in_threadpool(api_principal, request, session)


ApiPrincipal = Annotated[Principal, Depends(api_principal)]
OptionalApiPrincipal = Annotated[Principal | None, Depends(optional_api_principal)]
BearerToken = Annotated[str, Depends(required_bearer_token)]


def outlive_transaction(session: Session, *objects: object) -> None:
    """Detach who is calling from the request's session: a rollback expires what the session
    holds, and an error page drawn after one must still read the user and its roles."""
    for loaded in objects:
        if loaded in session:
            session.expunge(loaded)


@dataclass(frozen=True)
class PageSession:
    record: WebSession
    user: User


def page_session(request: Request, session: DbSession) -> PageSession | None:
    """The logged-in page user's session, if the cookie names a live one.

    Activity is recorded at most once a minute. A POST records it in its own transaction. A
    page view reads in a read transaction (which must not write on SQLite), so it looks the
    session up and records the activity in short transactions of their own, before the
    request's session has started.
    """
    if hasattr(request.state, "page_session"):
        cached: PageSession | None = request.state.page_session
        return cached
    cookie = request.cookies.get(SESSION_COOKIE)
    found = None
    if cookie:
        settings = settings_of(request)
        if request.method in SAFE_METHODS:
            database = database_of(request)
            with database.transaction(write=False) as reader:
                resolved = auth.resolve_web_session(reader, settings, cookie_value=cookie)
            if resolved is not None and auth.session_needs_touch(resolved[0]):
                with database.transaction() as writer:
                    auth.touch_web_session(writer, session_id=resolved[0].id or 0)
        else:
            # This request already holds the writer (SQLite has one per process); asking for a
            # second would wait for ourselves.
            resolved = auth.resolve_web_session(session, settings, cookie_value=cookie)
            if resolved is not None and auth.session_needs_touch(resolved[0]):
                auth.touch_web_session(session, session_id=resolved[0].id or 0)
            if resolved is not None:
                outlive_transaction(session, *resolved)
        if resolved is not None:
            found = PageSession(*resolved)
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


async def pagination(
    page: Annotated[int, Query(ge=1, description="1-based page number")] = 1,
    page_size: Annotated[int, Query(ge=1, le=500)] = 50,
) -> Page:
    return Page(page, page_size)


Pagination = Annotated[Page, Depends(pagination)]
