"""Reads of organisations and users, paginated, with role assignments loaded in one query."""

from __future__ import annotations

from collections import defaultdict

from sqlmodel import Session, col, func, select

from core.accounts.models import Organisation, RoleAssignment, User
from core.accounts.rules import OrganisationType, Role
from core.places import Cluster


def list_organisations(
    session: Session,
    *,
    type: OrganisationType | None = None,
    cluster: Cluster | None = None,
    district: str | None = None,
    q: str | None = None,
    offset: int = 0,
    limit: int = 50,
) -> tuple[list[Organisation], int]:
    query = select(Organisation)
    if type is not None:
        query = query.where(Organisation.type == type)
    if cluster is not None:
        query = query.where(Organisation.cluster == cluster)
    if district:
        query = query.where(Organisation.district == district)
    if q:
        pattern = f"%{q}%"
        query = query.where(
            col(Organisation.name).ilike(pattern) | col(Organisation.name_en).ilike(pattern)
        )
    total = session.exec(select(func.count()).select_from(query.subquery())).one()
    rows = session.exec(query.order_by(col(Organisation.id)).offset(offset).limit(limit)).all()
    return list(rows), total


def list_users(
    session: Session,
    *,
    organisation_id: int | None = None,
    role: Role | None = None,
    q: str | None = None,
    is_active: bool | None = None,
    offset: int = 0,
    limit: int = 50,
) -> tuple[list[User], int]:
    query = select(User)
    if organisation_id is not None:
        query = query.where(User.organisation_id == organisation_id)
    if role is not None:
        query = query.where(
            col(User.id).in_(select(RoleAssignment.user_id).where(RoleAssignment.role == role))
        )
    if q:
        pattern = f"%{q}%"
        query = query.where(col(User.email).ilike(pattern) | col(User.name).ilike(pattern))
    if is_active is not None:
        query = query.where(User.is_active == is_active)
    total = session.exec(select(func.count()).select_from(query.subquery())).one()
    rows = session.exec(query.order_by(col(User.id)).offset(offset).limit(limit)).all()
    return list(rows), total


def assignments_by_user(session: Session, user_ids: list[int]) -> dict[int, list[RoleAssignment]]:
    """Role assignments for many users in one query (lists must not query per row)."""
    grouped: dict[int, list[RoleAssignment]] = defaultdict(list)
    if not user_ids:
        return grouped
    rows = session.exec(
        select(RoleAssignment)
        .where(col(RoleAssignment.user_id).in_(user_ids))
        .order_by(col(RoleAssignment.id))
    ).all()
    for row in rows:
        grouped[row.user_id].append(row)
    return grouped
