"""Sample service requests (送样检测): the booking package's operations on them.

``submitted → accepted → in_progress → reported → completed``, or ``rejected`` / ``cancelled``.
Invariants: the samples accepted for a testing service on a day never exceed its daily
capacity, however many managers accept at once (a conditional increment of the day's counter
is the guard, on both databases); a cancelled or rejected accepted request gives its samples
back; files are checked by type and size, and only the requester and the facility's managers
can read them.
"""

from __future__ import annotations

import hashlib
from datetime import date, timedelta
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from pydantic import Field
from sqlmodel import Session, col, func, select

from booking.models import (
    ServiceCapacityDay,
    ServiceRequest,
    ServiceRequestFile,
    ServiceRequestStatus,
)
from core import audit, events
from core.accounts.models import User
from core.accounts.schemas import StrictModel
from core.auth.principal import Principal
from core.clock import now
from core.errors import Conflict, NotFound, PermissionDenied, Problem, RuleViolation
from instruments.models import Facility, TestingService

S = ServiceRequestStatus
FROM: dict[str, frozenset[ServiceRequestStatus]] = {
    "accept": frozenset({S.SUBMITTED}),
    "reject": frozenset({S.SUBMITTED}),
    "start": frozenset({S.ACCEPTED}),
    "report": frozenset({S.IN_PROGRESS, S.REPORTED}),
    "complete": frozenset({S.REPORTED}),
    "cancel": frozenset({S.SUBMITTED, S.ACCEPTED}),
}
HOLDS_CAPACITY = frozenset({S.ACCEPTED, S.IN_PROGRESS, S.REPORTED, S.COMPLETED})
# What may be uploaded, recognised by the file's first bytes, not by its name.
SIGNATURES: dict[str, tuple[bytes, ...]] = {
    "application/pdf": (b"%PDF-",),
    "image/png": (b"\x89PNG\r\n\x1a\n",),
    "image/jpeg": (b"\xff\xd8\xff",),
    # XLSX, DOCX and ZIP archives are all ZIP files.
    "application/zip": (b"PK\x03\x04",),
    "text/csv": (),
}
EXTENSIONS = {
    ".pdf": "application/pdf",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".zip": "application/zip",
    ".xlsx": "application/zip",
    ".docx": "application/zip",
    ".csv": "text/csv",
}


class ServiceRequestCreate(StrictModel):
    testing_service_id: int
    sample_count: int = Field(ge=1, le=10_000)
    description: str = Field(default="", max_length=4000)
    preferred_date: date | None = Field(
        default=None, description="Default: the first day with room."
    )


def _payload(request: ServiceRequest) -> dict[str, object]:
    return {
        "service_request_id": request.id,
        "testing_service_id": request.testing_service_id,
        "facility_id": request.facility_id,
        "user_id": request.user_id,
        "status": request.status,
        "sample_count": request.sample_count,
    }


def _record(
    session: Session,
    request: ServiceRequest,
    *,
    actor: Principal | None,
    action: str,
    **data: object,
) -> None:
    audit.record(
        session,
        actor_id=actor.user_id if actor else None,
        action=f"service_request.{action}",
        subject_type="service_request",
        subject_id=request.id or 0,
        data={"status": request.status, **data},
    )
    events.emit(session, f"service_request.{action}", _payload(request) | data)


def visible_request(
    session: Session, *, actor: Principal | None, request_id: int
) -> ServiceRequest:
    """The requester's, the facility managers', planners' and admins'; 404 for anyone else."""
    request = session.get(ServiceRequest, request_id)
    if request is None:
        raise NotFound("Service request")
    if (
        actor is None
        or actor.reads_everything
        or request.user_id == actor.user_id
        or actor.manages_facility(request.facility_id)
    ):
        return request
    raise NotFound("Service request")


def _manager_only(actor: Principal | None, request: ServiceRequest, action: str) -> None:
    if actor is not None and not actor.manages_facility(request.facility_id):
        raise PermissionDenied(
            f"Only a lab manager of the facility may {action} a service request."
        )


def _move(
    session: Session,
    request: ServiceRequest,
    action: str,
    to: ServiceRequestStatus,
    **values: object,
) -> None:
    result = session.execute(
        sa.update(ServiceRequest)
        .where(
            col(ServiceRequest.id) == request.id, col(ServiceRequest.status).in_(list(FROM[action]))
        )
        .values(status=to, version=ServiceRequest.version + 1, updated_at=now(), **values)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise Conflict(
            f"You cannot {action} this request: its status is {request.status}.",
            code="wrong_status",
        )
    session.refresh(request)


def submit(session: Session, *, actor: Principal, data: ServiceRequestCreate) -> ServiceRequest:
    service = session.get(TestingService, data.testing_service_id)
    if service is None or not service.is_active:
        raise NotFound("Testing service")
    problems = []
    if data.sample_count > service.daily_sample_capacity:
        problems.append(
            Problem(
                "over_capacity",
                f"At most {service.daily_sample_capacity} samples a day; split the request.",
                "sample_count",
            )
        )
    if data.preferred_date is not None and data.preferred_date < _today(session, service):
        problems.append(Problem("in_past", "The preferred day has passed.", "preferred_date"))
    if problems:
        raise RuleViolation(problems)
    user = session.get(User, actor.user_id)
    request = ServiceRequest(
        testing_service_id=service.id or 0,
        facility_id=service.facility_id,
        user_id=actor.user_id,
        organisation_id=user.organisation_id if user else None,
        sample_count=data.sample_count,
        description=data.description,
        scheduled_date=data.preferred_date,
    )
    session.add(request)
    session.flush()
    _record(session, request, actor=actor, action="submitted")
    return request


def _today(session: Session, service: TestingService) -> date:
    zone = session.exec(select(Facility.timezone).where(Facility.id == service.facility_id)).one()
    return now().astimezone(ZoneInfo(zone)).date()


def _take_capacity(session: Session, service: TestingService, day: date, samples: int) -> bool:
    """Count ``samples`` against ``day`` if they fit: one conditional update, race-free."""
    table = ServiceCapacityDay.__table__  # type: ignore[attr-defined]
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert  # type: ignore[assignment]
    session.execute(
        insert(table)
        .values(testing_service_id=service.id, day=day, accepted_samples=0)
        .on_conflict_do_nothing()
    )
    result = session.execute(
        sa.update(table)
        .where(
            table.c.testing_service_id == service.id,
            table.c.day == day,
            table.c.accepted_samples + samples <= service.daily_sample_capacity,
        )
        .values(accepted_samples=table.c.accepted_samples + samples)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def _give_back_capacity(session: Session, request: ServiceRequest) -> None:
    table = ServiceCapacityDay.__table__  # type: ignore[attr-defined]
    session.execute(
        sa.update(table)
        .where(
            table.c.testing_service_id == request.testing_service_id,
            table.c.day == request.scheduled_date,
        )
        .values(accepted_samples=table.c.accepted_samples - request.sample_count)
    )


def accept(
    session: Session, *, actor: Principal | None, request_id: int, day: date | None = None
) -> ServiceRequest:
    """Accept against the daily capacity: the given day, the preferred one, or the first with room
    in the next 60 days; a full day is 409."""
    request = visible_request(session, actor=actor, request_id=request_id)
    _manager_only(actor, request, "accept")
    if request.status not in FROM["accept"]:
        raise Conflict(
            f"You cannot accept this request: its status is {request.status}.", code="wrong_status"
        )
    service = session.get(TestingService, request.testing_service_id)
    assert service is not None
    today = _today(session, service)
    wanted = day or request.scheduled_date
    candidates = [wanted] if wanted is not None else [today + timedelta(days=n) for n in range(60)]
    for candidate in candidates:
        if candidate < today:
            raise RuleViolation([Problem("in_past", "That day has passed.", "day")])
        if _take_capacity(session, service, candidate, request.sample_count):
            _move(
                session,
                request,
                "accept",
                S.ACCEPTED,
                scheduled_date=candidate,
                accepted_at=now(),
                decided_by_id=actor.user_id if actor else None,
            )
            _record(session, request, actor=actor, action="accepted", day=candidate.isoformat())
            return request
    when = wanted.isoformat() if wanted else "any of the next 60 days"
    raise Conflict(f"No room for {request.sample_count} samples on {when}.", code="capacity_full")


def reject(
    session: Session, *, actor: Principal | None, request_id: int, reason: str
) -> ServiceRequest:
    request = visible_request(session, actor=actor, request_id=request_id)
    _manager_only(actor, request, "reject")
    _move(
        session,
        request,
        "reject",
        S.REJECTED,
        reason=reason,
        decided_by_id=actor.user_id if actor else None,
    )
    _record(session, request, actor=actor, action="rejected", reason=reason)
    return request


def cancel(
    session: Session, *, actor: Principal | None, request_id: int, reason: str = ""
) -> ServiceRequest:
    """The requester (or a manager) cancels before work starts; accepted samples are given back."""
    request = visible_request(session, actor=actor, request_id=request_id)
    if (
        actor is not None
        and request.user_id != actor.user_id
        and not actor.manages_facility(request.facility_id)
    ):
        raise PermissionDenied("Only the requester or a lab manager may cancel it.")
    held = request.status in HOLDS_CAPACITY
    _move(session, request, "cancel", S.CANCELLED, reason=reason)
    if held:
        _give_back_capacity(session, request)
    _record(session, request, actor=actor, action="cancelled", reason=reason)
    return request


def start(session: Session, *, actor: Principal | None, request_id: int) -> ServiceRequest:
    request = visible_request(session, actor=actor, request_id=request_id)
    _manager_only(actor, request, "start")
    _move(session, request, "start", S.IN_PROGRESS, started_at=now())
    _record(session, request, actor=actor, action="in_progress")
    return request


def _content_type(filename: str, content: bytes) -> str:
    suffix = "." + filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
    declared = EXTENSIONS.get(suffix)
    if declared is None:
        raise RuleViolation(
            [Problem("file_type", f"Allowed files: {', '.join(sorted(EXTENSIONS))}.", "file")]
        )
    signatures = SIGNATURES[declared]
    if signatures and not any(content.startswith(s) for s in signatures):
        raise RuleViolation(
            [Problem("file_type", f"The file is not really a {suffix} file.", "file")]
        )
    if not signatures and b"\x00" in content[:4096]:
        raise RuleViolation([Problem("file_type", "A CSV file must be text.", "file")])
    return {
        ".xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        ".docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    }.get(suffix, declared)


def attach(
    session: Session,
    *,
    actor: Principal | None,
    request_id: int,
    kind: str,
    filename: str,
    content: bytes,
    max_bytes: int,
) -> ServiceRequestFile:
    """Store an attachment (the requester's) or the report (the facility's; marks it reported)."""
    request = visible_request(session, actor=actor, request_id=request_id)
    if not content:
        raise RuleViolation([Problem("empty_file", "The file is empty.", "file")])
    if len(content) > max_bytes:
        raise RuleViolation(
            [
                Problem(
                    "file_too_large", f"Files are at most {max_bytes // (1024 * 1024)} MB.", "file"
                )
            ]
        )
    content_type = _content_type(filename, content)
    if kind == "report":
        _manager_only(actor, request, "report on")
        _move(session, request, "report", S.REPORTED, reported_at=now())
    elif kind == "attachment":
        if actor is not None and request.user_id != actor.user_id:
            raise PermissionDenied("Only the requester adds attachments.")
        if request.status not in (S.SUBMITTED, S.ACCEPTED):
            raise Conflict("Attachments go with a request before work starts.", code="wrong_status")
    else:
        raise RuleViolation([Problem("kind", "A file is an attachment or a report.", "kind")])
    stored = ServiceRequestFile(
        service_request_id=request.id or 0,
        kind=kind,
        filename=filename[-255:],
        content_type=content_type,
        size=len(content),
        sha256=hashlib.sha256(content).hexdigest(),
        content=content,
        uploaded_by_id=actor.user_id if actor else None,
    )
    session.add(stored)
    session.flush()
    if kind == "report":
        _record(session, request, actor=actor, action="reported", file_id=stored.id)
    return stored


def complete(session: Session, *, actor: Principal | None, request_id: int) -> ServiceRequest:
    """The requester (or the facility) closes a reported request."""
    request = visible_request(session, actor=actor, request_id=request_id)
    if (
        actor is not None
        and request.user_id != actor.user_id
        and not actor.manages_facility(request.facility_id)
    ):
        raise PermissionDenied("Only the requester or a lab manager may complete it.")
    _move(session, request, "complete", S.COMPLETED, completed_at=now())
    _record(session, request, actor=actor, action="completed")
    return request


def files_of(
    session: Session, *, actor: Principal | None, request_id: int
) -> list[ServiceRequestFile]:
    visible_request(session, actor=actor, request_id=request_id)
    return list(
        session.exec(
            select(ServiceRequestFile)
            .where(ServiceRequestFile.service_request_id == request_id)
            .order_by(col(ServiceRequestFile.id))
        ).all()
    )


def read_file(
    session: Session, *, actor: Principal | None, request_id: int, file_id: int
) -> ServiceRequestFile:
    """A file of a request, for its requester and the facility's managers only (404 otherwise)."""
    request = visible_request(session, actor=actor, request_id=request_id)
    if (
        actor is not None
        and request.user_id != actor.user_id
        and not actor.manages_facility(request.facility_id)
        and not actor.is_admin
    ):
        raise NotFound("File")
    stored = session.get(ServiceRequestFile, file_id)
    if stored is None or stored.service_request_id != request_id:
        raise NotFound("File")
    return stored


def list_requests(
    session: Session,
    *,
    actor: Principal,
    status: ServiceRequestStatus | None = None,
    testing_service_id: int | None = None,
    offset: int = 0,
    limit: int = 50,
) -> tuple[list[ServiceRequest], int]:
    query = select(ServiceRequest)
    if not actor.reads_everything:
        query = query.where(
            (col(ServiceRequest.user_id) == actor.user_id)
            | col(ServiceRequest.facility_id).in_(sorted(actor.managed_facility_ids))
        )
    if status is not None:
        query = query.where(ServiceRequest.status == status)
    if testing_service_id is not None:
        query = query.where(ServiceRequest.testing_service_id == testing_service_id)
    total = session.exec(select(func.count()).select_from(query.subquery())).one()
    rows = session.exec(
        query.order_by(col(ServiceRequest.id).desc()).offset(offset).limit(limit)
    ).all()
    return list(rows), int(total)
