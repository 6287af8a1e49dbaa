"""Counting the SQL statements a page or an operation sends (the no-N+1 checks)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection

from core.db import ConnectionBoundDatabase


@contextmanager
def counted_statements(
    database: ConnectionBoundDatabase | Connection,
) -> Iterator[list[str]]:
    """Every statement executed on the test's connection (or this one) inside the block, in
    order.

    SAVEPOINT bookkeeping is left out: it says nothing about how a page reads its data.
    """
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if not statement.lstrip().upper().startswith(("SAVEPOINT", "RELEASE", "ROLLBACK TO")):
            statements.append(statement)

    connection = database if isinstance(database, Connection) else database.connection
    event.listen(connection, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(connection, "before_cursor_execute", record)
