"""Researcher pages: my bookings (cancel, move, check in, hand over), the waitlist and sample
service requests.
"""

from __future__ import annotations

from fastapi import APIRouter

from web.routing import TransactionalRoute

router = APIRouter(route_class=TransactionalRoute, include_in_schema=False)
