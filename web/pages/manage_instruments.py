"""Lab manager pages: instruments (rules, prices, status), opening hours and closures, outages,
qualifications and service requests.
"""

from __future__ import annotations

from fastapi import APIRouter

from web.routing import TransactionalRoute

router = APIRouter(route_class=TransactionalRoute, include_in_schema=False)
