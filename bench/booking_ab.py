"""Booking creation, this checkout against another revision, beside the ceiling, in one run.

This machine's speed drifts by 2-4x within an hour, so two runs of ``bench/booking_load.py``
do not tell whether a change made booking requests faster. Here three servers run side by
side on one database and take turns (``--rounds``, each round in the other order): labshare
from this checkout, labshare from ``--base`` (a git revision, checked out into a temporary
worktree and served from there), and the ceiling of ``bench/booking_load.py``. Each load is
the same as there (every 10th request overlaps a held booking and must get 409), and besides
throughput each server's CPU time per request is printed (its processes' user + system time,
from /proc), and on PostgreSQL the database server's too (all ``postgres`` processes: keep the
machine otherwise quiet), and the latency's median and 99th percentile over every round. The
rate limit is lifted for the runs, which are longer than a minute's allowance. Not a target:
the targets are ``bench/booking_load.py``'s.

Both revisions must run on the same schema (this checkout migrates the database).

    .venv/bin/python bench/booking_ab.py --base REV [--only sqlite|postgres] [--requests 1500]
        [--rounds 2] [--instruments 1000] [--bookings 20000]
        [--postgres postgresql+psycopg://postgres@127.0.0.1:5432/postgres]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.booking_load import build, ceiling_served, environment, load, plans
from bench.common import ROOT, fresh_database, p, served_process
from core.db import Database

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PATH = "/api/v1/bookings"


def cpu_seconds(pids: set[int]) -> float:
    total = 0.0
    for pid in pids:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return total


def process_tree(pid: int) -> set[int]:
    children = subprocess.run(
        ["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False
    ).stdout.split()
    return {pid}.union(*(process_tree(int(child)) for child in children))


def postgres_processes() -> set[int]:
    found = subprocess.run(["pgrep", "-f", "^postgres"], capture_output=True, text=True)
    return {int(pid) for pid in found.stdout.split()}


@contextlib.contextmanager
def worktree(revision: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "labshare"
        subprocess.run(
            ["git", "worktree", "add", "--detach", "--quiet", str(path), revision],
            cwd=ROOT,
            check=True,
        )
        try:
            yield path
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(path)], cwd=ROOT)


def run(kind: str, database: Database, base_code: Path, args: argparse.Namespace) -> None:
    workers = 1 if kind == "sqlite" else 2
    fixture = build(database, args.instruments, args.bookings)
    with (
        served_process(database, workers) as (this_url, this_pid),
        served_process(database, workers, base_code) as (base_url, base_pid),
        ceiling_served(database, workers) as ceiling_url,
    ):
        ceiling_port = ceiling_url.rsplit(":", 1)[1]
        ceiling_pid = int(
            subprocess.run(
                ["pgrep", "-f", "--", f"--port {ceiling_port}"], capture_output=True, text=True
            ).stdout.split()[0]
        )
        servers = [
            ("this", this_url, PATH, this_pid),
            (f"base {args.base}", base_url, PATH, base_pid),
            ("ceiling", ceiling_url, "/book", ceiling_pid),
        ]
        slot = 0
        for _, url, path, _ in servers:
            load("warm-up", url, path, plans(fixture, slot, 200, 1), 1, args.max_seconds)
            slot += 200
        # name, clients -> [requests, seconds, server CPU, database CPU]
        totals: dict[tuple[str, int], list[float]] = defaultdict(lambda: [0, 0.0, 0.0, 0.0])
        latencies: dict[tuple[str, int], list[float]] = defaultdict(list)
        for round_index in range(args.rounds):
            turn = servers if round_index % 2 == 0 else servers[::-1]
            for clients in (1, 8):
                for name, url, path, pid in turn:
                    pids, database_pids = process_tree(pid), postgres_processes()
                    server_cpu, database_cpu = cpu_seconds(pids), cpu_seconds(database_pids)
                    work = plans(fixture, slot, args.requests, round_index)
                    result = load(name, url, path, work, clients, args.max_seconds)
                    slot += args.requests
                    latencies[(name, clients)] += result.latencies_ms
                    total = totals[(name, clients)]
                    total[0] += len(result.latencies_ms)
                    total[1] += result.elapsed_s
                    total[2] += cpu_seconds(pids) - server_cpu
                    total[3] += cpu_seconds(database_pids) - database_cpu
        print(
            f"== {kind} ({workers} worker(s); CPU per request: server, database; latency "
            "p50/p99 in ms)"
        )
        for clients in (1, 8):
            ceiling = totals[("ceiling", clients)]
            for name, *_ in servers:
                requests, seconds, server_cpu, database_cpu = totals[(name, clients)]
                share = (requests / seconds) / (ceiling[0] / ceiling[1])
                database_figure = (
                    f", {database_cpu / requests * 1000:.2f} ms" if kind != "sqlite" else ""
                )
                samples = latencies[(name, clients)]
                print(
                    f"  {clients} client(s)  {name:14s} {requests / seconds:7.1f} req/s "
                    f"({share:4.0%} of the ceiling)  CPU {server_cpu / requests * 1000:.2f} ms"
                    f"{database_figure}  latency {p(samples, 50):.2f}/{p(samples, 99):.2f}"
                )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base", required=True, help="the git revision to compare with")
    parser.add_argument("--only", choices=["sqlite", "postgres"])
    parser.add_argument("--requests", type=int, default=1500, help="per load run")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--instruments", type=int, default=1000)
    parser.add_argument("--bookings", type=int, default=20_000)
    parser.add_argument("--max-seconds", type=float, default=120, help="per load run")
    parser.add_argument(
        "--postgres", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    )
    args = parser.parse_args()
    kinds = [args.only] if args.only else ["sqlite", "postgres"]
    with (
        worktree(args.base) as base_code,
        environment(LABSHARE_BOOKING_CREATIONS_PER_MINUTE="100000"),
    ):
        for kind in kinds:
            with fresh_database(kind, args.postgres) as database:
                run(kind, database, base_code, args)


if __name__ == "__main__":
    main()
