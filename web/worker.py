"""`labshare worker`: the scheduled transitions, run in short transactions of their own.

Each job is safe with several workers at once: due rows are claimed with ``FOR UPDATE SKIP
LOCKED`` on PostgreSQL and changed with conditional updates everywhere, so a transition
happens exactly once. The notifications package adds outbox delivery to the same loop.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from types import FrameType

import sqlalchemy as sa
from sqlmodel import Session

from booking import service as booking
from booking import waitlist
from booking.service import BookingPolicy
from core.auth import service as auth
from core.db import Database
from core.settings import Settings
from notifications import service as notifications

log = logging.getLogger("labshare.worker")

DELIVERY_ROUND_S = 10.0


def refresh_statistics(session: Session) -> int:
    """SQLite re-analyses tables whose contents changed a lot (a no-op elsewhere)."""
    if session.get_bind().dialect.name == "sqlite":
        session.execute(sa.text("PRAGMA optimize"))
    return 0


def jobs(settings: Settings) -> list[tuple[str, Callable[[Session], int]]]:
    policy = BookingPolicy.from_settings(settings)
    return [
        ("pending requests expired", lambda session: booking.expire_pending(session)),
        ("no-shows marked", lambda session: booking.mark_no_shows(session, policy=policy)),
        ("waitlist offers lapsed", lambda session: waitlist.expire_offers(session)),
        ("reminders announced", lambda session: notifications.emit_reminders(session, settings)),
        ("events dispatched", lambda session: notifications.dispatch_events(session, settings)),
        (
            "old login failures forgotten",
            lambda session: auth.forget_old_login_failures(session, settings),
        ),
    ]


def run_once(database: Database, settings: Settings, *, worker: str = "") -> dict[str, int]:
    """Run every job once, each in its own transaction; a failing job does not stop the rest.
    Then send what is due (outside any transaction: a slow mail server holds no lock)."""
    done: dict[str, int] = {}
    for name, job in jobs(settings):
        try:
            with database.transaction() as session:
                done[name] = job(session)
        except Exception:
            log.exception("worker job failed: %s", name)
            done[name] = -1
        if done[name] > 0:
            log.info("%s: %d", name, done[name])
    try:
        done["deliveries sent"] = deliver_backlog(database, settings, worker=worker)
    except Exception:
        log.exception("delivery failed")
        done["deliveries sent"] = -1
    return done


def deliver_backlog(database: Database, settings: Settings, *, worker: str = "") -> int:
    """Send batch after batch while mail is due (one batch a round would cap a worker at a
    batch per interval), for at most DELIVERY_ROUND_S so the other jobs keep their turn."""
    sent, deadline = 0, time.monotonic() + DELIVERY_ROUND_S
    while time.monotonic() < deadline:
        done = notifications.deliver_due(database, settings, worker=worker or None)
        if done == 0:  # nothing due, or nothing got through (it waits for its retry)
            break
        sent += done
    return sent


def run_forever(database: Database, settings: Settings, *, interval_s: float) -> None:
    """Run the jobs every ``interval_s`` seconds until SIGTERM or SIGINT."""
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        log.info("stopping after this round (signal %d)", signum)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    worker = f"{socket.gethostname()}-{os.getpid()}"
    while not stop.is_set():
        run_once(database, settings, worker=worker)
        stop.wait(interval_s)
