"""The reports API as planners, lab managers and everyone else meet it."""

from __future__ import annotations

import csv
import io

import pytest
from fastapi.testclient import TestClient
from openpyxl import load_workbook
from sqlmodel import Session

from tests.factories import bearer
from tests.reports.world import World, build_world

OCTOBER = {"from": "2025-10-01", "to": "2025-11-01"}
URL = "/api/v1/reports/utilization"


@pytest.fixture
def world(session: Session) -> World:
    return build_world(session)


def test_a_planner_reads_every_facility_with_definitions(
    client: TestClient, session: Session, world: World
) -> None:
    answer = client.get(
        URL, params=OCTOBER | {"group_by": "instrument"}, headers=bearer(session, world.planner)
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert {g["asset_code"] for g in body["groups"]} == {"RPT-A", "RPT-B", "RPT-C"}
    assert body["periods"] == ["2025-10"]
    assert body["totals"]["effective_hours"] == 17.5
    assert set(body["definitions"]["sharing_rate"]) == {"unit", "zh", "en"}
    assert body["series"][0]["period"] == "2025-10"


def test_a_lab_manager_sees_only_its_own_facilities(
    client: TestClient, session: Session, world: World
) -> None:
    headers = bearer(session, world.manager)
    body = client.get(URL, params=OCTOBER | {"group_by": "instrument"}, headers=headers).json()
    assert {g["asset_code"] for g in body["groups"]} == {"RPT-A", "RPT-B"}
    foreign = client.get(URL, params=OCTOBER | {"instrument_id": world.c.id}, headers=headers)
    assert foreign.status_code == 404
    export = client.get(
        "/api/v1/reports/usage-export",
        params=OCTOBER | {"instrument_id": world.c.id},
        headers=headers,
    )
    assert export.status_code == 404
    low = client.get("/api/v1/reports/low-use", params=OCTOBER, headers=headers).json()
    assert {item["asset_code"] for item in low["items"]} == {"RPT-A", "RPT-B"}
    first = client.get(
        "/api/v1/reports/low-use", params=OCTOBER | {"page_size": 1}, headers=headers
    ).json()
    assert [item["asset_code"] for item in first["items"]] == ["RPT-B"]  # the lowest first
    assert first["total"] == 2


@pytest.mark.parametrize("who", ["researcher", "finance"])
def test_researchers_and_finance_may_not_read_reports(
    client: TestClient, session: Session, world: World, who: str
) -> None:
    headers = bearer(session, getattr(world, who))
    for path in ("utilization", "low-use", "definitions"):
        answer = client.get(f"/api/v1/reports/{path}", params=OCTOBER, headers=headers)
        assert answer.status_code == 403, path
        assert answer.json()["code"] == "reports_not_allowed"
    assert client.get(URL, params=OCTOBER).status_code == 401


def test_a_planner_reads_but_may_not_write(
    client: TestClient, session: Session, world: World
) -> None:
    headers = bearer(session, world.planner)
    # The instrument is visible to a planner (the catalogue is public): changing it is 403.
    answer = client.patch(
        f"/api/v1/instruments/{world.a.id}", json={"name": "规划员改名"}, headers=headers
    )
    assert answer.status_code == 403
    assert client.post(URL, params=OCTOBER, headers=headers).status_code == 405


@pytest.mark.parametrize(
    ("params", "field", "code"),
    [
        ({"from": "2025-11-01", "to": "2025-10-01"}, "to", "inverted_period"),
        ({"from": "2025-10-01", "to": "2025-10-01"}, "to", "empty_period"),
        ({"from": "2010-01-01", "to": "2025-01-01"}, "to", "period_too_long"),
        ({"to": "2025-10-01"}, "from", "required"),
        (OCTOBER | {"group_by": "building"}, "group_by", "unknown_value"),
        (OCTOBER | {"period": "week"}, "period", "unknown_value"),
        (OCTOBER | {"format": "pdf"}, "format", "unknown_value"),
        (OCTOBER | {"cluster": "mars"}, "cluster", "unknown_value"),
    ],
)
def test_bad_input_is_422_with_a_reason(
    client: TestClient,
    session: Session,
    world: World,
    params: dict,
    field: str,
    code: str,  # type: ignore[type-arg]
) -> None:
    answer = client.get(URL, params=params, headers=bearer(session, world.planner))
    assert answer.status_code == 422, answer.text
    problems = answer.json()["errors"]
    assert {"field": field, "code": code} in [
        {"field": p.get("field"), "code": p["code"]} for p in problems
    ]
    assert problems[0]["message"]


def test_every_problem_is_listed_at_once(
    client: TestClient, session: Session, world: World
) -> None:
    answer = client.get(
        URL,
        params={"from": "2025-11-01", "to": "2025-10-01", "group_by": "x", "format": "pdf"},
        headers=bearer(session, world.planner),
    )
    assert {p["field"] for p in answer.json()["errors"]} == {"to", "group_by", "format"}


def test_bad_low_use_and_export_input_is_422(
    client: TestClient, session: Session, world: World
) -> None:
    headers = bearer(session, world.planner)
    low = client.get("/api/v1/reports/low-use", params=OCTOBER | {"threshold": 0}, headers=headers)
    assert low.status_code == 422
    export = client.get(
        "/api/v1/reports/usage-export", params=OCTOBER | {"format": "json"}, headers=headers
    )
    assert export.status_code == 422
    assert {p["field"] for p in export.json()["errors"]} == {"instrument_id", "format"}


def test_the_csv_has_a_line_per_group_and_period(
    client: TestClient, session: Session, world: World
) -> None:
    answer = client.get(
        URL,
        params={"from": "2025-09-01", "to": "2025-11-01", "group_by": "facility", "format": "csv"},
        headers=bearer(session, world.planner),
    )
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/csv")
    assert "attachment" in answer.headers["content-disposition"]
    text = answer.content.decode("utf-8-sig")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == 4  # two facilities × two months
    october_f = next(r for r in rows if r["name"] == "报表平台F" and r["period"] == "2025-10")
    assert float(october_f["effective_hours"]) == 9.5
    assert float(october_f["available_hours"]) == 134 + 56
    september_f = next(r for r in rows if r["name"] == "报表平台F" and r["period"] == "2025-09")
    assert float(september_f["effective_hours"]) == 8
    assert september_f["sharing_rate"] == "0.0"


def test_the_xlsx_has_a_formatted_header_units_and_totals(
    client: TestClient, session: Session, world: World
) -> None:
    answer = client.get(
        URL,
        params=OCTOBER | {"group_by": "cluster", "format": "xlsx"},
        headers=bearer(session, world.planner),
    )
    assert answer.status_code == 200
    workbook = load_workbook(io.BytesIO(answer.content))
    assert workbook.sheetnames == [
        "明细 by period",
        "汇总 summary",
        "趋势 trend",
        "定义 definitions",
    ]
    sheet = workbook["明细 by period"]
    rows = list(sheet.iter_rows(values_only=True))
    header, units, *data, totals = rows
    assert "有效机时 Effective hours" in header
    assert sheet.cell(1, 1).font.b is True
    effective = header.index("有效机时 Effective hours")
    assert units[effective] == "h"
    assert units[header.index("使用率 Utilization")] == "%"
    assert len(data) == 2
    assert totals[0] == "合计 Total"
    assert totals[effective] == 17.5
    assert sheet.cell(len(rows), effective + 1).font.b is True
    assert sheet.cell(3, header.index("使用率 Utilization") + 1).number_format == "0.00%"
    definitions = list(workbook["定义 definitions"].iter_rows(values_only=True))
    assert any(row[0] == "utilization" and "有效机时" in row[3] for row in definitions)


def test_the_usage_export_has_the_platform_columns(
    client: TestClient, session: Session, world: World
) -> None:
    headers = bearer(session, world.manager)
    answer = client.get(
        "/api/v1/reports/usage-export",
        params=OCTOBER | {"instrument_id": world.a.id, "format": "xlsx"},
        headers=headers,
    )
    assert answer.status_code == 200, answer.text
    sheet = load_workbook(io.BytesIO(answer.content)).active
    header, units, *data = list(sheet.iter_rows(values_only=True))
    assert header[:3] == ("序号 No.", "使用日期 Date", "使用时段 Time slot")
    assert units[header.index("机时 Hours")] == "h"
    assert "收费金额 Charge" in header
    assert len(data) == 5  # records that started in October
    external = next(row for row in data if row[1] == "2025-10-15")
    assert external[2] == "09:00–13:00"
    assert external[3] == 4
    assert external[4] == 3
    assert external[6] == "外校"
    assert external[7] == "校外 external"
    assert external[header.index("收费金额 Charge")] is None
    overnight = next(row for row in data if row[1] == "2025-10-31")
    assert overnight[2] == "22:00–01:00 (+1)"
    assert overnight[7] == "校内 internal"
    csv_answer = client.get(
        "/api/v1/reports/usage-export",
        params=OCTOBER | {"instrument_id": world.a.id, "format": "csv"},
        headers=headers,
    )
    rows = list(csv.DictReader(io.StringIO(csv_answer.content.decode("utf-8-sig"))))
    assert [r["kind"] for r in rows].count("培训 training") == 1
    assert next(r for r in rows if r["date"] == "2025-10-22")["user_organisation"] == ""
