"""Jinja2 rendering for pages, with translations, the CSRF token and times in the local zone."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from fastapi import Request
from fastapi.responses import HTMLResponse, Response
from fastapi.templating import Jinja2Templates

from web import csrf, i18n

LANG_COOKIE = "labshare_lang"

templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
templates.env.add_extension("jinja2.ext.i18n")
templates.env.install_gettext_callables(i18n.gettext, i18n.ngettext, newstyle=True)  # type: ignore[attr-defined]


def locale_for(request: Request) -> str:
    page_session = getattr(request.state, "page_session", None)
    if page_session is not None and page_session.user.locale in i18n.LOCALES:
        return str(page_session.user.locale)
    cookie = request.cookies.get(LANG_COOKIE)
    if cookie in i18n.LOCALES:
        return str(cookie)
    negotiated = i18n.negotiate(request.headers.get("accept-language"))
    return negotiated or str(request.app.state.settings.default_locale)


def local_time(value: datetime | None, zone: str | None = None, fmt: str = "%Y-%m-%d %H:%M") -> str:
    """A UTC datetime shown in ``zone`` (the platform's by default), with the zone named."""
    if value is None:
        return ""
    tz = ZoneInfo(zone or templates.env.globals.get("default_timezone", "Asia/Shanghai"))  # type: ignore[arg-type]
    return f"{value.astimezone(tz).strftime(fmt)} ({tz.key})"


templates.env.filters["local_time"] = local_time


def set_cookie(
    request: Request, response: Response, name: str, value: str, max_age: int | None
) -> None:
    settings = request.app.state.settings
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        httponly=True,
        secure=settings.cookie_secure,
        samesite="lax",
        path="/",
    )


def render(
    request: Request,
    name: str,
    context: dict[str, Any] | None = None,
    *,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
) -> HTMLResponse:
    locale = locale_for(request)
    i18n.current_locale.set(locale)
    page_session = getattr(request.state, "page_session", None)
    values: dict[str, Any] = {
        "user": page_session.user if page_session else None,
        "principal": getattr(request.state, "principal", None),
        "csrf_token": csrf.token_for(request),
        "locale": locale,
        "locales": i18n.LOCALE_NAMES,
        "html_lang": "zh-CN" if locale == "zh-CN" else "en",
    }
    values.update(context or {})
    response = templates.TemplateResponse(
        request, name, values, status_code=status_code, headers=headers
    )
    new_anon = getattr(request.state, "new_anon_id", None)
    if new_anon:
        set_cookie(request, response, csrf.ANON_COOKIE, new_anon, max_age=None)
    return response


def render_error_page(
    request: Request,
    status: int,
    detail: str,
    errors: list[dict[str, Any]],
    headers: dict[str, str] | None,
) -> Response:
    return render(
        request,
        "error.html",
        {"status": status, "detail": detail, "errors": errors},
        status_code=status,
        headers=headers,
    )
