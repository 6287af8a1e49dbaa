"""Organisations, users, role assignments and the audit log."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response, status
from pydantic import BaseModel

from core import audit
from core.accounts import queries, service
from core.accounts.models import RoleAssignment, User
from core.accounts.rules import OrganisationType, Role
from core.accounts.schemas import (
    OrganisationCreate,
    OrganisationRead,
    OrganisationUpdate,
    RoleGrant,
    RoleRead,
    StrictModel,
    UserCreate,
    UserRead,
    UserUpdate,
)
from core.errors import NotFound
from core.places import Cluster
from core.types import UTCDateTimeIn
from web.api.schemas import Paginated
from web.deps import ApiPrincipal, DbSession, ObjectId, Pagination
from web.routing import TransactionalRoute

router = APIRouter(prefix="/api/v1", tags=["accounts"], route_class=TransactionalRoute)


def user_read(user: User, assignments: list[RoleAssignment]) -> UserRead:
    return UserRead(
        **user.model_dump(
            include={"id", "email", "name", "organisation_id", "locale", "is_active", "created_at"}
        ),
        roles=[RoleRead.model_validate(a, from_attributes=True) for a in assignments],
    )


@router.get("/me", response_model=UserRead)
def me(principal: ApiPrincipal) -> UserRead:
    return user_read(principal.user, list(principal.assignments))


@router.get("/organisations", response_model=Paginated[OrganisationRead])
def list_organisations(
    principal: ApiPrincipal,
    session: DbSession,
    page: Pagination,
    type: OrganisationType | None = None,
    cluster: Cluster | None = None,
    district: str | None = None,
    q: Annotated[str | None, Query(max_length=100)] = None,
) -> Paginated[OrganisationRead]:
    rows, total = queries.list_organisations(
        session, type=type, cluster=cluster, district=district, q=q,
        offset=page.offset, limit=page.page_size,
    )  # fmt: skip
    return Paginated(
        items=[OrganisationRead.model_validate(r, from_attributes=True) for r in rows], total=total
    )


@router.get("/organisations/{organisation_id}", response_model=OrganisationRead)
def get_organisation(
    organisation_id: ObjectId, principal: ApiPrincipal, session: DbSession
) -> OrganisationRead:
    organisation = service.get_organisation(session, organisation_id)
    return OrganisationRead.model_validate(organisation, from_attributes=True)


@router.post("/organisations", response_model=OrganisationRead, status_code=status.HTTP_201_CREATED)
def create_organisation(
    data: OrganisationCreate, principal: ApiPrincipal, session: DbSession
) -> OrganisationRead:
    principal.require_admin("register organisations")
    organisation = service.create_organisation(session, actor_id=principal.user_id, data=data)
    return OrganisationRead.model_validate(organisation, from_attributes=True)


@router.patch("/organisations/{organisation_id}", response_model=OrganisationRead)
def update_organisation(
    organisation_id: ObjectId, data: OrganisationUpdate, principal: ApiPrincipal, session: DbSession
) -> OrganisationRead:
    principal.require_admin("change organisations")
    organisation = service.update_organisation(
        session, actor_id=principal.user_id, organisation_id=organisation_id, data=data
    )
    return OrganisationRead.model_validate(organisation, from_attributes=True)


@router.get("/users", response_model=Paginated[UserRead])
def list_users(
    principal: ApiPrincipal,
    session: DbSession,
    page: Pagination,
    organisation_id: int | None = None,
    role: Role | None = None,
    is_active: bool | None = None,
    q: Annotated[str | None, Query(max_length=100)] = None,
) -> Paginated[UserRead]:
    principal.require_admin("list users")
    rows, total = queries.list_users(
        session, organisation_id=organisation_id, role=role, q=q, is_active=is_active,
        offset=page.offset, limit=page.page_size,
    )  # fmt: skip
    roles = queries.assignments_by_user(session, [u.id for u in rows if u.id is not None])
    return Paginated(items=[user_read(u, roles.get(u.id or 0, [])) for u in rows], total=total)


@router.post("/users", response_model=UserRead, status_code=status.HTTP_201_CREATED)
def create_user(data: UserCreate, principal: ApiPrincipal, session: DbSession) -> UserRead:
    principal.require_admin("create users")
    user = service.create_user(session, actor_id=principal.user_id, data=data)
    roles = queries.assignments_by_user(session, [user.id or 0])
    return user_read(user, roles.get(user.id or 0, []))


@router.get("/users/{user_id}", response_model=UserRead)
def get_user(user_id: ObjectId, principal: ApiPrincipal, session: DbSession) -> UserRead:
    if not principal.is_admin and user_id != principal.user_id:
        raise NotFound("User")
    user = service.get_user(session, user_id)
    roles = queries.assignments_by_user(session, [user_id])
    return user_read(user, roles.get(user_id, []))


@router.patch("/users/{user_id}", response_model=UserRead)
def update_user(
    user_id: ObjectId, data: UserUpdate, principal: ApiPrincipal, session: DbSession
) -> UserRead:
    principal.require_admin("change users")
    user = service.update_user(session, actor_id=principal.user_id, user_id=user_id, data=data)
    roles = queries.assignments_by_user(session, [user_id])
    return user_read(user, roles.get(user_id, []))


class PasswordSet(StrictModel):
    password: str


@router.post("/users/{user_id}/password", status_code=status.HTTP_204_NO_CONTENT)
def set_password(
    user_id: ObjectId, data: PasswordSet, principal: ApiPrincipal, session: DbSession
) -> Response:
    principal.require_admin("set other users' passwords")
    service.set_password(
        session, actor_id=principal.user_id, user_id=user_id, password=data.password
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/users/{user_id}/roles", response_model=RoleRead, status_code=status.HTTP_201_CREATED)
def grant_role(
    user_id: ObjectId, data: RoleGrant, principal: ApiPrincipal, session: DbSession
) -> RoleRead:
    principal.require_admin("grant roles")
    assignment = service.grant_role(
        session, actor_id=principal.user_id, user_id=user_id, grant=data
    )
    return RoleRead.model_validate(assignment, from_attributes=True)


@router.delete("/users/{user_id}/roles/{assignment_id}", status_code=status.HTTP_204_NO_CONTENT)
def revoke_role(
    user_id: ObjectId, assignment_id: ObjectId, principal: ApiPrincipal, session: DbSession
) -> Response:
    principal.require_admin("revoke roles")
    service.revoke_role(
        session, actor_id=principal.user_id, user_id=user_id, assignment_id=assignment_id
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


class AuditEntryRead(BaseModel):
    id: int
    occurred_at: datetime
    actor_id: int | None
    action: str
    subject_type: str
    subject_id: str
    data: dict[str, Any]
    request_id: str | None


@router.get("/audit", response_model=Paginated[AuditEntryRead], tags=["audit"])
def list_audit_entries(
    principal: ApiPrincipal,
    session: DbSession,
    page: Pagination,
    actor_id: int | None = None,
    action: Annotated[str | None, Query(max_length=80, description="Prefix, e.g. user.")] = None,
    subject_type: Annotated[str | None, Query(max_length=40)] = None,
    subject_id: Annotated[str | None, Query(max_length=40)] = None,
    since: UTCDateTimeIn | None = None,
    until: UTCDateTimeIn | None = None,
) -> Paginated[AuditEntryRead]:
    principal.require_admin("read the audit log")
    rows, total = audit.list_entries(
        session, actor_id=actor_id, action=action, subject_type=subject_type,
        subject_id=subject_id, since=since, until=until,
        offset=page.offset, limit=page.page_size,
    )  # fmt: skip
    return Paginated(
        items=[AuditEntryRead.model_validate(r, from_attributes=True) for r in rows], total=total
    )
