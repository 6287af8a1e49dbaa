"""Home, login, logout, language switch and the account page."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse, Response

from core.accounts import queries as account_queries
from core.accounts import service as accounts
from core.accounts.models import User
from core.accounts.schemas import UserUpdate
from core.auth import service as auth
from core.db import Database
from core.errors import DomainError, NotAuthenticated, Throttled
from web.api.auth import client_address
from web.deps import SESSION_COOKIE, AppSettings, DbSession, get_database
from web.i18n import LOCALES
from web.messages import N_
from web.pages.deps import CsrfChecked, OptionalPagePrincipal, PagePrincipal, safe_next
from web.routing import TransactionalRoute
from web.templating import LANG_COOKIE, render, set_cookie

router = APIRouter(route_class=TransactionalRoute, include_in_schema=False)


@router.get("/")
def home(request: Request, principal: OptionalPagePrincipal, session: DbSession) -> Response:
    organisation = None
    if principal is not None and principal.user.organisation_id is not None:
        organisation = accounts.get_organisation(session, principal.user.organisation_id)
    return render(request, "home.html", {"organisation": organisation})


@router.get("/login")
def login_form(request: Request, principal: OptionalPagePrincipal, next: str = "/") -> Response:
    if principal is not None:
        return RedirectResponse(safe_next(next), status_code=303)
    return render(request, "login.html", {"next": safe_next(next), "email": ""})


@router.post("/login")
def login(
    request: Request,
    _csrf: CsrfChecked,
    session: DbSession,
    database: Annotated[Database, Depends(get_database)],
    settings: AppSettings,
    email: Annotated[str, Form(max_length=254)] = "",
    password: Annotated[str, Form(max_length=256)] = "",
    next: Annotated[str, Form()] = "/",
) -> Response:
    """Log in. As for the API, the slow password check runs outside any transaction: on
    SQLite a login must not hold the process's one writer while argon2 works."""
    session.commit()  # ends whatever the CSRF check read; the steps below use their own
    address = client_address(request)
    failure: NotAuthenticated | Throttled | None = None
    try:
        with database.transaction(write=False) as reader:
            candidate = auth.login_candidate(reader, settings, email=email, client_address=address)
    except Throttled as exc:
        failure = exc
    else:
        if not auth.password_matches(candidate, password):
            with database.transaction() as writer:
                auth.record_login_failure(writer, email=email, client_address=address)
            failure = NotAuthenticated(auth.BAD_CREDENTIALS, code="bad_credentials")
    if failure is not None or candidate is None:
        # Marked, not translated: the template translates once the request's locale is known.
        message = (
            N_("Too many failed logins. Try again later.")
            if isinstance(failure, Throttled)
            else N_("Incorrect e-mail address or password.")
        )
        status_code = failure.status_code if failure is not None else 401
        return render(
            request,
            "login.html",
            {"next": safe_next(next), "email": email, "error": message},
            status_code=status_code,
            headers=(failure.headers or None) if failure is not None else None,
        )
    with database.transaction() as writer:
        user = writer.get(User, candidate.id)
        assert user is not None
        auth.complete_login(writer, user=user, password=password)
        started = auth.start_web_session(
            writer, settings, user=user, previous_cookie=request.cookies.get(SESSION_COOKIE)
        )
    response = RedirectResponse(safe_next(next), status_code=303)
    set_cookie(
        request, response, SESSION_COOKIE, started.cookie_value, settings.session_absolute_timeout_s
    )
    return response


@router.post("/logout")
def logout(request: Request, _csrf: CsrfChecked, session: DbSession) -> Response:
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        auth.end_web_session(session, cookie_value=cookie)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.post("/lang")
def switch_language(
    request: Request,
    _csrf: CsrfChecked,
    principal: OptionalPagePrincipal,
    session: DbSession,
    lang: Annotated[str, Form()],
    next: Annotated[str, Form()] = "/",
) -> Response:
    if lang not in LOCALES:
        raise DomainError(N_("Unknown language."), "unknown_locale", status_code=422)
    if principal is not None:
        accounts.update_user(
            session,
            actor_id=principal.user_id,
            user_id=principal.user_id,
            data=UserUpdate(locale=lang),
        )
    response = RedirectResponse(safe_next(next), status_code=303)
    set_cookie(request, response, LANG_COOKIE, lang, max_age=365 * 24 * 3600)
    return response


@router.get("/account")
def account_page(request: Request, principal: PagePrincipal, session: DbSession) -> Response:
    tokens = auth.list_personal_tokens(session, user_id=principal.user_id)
    roles = account_queries.assignments_by_user(session, [principal.user_id])
    return render(
        request,
        "account.html",
        {"tokens": tokens, "assignments": roles.get(principal.user_id, []), "errors": {}},
    )


@router.post("/account/password")
def change_password(
    request: Request,
    _csrf: CsrfChecked,
    principal: PagePrincipal,
    session: DbSession,
    current_password: Annotated[str, Form(max_length=256)] = "",
    new_password: Annotated[str, Form(max_length=256)] = "",
) -> Response:
    try:
        accounts.change_own_password(
            session, user=principal.user, current=current_password, new=new_password
        )
    except DomainError as exc:
        tokens = auth.list_personal_tokens(session, user_id=principal.user_id)
        roles = account_queries.assignments_by_user(session, [principal.user_id])
        errors = {p.field: p.message for p in exc.problems if p.field}
        return render(
            request,
            "account.html",
            {"tokens": tokens, "assignments": roles.get(principal.user_id, []), "errors": errors},
            status_code=exc.status_code,
        )
    page_session = request.state.page_session
    auth.end_all_sessions_of(
        session, user_id=principal.user_id, keep_session_id=page_session.record.id
    )
    return RedirectResponse("/account?changed=1", status_code=303)
