"""Finding instruments and knowing when they are open."""

from datetime import UTC, date, datetime, timedelta

import pytest
from sqlmodel import Session

from core.errors import NotFound, RuleViolation
from instruments import service
from instruments.queries import (
    InstrumentSearch,
    SearchSort,
    instrument_open_intervals,
    search_instruments,
)
from instruments.rules import Category, CustomerClass, InstrumentStatus, OperationMode, OutageKind
from instruments.schemas import ClosureIn, OpeningSpanIn, OutageCreate
from tests.factories import make_organisation
from tests.instruments.factories import make_facility, make_instrument, make_testing_service


def names(session: Session, **filters: object) -> list[str]:
    rows, _ = search_instruments(session, InstrumentSearch(**filters))  # type: ignore[arg-type]
    return sorted(r["name"] for r in rows)


@pytest.fixture
def catalogue(session: Session) -> dict[str, object]:
    west = make_facility(session, organisation=make_organisation(session, district="沙坪坝区"))
    east = make_facility(session, organisation=make_organisation(session, district="南岸区"))
    sem = make_instrument(
        session,
        facility=west,
        name="场发射扫描电子显微镜",
        name_en="Field emission SEM",
        keywords="电镜 SEM FE-SEM",
        manufacturer="Zeiss",
        model="Sigma 300",
        purchase_value_fen=2_800_000_00,
        operation_mode=OperationMode.SELF_OPERATED,
        price_internal_fen=20_000,
    )
    tem = make_instrument(
        session,
        facility=east,
        name="透射电子显微镜",
        keywords="电镜 TEM",
        manufacturer="FEI",
        purchase_value_fen=9_000_000_00,
        operation_mode=OperationMode.STAFF_OPERATED,
        price_internal_fen=60_000,
    )
    xrd = make_instrument(
        session,
        facility=east,
        name="X射线衍射仪",
        keywords="XRD 衍射",
        category=Category.ANALYTICAL,
        purchase_value_fen=450_000_00,
        price_internal_fen=8_000,
    )
    cmm = make_instrument(
        session,
        facility=west,
        name="三坐标测量机",
        keywords="CMM",
        category=Category.METROLOGY,
        price_internal_fen=15_000,
    )
    old = make_instrument(session, facility=west, name="旧电镜", keywords="电镜")
    service.retire_instrument(session, actor=None, instrument_id=old.id)
    make_testing_service(session, facility=east, instruments=[xrd])
    return {"west": west, "east": east, "sem": sem, "tem": tem, "xrd": xrd, "cmm": cmm}


def test_chinese_and_english_abbreviations_find_the_microscopes(
    session: Session, catalogue: dict
) -> None:
    assert names(session, q="电镜") == ["场发射扫描电子显微镜", "透射电子显微镜"]
    assert names(session, q="SEM") == ["场发射扫描电子显微镜"]
    assert names(session, q="fe-sem") == ["场发射扫描电子显微镜"]
    assert names(session, q="zeiss sigma") == ["场发射扫描电子显微镜"]


def test_retired_instruments_are_found_only_when_asked_for(
    session: Session, catalogue: dict
) -> None:
    assert "旧电镜" not in names(session, q="电镜")
    assert names(session, q="电镜", status=InstrumentStatus.RETIRED) == ["旧电镜"]


def test_filters_combine(session: Session, catalogue: dict) -> None:
    assert names(session, is_large=True) == ["场发射扫描电子显微镜", "透射电子显微镜"]
    assert names(session, category=Category.METROLOGY) == ["三坐标测量机"]
    assert names(session, district="南岸区") == ["X射线衍射仪", "透射电子显微镜"]
    assert names(session, cluster="guangyang_bay", has_testing_service=True) == ["X射线衍射仪"]
    assert "X射线衍射仪" not in names(session, has_testing_service=False)
    # Self-operated search includes instruments run both ways.
    assert names(session, operation_mode=OperationMode.SELF_OPERATED) == [
        "X射线衍射仪",
        "三坐标测量机",
        "场发射扫描电子显微镜",
    ]
    assert names(session, min_price_fen=10_000, max_price_fen=20_000) == [
        "三坐标测量机",
        "场发射扫描电子显微镜",
    ]
    assert names(session, facility_id=catalogue["west"].id, q="电镜") == ["场发射扫描电子显微镜"]


def test_prices_filter_and_sort_by_the_chosen_customer_class(
    session: Session, catalogue: dict
) -> None:
    rows, _ = search_instruments(
        session, InstrumentSearch(price_class=CustomerClass.ENTERPRISE, sort=SearchSort.PRICE)
    )
    prices = [r["price_fen"] for r in rows]
    assert prices == sorted(prices)
    assert all(p == 30_000 for p in prices)  # the factory's enterprise price


def test_pages_and_the_total(session: Session, catalogue: dict) -> None:
    first, total = search_instruments(
        session, InstrumentSearch(sort=SearchSort.NAME), offset=0, limit=3
    )
    second, _ = search_instruments(
        session, InstrumentSearch(sort=SearchSort.NAME), offset=3, limit=3
    )
    assert total == 4
    assert len(first) == 3
    assert len(second) == 1
    assert not {r["id"] for r in first} & {r["id"] for r in second}


@pytest.mark.parametrize("query", ["电", "X", " a "])
def test_a_one_character_query_is_refused(session: Session, query: str) -> None:
    with pytest.raises(RuleViolation):
        search_instruments(session, InstrumentSearch(q=query))


def test_like_wildcards_in_a_query_are_literal(session: Session, catalogue: dict) -> None:
    assert names(session, q="%%") == []
    assert names(session, q="__") == []


def test_open_intervals_leave_out_closures_and_facility_and_instrument_outages(
    session: Session, catalogue: dict
) -> None:
    sem, west = catalogue["sem"], catalogue["west"]
    # Week of Monday 30 November 2026, hours 09:00–17:00 Asia/Shanghai (01:00–09:00 UTC).
    service.add_closure(
        session,
        actor=None,
        facility_id=west.id,
        data=ClosureIn(start_date=date(2026, 12, 1), end_date=date(2026, 12, 1)),
    )
    service.create_outage(
        session,
        actor=None,
        data=OutageCreate(
            facility_id=west.id,
            start_at=datetime(2026, 12, 2, 1, tzinfo=UTC),
            end_at=datetime(2026, 12, 2, 5, tzinfo=UTC),
            kind=OutageKind.OTHER,
        ),
    )
    service.create_outage(
        session,
        actor=None,
        data=OutageCreate(
            instrument_id=sem.id,
            start_at=datetime(2026, 12, 3, 8, tzinfo=UTC),
            end_at=datetime(2026, 12, 4, 2, tzinfo=UTC),
            kind=OutageKind.CALIBRATION,
        ),
    )
    # Another instrument's outage does not matter here.
    service.create_outage(
        session,
        actor=None,
        data=OutageCreate(
            instrument_id=catalogue["cmm"].id,
            start_at=datetime(2026, 11, 30, 1, tzinfo=UTC),
            end_at=datetime(2026, 11, 30, 9, tzinfo=UTC),
            kind=OutageKind.REPAIR,
        ),
    )
    result = instrument_open_intervals(
        session,
        instrument_id=sem.id,
        start=datetime(2026, 11, 30, tzinfo=UTC),
        end=datetime(2026, 12, 5, tzinfo=UTC),
    )
    hours = lambda d, h: datetime(2026, 11 if d > 5 else 12, d, h, tzinfo=UTC)  # noqa: E731
    assert result == [
        (hours(30, 1), hours(30, 9)),
        (hours(2, 5), hours(2, 9)),
        (hours(3, 1), hours(3, 8)),
        (hours(4, 2), hours(4, 9)),
    ]


def test_a_retired_instrument_is_never_open(session: Session, catalogue: dict) -> None:
    service.retire_instrument(session, actor=None, instrument_id=catalogue["cmm"].id)
    start = datetime(2026, 11, 30, tzinfo=UTC)
    assert (
        instrument_open_intervals(
            session, instrument_id=catalogue["cmm"].id, start=start, end=start + timedelta(days=7)
        )
        == []
    )


def test_open_intervals_of_a_missing_instrument(session: Session) -> None:
    start = datetime(2026, 11, 30, tzinfo=UTC)
    with pytest.raises(NotFound):
        instrument_open_intervals(
            session, instrument_id=424242, start=start, end=start + timedelta(days=1)
        )


def test_open_intervals_need_a_sane_period(session: Session, catalogue: dict) -> None:
    start = datetime(2026, 11, 30, tzinfo=UTC)
    with pytest.raises(RuleViolation):
        instrument_open_intervals(
            session, instrument_id=catalogue["sem"].id, start=start, end=start
        )
    with pytest.raises(RuleViolation):
        instrument_open_intervals(
            session, instrument_id=catalogue["sem"].id, start=start, end=start + timedelta(days=400)
        )


def test_changed_hours_and_closures_show_at_once_despite_the_calendar_cache(
    session: Session, catalogue: dict
) -> None:
    sem, west = catalogue["sem"], catalogue["west"]
    monday = datetime(2026, 11, 30, tzinfo=UTC)
    week = {"instrument_id": sem.id, "start": monday, "end": monday + timedelta(days=1)}
    assert instrument_open_intervals(session, **week) == [
        (monday + timedelta(hours=1), monday + timedelta(hours=9))
    ]
    service.set_opening_hours(
        session,
        actor=None,
        facility_id=west.id,
        spans=[OpeningSpanIn(weekday=0, start="10:00", end="11:00")],
    )
    assert instrument_open_intervals(session, **week) == [
        (monday + timedelta(hours=2), monday + timedelta(hours=3))
    ]
    service.add_closure(
        session,
        actor=None,
        facility_id=west.id,
        data=ClosureIn(start_date=date(2026, 11, 30), end_date=date(2026, 11, 30)),
    )
    assert instrument_open_intervals(session, **week) == []
