"""CSRF tokens for page forms.

A logged-in user's token is its session's (rotated with the session at login). Before login,
the token is an HMAC of a random anonymous cookie, so the login form is protected too.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from fastapi import Request

from core import platform
from core.errors import PermissionDenied

ANON_COOKIE = "labshare_anon"
FIELD = "csrf_token"


def secret_key(request: Request) -> str:
    cached: str | None = getattr(request.app.state, "secret_key", None)
    if cached:
        return cached
    configured = request.app.state.settings.secret_key
    if configured:
        value: str = configured
    else:
        # The first migration made it, so reading suffices: a writer could wait forever on the
        # one this request may already hold (SQLite has one per process).
        with request.app.state.database.transaction(write=False) as session:
            value = platform.secret_key(session)
    request.app.state.secret_key = value
    return value


def anonymous_id(request: Request) -> str:
    """The anonymous cookie's value, making one (set on the response by the renderer) if needed."""
    existing = request.cookies.get(ANON_COOKIE) or getattr(request.state, "new_anon_id", None)
    if existing:
        return str(existing)
    request.state.new_anon_id = secrets.token_urlsafe(24)
    return str(request.state.new_anon_id)


def token_for(request: Request) -> str:
    page_session = getattr(request.state, "page_session", None)
    if page_session is not None:
        return str(page_session.record.csrf_token)
    anon = anonymous_id(request)
    return hmac.new(secret_key(request).encode(), anon.encode(), hashlib.sha256).hexdigest()


def check(request: Request, submitted: str | None) -> None:
    """Refuse a state-changing form without the right token (403)."""
    page_session = getattr(request.state, "page_session", None)
    if page_session is None and not request.cookies.get(ANON_COOKIE):
        raise PermissionDenied("The form's security token is missing or expired.", "csrf_failed")
    expected = token_for(request)
    if not submitted or not hmac.compare_digest(submitted, expected):
        raise PermissionDenied(
            "The form's security token is missing or expired. Reload the page and try again.",
            "csrf_failed",
        )
