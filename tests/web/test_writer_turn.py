"""Writes queue for SQLite's one writer in arrival order; PostgreSQL's run side by side, as
many at once as the pool has connections.
Each has a session of its own and ends it before its answer goes out: committed, or rolled
back if it failed, and closed."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from typing import Any, TypeVar

from core.audit import current_request_id
from web.deps import in_writer_turn, stop_writer

WRITES = 6
T = TypeVar("T")


def run_on_a_loop_of_its_own(main: Coroutine[Any, Any, T]) -> T:
    """Like a server's event loop; in a thread, since browser tests may leave a loop running
    in this one."""
    with ThreadPoolExecutor(max_workers=1) as thread:
        return thread.submit(asyncio.run, main).result()


class RecordingSession:
    """A session whose work wrote something: it records how it ended."""

    def __init__(self, endings: list[str]) -> None:
        self.endings = endings

    def in_transaction(self) -> bool:
        return True

    def commit(self) -> None:
        self.endings.append("committed")

    def rollback(self) -> None:
        self.endings.append("rolled back")

    def close(self) -> None:
        self.endings.append("closed")


class RecordingDatabase:
    """Hands out recording sessions; ``endings`` lists each session's endings in turn."""

    def __init__(self, dialect: str, writer_connections: int = 3) -> None:
        self.dialect = dialect
        self.writer_connections = 1 if dialect == "sqlite" else writer_connections
        self.sessions: list[RecordingSession] = []
        self.lock = threading.Lock()

    def new_session(self) -> RecordingSession:
        with self.lock:
            self.sessions.append(RecordingSession([]))
            return self.sessions[-1]

    @property
    def endings(self) -> list[list[str]]:
        return [session.endings for session in self.sessions]


def request_on(database: RecordingDatabase) -> Any:
    return SimpleNamespace(app=SimpleNamespace(state=SimpleNamespace(database=database)))


def run_writes(dialect: str) -> tuple[list[int], int]:
    """Start WRITES writes one after another; return the order they ran in and how many ran
    at once at most."""
    lock = threading.Lock()
    started: list[int] = []
    running = 0
    most = 0

    def write(session: RecordingSession, number: int) -> int:
        nonlocal running, most
        with lock:
            started.append(number)
            running += 1
            most = max(most, running)
        time.sleep(0.03)
        with lock:
            running -= 1
        return number

    database = RecordingDatabase(dialect)

    async def main(request: Any) -> list[int]:
        tasks = []
        for number in range(WRITES):
            task = in_writer_turn(request, write, number)
            tasks.append(asyncio.create_task(task))
            await asyncio.sleep(0)  # the write has arrived (is waiting its turn) before the next
        return list(await asyncio.gather(*tasks))

    request = request_on(database)
    answers = run_on_a_loop_of_its_own(main(request))
    stop_writer(request.app)
    assert answers == list(range(WRITES))
    assert database.endings == [["committed", "closed"]] * WRITES
    return started, most


def test_on_sqlite_writes_run_one_at_a_time_in_the_order_they_arrived() -> None:
    started, most = run_writes("sqlite")
    assert most == 1
    assert started == list(range(WRITES))


def test_on_postgresql_writes_run_side_by_side_one_per_connection() -> None:
    _, most = run_writes("postgresql")
    assert 1 < most <= 3  # the recording database's pool has 3 connections


def test_a_failed_write_is_rolled_back_passes_its_error_on_and_frees_the_turn() -> None:
    database = RecordingDatabase("sqlite")

    def failing(session: RecordingSession) -> None:
        raise ValueError("refused")

    async def main() -> tuple[str, int]:
        request = request_on(database)
        try:
            await in_writer_turn(request, failing)
        except ValueError as exc:
            error = str(exc)
        after = in_writer_turn(request, lambda session: 7)
        return error, await asyncio.wait_for(after, timeout=5)

    assert run_on_a_loop_of_its_own(main()) == ("refused", 7)
    assert database.endings == [["rolled back", "closed"], ["committed", "closed"]]


def test_a_write_whose_request_went_away_while_it_waited_never_runs() -> None:
    database = RecordingDatabase("sqlite")
    ran: list[str] = []
    first_started = threading.Event()

    def slow(session: RecordingSession) -> None:
        first_started.set()
        time.sleep(0.2)
        ran.append("first")

    def abandoned(session: RecordingSession) -> None:
        ran.append("abandoned")

    async def main() -> int:
        request = request_on(database)
        first = asyncio.create_task(in_writer_turn(request, slow))
        await asyncio.to_thread(first_started.wait, 5)
        waiting = asyncio.create_task(in_writer_turn(request, abandoned))
        await asyncio.sleep(0.02)
        waiting.cancel()  # the client hung up while the first write still ran
        await first
        return await asyncio.wait_for(in_writer_turn(request, lambda session: 7), timeout=5)

    assert run_on_a_loop_of_its_own(main()) == 7
    assert ran == ["first"]
    # No session was made for the abandoned write.
    assert database.endings == [["committed", "closed"], ["committed", "closed"]]


def test_a_write_runs_in_its_requests_context() -> None:
    """What the request set (its id, which audit entries record) is what the write sees."""
    database = RecordingDatabase("sqlite")

    async def main() -> list[str | None]:
        request = request_on(database)

        async def one_request(request_id: str) -> str | None:
            current_request_id.set(request_id)
            return await in_writer_turn(request, lambda session: current_request_id.get())

        return list(await asyncio.gather(*(one_request(f"request-{n}") for n in range(3))))

    assert run_on_a_loop_of_its_own(main()) == ["request-0", "request-1", "request-2"]


def test_the_writer_thread_ends_when_the_app_stops() -> None:
    request = request_on(RecordingDatabase("sqlite"))

    async def main() -> threading.Thread:
        return await in_writer_turn(request, lambda session: threading.current_thread())

    writer = run_on_a_loop_of_its_own(main())
    assert writer is not threading.main_thread()
    assert writer.is_alive()
    stop_writer(request.app)
    assert not writer.is_alive()
