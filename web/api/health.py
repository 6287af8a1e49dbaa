"""Liveness and readiness probes."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from web.dbschema import schema_state

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is alive."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    """The database is reachable and its schema is the one this code expects."""
    state = await run_in_threadpool(schema_state, request.app.state.database)
    body = {
        "status": "ready" if state.is_current else "not_ready",
        "database": request.app.state.database.dialect,
        "schema": state.current,
        "expected_schema": state.head,
        "detail": state.describe(),
    }
    return JSONResponse(body, status_code=200 if state.is_current else 503)
