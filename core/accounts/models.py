"""Tables: organisation, app_user, role_assignment."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from core.accounts.rules import OrganisationType, Role, ScopeKind
from core.clock import now
from core.db import enum_type, utc_column
from core.places import Cluster


class Organisation(SQLModel, table=True):
    __tablename__ = "organisation"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=200, sa_column_kwargs={"unique": True})
    name_en: str | None = Field(default=None, max_length=200)
    type: OrganisationType = Field(sa_type=enum_type(OrganisationType, 20))
    credit_code: str | None = Field(
        default=None,
        max_length=18,
        unique=True,
        description="统一社会信用代码 (GB 32100-2015); required for enterprises.",
    )
    is_sme: bool = Field(default=False, description="Small or medium-sized enterprise.")
    is_tech_sme: bool = Field(
        default=False, description="Registered tech-based SME (科技型中小企业)."
    )
    district: str = Field(max_length=40)
    cluster: Cluster = Field(sa_type=enum_type(Cluster, 40))
    controlling_group: str | None = Field(
        default=None,
        max_length=200,
        index=True,
        description="Organisations with the same controller share subsidy caps.",
    )
    created_at: datetime = Field(default_factory=now, sa_column=utc_column())
    updated_at: datetime = Field(default_factory=now, sa_column=utc_column())


class User(SQLModel, table=True):
    # "user" is reserved in PostgreSQL.
    __tablename__ = "app_user"

    id: int | None = Field(default=None, primary_key=True)
    email: str = Field(max_length=254, unique=True, description="Stored lower-cased.")
    name: str = Field(max_length=100)
    organisation_id: int | None = Field(default=None, foreign_key="organisation.id", index=True)
    locale: str = Field(default="zh-CN", max_length=10)
    is_active: bool = True
    password_hash: str | None = Field(default=None, max_length=255)
    created_at: datetime = Field(default_factory=now, sa_column=utc_column())
    updated_at: datetime = Field(default_factory=now, sa_column=utc_column())


class RoleAssignment(SQLModel, table=True):
    __tablename__ = "role_assignment"
    __table_args__ = (
        sa.Index(
            "uq_role_assignment_user_role_scope",
            "user_id",
            "role",
            "scope_kind",
            sa.func.coalesce(sa.column("scope_id"), 0),
            unique=True,
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="app_user.id", index=True, ondelete="CASCADE")
    role: Role = Field(sa_type=enum_type(Role, 20))
    scope_kind: ScopeKind = Field(sa_type=enum_type(ScopeKind, 20))
    scope_id: int | None = Field(
        default=None, description="The organisation's or facility's id; empty for platform scope."
    )
    granted_by_id: int | None = Field(default=None, foreign_key="app_user.id")
    created_at: datetime = Field(default_factory=now, sa_column=utc_column())
