"""Sample service requests against testing services, with attachments and result reports."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, File, Form, UploadFile, status
from fastapi.responses import Response
from pydantic import BaseModel

from booking import requests
from booking.models import ServiceRequest, ServiceRequestStatus
from booking.requests import ServiceRequestCreate
from booking.schemas import OptionalReason, Reason
from core.accounts.schemas import StrictModel
from web.api.schemas import Paginated
from web.deps import ApiPrincipal, AppSettings, DbSession, ObjectId, Pagination
from web.retry import commit_with_retries
from web.routing import TransactionalRoute

router = APIRouter(prefix="/api/v1", tags=["service requests"], route_class=TransactionalRoute)
UPLOAD_PATH = r"^/api/v1/service-requests/\d+/files$"


class ServiceRequestRead(BaseModel):
    id: int
    testing_service_id: int
    facility_id: int
    user_id: int
    sample_count: int
    description: str
    status: ServiceRequestStatus
    scheduled_date: date | None
    reason: str
    version: int
    submitted_at: datetime
    accepted_at: datetime | None
    started_at: datetime | None
    reported_at: datetime | None
    completed_at: datetime | None


class FileRead(BaseModel):
    id: int
    kind: str
    filename: str
    content_type: str
    size: int
    sha256: str
    uploaded_at: datetime


def read(request: ServiceRequest) -> ServiceRequestRead:
    return ServiceRequestRead.model_validate(request, from_attributes=True)


@router.post("/service-requests", response_model=ServiceRequestRead, status_code=201)
def submit(
    data: ServiceRequestCreate, principal: ApiPrincipal, session: DbSession
) -> ServiceRequestRead:
    """Send samples for a testing service."""
    return read(requests.submit(session, actor=principal, data=data))


@router.get("/service-requests", response_model=Paginated[ServiceRequestRead])
def list_requests(
    principal: ApiPrincipal,
    session: DbSession,
    page: Pagination,
    status: ServiceRequestStatus | None = None,
    testing_service_id: int | None = None,
) -> Paginated[ServiceRequestRead]:
    """Yours; a lab manager also sees its facilities'; planners and admins all."""
    rows, total = requests.list_requests(
        session,
        actor=principal,
        status=status,
        testing_service_id=testing_service_id,
        offset=page.offset,
        limit=page.page_size,
    )
    return Paginated(items=[read(r) for r in rows], total=total)


@router.get("/service-requests/{request_id}", response_model=ServiceRequestRead)
def get_request(
    request_id: ObjectId, principal: ApiPrincipal, session: DbSession
) -> ServiceRequestRead:
    return read(requests.visible_request(session, actor=principal, request_id=request_id))


class Acceptance(StrictModel):
    day: date | None = None


@router.post("/service-requests/{request_id}/accept", response_model=ServiceRequestRead)
def accept(
    request_id: ObjectId,
    principal: ApiPrincipal,
    session: DbSession,
    data: Acceptance | None = None,
) -> ServiceRequestRead:
    """Accept against the service's daily sample capacity (409 when the day is full)."""
    return commit_with_retries(
        session,
        lambda: read(
            requests.accept(
                session, actor=principal, request_id=request_id, day=data.day if data else None
            )
        ),
    )


@router.post("/service-requests/{request_id}/reject", response_model=ServiceRequestRead)
def reject(
    request_id: ObjectId, data: Reason, principal: ApiPrincipal, session: DbSession
) -> ServiceRequestRead:
    return read(
        requests.reject(session, actor=principal, request_id=request_id, reason=data.reason)
    )


@router.post("/service-requests/{request_id}/cancel", response_model=ServiceRequestRead)
def cancel(
    request_id: ObjectId,
    principal: ApiPrincipal,
    session: DbSession,
    data: OptionalReason | None = None,
) -> ServiceRequestRead:
    return read(
        requests.cancel(
            session, actor=principal, request_id=request_id, reason=data.reason if data else ""
        )
    )


@router.post("/service-requests/{request_id}/start", response_model=ServiceRequestRead)
def start(request_id: ObjectId, principal: ApiPrincipal, session: DbSession) -> ServiceRequestRead:
    return read(requests.start(session, actor=principal, request_id=request_id))


@router.post("/service-requests/{request_id}/complete", response_model=ServiceRequestRead)
def complete(
    request_id: ObjectId, principal: ApiPrincipal, session: DbSession
) -> ServiceRequestRead:
    return read(requests.complete(session, actor=principal, request_id=request_id))


@router.post(
    "/service-requests/{request_id}/files",
    response_model=FileRead,
    status_code=status.HTTP_201_CREATED,
)
def upload(
    request_id: ObjectId,
    principal: ApiPrincipal,
    session: DbSession,
    settings: AppSettings,
    file: Annotated[UploadFile, File(description="PDF, PNG, JPEG, ZIP, XLSX, DOCX or CSV")],
    kind: Annotated[str, Form(pattern="^(attachment|report)$")] = "attachment",
) -> FileRead:
    """Attach a file (the requester) or upload the report (the facility; marks it reported)."""
    content = file.file.read(settings.max_upload_bytes + 1)
    stored = requests.attach(
        session,
        actor=principal,
        request_id=request_id,
        kind=kind,
        filename=file.filename or "upload",
        content=content,
        max_bytes=settings.max_upload_bytes,
    )
    return FileRead.model_validate(stored, from_attributes=True)


@router.get("/service-requests/{request_id}/files", response_model=list[FileRead])
def list_files(request_id: ObjectId, principal: ApiPrincipal, session: DbSession) -> list[FileRead]:
    return [
        FileRead.model_validate(f, from_attributes=True)
        for f in requests.files_of(session, actor=principal, request_id=request_id)
    ]


@router.get("/service-requests/{request_id}/files/{file_id}")
def download(
    request_id: ObjectId, file_id: ObjectId, principal: ApiPrincipal, session: DbSession
) -> Response:
    """The file itself: only for the requester and the facility's managers."""
    stored = requests.read_file(session, actor=principal, request_id=request_id, file_id=file_id)
    return Response(
        stored.content,
        media_type=stored.content_type,
        headers={
            "Content-Disposition": f"attachment; filename*=UTF-8''{quote(stored.filename)}",
            "Cache-Control": "private, no-store",
        },
    )
