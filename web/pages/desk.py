"""The check-in desk and per-instrument QR codes: check-in and check-out at the instrument."""

from __future__ import annotations

from fastapi import APIRouter

from web.routing import TransactionalRoute

router = APIRouter(route_class=TransactionalRoute, include_in_schema=False)
