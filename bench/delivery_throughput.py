"""Worker e-mail throughput to a local SMTP sink (target: at least 200 e-mails a second).

Baseline, measured right before each run: the same number of ready-made messages sent over
one smtplib connection with no database at all. The sink is aiosmtpd in a process of its own, so
it does not compete with the worker for this process's interpreter. The worker is timed with
its default number of SMTP connections and with one; its CPU time per e-mail (this process
only, so other load on the machine barely moves it) is printed too.

    .venv/bin/python bench/delivery_throughput.py [--emails 2000] [--only sqlite|postgres]
        [--rounds 1]
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import time
from email.message import EmailMessage
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import smtplib

from bench.common import free_port, fresh_database
from core import events
from core.accounts import service as accounts
from core.accounts.schemas import UserCreate
from core.settings import Settings
from notifications import service as notifications


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--emails", type=int, default=2000)
    parser.add_argument(
        "--postgres", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    )
    parser.add_argument("--only", choices=["sqlite", "postgres"])
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    port = free_port()
    sink = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "aiosmtpd",
            "-n",
            "-l",
            f"127.0.0.1:{port}",
            "-c",
            "aiosmtpd.handlers.Sink",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(100):
        with contextlib.suppress(OSError), smtplib.SMTP("127.0.0.1", port, timeout=1):
            break
        time.sleep(0.1)
    try:
        for kind in ("sqlite", "postgres"):
            if args.only and kind != args.only:
                continue
            for _ in range(args.rounds):
                for connections in (notifications.SMTP_CONNECTIONS, 1):
                    # The baseline right before each run: the machine's load changes.
                    baseline = raw_smtplib(port, args.emails)
                    rate, cpu_ms = run(kind, args, port, connections)
                    print(
                        f"{kind:8} worker, {connections} connection(s): {rate:6.0f} e-mails/s"
                        f"  ({rate / baseline:4.0%} of raw smtplib's {baseline:4.0f}/s)"
                        f"  worker CPU {cpu_ms:.2f} ms per e-mail"
                    )
    finally:
        sink.terminate()
        sink.wait(timeout=10)


def raw_smtplib(port: int, emails: int) -> float:
    """E-mails per second of ready-made messages over one connection, no database at all."""
    started = time.perf_counter()
    with smtplib.SMTP("127.0.0.1", port) as client:
        for n in range(emails):
            message = EmailMessage()
            message["From"], message["To"], message["Subject"] = "a@b.cn", f"u{n}@b.cn", "基准"
            message.set_content("正文")
            client.send_message(message)
    return emails / (time.perf_counter() - started)


def run(kind: str, args: argparse.Namespace, port: int, connections: int) -> tuple[float, float]:
    """E-mails per second and worker CPU milliseconds per e-mail, on a fresh database."""
    with fresh_database(kind, args.postgres) as database:
        settings = Settings(database_url=database.url, smtp_host="127.0.0.1", smtp_port=port)
        with database.transaction() as session:
            users = [
                accounts.create_user(
                    session,
                    actor_id=None,
                    data=UserCreate(email=f"r{n}@example.cn", name=f"用户{n}"),
                )
                for n in range(50)
            ]
            for n in range(args.emails):
                events.emit(session, "service_request.rejected", {"user_id": users[n % 50].id})
        with database.transaction() as session:
            dispatched = 1
            while dispatched:
                dispatched = notifications.dispatch_events(session, settings, limit=1000)
        started, cpu_started = time.perf_counter(), time.process_time()
        sent = 0
        while True:
            done = notifications.deliver_due(
                database, settings, worker="bench", limit=200, connections=connections
            )
            if not done:
                break
            sent += done
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        assert sent == args.emails, sent
        return sent / elapsed, cpu / sent * 1000


if __name__ == "__main__":
    main()
