"""Writes queue for SQLite's one writer in arrival order; PostgreSQL's run side by side.
Each ends its transaction before its answer goes out: committed, or rolled back if it failed."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from typing import Any, TypeVar

from web.deps import in_writer_turn

WRITES = 6
T = TypeVar("T")


def run_on_a_loop_of_its_own(main: Coroutine[Any, Any, T]) -> T:
    """Like a server's event loop; in a thread, since browser tests may leave a loop running
    in this one."""
    with ThreadPoolExecutor(max_workers=1) as thread:
        return thread.submit(asyncio.run, main).result()


class RecordingSession:
    """A session whose work wrote something: it records how each transaction ended."""

    def __init__(self) -> None:
        self.endings: list[str] = []
        self.lock = threading.Lock()

    def in_transaction(self) -> bool:
        return True

    def commit(self) -> None:
        with self.lock:
            self.endings.append("committed")

    def rollback(self) -> None:
        with self.lock:
            self.endings.append("rolled back")


def request_on(dialect: str) -> Any:
    return SimpleNamespace(
        app=SimpleNamespace(state=SimpleNamespace(database=SimpleNamespace(dialect=dialect)))
    )


def run_writes(dialect: str) -> tuple[list[int], int]:
    """Start WRITES writes one after another; return the order they ran in and how many ran
    at once at most."""
    lock = threading.Lock()
    started: list[int] = []
    running = 0
    most = 0

    def write(number: int) -> int:
        nonlocal running, most
        with lock:
            started.append(number)
            running += 1
            most = max(most, running)
        time.sleep(0.03)
        with lock:
            running -= 1
        return number

    session = RecordingSession()

    async def main() -> list[int]:
        request = request_on(dialect)
        tasks = []
        for number in range(WRITES):
            task = in_writer_turn(request, session, write, number)  # type: ignore[arg-type]
            tasks.append(asyncio.create_task(task))
            await asyncio.sleep(0)  # the write has arrived (is waiting its turn) before the next
        return list(await asyncio.gather(*tasks))

    answers = run_on_a_loop_of_its_own(main())
    assert answers == list(range(WRITES))
    assert session.endings == ["committed"] * WRITES
    return started, most


def test_on_sqlite_writes_run_one_at_a_time_in_the_order_they_arrived() -> None:
    started, most = run_writes("sqlite")
    assert most == 1
    assert started == list(range(WRITES))


def test_on_postgresql_writes_run_side_by_side() -> None:
    _, most = run_writes("postgresql")
    assert most > 1


def test_a_failed_write_is_rolled_back_passes_its_error_on_and_frees_the_turn() -> None:
    session = RecordingSession()

    def failing() -> None:
        raise ValueError("refused")

    async def main() -> tuple[str, int]:
        request = request_on("sqlite")
        try:
            await in_writer_turn(request, session, failing)  # type: ignore[arg-type]
        except ValueError as exc:
            error = str(exc)
        after = in_writer_turn(request, session, lambda: 7)  # type: ignore[arg-type]
        return error, await asyncio.wait_for(after, timeout=5)

    assert run_on_a_loop_of_its_own(main()) == ("refused", 7)
    assert session.endings == ["rolled back", "committed"]
