"""Sample service requests: the status flow, the daily capacity, files and who may read them."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session

from booking import requests
from booking.models import ServiceCapacityDay, ServiceRequestStatus
from booking.requests import ServiceRequestCreate
from core.accounts.rules import Role, ScopeKind
from core.accounts.schemas import RoleGrant
from core.auth.principal import load_principal
from core.clock import frozen
from core.db import ConnectionBoundDatabase
from core.errors import Conflict, NotFound, PermissionDenied, RuleViolation
from tests.factories import bearer, make_user
from tests.instruments.factories import make_facility, make_instrument, make_testing_service
from web.app import create_app

NOW = datetime(2026, 11, 30, 1, tzinfo=UTC)
TODAY = date(2026, 11, 30)
PDF = b"%PDF-1.7\n% a report\n"


@pytest.fixture
def lab(session: Session) -> dict:
    facility = make_facility(session)
    service = make_testing_service(
        session,
        facility=facility,
        instruments=[make_instrument(session, facility=facility)],
        daily_sample_capacity=10,
    )
    manager_user = make_user(
        session,
        password=None,
        roles=[
            RoleGrant(role=Role.LAB_MANAGER, scope_kind=ScopeKind.FACILITY, scope_id=facility.id)
        ],
    )
    requester = make_user(session, password=None, roles=[Role.RESEARCHER])
    other = make_user(session, password=None, roles=[Role.RESEARCHER])
    return {
        "service": service,
        "manager": load_principal(session, manager_user),
        "requester": load_principal(session, requester),
        "other": load_principal(session, other),
        "tokens": {"manager": manager_user, "requester": requester, "other": other},
    }


def submit(session: Session, lab: dict, samples: int, day: date | None = TODAY):
    return requests.submit(
        session,
        actor=lab["requester"],
        data=ServiceRequestCreate(
            testing_service_id=lab["service"].id, sample_count=samples, preferred_date=day
        ),
    )


def test_a_request_goes_from_submitted_to_completed(session: Session, lab: dict) -> None:
    with frozen(NOW):
        request = submit(session, lab, 4)
        requests.accept(session, actor=lab["manager"], request_id=request.id)
        requests.start(session, actor=lab["manager"], request_id=request.id)
        requests.attach(
            session,
            actor=lab["manager"],
            request_id=request.id,
            kind="report",
            filename="报告.pdf",
            content=PDF,
            max_bytes=1000,
        )
        assert request.status is ServiceRequestStatus.REPORTED
        requests.complete(session, actor=lab["requester"], request_id=request.id)
    assert request.status is ServiceRequestStatus.COMPLETED
    assert request.scheduled_date == TODAY


def test_a_day_never_takes_more_samples_than_its_capacity(session: Session, lab: dict) -> None:
    with frozen(NOW):
        first, second, third = (
            submit(session, lab, 6),
            submit(session, lab, 4),
            submit(session, lab, 1),
        )
        requests.accept(session, actor=lab["manager"], request_id=first.id)
        requests.accept(session, actor=lab["manager"], request_id=second.id)
        with pytest.raises(Conflict) as full:
            requests.accept(session, actor=lab["manager"], request_id=third.id)
        assert full.value.code == "capacity_full"
        # Cancelling gives the samples back.
        requests.cancel(session, actor=lab["requester"], request_id=second.id)
        requests.accept(session, actor=lab["manager"], request_id=third.id)
    day = session.get(ServiceCapacityDay, (lab["service"].id, TODAY))
    assert day.accepted_samples == 7


def test_without_a_preferred_day_the_first_day_with_room_is_taken(
    session: Session, lab: dict
) -> None:
    with frozen(NOW):
        requests.accept(session, actor=lab["manager"], request_id=submit(session, lab, 8).id)
        later = requests.accept(
            session, actor=lab["manager"], request_id=submit(session, lab, 5, day=None).id
        )
    assert later.scheduled_date == date(2026, 12, 1)


def test_more_samples_than_a_day_holds_is_refused_at_submission(
    session: Session, lab: dict
) -> None:
    with frozen(NOW), pytest.raises(RuleViolation):
        submit(session, lab, 11)


def test_only_the_facility_decides_and_only_the_requester_and_facility_read_files(
    session: Session, lab: dict
) -> None:
    with frozen(NOW):
        request = submit(session, lab, 2)
        with pytest.raises(PermissionDenied):
            requests.accept(session, actor=lab["requester"], request_id=request.id)
        with pytest.raises(NotFound):
            requests.accept(session, actor=lab["other"], request_id=request.id)
        attachment = requests.attach(
            session,
            actor=lab["requester"],
            request_id=request.id,
            kind="attachment",
            filename="样品说明.csv",
            content="编号,名称\n1,钢样\n".encode(),
            max_bytes=1000,
        )
        assert requests.read_file(
            session, actor=lab["manager"], request_id=request.id, file_id=attachment.id
        )
        with pytest.raises(NotFound):
            requests.read_file(
                session, actor=lab["other"], request_id=request.id, file_id=attachment.id
            )


@pytest.mark.parametrize(
    ("filename", "content"),
    [
        ("report.pdf", b"MZ\x90\x00 not a pdf"),
        ("report.exe", b"MZ"),
        ("report.pdf", b"%PDF" + b"x" * 2000),
        ("empty.pdf", b""),
    ],
)
def test_files_are_checked_by_type_and_size(
    session: Session, lab: dict, filename: str, content: bytes
) -> None:
    with frozen(NOW):
        request = submit(session, lab, 1)
        with pytest.raises(RuleViolation):
            requests.attach(
                session,
                actor=lab["requester"],
                request_id=request.id,
                kind="attachment",
                filename=filename,
                content=content,
                max_bytes=1000,
            )


def test_wrong_transitions_are_conflicts(session: Session, lab: dict) -> None:
    with frozen(NOW):
        request = submit(session, lab, 1)
        with pytest.raises(Conflict):
            requests.start(session, actor=lab["manager"], request_id=request.id)
        with pytest.raises(Conflict):
            requests.complete(session, actor=lab["requester"], request_id=request.id)


def test_the_report_is_uploaded_and_downloaded_over_the_api(
    client: TestClient, session: Session, lab: dict
) -> None:
    manager = bearer(session, lab["tokens"]["manager"])
    requester = bearer(session, lab["tokens"]["requester"])
    other = bearer(session, lab["tokens"]["other"])
    created = client.post(
        "/api/v1/service-requests",
        json={
            "testing_service_id": lab["service"].id,
            "sample_count": 3,
            "description": "Q235 钢化学成分",
        },
        headers=requester,
    )
    assert created.status_code == 201, created.text
    request_id = created.json()["id"]
    assert (
        client.post(
            f"/api/v1/service-requests/{request_id}/accept", json={}, headers=manager
        ).status_code
        == 200
    )
    assert (
        client.post(f"/api/v1/service-requests/{request_id}/start", headers=manager).status_code
        == 200
    )
    uploaded = client.post(
        f"/api/v1/service-requests/{request_id}/files",
        data={"kind": "report"},
        files={"file": ("检测报告.pdf", PDF, "application/pdf")},
        headers=manager,
    )
    assert uploaded.status_code == 201, uploaded.text
    file_id = uploaded.json()["id"]
    download = client.get(
        f"/api/v1/service-requests/{request_id}/files/{file_id}", headers=requester
    )
    assert download.status_code == 200
    assert download.content == PDF
    assert "attachment" in download.headers["content-disposition"]
    assert (
        client.get(
            f"/api/v1/service-requests/{request_id}/files/{file_id}", headers=other
        ).status_code
        == 404
    )
    assert (
        client.get(f"/api/v1/service-requests/{request_id}", headers=requester).json()["status"]
        == "reported"
    )


def test_a_file_of_the_allowed_size_is_taken_and_one_byte_more_is_named(
    session: Session, lab: dict, database: ConnectionBoundDatabase
) -> None:
    # The limit is the file's, not the multipart body's around it (set when the app is made).
    settings = database.settings.model_copy(update={"max_upload_bytes": 2000})
    with TestClient(create_app(settings, database), base_url="https://testserver") as client:
        requester = bearer(session, lab["tokens"]["requester"])
        created = client.post(
            "/api/v1/service-requests",
            json={"testing_service_id": lab["service"].id, "sample_count": 1},
            headers=requester,
        ).json()
        path = f"/api/v1/service-requests/{created['id']}/files"
        exactly = client.post(
            path,
            files={"file": ("exactly.pdf", PDF + b"0" * (2000 - len(PDF)), "application/pdf")},
            data={"kind": "attachment"},
            headers=requester,
        )
        assert exactly.status_code == 201, exactly.text
        over = client.post(
            path,
            files={"file": ("over.pdf", PDF + b"0" * (2001 - len(PDF)), "application/pdf")},
            headers=requester,
        )
        assert over.status_code == 422
        assert over.json()["errors"][0]["code"] == "file_too_large"


def test_an_upload_over_the_limit_is_413_and_a_json_body_over_1_mb_too(
    client: TestClient, session: Session, lab: dict
) -> None:
    client.app.state.settings = client.app.state.settings.model_copy(
        update={"max_upload_bytes": 2000}
    )
    requester = bearer(session, lab["tokens"]["requester"])
    created = client.post(
        "/api/v1/service-requests",
        json={"testing_service_id": lab["service"].id, "sample_count": 1},
        headers=requester,
    ).json()
    too_big = client.post(
        f"/api/v1/service-requests/{created['id']}/files",
        files={"file": ("big.pdf", b"%PDF" + b"0" * 3000, "application/pdf")},
        headers=requester,
    )
    assert too_big.status_code == 422
    assert too_big.json()["errors"][0]["code"] == "file_too_large"
    # 1.5 MB is fine for a file upload but not for an ordinary JSON body.
    assert (
        client.post(
            "/api/v1/service-requests",
            content=b"{" + b" " * 1_500_000 + b"}",
            headers=requester | {"Content-Type": "application/json"},
        ).status_code
        == 413
    )
