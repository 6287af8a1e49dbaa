"""The catalogue API: search and read instruments, facilities, testing services, outages and
qualifications; lab managers and admins change them."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status
from pydantic import BaseModel, Field, TypeAdapter

from booking import outages as booking_outages
from core.accounts.rules import Role
from core.accounts.schemas import RoleRead, StrictModel
from core.auth.principal import Principal
from core.errors import NotAuthenticated, NotFound
from core.places import Cluster
from core.types import UTCDateTimeIn
from instruments import queries, rules, service
from instruments.models import Facility, Instrument, OpeningSpan, Qualification, TestingService
from instruments.queries import InstrumentSearch, SearchSort
from instruments.rules import (
    CATEGORY_NAMES,
    Category,
    CustomerClass,
    InstrumentStatus,
    OperationMode,
)
from instruments.schemas import (
    BookingRulesRead,
    ClosureIn,
    ClosureRead,
    FacilityCreate,
    FacilityRead,
    FacilityUpdate,
    InstrumentCreate,
    InstrumentRead,
    InstrumentSummary,
    InstrumentUpdate,
    OpeningSpanIn,
    OpeningSpanRead,
    OpenIntervals,
    OutageCreate,
    OutageRead,
    PriceList,
    QualificationGrant,
    QualificationRead,
    TestingServiceCreate,
    TestingServiceRead,
    TestingServiceUpdate,
)
from web.api.schemas import Paginated
from web.deps import (
    ApiPrincipal,
    AppSettings,
    DbSession,
    ObjectId,
    OptionalApiPrincipal,
    Pagination,
)
from web.routing import TransactionalRoute

router = APIRouter(prefix="/api/v1", tags=["catalogue"], route_class=TransactionalRoute)


def catalogue_reader(principal: Principal | None, request: Request) -> None:
    """The catalogue is public unless the platform turned that off."""
    if principal is None and not request.app.state.settings.catalogue_public:
        raise NotAuthenticated()


def price_class_of(
    session: DbSession, principal: Principal | None, facility: Facility
) -> CustomerClass | None:
    if principal is None:
        return None
    organisation_id = principal.user.organisation_id
    return rules.customer_class(
        user_organisation_id=organisation_id,
        user_organisation_type=queries.organisation_type_of(session, organisation_id),
        facility_organisation_id=facility.organisation_id,
    )


def _hhmm(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


def facility_read(facility: Facility, spans: list[OpeningSpan]) -> FacilityRead:
    return FacilityRead(
        **facility.model_dump(exclude={"created_at", "updated_at"}),
        opening_hours=[
            OpeningSpanRead(weekday=s.weekday, start=_hhmm(s.start_minute), end=_hhmm(s.end_minute))
            for s in spans
        ],
    )


def instrument_read(
    session: DbSession, instrument: Instrument, facility: Facility, principal: Principal | None
) -> InstrumentRead:
    your_class = price_class_of(session, principal, facility)
    prices = PriceList(
        internal_fen=instrument.price_internal_fen,
        external_academic_fen=instrument.price_external_academic_fen,
        enterprise_fen=instrument.price_enterprise_fen,
        staff_surcharge_fen=instrument.staff_surcharge_fen,
        min_billing_minutes=instrument.min_billing_minutes,
        min_charge_fen=instrument.min_charge_fen,
        your_class=your_class,
        your_price_fen=getattr(instrument, f"price_{your_class}_fen") if your_class else None,
    )
    return InstrumentRead(
        **instrument.model_dump(exclude={"search_text", "created_at"}),
        facility_name=facility.name,
        organisation_id=facility.organisation_id,
        rules=BookingRulesRead.model_validate(instrument, from_attributes=True),
        prices=prices,
        testing_service_ids=queries.testing_service_ids_of(session, instrument.id or 0),
    )


class CategoryRead(BaseModel):
    code: Category
    name_zh: str
    name_en: str


@router.get("/categories", response_model=list[CategoryRead])
def list_categories() -> list[CategoryRead]:
    """The top level of the national large-instrument classification."""
    return [CategoryRead(code=c, name_zh=zh, name_en=en) for c, (zh, en) in CATEGORY_NAMES.items()]


@router.get("/instruments", response_model=Paginated[InstrumentSummary])
def search_instruments(
    request: Request,
    principal: OptionalApiPrincipal,
    session: DbSession,
    page: Pagination,
    q: Annotated[str | None, Query(max_length=100, description="At least 2 characters.")] = None,
    category: Category | None = None,
    cluster: Cluster | None = None,
    district: str | None = None,
    facility_id: int | None = None,
    organisation_id: int | None = None,
    operation_mode: OperationMode | None = None,
    is_large: bool | None = None,
    has_testing_service: bool | None = None,
    status: InstrumentStatus | None = None,
    price_class: CustomerClass = CustomerClass.INTERNAL,
    min_price_fen: Annotated[int | None, Query(ge=0)] = None,
    max_price_fen: Annotated[int | None, Query(ge=0)] = None,
    sort: SearchSort = SearchSort.RELEVANCE,
) -> Paginated[InstrumentSummary]:
    """Search words (names, keywords, abbreviations, model, maker, description) and filters."""
    catalogue_reader(principal, request)
    search = InstrumentSearch(
        q=q,
        category=category,
        cluster=cluster,
        district=district,
        facility_id=facility_id,
        organisation_id=organisation_id,
        operation_mode=operation_mode,
        is_large=is_large,
        has_testing_service=has_testing_service,
        status=status,
        price_class=price_class,
        min_price_fen=min_price_fen,
        max_price_fen=max_price_fen,
        sort=sort,
    )
    rows, total = queries.search_instruments(
        session, search, offset=page.offset, limit=page.page_size
    )
    return Paginated(items=[InstrumentSummary.model_validate(r) for r in rows], total=total)


@router.get("/instruments/{instrument_id}", response_model=InstrumentRead)
def get_instrument(
    instrument_id: ObjectId, request: Request, principal: OptionalApiPrincipal, session: DbSession
) -> InstrumentRead:
    catalogue_reader(principal, request)
    instrument, facility = queries.instrument_with_facility(session, instrument_id)
    return instrument_read(session, instrument, facility, principal)


_OPEN_INTERVALS_JSON = TypeAdapter(dict[str, list[dict[str, datetime]]])


@router.get("/instruments/{instrument_id}/open-intervals", response_model=OpenIntervals)
def open_intervals(
    instrument_id: ObjectId,
    start: UTCDateTimeIn,
    end: UTCDateTimeIn,
    request: Request,
    principal: OptionalApiPrincipal,
    session: DbSession,
) -> Response:
    """When the instrument is open (hours − holidays − closures − outages), bookings aside."""
    catalogue_reader(principal, request)
    intervals = queries.instrument_open_intervals(
        session, instrument_id=instrument_id, start=start, end=end
    )
    # Calendars poll this often: the intervals are serialized as they are (the same JSON as
    # OpenIntervals), without building models that FastAPI would then validate again.
    body = _OPEN_INTERVALS_JSON.dump_json({"open": [{"start": s, "end": e} for s, e in intervals]})
    return Response(content=body, media_type="application/json")


@router.post("/instruments", response_model=InstrumentRead, status_code=status.HTTP_201_CREATED)
def create_instrument(
    data: InstrumentCreate, principal: ApiPrincipal, session: DbSession
) -> InstrumentRead:
    instrument = service.create_instrument(session, actor=principal, data=data)
    facility = queries.get_facility(session, instrument.facility_id)
    return instrument_read(session, instrument, facility, principal)


@router.patch("/instruments/{instrument_id}", response_model=InstrumentRead)
def update_instrument(
    instrument_id: ObjectId, data: InstrumentUpdate, principal: ApiPrincipal, session: DbSession
) -> InstrumentRead:
    instrument = service.update_instrument(
        session, actor=principal, instrument_id=instrument_id, data=data
    )
    facility = queries.get_facility(session, instrument.facility_id)
    return instrument_read(session, instrument, facility, principal)


@router.post("/instruments/{instrument_id}/retire", response_model=InstrumentRead)
def retire_instrument(
    instrument_id: ObjectId, principal: ApiPrincipal, session: DbSession
) -> InstrumentRead:
    instrument = service.retire_instrument(session, actor=principal, instrument_id=instrument_id)
    facility = queries.get_facility(session, instrument.facility_id)
    return instrument_read(session, instrument, facility, principal)


# --- Facilities --------------------------------------------------------------------------


@router.get("/facilities", response_model=Paginated[FacilityRead])
def list_facilities(
    request: Request,
    principal: OptionalApiPrincipal,
    session: DbSession,
    page: Pagination,
    organisation_id: int | None = None,
    cluster: Cluster | None = None,
    district: str | None = None,
    managed: Annotated[bool, Query(description="Only the facilities you manage.")] = False,
) -> Paginated[FacilityRead]:
    catalogue_reader(principal, request)
    ids = None
    if managed:
        if principal is None:
            raise NotAuthenticated()
        ids = None if principal.is_admin else sorted(principal.managed_facility_ids)
    rows, total = queries.list_facilities(
        session,
        organisation_id=organisation_id,
        cluster=cluster,
        district=district,
        ids=ids,
        offset=page.offset,
        limit=page.page_size,
    )
    spans = queries.opening_spans_by_facility(session, [f.id or 0 for f in rows])
    return Paginated(items=[facility_read(f, spans.get(f.id or 0, [])) for f in rows], total=total)


@router.get("/facilities/{facility_id}", response_model=FacilityRead)
def get_facility(
    facility_id: ObjectId, request: Request, principal: OptionalApiPrincipal, session: DbSession
) -> FacilityRead:
    catalogue_reader(principal, request)
    facility = queries.get_facility(session, facility_id)
    spans = queries.opening_spans_by_facility(session, [facility_id])
    return facility_read(facility, spans.get(facility_id, []))


@router.post("/facilities", response_model=FacilityRead, status_code=status.HTTP_201_CREATED)
def create_facility(
    data: FacilityCreate, principal: ApiPrincipal, session: DbSession
) -> FacilityRead:
    facility = service.create_facility(session, actor=principal, data=data)
    spans = queries.opening_spans_by_facility(session, [facility.id or 0])
    return facility_read(facility, spans.get(facility.id or 0, []))


@router.patch("/facilities/{facility_id}", response_model=FacilityRead)
def update_facility(
    facility_id: ObjectId, data: FacilityUpdate, principal: ApiPrincipal, session: DbSession
) -> FacilityRead:
    facility = service.update_facility(session, actor=principal, facility_id=facility_id, data=data)
    spans = queries.opening_spans_by_facility(session, [facility_id])
    return facility_read(facility, spans.get(facility_id, []))


@router.put("/facilities/{facility_id}/opening-hours", response_model=FacilityRead)
def set_opening_hours(
    facility_id: ObjectId, spans: list[OpeningSpanIn], principal: ApiPrincipal, session: DbSession
) -> FacilityRead:
    """Replace the weekly opening hours (local times of the facility's zone)."""
    service.set_opening_hours(session, actor=principal, facility_id=facility_id, spans=spans)
    facility = queries.get_facility(session, facility_id)
    loaded = queries.opening_spans_by_facility(session, [facility_id])
    return facility_read(facility, loaded.get(facility_id, []))


@router.get("/facilities/{facility_id}/closures", response_model=list[ClosureRead])
def list_closures(
    facility_id: ObjectId, request: Request, principal: OptionalApiPrincipal, session: DbSession
) -> list[ClosureRead]:
    catalogue_reader(principal, request)
    queries.get_facility(session, facility_id)
    return [
        ClosureRead.model_validate(c, from_attributes=True)
        for c in queries.closures_of(session, facility_id)
    ]


@router.post(
    "/facilities/{facility_id}/closures",
    response_model=ClosureRead,
    status_code=status.HTTP_201_CREATED,
)
def add_closure(
    facility_id: ObjectId, data: ClosureIn, principal: ApiPrincipal, session: DbSession
) -> ClosureRead:
    closure = service.add_closure(session, actor=principal, facility_id=facility_id, data=data)
    return ClosureRead.model_validate(closure, from_attributes=True)


@router.delete("/facilities/{facility_id}/closures/{closure_id}", status_code=204)
def remove_closure(
    facility_id: ObjectId, closure_id: ObjectId, principal: ApiPrincipal, session: DbSession
) -> Response:
    service.remove_closure(session, actor=principal, closure_id=closure_id)
    return Response(status_code=204)


class ManagerAdd(StrictModel):
    user_id: int


@router.post(
    "/facilities/{facility_id}/managers",
    response_model=RoleRead,
    status_code=status.HTTP_201_CREATED,
)
def add_manager(
    facility_id: ObjectId, data: ManagerAdd, principal: ApiPrincipal, session: DbSession
) -> RoleRead:
    """Make a user a lab manager of this facility (admins)."""
    assignment = service.add_manager(
        session, actor=principal, facility_id=facility_id, user_id=data.user_id
    )
    return RoleRead.model_validate(assignment, from_attributes=True)


# --- Testing services --------------------------------------------------------------------


def testing_service_read(row: TestingService, instrument_ids: list[int]) -> TestingServiceRead:
    return TestingServiceRead(
        **row.model_dump(exclude={"created_at", "updated_at"}), instrument_ids=instrument_ids
    )


@router.get("/testing-services", response_model=Paginated[TestingServiceRead])
def list_testing_services(
    request: Request,
    principal: OptionalApiPrincipal,
    session: DbSession,
    page: Pagination,
    facility_id: int | None = None,
    instrument_id: int | None = None,
) -> Paginated[TestingServiceRead]:
    catalogue_reader(principal, request)
    rows, total = queries.list_testing_services(
        session,
        facility_id=facility_id,
        instrument_id=instrument_id,
        offset=page.offset,
        limit=page.page_size,
    )
    return Paginated(items=[testing_service_read(r, ids) for r, ids in rows], total=total)


@router.post(
    "/testing-services", response_model=TestingServiceRead, status_code=status.HTTP_201_CREATED
)
def create_testing_service(
    data: TestingServiceCreate, principal: ApiPrincipal, session: DbSession
) -> TestingServiceRead:
    created = service.create_testing_service(session, actor=principal, data=data)
    return testing_service_read(created, sorted(dict.fromkeys(data.instrument_ids)))


@router.patch("/testing-services/{service_id}", response_model=TestingServiceRead)
def update_testing_service(
    service_id: ObjectId, data: TestingServiceUpdate, principal: ApiPrincipal, session: DbSession
) -> TestingServiceRead:
    updated = service.update_testing_service(
        session, actor=principal, service_id=service_id, data=data
    )
    rows, _ = queries.list_testing_services(
        session, facility_id=updated.facility_id, include_inactive=True, limit=500
    )
    ids = next((ids for row, ids in rows if row.id == service_id), [])
    return testing_service_read(updated, ids)


# --- Outages -----------------------------------------------------------------------------


@router.get("/outages", response_model=Paginated[OutageRead])
def list_outages(
    request: Request,
    principal: OptionalApiPrincipal,
    session: DbSession,
    page: Pagination,
    instrument_id: int | None = None,
    facility_id: int | None = None,
    start: UTCDateTimeIn | None = None,
    end: UTCDateTimeIn | None = None,
) -> Paginated[OutageRead]:
    """Outages overlapping the period (an instrument's include its facility's)."""
    catalogue_reader(principal, request)
    rows, total = queries.list_outages(
        session,
        instrument_id=instrument_id,
        facility_ids=[facility_id] if facility_id is not None else None,
        start=start,
        end=end,
        offset=page.offset,
        limit=page.page_size,
    )
    return Paginated(
        items=[OutageRead.model_validate(r, from_attributes=True) for r in rows], total=total
    )


class OutageCreated(OutageRead):
    affected_booking_ids: list[int] = Field(
        description="Held bookings it falls on, flagged or cancelled as the platform is set up."
    )


@router.post("/outages", response_model=OutageCreated, status_code=status.HTTP_201_CREATED)
def create_outage(
    data: OutageCreate, principal: ApiPrincipal, session: DbSession, settings: AppSettings
) -> OutageCreated:
    """Record an outage; bookings it falls on are flagged or cancelled (a platform setting)."""
    outage = service.create_outage(session, actor=principal, data=data)
    affected = booking_outages.apply_outage(
        session,
        actor=principal,
        outage_id=outage.id or 0,
        action=booking_outages.OutageAction(settings.outage_bookings_action),
    )
    return OutageCreated(
        **OutageRead.model_validate(outage, from_attributes=True).model_dump(),
        affected_booking_ids=[b.id or 0 for b in affected],
    )


@router.delete("/outages/{outage_id}", status_code=204)
def delete_outage(outage_id: ObjectId, principal: ApiPrincipal, session: DbSession) -> Response:
    service.delete_outage(session, actor=principal, outage_id=outage_id)
    return Response(status_code=204)


# --- Qualifications ----------------------------------------------------------------------


def qualification_read(row: Qualification, valid: bool) -> QualificationRead:
    return QualificationRead(**row.model_dump(), is_valid=valid)


@router.get("/qualifications", response_model=Paginated[QualificationRead])
def list_qualifications(
    principal: ApiPrincipal,
    session: DbSession,
    page: Pagination,
    user_id: int | None = None,
    instrument_id: int | None = None,
    valid_only: bool = False,
) -> Paginated[QualificationRead]:
    """Yours; a lab manager sees those on its facilities' instruments; admins see all."""
    facility_ids = None
    if not principal.is_admin:
        if principal.has_role(Role.LAB_MANAGER) and user_id != principal.user_id:
            facility_ids = sorted(principal.managed_facility_ids)
        else:
            if user_id not in (None, principal.user_id):
                raise NotFound("User")
            user_id = principal.user_id
    rows, total = queries.list_qualifications(
        session,
        user_id=user_id,
        instrument_id=instrument_id,
        facility_ids=facility_ids,
        valid_only=valid_only,
        offset=page.offset,
        limit=page.page_size,
    )
    return Paginated(items=[qualification_read(q, v) for q, v in rows], total=total)


@router.post(
    "/qualifications", response_model=QualificationRead, status_code=status.HTTP_201_CREATED
)
def grant_qualification(
    data: QualificationGrant, principal: ApiPrincipal, session: DbSession
) -> QualificationRead:
    qualification = service.grant_qualification(session, actor=principal, data=data)
    return qualification_read(qualification, True)


class RevokeIn(StrictModel):
    reason: str = Field(default="", max_length=300)


@router.post("/qualifications/{qualification_id}/revoke", response_model=QualificationRead)
def revoke_qualification(
    qualification_id: ObjectId,
    principal: ApiPrincipal,
    session: DbSession,
    data: RevokeIn | None = None,
) -> QualificationRead:
    qualification = service.revoke_qualification(
        session,
        actor=principal,
        qualification_id=qualification_id,
        reason=data.reason if data else "",
    )
    return qualification_read(qualification, False)
