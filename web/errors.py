"""One place turns errors into answers: JSON for the API, a page for people.

Body: ``{"detail", "code", "errors": [{"field"?, "code", "message"}], "request_id"}``.
A 500 is always a bug: it is logged with its traceback and answered without details.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from sqlalchemy.exc import DataError, DBAPIError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from core.errors import DomainError
from web.middleware import SECURITY_HEADERS

log = logging.getLogger("labshare.errors")

STATUS_CODES = {
    400: "bad_request",
    401: "not_authenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "body_too_large",
    415: "unsupported_media_type",
    422: "validation_failed",
    429: "throttled",
    503: "unavailable",
}

# PostgreSQL deadlock and serialization failure; SQLite "database is locked".
RETRYABLE_SQLSTATES = {"40P01", "40001"}


def wants_json(request: Request) -> bool:
    path = request.url.path
    return (
        path.startswith(("/api/", "/calendar/"))
        or path in ("/healthz", "/readyz", "/openapi.json")
        or "application/json" in request.headers.get("accept", "")
    )


def error_body(
    request: Request, detail: str, code: str, errors: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    return {
        "detail": detail,
        "code": code,
        "errors": errors or [],
        "request_id": getattr(request.state, "request_id", None),
    }


def _respond(
    request: Request,
    status: int,
    detail: str,
    code: str,
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    if wants_json(request):
        return JSONResponse(
            error_body(request, detail, code, errors), status_code=status, headers=headers
        )
    render = getattr(request.app.state, "render_error_page", None)
    if render is not None:
        return render(request, status, detail, errors or [], headers)
    return HTMLResponse(detail, status_code=status, headers=headers)


def _field_of(loc: tuple[Any, ...]) -> str | None:
    parts = [str(p) for p in loc]
    if parts and parts[0] == "body":
        parts = parts[1:]
    return ".".join(parts) or None


def _validation_errors(exc: RequestValidationError) -> tuple[str, list[dict[str, Any]]]:
    errors: list[dict[str, Any]] = []
    for error in exc.errors():
        loc = tuple(error.get("loc", ()))
        kind = error.get("type", "invalid")
        if kind == "json_invalid":
            reason = error.get("ctx", {}).get("error", "cannot parse")
            errors.append({"code": "malformed_json", "message": f"Malformed JSON: {reason}."})
            continue
        message = str(error.get("msg", "Invalid value."))
        if kind == "timezone_aware":
            message = "A time needs an offset (ISO 8601, e.g. 2026-12-01T09:00:00+08:00)."
        elif kind == "extra_forbidden":
            message = "Unknown field."
        entry = {"code": kind, "message": message}
        field = _field_of(loc)
        if field:
            entry["field"] = field
        errors.append(entry)
    fields = [e["field"] for e in errors if "field" in e]
    detail = "Invalid input" + (f": {', '.join(fields)}." if fields else ".")
    if errors and errors[0]["code"] == "malformed_json":
        detail = errors[0]["message"]
    return detail, errors


OUT_OF_RANGE = "A value is outside the range the platform accepts."


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(DomainError)
    async def domain_error(request: Request, exc: DomainError) -> Response:
        return _respond(
            request,
            exc.status_code,
            exc.detail,
            exc.code,
            [p.as_dict() for p in exc.problems],
            exc.headers or None,
        )

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        detail, errors = _validation_errors(exc)
        return _respond(request, 422, detail, "validation_failed", errors)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        code = STATUS_CODES.get(exc.status_code, "error")
        detail = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
        return _respond(
            request, exc.status_code, detail, code, headers=dict(exc.headers or {}) or None
        )

    @app.exception_handler(OperationalError)
    async def database_busy(request: Request, exc: OperationalError) -> Response:
        sqlstate = getattr(exc.orig, "sqlstate", None)
        if sqlstate in RETRYABLE_SQLSTATES or "database is locked" in str(exc.orig):
            log.warning("database busy: %s", str(exc.orig).splitlines()[0])
            return _respond(
                request,
                503,
                "The database is busy. Please retry shortly.",
                "database_busy",
                headers={"Retry-After": "1"},
            )
        return await unexpected(request, exc)

    # A value the database cannot hold (an id past its integer range, a year 9999 plus a day)
    # is bad input, not a server fault. Routes should refuse such values themselves, with the
    # field named; this keeps one they miss from becoming a 500. Logged with the trace so the
    # route can be fixed.
    @app.exception_handler(DataError)
    async def value_out_of_range(request: Request, exc: DataError) -> Response:
        log.warning("a value out of the database's range reached it", exc_info=exc)
        return _respond(request, 422, OUT_OF_RANGE, "value_out_of_range")

    @app.exception_handler(OverflowError)
    async def overflow(request: Request, exc: OverflowError) -> Response:
        log.warning("a value out of range overflowed", exc_info=exc)
        return _respond(request, 422, OUT_OF_RANGE, "value_out_of_range")

    @app.exception_handler(DBAPIError)
    async def database_error(request: Request, exc: DBAPIError) -> Response:
        return await unexpected(request, exc)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        log.error("unhandled error", exc_info=exc)
        response = _respond(request, 500, "Internal error. It has been logged.", "internal_error")
        # Starlette answers an unhandled error outside every middleware, so this answer gets
        # the request id and the security headers here.
        for name, value in SECURITY_HEADERS:
            response.headers.setdefault(name.decode(), value.decode())
        request_id = getattr(request.state, "request_id", None)
        if request_id:
            response.headers.setdefault("x-request-id", request_id)
        return response
