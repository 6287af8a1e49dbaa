"""Catalogue speed: search and 14-day open intervals over 5,000 instruments.

Targets (issue "Instrument catalogue"): search p95 < 30 ms and a 14-day open-intervals
computation p95 < 5 ms, in-process and over HTTP, on SQLite and on PostgreSQL. Each figure is
printed next to a baseline measured in the same run: for search, the bare SQL LIKE query over
the same column; for open intervals, the pure interval function on data already in memory;
over HTTP, a /healthz round trip.

    .venv/bin/python bench/catalogue_search.py [--instruments 5000] [--calls 300]
        [--postgres postgresql+psycopg://postgres@127.0.0.1:5432/postgres] [--only sqlite]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import fresh_database, served, summary, timed
from core.accounts import service as accounts
from core.accounts.rules import OrganisationType
from core.accounts.schemas import OrganisationCreate
from core.db import Database
from core.places import DISTRICT_CLUSTER
from instruments import holidays, queries, rules, service
from instruments.queries import InstrumentSearch
from instruments.rules import Category, OperationMode, OutageKind
from instruments.schemas import FacilityCreate, InstrumentCreate, OutageCreate

KINDS = [
    ("场发射扫描电子显微镜", "电镜 SEM FE-SEM", "Sigma 300", "ZEISS"),
    ("透射电子显微镜", "电镜 TEM", "Talos F200X", "Thermo Fisher"),
    ("X射线衍射仪", "XRD 衍射", "D8 ADVANCE", "Bruker"),
    ("核磁共振波谱仪", "NMR 核磁", "AVANCE NEO", "Bruker"),
    ("液相色谱-质谱联用仪", "LC-MS 液质 质谱", "Xevo TQ-S", "Waters"),
    ("电感耦合等离子体质谱仪", "ICP-MS 质谱", "iCAP RQ", "Thermo Fisher"),
    ("激光共聚焦显微镜", "共聚焦 CLSM", "LSM 980", "ZEISS"),
    ("三坐标测量机", "CMM 三坐标", "CONTURA", "ZEISS"),
    ("傅里叶变换红外光谱仪", "FTIR 红外 光谱", "Nicolet iS50", "Thermo Fisher"),
    ("万能材料试验机", "拉伸 万能试验机", "5982", "Instron"),
]
SEARCHES = [
    InstrumentSearch(q="电镜"),
    InstrumentSearch(q="sem"),
    InstrumentSearch(q="质谱", is_large=True),
    InstrumentSearch(q="zeiss"),
    InstrumentSearch(category=Category.METROLOGY, cluster="liangjiang"),  # type: ignore[arg-type]
    InstrumentSearch(q="光谱", operation_mode=OperationMode.SELF_OPERATED, max_price_fen=50_000),
    InstrumentSearch(has_testing_service=False, district="沙坪坝区"),
    InstrumentSearch(q="xrd 衍射"),
]


def build_catalogue(database: Database, instruments: int) -> list[int]:
    started = time.perf_counter()
    rng = random.Random(7)
    districts = list(DISTRICT_CLUSTER)
    ids: list[int] = []
    with database.transaction() as session:
        facilities = []
        for f in range(max(1, instruments // 100)):
            organisation = accounts.create_organisation(
                session,
                actor_id=None,
                data=OrganisationCreate(
                    name=f"基准单位{f}",
                    type=OrganisationType.UNIVERSITY,
                    district=districts[f % len(districts)],
                ),
            )
            facilities.append(
                service.create_facility(
                    session,
                    actor=None,
                    data=FacilityCreate(
                        organisation_id=organisation.id or 0,
                        name=f"基准平台{f}",
                        district=organisation.district,
                    ),
                )
            )
        for n in range(instruments):
            name, keywords, model, maker = KINDS[n % len(KINDS)]
            instrument = service.create_instrument(
                session,
                actor=None,
                data=InstrumentCreate(
                    facility_id=facilities[n % len(facilities)].id or 0,
                    asset_code=f"B-{n:06d}",
                    name=f"{name}{n}",
                    keywords=keywords,
                    model=model,
                    manufacturer=maker,
                    category=list(Category)[n % 15],
                    operation_mode=list(OperationMode)[n % 3],
                    purchase_value_fen=rng.randint(10_000, 3_000_000) * 100,
                    description=f"{name}，基准测试数据。",
                    price_internal_fen=rng.randint(20, 800) * 100,
                ),
            )
            ids.append(instrument.id or 0)
            if n % 10 == 0:
                start = datetime(2026, 12, 1, tzinfo=UTC) + timedelta(days=rng.randint(0, 20))
                service.create_outage(
                    session,
                    actor=None,
                    data=OutageCreate(
                        instrument_id=instrument.id,
                        start_at=start,
                        end_at=start + timedelta(hours=30),
                        kind=OutageKind.MAINTENANCE,
                    ),
                )
    print(f"  built {instruments} instruments in {time.perf_counter() - started:.1f} s")
    return ids


def run(kind: str, database: Database, ids: list[int], calls: int) -> list[tuple[str, list[float]]]:
    rng = random.Random(11)
    window_start = datetime(2026, 12, 1, tzinfo=UTC)
    results: list[tuple[str, list[float]]] = []

    def in_process_search(i: int) -> object:
        with database.transaction(write=False) as session:
            return queries.search_instruments(session, SEARCHES[i % len(SEARCHES)], limit=20)

    def baseline_search(i: int) -> object:
        word = (SEARCHES[i % len(SEARCHES)].q or "仪").split()[0].lower()
        with database.read_engine.connect() as connection:
            connection.execute(
                sa.text("SELECT count(*) FROM instrument WHERE search_text LIKE :p"),
                {"p": f"%{word}%"},
            ).scalar()
            return connection.execute(
                sa.text(
                    "SELECT id, name FROM instrument WHERE search_text LIKE :p ORDER BY id LIMIT 20"
                ),
                {"p": f"%{word}%"},
            ).all()

    def in_process_open(i: int) -> object:
        start = window_start + timedelta(days=rng.randint(0, 30))
        with database.transaction(write=False) as session:
            return queries.instrument_open_intervals(
                session, instrument_id=rng.choice(ids), start=start, end=start + timedelta(days=14)
            )

    weekly = {d: [(510, 720), (840, 1050)] for d in range(5)}
    zone = ZoneInfo("Asia/Shanghai")

    def baseline_open(i: int) -> object:
        start = window_start + timedelta(days=rng.randint(0, 30))
        return rules.open_intervals(
            start,
            start + timedelta(days=14),
            zone=zone,
            weekly_hours=weekly,
            day_kind=holidays.day_kind,
            outages=[(start + timedelta(days=2), start + timedelta(days=3))],
        )

    results.append((f"{kind} search, in-process", timed(in_process_search, calls)))
    results.append((f"{kind} search baseline: bare SQL LIKE", timed(baseline_search, calls)))
    results.append((f"{kind} 14-day open intervals, in-process", timed(in_process_open, calls)))
    results.append((f"{kind} open-intervals baseline: pure function", timed(baseline_open, calls)))

    with served(database) as base, httpx.Client(base_url=base) as client:

        def http_search(i: int) -> object:
            s = SEARCHES[i % len(SEARCHES)]
            params = {
                k: v
                for k, v in {
                    "q": s.q,
                    "category": s.category,
                    "cluster": s.cluster,
                    "is_large": s.is_large,
                    "operation_mode": s.operation_mode,
                    "max_price_fen": s.max_price_fen,
                    "district": s.district,
                    "has_testing_service": s.has_testing_service,
                    "page_size": 20,
                }.items()
                if v is not None
            }
            response = client.get("/api/v1/instruments", params=params)
            assert response.status_code == 200, response.text
            return response

        def http_open(i: int) -> object:
            start = window_start + timedelta(days=rng.randint(0, 30))
            response = client.get(
                f"/api/v1/instruments/{rng.choice(ids)}/open-intervals",
                params={
                    "start": start.isoformat(),
                    "end": (start + timedelta(days=14)).isoformat(),
                },
            )
            assert response.status_code == 200, response.text
            return response

        results.append((f"{kind} search over HTTP", timed(http_search, calls)))
        results.append((f"{kind} 14-day open intervals over HTTP", timed(http_open, calls)))
        results.append(
            (f"{kind} HTTP baseline: /healthz", timed(lambda i: client.get("/healthz"), calls))
        )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--instruments", type=int, default=5000)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument(
        "--postgres", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    )
    parser.add_argument("--only", choices=["sqlite", "postgres"])
    args = parser.parse_args()
    for kind in ("sqlite", "postgres"):
        if args.only and kind != args.only:
            continue
        print(f"== {kind}")
        with fresh_database(kind, args.postgres) as database:
            ids = build_catalogue(database, args.instruments)
            for label, samples in run(kind, database, ids, args.calls):
                print(f"  {label:48} {summary(samples)}")


if __name__ == "__main__":
    main()
