"""The booking API: request, decide, change, use; free time; usage records."""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, status
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field, ValidationError
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select
from starlette.concurrency import run_in_threadpool

from booking import queries, service
from booking.models import Booking, IdempotencyRecord
from booking.rules import BookingStatus
from booking.schemas import (
    Availability,
    BookingCreate,
    BookingMove,
    BookingRead,
    CheckOut,
    FreeInstrument,
    FreeInterval,
    HandOver,
    OptionalReason,
    Reason,
    UsageRecordCorrection,
    UsageRecordCreate,
    UsageRecordRead,
)
from booking.service import BookingPolicy
from core.accounts.schemas import StrictModel
from core.clock import now
from core.errors import Conflict, DomainError, NotFound, Problem, RuleViolation
from core.places import Cluster
from core.settings import Settings
from core.types import UTCDateTimeIn
from instruments import queries as catalogue
from instruments.queries import InstrumentSearch
from instruments.rules import Category, OperationMode
from web.api.schemas import Paginated
from web.deps import (
    MAX_ID,
    ApiPrincipal,
    AppSettings,
    BearerToken,
    DbSession,
    ObjectId,
    OptionalApiPrincipal,
    Pagination,
    bearer_token,
    database_of,
    in_writer_turn,
    principal_of_token,
    settings_of,
)
from web.retry import commit_with_retries
from web.routing import TransactionalRoute, answers_well_formed

router = APIRouter(prefix="/api/v1", tags=["bookings"], route_class=TransactionalRoute)


def booking_read(booking: Booking) -> BookingRead:
    return BookingRead(
        **booking.model_dump(exclude={"start_at", "end_at"}),
        start=booking.start_at,
        end=booking.end_at,
    )


def policy_of(settings: AppSettings) -> BookingPolicy:
    return BookingPolicy.from_settings(settings)


def _earlier_answer(
    session: Session, user_id: int, idempotency_key: str, request_hash: str
) -> JSONResponse | None:
    """The first answer to this key, for a retry of the same request; 422 for another request
    under a key already used; None for a key not used yet."""
    earlier = session.exec(
        select(IdempotencyRecord).where(
            IdempotencyRecord.user_id == user_id, IdempotencyRecord.key == idempotency_key
        )
    ).first()
    if earlier is None:
        return None
    if earlier.request_hash != request_hash:
        raise RuleViolation(
            [
                Problem(
                    "idempotency_key_reused",
                    "This Idempotency-Key was used for another request.",
                    "Idempotency-Key",
                )
            ]
        )
    return JSONResponse(earlier.response, status_code=earlier.status_code)


def _request_hash(data: BookingCreate) -> str:
    canonical = json.dumps(data.model_dump(mode="json"), sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


IDEMPOTENCY_KEY_MAX_LENGTH = 200


async def _create_well_formed_booking(request: Request) -> Response | None:
    """``create_booking`` of a request that has a bearer token, a JSON body that is a valid
    ``BookingCreate`` (parsed and validated as FastAPI does) and a usable Idempotency-Key if
    any; None for any other request, which FastAPI then resolves and refuses."""
    token = bearer_token(request)
    if token is None:
        return None
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    idempotency_key = request.headers.get("idempotency-key")
    if media_type != "application/json" or (
        idempotency_key is not None and len(idempotency_key) > IDEMPOTENCY_KEY_MAX_LENGTH
    ):
        return None
    try:
        data = BookingCreate.model_validate(json.loads(await request.body()))
    except (ValueError, ValidationError):  # JSONDecodeError and UnicodeDecodeError included
        return None
    return await create_booking(request, data, token, idempotency_key)


@router.post("/bookings", response_model=BookingRead, status_code=status.HTTP_201_CREATED)
@answers_well_formed(_create_well_formed_booking)
async def create_booking(
    request: Request,
    data: BookingCreate,
    token: BearerToken,
    idempotency_key: Annotated[
        str | None,
        Header(
            max_length=IDEMPOTENCY_KEY_MAX_LENGTH,
            description="Retries with the same key get the first answer.",
        ),
    ] = None,
) -> Response:
    """Request a booking: 201 with `confirmed` or `pending`; 409 if the time is taken; 422 with
    every broken rule; 403 for a self-operated booking without a valid qualification."""
    # The hot path: the caller is looked up in the same worker thread as the booking is made
    # (one round trip to the thread pool, not two), in the writer turn's own session.
    return await in_writer_turn(
        request, _create_booking, request, data, token, settings_of(request), idempotency_key
    )


def _create_booking(
    session: Session,
    request: Request,
    data: BookingCreate,
    token: str,
    settings: Settings,
    idempotency_key: str | None,
) -> Response:
    # Found in the statement that also sets the request's terms up (one round trip fewer).
    principal = principal_of_token(request, session, token, preamble=service.TERMS_SETUP)
    request_hash = _request_hash(data) if idempotency_key else ""
    if idempotency_key:
        earlier = _earlier_answer(session, principal.user_id, idempotency_key, request_hash)
        if earlier is not None:
            return earlier

    def work() -> BookingRead:
        booking = service.create_booking(
            session, actor=principal, data=data, policy=policy_of(settings)
        )
        answer = booking_read(booking)
        if idempotency_key:
            session.add(
                IdempotencyRecord(
                    user_id=principal.user_id,
                    key=idempotency_key,
                    request_hash=request_hash,
                    status_code=201,
                    response=answer.model_dump(mode="json"),
                )
            )
            session.flush()
        return answer

    try:
        created = commit_with_retries(session, work)
    except (DomainError, IntegrityError):
        if not idempotency_key:
            raise
        # A retry that raced its first attempt: once that one committed, answer what it got
        # (or, for another request under the same key, that the key is taken).
        session.rollback()
        earlier = _earlier_answer(session, principal.user_id, idempotency_key, request_hash)
        if earlier is None:
            raise
        return earlier
    # The hot path: serialized once, not validated again against the response model.
    return Response(
        content=created.model_dump_json(),
        media_type="application/json",
        status_code=status.HTTP_201_CREATED,
    )


class BookingList(Paginated[BookingRead]):
    """A page of bookings."""


@router.get("/bookings", response_model=BookingList)
def list_bookings(
    principal: ApiPrincipal,
    session: DbSession,
    page: Pagination,
    instrument_id: int | None = None,
    facility_id: int | None = None,
    user_id: int | None = None,
    status: BookingStatus | None = None,
    start: UTCDateTimeIn | None = None,
    end: UTCDateTimeIn | None = None,
    queue: Annotated[bool, Query(description="The pending requests you may decide.")] = False,
    mine: Annotated[bool, Query(description="Only your own bookings.")] = False,
) -> BookingList:
    """Your bookings; a lab manager also sees its facilities'; planners and admins all."""
    filters = queries.BookingFilter(
        instrument_id=instrument_id,
        facility_id=facility_id,
        user_id=principal.user_id if mine else user_id,
        status=status,
        start=start,
        end=end,
        pending_queue=queue,
    )
    rows, total = queries.list_bookings(
        session, actor=principal, filters=filters, offset=page.offset, limit=page.page_size
    )
    return BookingList(items=[booking_read(b) for b in rows], total=total)


@router.get("/bookings/{booking_id}", response_model=BookingRead)
def get_booking(booking_id: ObjectId, principal: ApiPrincipal, session: DbSession) -> BookingRead:
    return booking_read(service.visible_booking(session, actor=principal, booking_id=booking_id))


@router.post("/bookings/{booking_id}/approve", response_model=BookingRead)
def approve(
    booking_id: ObjectId,
    principal: ApiPrincipal,
    session: DbSession,
    body: StrictModel | None = None,
) -> BookingRead:
    return booking_read(service.approve(session, actor=principal, booking_id=booking_id))


@router.post("/bookings/{booking_id}/reject", response_model=BookingRead)
def reject(
    booking_id: ObjectId, data: Reason, principal: ApiPrincipal, session: DbSession
) -> BookingRead:
    return booking_read(
        service.reject(session, actor=principal, booking_id=booking_id, reason=data.reason)
    )


@router.post("/bookings/{booking_id}/cancel", response_model=BookingRead)
def cancel(
    booking_id: ObjectId,
    principal: ApiPrincipal,
    session: DbSession,
    data: OptionalReason | None = None,
) -> BookingRead:
    return booking_read(
        service.cancel(
            session, actor=principal, booking_id=booking_id, reason=data.reason if data else ""
        )
    )


@router.post("/bookings/{booking_id}/move", response_model=BookingRead, status_code=201)
def move(
    booking_id: ObjectId,
    data: BookingMove,
    principal: ApiPrincipal,
    session: DbSession,
    settings: AppSettings,
) -> BookingRead:
    """Move or resize: the old booking is cancelled and replaced in one transaction."""
    return commit_with_retries(
        session,
        lambda: booking_read(
            service.move(
                session,
                actor=principal,
                booking_id=booking_id,
                start=data.start,
                end=data.end,
                override=data.override,
                policy=policy_of(settings),
            )
        ),
    )


@router.post("/bookings/{booking_id}/hand-over", response_model=BookingRead)
def hand_over(
    booking_id: ObjectId,
    data: HandOver,
    principal: ApiPrincipal,
    session: DbSession,
    settings: AppSettings,
) -> BookingRead:
    """Give the booking to a colleague of the same organisation, who must be free to book the
    time itself: qualified to its end, within its quotas, not suspended (422 otherwise)."""
    return booking_read(
        service.hand_over(
            session,
            actor=principal,
            booking_id=booking_id,
            to_user_id=data.user_id,
            policy=policy_of(settings),
        )
    )


@router.post("/bookings/{booking_id}/check-in", response_model=BookingRead)
def check_in(
    booking_id: ObjectId, principal: ApiPrincipal, session: DbSession, settings: AppSettings
) -> BookingRead:
    return booking_read(
        service.check_in(
            session, actor=principal, booking_id=booking_id, policy=policy_of(settings)
        )
    )


@router.post("/bookings/{booking_id}/check-out", response_model=UsageRecordRead)
def check_out(
    booking_id: ObjectId, principal: ApiPrincipal, session: DbSession, data: CheckOut | None = None
) -> UsageRecordRead:
    usage = service.check_out(
        session, actor=principal, booking_id=booking_id, samples=data.samples if data else None
    )
    return UsageRecordRead.model_validate(usage, from_attributes=True)


@router.post("/instruments/{instrument_id}/check-in", response_model=BookingRead)
def check_in_at_instrument(
    instrument_id: ObjectId, principal: ApiPrincipal, session: DbSession, settings: AppSettings
) -> BookingRead:
    """What the instrument's QR code opens: check in to your booking on it that is due now."""
    catalogue.instrument_with_facility(session, instrument_id)  # 404 for a missing instrument
    policy = policy_of(settings)
    current = now()
    booking = session.exec(
        select(Booking)
        .where(
            Booking.instrument_id == instrument_id,
            Booking.user_id == principal.user_id,
            Booking.status == BookingStatus.CONFIRMED,
            col(Booking.start_at) <= current + policy.grace,
            col(Booking.end_at) > current,
        )
        .order_by(col(Booking.start_at))
    ).first()
    if booking is None:
        raise Conflict(
            "You have no booking on this instrument to check in to now.", code="no_booking_now"
        )
    return booking_read(
        service.check_in(session, actor=principal, booking_id=booking.id or 0, policy=policy)
    )


class BulkDecision(StrictModel):
    ids: list[int] = Field(min_length=1, max_length=200)
    reason: str = Field(default="", max_length=1000, description="Required to reject.")


class BulkResult(BaseModel):
    id: int
    ok: bool
    status: BookingStatus | None = None
    code: str | None = None
    detail: str | None = None


def _bulk(session: DbSession, ids: list[int], decide: Any) -> list[BulkResult]:
    results = []
    for booking_id in dict.fromkeys(ids):
        try:
            with session.begin_nested():
                booking = decide(booking_id)
            results.append(BulkResult(id=booking_id, ok=True, status=booking.status))
        except DomainError as exc:
            results.append(BulkResult(id=booking_id, ok=False, code=exc.code, detail=exc.detail))
    return results


@router.post("/bookings/approve", response_model=list[BulkResult])
def bulk_approve(
    data: BulkDecision, principal: ApiPrincipal, session: DbSession
) -> list[BulkResult]:
    """Approve several pending requests; each succeeds or fails on its own."""
    return _bulk(
        session, data.ids, lambda i: service.approve(session, actor=principal, booking_id=i)
    )


@router.post("/bookings/reject", response_model=list[BulkResult])
def bulk_reject(
    data: BulkDecision, principal: ApiPrincipal, session: DbSession
) -> list[BulkResult]:
    if not data.reason.strip():
        raise RuleViolation([Problem("required", "Say why the requests are rejected.", "reason")])
    return _bulk(
        session,
        data.ids,
        lambda i: service.reject(session, actor=principal, booking_id=i, reason=data.reason),
    )


# --- Free time -----------------------------------------------------------------------------


MIN_MINUTES_MAX = 24 * 60 * 31


class _AvailabilityWindow(BaseModel):
    """The query of an availability, as the endpoint declares it."""

    start: UTCDateTimeIn
    end: UTCDateTimeIn
    min_minutes: int = Field(0, ge=0, le=MIN_MINUTES_MAX)


async def _well_formed_availability(request: Request) -> Response | None:
    """``availability`` of a request whose instrument id and window are valid (validated as
    FastAPI does), in one turn of the thread pool with a session of its own; None for any
    other request, which FastAPI then resolves and refuses.

    The catalogue's busiest read: resolving its parameters and dependencies, validating the
    answer again against the response model and closing the session in a second turn of the
    thread pool cost more than finding the free time (py-spy)."""
    raw_id = request.path_params.get("instrument_id", "")
    if not (raw_id.isascii() and raw_id.isdigit() and raw_id[0] != "0"):
        return None
    instrument_id = int(raw_id)
    if instrument_id > MAX_ID:
        return None
    query = request.query_params
    try:
        window = _AvailabilityWindow.model_validate(
            {name: query[name] for name in _AvailabilityWindow.model_fields if name in query}
        )
    except ValidationError:
        return None
    token = bearer_token(request)
    database = database_of(request)

    def answer() -> Availability:
        session = database.new_session(write=False)
        try:
            caller = principal_of_token(request, session, token) if token else None
            return availability(
                instrument_id,
                window.start,
                window.end,
                request,
                caller,
                session,
                window.min_minutes,
            )
        finally:
            session.close()

    found = await run_in_threadpool(answer)
    return Response(content=found.model_dump_json(), media_type="application/json")


@router.get("/instruments/{instrument_id}/availability", response_model=Availability)
@answers_well_formed(_well_formed_availability)
def availability(
    instrument_id: ObjectId,
    start: UTCDateTimeIn,
    end: UTCDateTimeIn,
    request: Request,
    principal: OptionalApiPrincipal,
    session: DbSession,
    min_minutes: Annotated[int, Query(ge=0, le=MIN_MINUTES_MAX)] = 0,
) -> Availability:
    """Free, bookable intervals (open time − booked time, on the instrument's slots)."""
    if principal is None and not request.app.state.settings.catalogue_public:
        raise NotFound("Instrument")
    free = queries.availability(
        session, instrument_id=instrument_id, start=start, end=end, min_minutes=min_minutes
    )
    return Availability(free=[FreeInterval(start=s, end=e) for s, e in free])


@router.get("/availability", response_model=list[FreeInstrument])
def find_free_instruments(
    request: Request,
    principal: OptionalApiPrincipal,
    session: DbSession,
    start: UTCDateTimeIn,
    end: UTCDateTimeIn,
    min_minutes: Annotated[int, Query(ge=1, le=24 * 60 * 31)] = 60,
    q: Annotated[str | None, Query(max_length=100)] = None,
    category: Category | None = None,
    cluster: Cluster | None = None,
    district: str | None = None,
    facility_id: int | None = None,
    operation_mode: OperationMode | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> list[FreeInstrument]:
    """Which instruments are free for at least `min_minutes` between `start` and `end`
    ("which X-ray diffractometers are free next Tuesday afternoon")."""
    if principal is None and not request.app.state.settings.catalogue_public:
        raise NotFound("Instrument")
    found = queries.first_free_instruments(
        session,
        InstrumentSearch(
            q=q,
            category=category,
            cluster=cluster,
            district=district,
            facility_id=facility_id,
            operation_mode=operation_mode,
        ),
        start=start,
        end=end,
        min_minutes=min_minutes,
        limit=limit,
    )
    return [
        FreeInstrument(
            instrument_id=match["id"],
            name=match["name"],
            facility_name=match["facility_name"],
            free=[FreeInterval(start=s, end=e) for s, e in intervals],
        )
        for match, intervals in found
    ]


# --- Usage records -------------------------------------------------------------------------


@router.get("/usage-records", response_model=Paginated[UsageRecordRead])
def list_usage_records(
    principal: ApiPrincipal,
    session: DbSession,
    page: Pagination,
    instrument_id: int | None = None,
    user_id: int | None = None,
) -> Paginated[UsageRecordRead]:
    rows, total = queries.list_usage_records(
        session,
        actor=principal,
        instrument_id=instrument_id,
        user_id=user_id,
        offset=page.offset,
        limit=page.page_size,
    )
    return Paginated(
        items=[UsageRecordRead.model_validate(r, from_attributes=True) for r in rows], total=total
    )


@router.post("/usage-records", response_model=UsageRecordRead, status_code=201)
def record_walk_in(
    data: UsageRecordCreate, principal: ApiPrincipal, session: DbSession
) -> UsageRecordRead:
    """A walk-in use without a booking (lab managers)."""
    usage = service.record_walk_in(session, actor=principal, data=data)
    return UsageRecordRead.model_validate(usage, from_attributes=True)


@router.patch("/usage-records/{usage_id}", response_model=UsageRecordRead)
def correct_usage(
    usage_id: ObjectId, data: UsageRecordCorrection, principal: ApiPrincipal, session: DbSession
) -> UsageRecordRead:
    usage = service.correct_usage(session, actor=principal, usage_id=usage_id, data=data)
    return UsageRecordRead.model_validate(usage, from_attributes=True)
