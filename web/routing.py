"""One transaction per request, committed before the response is sent.

Since FastAPI 0.118 the code after ``yield`` in a dependency runs after the response has gone
out, so committing there would acknowledge a write that might still fail. This route class
commits the request's session right after the endpoint returns a successful response, and
before that response is sent. An error response commits nothing, and neither does a GET or
HEAD: they read (a read that must write, like recording a session's activity, opens a short
transaction of its own).

An endpoint may also answer its well-formed requests itself (``answers_well_formed``), before
FastAPI resolves its parameters; every other request is resolved, and refused, as declared.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from fastapi import Request, Response
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool

WellFormedAnswer = Callable[[Request], Awaitable[Response | None]]
Endpoint = TypeVar("Endpoint", bound=Callable[..., Any])

_WELL_FORMED_ANSWERS: dict[Callable[..., Any], WellFormedAnswer] = {}


def answers_well_formed(answer: WellFormedAnswer) -> Callable[[Endpoint], Endpoint]:
    """Let ``answer`` serve the endpoint's well-formed requests without FastAPI resolving its
    parameters; where it returns None (a missing credential, a body or header it does not
    take as it is), FastAPI resolves the request as the endpoint declares it, and refuses it
    in its own words. The endpoint's signature stays the contract (and the OpenAPI document).

    For the busiest write: resolving a body, a dependency and a header took about a tenth of
    a booking request's time (``solve_dependencies``, measured with py-spy), several times
    what parsing and validating the same body does. Goes under the route decorator (the
    route looks it up when it is made).
    """

    def register(endpoint: Endpoint) -> Endpoint:
        _WELL_FORMED_ANSWERS[endpoint] = answer
        return endpoint

    return register


class TransactionalRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        answer_well_formed = _WELL_FORMED_ANSWERS.get(self.endpoint)

        async def handle(request: Request) -> Response:
            response = None
            if answer_well_formed is not None:
                response = await answer_well_formed(request)
            if response is None:
                response = await handler(request)
            # Read from the request's state dict: a missing attribute of ``request.state`` is
            # an exception raised and caught, on every request without a session.
            session = request.scope.get("state", {}).get("db_session")
            if (
                session is not None
                and response.status_code < 400
                and request.method not in ("GET", "HEAD", "OPTIONS")
                # An endpoint that committed itself (with retries) left nothing to commit.
                and session.in_transaction()
            ):
                await run_in_threadpool(session.commit)
            return response

        return handle
