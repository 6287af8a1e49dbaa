"""Which router answers a request never depends on the order the routers are included in."""

import re

from fastapi.routing import APIRoute

from web.app import ROUTERS


def _examples(route: APIRoute) -> list[str]:
    """Paths the route answers: each parameter a number, then a word."""
    return [re.sub(r"\{[^}]+\}", value, route.path_format) for value in ("1", "abc")]


def test_no_path_is_answered_by_two_routers() -> None:
    routes = [
        (index, route)
        for index, router in enumerate(ROUTERS)
        for route in router.routes
        if isinstance(route, APIRoute)
    ]
    shared = [
        (one.path, other.path, path)
        for n, (router, one) in enumerate(routes)
        for other_router, other in routes[n + 1 :]
        if router != other_router and one.methods & other.methods
        for path in _examples(one) + _examples(other)
        if one.path_regex.match(path) and other.path_regex.match(path)
    ]

    assert len(routes) > 100
    assert shared == []
