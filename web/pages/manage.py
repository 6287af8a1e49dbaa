"""Lab manager pages: the dashboard of its facilities, the approval queue, the facility calendar
and usage record corrections.
"""

from __future__ import annotations

from fastapi import APIRouter

from web.routing import TransactionalRoute

router = APIRouter(route_class=TransactionalRoute, include_in_schema=False)
