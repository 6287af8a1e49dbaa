"""Researcher pages: the instrument catalogue, an instrument's page with its availability
calendar, and the booking request form.
"""

from __future__ import annotations

from fastapi import APIRouter

from web.routing import TransactionalRoute

router = APIRouter(route_class=TransactionalRoute, include_in_schema=False)
