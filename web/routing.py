"""One transaction per request, committed before the response is sent.

Since FastAPI 0.118 the code after ``yield`` in a dependency runs after the response has gone
out, so committing there would acknowledge a write that might still fail. This route class
commits the request's session right after the endpoint returns a successful response, and
before that response is sent. An error response commits nothing, and neither does a GET or
HEAD: they read (a read that must write, like recording a session's activity, opens a short
transaction of its own).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool


class TransactionalRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
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
