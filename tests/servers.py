"""Running `labshare serve` and `labshare worker` as real processes in tests."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
LABSHARE = Path(sys.executable).with_name("labshare")
WAIT_S = 60


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def labshare_env(database_url: str, **extra: str) -> dict[str, str]:
    """The environment of a child process: this one's, minus any LABSHARE_ setting, plus ours."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABSHARE_")}
    return env | {"LABSHARE_DATABASE_URL": database_url, "LABSHARE_LOG_JSON": "false"} | extra


def wait_until_ready(base_url: str, server: subprocess.Popen[bytes], log: Path) -> None:
    """Until /readyz answers 200; fails the test if the server exits or takes too long."""
    deadline = time.monotonic() + WAIT_S
    while True:
        if server.poll() is not None:
            pytest.fail(f"the server exited with {server.returncode}:\n{log.read_text()}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{base_url}/readyz", timeout=2).status_code == 200:
                return
        if time.monotonic() > deadline:
            pytest.fail(f"the server did not become ready in {WAIT_S} s:\n{log.read_text()}")
        time.sleep(0.1)


@contextlib.contextmanager
def served(database_url: str, log: Path, *, workers: int = 1, **env: str) -> Iterator[str]:
    """`labshare serve` on a free loopback port until the block ends; yields its base URL."""
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    with log.open("wb") as output:
        server = subprocess.Popen(
            [str(LABSHARE), "serve", "--port", str(port), "--workers", str(workers)],
            cwd=REPO_ROOT,
            env=labshare_env(database_url, **env),
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until_ready(base_url, server, log)
        yield base_url
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)
