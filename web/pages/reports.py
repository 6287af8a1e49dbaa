"""Planner pages: the utilization dashboard with charts, drill-down and exports."""

from __future__ import annotations

from fastapi import APIRouter

from web.routing import TransactionalRoute

router = APIRouter(route_class=TransactionalRoute, include_in_schema=False)
