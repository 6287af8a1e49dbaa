"""Two worker processes on one database send each e-mail exactly once (SQLite and PostgreSQL)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from sqlmodel import func, select

from core import events
from core.accounts import service as accounts
from core.accounts.schemas import UserCreate
from core.db import Database
from notifications.models import Delivery, DeliveryStatus
from tests.notifications.smtp import SmtpServer
from tests.servers import LABSHARE, REPO_ROOT, WAIT_S, labshare_env

pytestmark = pytest.mark.multiprocess

EMAILS = 120


def test_two_worker_processes_deliver_each_email_exactly_once(
    fresh_database: Database, tmp_path: Path
) -> None:
    sink = SmtpServer()
    sink.start()
    try:
        with fresh_database.transaction() as session:
            users = [
                accounts.create_user(
                    session,
                    actor_id=None,
                    data=UserCreate(email=f"w{n}@example.cn", name=f"用户{n}"),
                )
                for n in range(12)
            ]
            for n in range(EMAILS):
                events.emit(session, "service_request.rejected", {"user_id": users[n % 12].id})
        env = labshare_env(
            fresh_database.url, LABSHARE_SMTP_HOST="127.0.0.1", LABSHARE_SMTP_PORT=str(sink.port)
        )
        workers = [
            subprocess.Popen(
                [str(LABSHARE), "worker", "--once"],
                cwd=REPO_ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
            for _ in range(2)
        ]
        outputs = [w.communicate(timeout=WAIT_S)[0].decode() for w in workers]
        assert [w.returncode for w in workers] == [0, 0], outputs
        # A second round picks up whatever the first left (a worker claims batches).
        for _ in range(3):
            subprocess.run(
                [str(LABSHARE), "worker", "--once"],
                cwd=REPO_ROOT,
                env=env,
                check=True,
                capture_output=True,
                timeout=WAIT_S,
            )
    finally:
        sink.stop()
    recipients = sorted(r for received in sink.received for r in received.recipients)
    assert len(recipients) == EMAILS
    assert recipients == sorted(f"w{n % 12}@example.cn" for n in range(EMAILS))
    with fresh_database.transaction(write=False) as session:
        delivered = session.exec(
            select(func.count())
            .select_from(Delivery)
            .where(Delivery.status == DeliveryStatus.DELIVERED)
        ).one()
    assert delivered == EMAILS
