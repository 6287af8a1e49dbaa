"""Retrying a unit of work that lost a database race it could not see coming.

PostgreSQL may abort a transaction with a deadlock (40P01) or a serialization failure (40001);
SQLite may report a lock it waited for too long. The work is then rolled back and run again, a
few times with jittered backoff; if it keeps failing the answer is 503 with Retry-After,
never a 500.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import OperationalError
from sqlmodel import Session

from core.errors import ServiceUnavailable

T = TypeVar("T")
log = logging.getLogger("labshare.retry")
RETRYABLE_SQLSTATES = frozenset({"40P01", "40001"})


def is_retryable(exc: OperationalError) -> bool:
    return getattr(
        exc.orig, "sqlstate", None
    ) in RETRYABLE_SQLSTATES or "database is locked" in str(exc.orig)


def commit_with_retries(session: Session, work: Callable[[], T], *, attempts: int = 5) -> T:
    """Run ``work`` and commit; on a retryable failure roll back and run it again."""
    for attempt in range(1, attempts + 1):
        try:
            result = work()
            session.commit()
            return result
        except OperationalError as exc:
            if not is_retryable(exc):
                raise
            session.rollback()
            log.warning("retrying after %s (attempt %d)", str(exc.orig).splitlines()[0], attempt)
            if attempt < attempts:
                time.sleep(random.uniform(0, 0.02 * 2**attempt))
    raise ServiceUnavailable("The database is busy. Please retry shortly.", code="database_busy")
