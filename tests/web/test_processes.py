"""Several operating-system processes on one database: nothing doubled, nothing lost.

The worker processes import this module, so it imports only what they need (no web app).
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import signal
import subprocess
import sys
import time
from collections import Counter
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlmodel import col, func, select

from core import audit
from core.accounts import service as accounts
from core.accounts.models import Organisation, User
from core.accounts.rules import Role
from core.accounts.schemas import RoleGrant, UserCreate
from core.auth import service as auth
from core.db import Database
from core.errors import Conflict
from core.settings import Settings
from tests.servers import free_port, wait_until_ready

pytestmark = pytest.mark.multiprocess

REPO_ROOT = Path(__file__).resolve().parents[2]
PROCESSES = 4
USERS_PER_PROCESS = 25
SHARED = [f"shared{n}@example.cn" for n in range(10)]
WAIT_S = 60


def create_users(
    url: str, emails: list[str], start_together: Barrier, results: Any, number: int
) -> None:
    """Runs in a process of its own: one transaction per user, as concurrent requests would."""
    database = Database(Settings(database_url=url, log_json=False, sqlite_synchronous="NORMAL"))
    outcomes: dict[str, str] = {}
    try:
        start_together.wait(timeout=WAIT_S)
        for email in emails:
            # Hashing a password widens the gap between the check for a taken address and the
            # insert, so on PostgreSQL the processes also race past the check.
            password = "a long enough password" if email in SHARED[:3] else None
            data = UserCreate(email=email, name=email[:20], password=password)
            try:
                with database.transaction() as session:
                    accounts.create_user(session, actor_id=None, data=data)
                outcomes[email] = "created"
            except Conflict as exc:
                fields = ",".join(str(p.field) for p in exc.problems)
                outcomes[email] = f"conflict:{exc.code}:{fields}"
            except Exception as exc:
                outcomes[email] = f"error:{type(exc).__name__}: {exc}"
    finally:
        database.dispose()
        results.put((number, outcomes))


def test_four_processes_creating_overlapping_users_double_nothing(
    fresh_database: Database,
) -> None:
    context = multiprocessing.get_context("spawn")
    start_together = context.Barrier(PROCESSES)
    results = context.Queue()
    plans = [
        # The shared addresses come first in every process, so the processes collide on them.
        SHARED + [f"p{p}-u{n}@example.cn" for n in range(USERS_PER_PROCESS - len(SHARED))]
        for p in range(PROCESSES)
    ]
    processes = [
        context.Process(
            target=create_users, args=(fresh_database.url, plan, start_together, results, p)
        )
        for p, plan in enumerate(plans)
    ]
    outcomes: dict[int, dict[str, str]] = {}
    try:
        for process in processes:
            process.start()
        deadline = time.monotonic() + 2 * WAIT_S
        while len(outcomes) < PROCESSES:
            try:
                number, seen = results.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"only {len(outcomes)} of {PROCESSES} processes reported in time")
            outcomes[number] = seen
        for process in processes:
            process.join(timeout=WAIT_S)
    finally:
        for process in processes:
            if process.is_alive():
                process.kill()
                process.join(timeout=10)

    every_outcome = [o for seen in outcomes.values() for o in seen.values()]
    assert [o for o in every_outcome if o.startswith("error")] == []
    for email in SHARED:
        assert sorted(seen[email] for seen in outcomes.values()) == [
            "conflict:duplicate_email:email",
            "conflict:duplicate_email:email",
            "conflict:duplicate_email:email",
            "created",
        ], email
    distinct = {email for plan in plans for email in plan}
    with fresh_database.transaction(write=False) as session:
        stored = Counter(session.exec(select(User.email)).all())
        user_ids = set(session.exec(select(User.id)).all())
        created = Counter(
            session.exec(
                select(audit.AuditEntry.subject_id).where(
                    col(audit.AuditEntry.action) == "user.created"
                )
            ).all()
        )
    assert len(distinct) == PROCESSES * (USERS_PER_PROCESS - len(SHARED)) + len(SHARED)
    assert stored == dict.fromkeys(distinct, 1)
    assert created == {str(user_id): 1 for user_id in user_ids}


def test_a_killed_server_loses_no_acknowledged_write(
    fresh_database: Database, tmp_path: Path
) -> None:
    with fresh_database.transaction() as session:
        admin = accounts.create_user(
            session,
            actor_id=None,
            data=UserCreate(
                email="admin@example.cn", name="管理员", roles=[RoleGrant(role=Role.ADMIN)]
            ),
        )
        token = auth.issue_access_token(session, Settings(), user=admin).token
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABSHARE_")}
    # Nothing else set: SQLite runs with the default synchronous=FULL, as in production.
    env |= {"LABSHARE_DATABASE_URL": fresh_database.url, "LABSHARE_LOG_JSON": "false"}
    labshare = Path(sys.executable).with_name("labshare")
    log = tmp_path / "server.log"
    with log.open("wb") as output:
        server = subprocess.Popen(
            [str(labshare), "serve", "--port", str(port)],
            cwd=REPO_ROOT,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until_ready(base_url, server, log)
        answer = httpx.post(
            f"{base_url}/api/v1/organisations",
            json={"name": "重庆两江分析测试中心", "type": "institute", "district": "两江新区"},
            headers={"Authorization": f"Bearer {token}"},
            timeout=WAIT_S,
        )
        assert answer.status_code == 201, answer.text
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=WAIT_S)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(timeout=10)

    assert server.returncode == -signal.SIGKILL
    after = Database(Settings(database_url=fresh_database.url))
    try:
        with after.transaction(write=False) as session:
            organisation = session.get(Organisation, answer.json()["id"])
            entries = session.exec(
                select(func.count())
                .select_from(audit.AuditEntry)
                .where(col(audit.AuditEntry.action) == "organisation.created")
            ).one()
    finally:
        after.dispose()
    assert organisation is not None
    assert organisation.name == "重庆两江分析测试中心"
    assert entries == 1
