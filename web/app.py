"""The application factory: wires settings, the database, middleware, routers and pages."""

from __future__ import annotations

import gc
import importlib.util
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.telemetry import TelemetryConfig

from core.db import Database
from core.settings import Settings, get_settings
from web import templating
from web.api import accounts as accounts_api
from web.api import auth as auth_api
from web.api import bookings as bookings_api
from web.api import calendar as calendar_api
from web.api import health
from web.api import instruments as instruments_api
from web.api import notifications as notifications_api
from web.api import reports as reports_api
from web.api import scheduling as scheduling_api
from web.api import service_requests as service_requests_api
from web.deps import stop_writer
from web.errors import install_error_handlers
from web.logging import configure_logging
from web.middleware import BodySizeLimitMiddleware, RequestContextMiddleware
from web.pages import account as account_pages
from web.pages import admin as admin_pages
from web.pages import catalogue as catalogue_pages
from web.pages import desk as desk_pages
from web.pages import manage as manage_pages
from web.pages import manage_instruments as manage_instrument_pages
from web.pages import my_bookings as my_booking_pages
from web.pages import notices as notice_pages
from web.pages import reports as report_pages
from web.pages.deps import LoginRequired, login_url

log = logging.getLogger("labshare")

WEB_DIR = Path(__file__).parent
MULTIPART_ALLOWANCE_BYTES = 64 * 1024
# Front-end libraries installed from npm (web/package.json) and served by the app, never a CDN.
VENDOR_PACKAGES = {
    "htmx": "htmx.org/dist",
    "fullcalendar": "fullcalendar",
    "temporal-polyfill": "temporal-polyfill",
    "echarts": "echarts/dist",
    "swagger-ui": "swagger-ui-dist",
}


def _mount_static(app: FastAPI) -> None:
    node_modules = WEB_DIR / "node_modules"
    for name, subdir in VENDOR_PACKAGES.items():
        directory = node_modules / subdir
        if directory.is_dir():
            app.mount(
                f"/static/vendor/{name}", StaticFiles(directory=directory), name=f"vendor-{name}"
            )
        else:
            log.warning("front-end package missing: %s (run `npm ci --prefix web`)", directory)
    app.mount("/static", StaticFiles(directory=WEB_DIR / "static"), name="static")


# Every router of the app. FastAPI tries routes in this order, but no path is answered by two
# routers (tests/web/test_routing.py), so the order only decides how soon a request finds its
# route: booking requests, the busiest writes, are matched first.
ROUTERS: tuple[APIRouter, ...] = (
    bookings_api.router,
    health.router,
    auth_api.router,
    accounts_api.router,
    instruments_api.router,
    calendar_api.router,
    scheduling_api.router,
    service_requests_api.router,
    notifications_api.router,
    reports_api.router,
    account_pages.router,
    notice_pages.router,
    catalogue_pages.router,
    my_booking_pages.router,
    manage_pages.router,
    desk_pages.router,
    manage_instrument_pages.router,
    admin_pages.router,
    report_pages.router,
)


def native_telemetry() -> TelemetryConfig | None:
    """FastAPI's own OpenTelemetry spans, metrics and logs: as FastAPI sets them up where the
    OpenTelemetry SDK is installed; off without it, where no provider is configured and
    FastAPI would only ask on every request whether one is (1 % of a booking request's
    time)."""
    if importlib.util.find_spec("opentelemetry.sdk") is not None:
        return None
    return {"tracing": False, "metrics": False, "logs": False}


def serving_app() -> FastAPI:
    """The app as ``labshare serve`` runs it (uvicorn's factory, in each worker process)."""
    return create_app(freeze_after_startup=True)


def create_app(
    settings: Settings | None = None,
    database: Database | None = None,
    *,
    freeze_after_startup: bool = False,
) -> FastAPI:
    settings = settings or get_settings()
    configure_logging(settings.log_level, as_json=settings.log_json)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # What start-up built (modules, models, routes: some 230,000 objects) lives as long as
        # the server. Frozen, the garbage collector's full passes skip it; unfrozen, one full
        # pass stopped a server for 100-370 ms in the middle of serving requests. (Not in
        # tests, where one process starts many apps and each should be collected.)
        if freeze_after_startup:
            gc.freeze()
        try:
            yield
        finally:
            if freeze_after_startup:
                gc.unfreeze()
            stop_writer(app)
            app.state.database.dispose()

    app = FastAPI(
        telemetry=native_telemetry(),
        lifespan=lifespan,
        title="labshare",
        version="0.1.0",
        summary="Shared scientific-instrument booking platform",
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.database = database or Database(settings)
    app.state.render_error_page = templating.render_error_page
    templating.templates.env.globals["default_timezone"] = settings.timezone

    install_error_handlers(app)

    @app.exception_handler(LoginRequired)
    async def login_required(request: Request, exc: LoginRequired) -> Response:
        return RedirectResponse(login_url(exc.next_url), status_code=303)

    # Outermost first: the request id must exist before a 413 is answered. An upload's body
    # is its file plus the multipart envelope and the form's other fields: a file of the
    # allowed size must get through, to be checked exactly (422 file_too_large) behind.
    upload_body_bytes = settings.max_upload_bytes + MULTIPART_ALLOWANCE_BYTES
    app.add_middleware(
        BodySizeLimitMiddleware,
        max_bytes=settings.max_body_bytes,
        larger={
            service_requests_api.UPLOAD_PATH: upload_body_bytes,
            my_booking_pages.SERVICE_REQUEST_UPLOAD_PATH: upload_body_bytes,
            manage_instrument_pages.REPORT_UPLOAD_PATH: upload_body_bytes,
        },
    )
    app.add_middleware(RequestContextMiddleware)

    for router in ROUTERS:
        app.include_router(router)

    @app.get("/docs", include_in_schema=False)
    async def api_docs(request: Request) -> HTMLResponse:
        return templating.templates.TemplateResponse(request, "docs.html", {})

    @app.get("/docs/oauth2-redirect", include_in_schema=False)
    async def api_docs_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    _mount_static(app)

    return app
