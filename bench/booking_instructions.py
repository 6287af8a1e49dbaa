"""Instructions per booking request, this checkout against another revision: a repeatable figure.

On this machine wall-clock and CPU time drift by 2-4x within an hour, so a change of a few
per cent to the booking request's cost cannot be seen in ``bench/booking_ab.py``. Counted by
valgrind's callgrind, the instructions a process executes are the same on every run of the
same code on the same data, whatever else the machine is doing. This counts them for the
request's own work in one Python process: the bearer token's principal, ``create_booking``
(every rule, the insert, the audit entry and outbox event) and the commit, on a database built
as ``bench/booking_ab.py`` builds it (every 10th request overlaps a held booking: 409). On
SQLite that includes the database engine; on PostgreSQL only the client side (psycopg and
above), not the server's work. HTTP and the framework are not included (``booking_ab.py``).

``--app`` counts the whole application instead: each request is handed to the app over ASGI,
as uvicorn hands it (on uvloop, with the thread hop, the middleware, dependency resolution,
body validation and the response), only the HTTP parsing and the socket left out; and the
benchmark's ceiling app (``bench/booking_load.py``) is counted the same way beside it.

Each revision runs twice under callgrind, with a few requests and with ``--requests`` more;
the difference divided by ``--requests`` is the cost of one request, start-up left out.

    .venv/bin/python bench/booking_instructions.py [--base REV] [--only sqlite|postgres]
        [--app] [--requests 400] [--postgres postgresql+psycopg://postgres@127.0.0.1:5432/postgres]

Needs valgrind (Debian: ``apt-get install valgrind``). Not a target; a measuring tool.
"""

from __future__ import annotations

import argparse
import contextlib
import pickle
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.booking_ab import worktree
from bench.booking_load import build, plans
from bench.common import ROOT, fresh_database

WARM_UP = 20

# Run with the working directory at the code to measure (``python -c`` imports from there
# first): argv = database URL, file of pickled requests, how many to make.
DRIVER = """
import pickle, sys
from booking import service
from booking.schemas import BookingCreate
from core.auth import service as auth
from core.db import Database
from core.errors import DomainError
from core.settings import Settings

url, requests_file, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
database = Database(
    Settings(database_url=url, log_json=False, booking_creations_per_minute=1_000_000)
)
policy = service.BookingPolicy.from_settings(database.settings)
with open(requests_file, "rb") as file:
    requests = pickle.load(file)[:count]
# As the API finds the caller: with the terms' setup, in a revision that has it.
as_the_api_does = {"preamble": service.TERMS_SETUP} if hasattr(service, "TERMS_SETUP") else {}
for authorization, body, _ in requests:
    session = database.new_session()
    try:
        token = authorization.split(b" ", 1)[1].decode()
        actor = auth.principal_for_token(session, token=token, **as_the_api_does)
        try:
            service.create_booking(
                session, actor=actor, data=BookingCreate.model_validate_json(body), policy=policy
            )
            session.commit()
        except DomainError:
            session.rollback()
    finally:
        session.close()
"""

# The same requests handed to an ASGI app (argv as above, then the app: "labshare" or
# "ceiling"), one after another, as uvicorn hands them over: on uvloop, the body in one message.
APP_DRIVER = """
import asyncio, os, pickle, sys
import uvloop

url, requests_file, count, which = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
if which == "ceiling":
    os.environ["BENCH_CEILING_DATABASE"] = url
    from bench.booking_load import ceiling_app

    app, path = ceiling_app(), "/book"
else:
    from core.settings import Settings
    from web.app import create_app

    settings = Settings(
        database_url=url, log_json=False, log_level="WARNING",
        booking_creations_per_minute=1_000_000,
    )
    app, path = create_app(settings), "/api/v1/bookings"
with open(requests_file, "rb") as file:
    requests = pickle.load(file)[:count]


async def main():
    startup, shutdown = asyncio.Queue(), asyncio.Queue()
    await startup.put({"type": "lifespan.startup"})
    answers = asyncio.Queue()

    async def lifespan_send(message):
        await answers.put(message["type"])

    async def lifespan_receive():
        if not startup.empty():
            return await startup.get()
        return await shutdown.get()

    lifespan = asyncio.create_task(
        app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}},
            lifespan_receive, lifespan_send)
    )
    assert await answers.get() == "lifespan.startup.complete"
    for authorization, body, expected in requests:
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "method": "POST", "scheme": "http", "path": path, "raw_path": path.encode(),
            "query_string": b"", "root_path": "",
            "headers": [
                (b"host", b"127.0.0.1:8000"), (b"content-type", b"application/json"),
                (b"authorization", authorization),
                (b"content-length", str(len(body)).encode()),
            ],
            "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 8000), "state": {},
        }
        received = False

        async def receive():
            nonlocal received
            if received:
                await asyncio.Event().wait()
            received = True
            return {"type": "http.request", "body": body, "more_body": False}

        status = []

        async def send(message):
            if message["type"] == "http.response.start":
                status.append(message["status"])

        await app(scope, receive, send)
        if status != [expected]:
            sys.exit(f"{status} for {body!r}, expected {expected}")
    await shutdown.put({"type": "lifespan.shutdown"})
    await lifespan


uvloop.run(main())
"""


def instructions(
    code: Path, url: str, requests_file: Path, count: int, app: str | None = None
) -> int:
    run = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            sys.executable,
            "-c",
            DRIVER if app is None else APP_DRIVER,
            url,
            str(requests_file),
            str(count),
            *([app] if app else []),
        ],
        cwd=code,
        capture_output=True,
        text=True,
        check=True,
    )
    collected = re.search(r"Collected : (\d+)", run.stderr)
    if collected is None:
        raise RuntimeError(f"callgrind printed no count:\n{run.stderr[-2000:]}")
    return int(collected.group(1))


def per_request(
    code: Path, url: str, work: list, first: int, requests: int, app: str | None = None
) -> float:
    """Instructions of one request: two runs over fresh slots, the longer minus the shorter."""
    with tempfile.TemporaryDirectory() as directory:
        short_file, long_file = Path(directory) / "short", Path(directory) / "long"
        short_file.write_bytes(pickle.dumps(work[first : first + WARM_UP]))
        long_file.write_bytes(pickle.dumps(work[first + WARM_UP : first + 2 * WARM_UP + requests]))
        short = instructions(code, url, short_file, WARM_UP, app)
        long = instructions(code, url, long_file, WARM_UP + requests, app)
    return (long - short) / requests


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base", help="a git revision to compare with")
    parser.add_argument("--only", choices=["sqlite", "postgres"])
    parser.add_argument(
        "--app", action="store_true", help="the whole app over ASGI, beside the ceiling's"
    )
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument(
        "--postgres", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    )
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is needed: apt-get install valgrind")
    kinds = [args.only] if args.only else ["sqlite", "postgres"]
    with worktree(args.base) if args.base else contextlib.nullcontext(ROOT) as base_code:
        for kind in kinds:
            with fresh_database(kind, args.postgres) as database:
                fixture = build(database, 1000, 20_000)
                app = "labshare" if args.app else None
                runs = [("this checkout", ROOT)]
                if args.base:
                    runs.append((f"base {args.base}", base_code))
                span = 2 * WARM_UP + args.requests
                work = plans(fixture, 0, span * (len(runs) + 1), 1)
                what = "the app over ASGI" if args.app else "in-process"
                print(f"== {kind}: instructions per booking request ({what}, callgrind)")
                figures = []
                for index, (name, code) in enumerate(runs):
                    figure = per_request(code, database.url, work, index * span, args.requests, app)
                    figures.append(figure)
                    versus = f"   (this checkout {figures[0] / figure - 1:+.1%})" if index else ""
                    print(f"  {name:24s} {figure:12,.0f}{versus}")
                if args.app:
                    ceiling = per_request(
                        ROOT, database.url, work, len(runs) * span, args.requests, "ceiling"
                    )
                    print(
                        f"  {'the ceiling app':24s} {ceiling:12,.0f}"
                        f"   (this checkout {figures[0] / ceiling:.2f}x)"
                    )


if __name__ == "__main__":
    main()
