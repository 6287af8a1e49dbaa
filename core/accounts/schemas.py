"""API shapes for organisations and users. Unknown fields are refused (422)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, EmailStr, Field, field_validator

from core.accounts.rules import OrganisationType, Role, ScopeKind
from core.places import Cluster


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    @field_validator("*", mode="after")
    @classmethod
    def _no_nul_character(cls, value: object) -> object:
        # PostgreSQL's text cannot hold NUL (SQLite can): refused here, alike on both.
        texts = value if isinstance(value, list | tuple) else (value,)
        if any(isinstance(text, str) and "\x00" in text for text in texts):
            raise ValueError("Text may not contain the NUL character.")
        return value


def _not_null(value: object) -> object:
    """In a change, a field may be left out but a required one may not be set to null."""
    if value is None:
        raise ValueError("This field may be left out but not set to null.")
    return value


class OrganisationCreate(StrictModel):
    name: str = Field(min_length=2, max_length=200)
    name_en: str | None = Field(default=None, max_length=200)
    type: OrganisationType
    credit_code: str | None = Field(
        default=None, description="统一社会信用代码; required for enterprises."
    )
    is_sme: bool = False
    is_tech_sme: bool = False
    district: str = Field(description="One of Chongqing's districts or management areas.")
    cluster: Cluster | None = Field(default=None, description="Defaults from the district.")
    controlling_group: str | None = Field(default=None, max_length=200)


class OrganisationUpdate(StrictModel):
    name: str | None = Field(default=None, min_length=2, max_length=200)
    name_en: str | None = Field(default=None, max_length=200)
    credit_code: str | None = None
    is_sme: bool | None = None
    is_tech_sme: bool | None = None
    district: str | None = None
    cluster: Cluster | None = None
    controlling_group: str | None = Field(default=None, max_length=200)

    _required = field_validator("name", "is_sme", "is_tech_sme", "district", "cluster")(_not_null)


class OrganisationRead(BaseModel):
    id: int
    name: str
    name_en: str | None
    type: OrganisationType
    credit_code: str | None
    is_sme: bool
    is_tech_sme: bool
    district: str
    cluster: Cluster
    controlling_group: str | None
    created_at: datetime


class RoleGrant(StrictModel):
    role: Role
    scope_kind: ScopeKind | None = Field(
        default=None, description="Defaults to platform (facility for lab_manager)."
    )
    scope_id: int | None = None

    def resolved_scope_kind(self) -> ScopeKind:
        if self.scope_kind is not None:
            return self.scope_kind
        return ScopeKind.FACILITY if self.role is Role.LAB_MANAGER else ScopeKind.PLATFORM


class RoleRead(BaseModel):
    id: int
    role: Role
    scope_kind: ScopeKind
    scope_id: int | None


class UserCreate(StrictModel):
    email: EmailStr
    name: str = Field(min_length=1, max_length=100)
    organisation_id: int | None = None
    locale: str = "zh-CN"
    password: str | None = Field(default=None, description="Omit to create an account without one.")
    roles: list[RoleGrant] = Field(default_factory=list)


class UserUpdate(StrictModel):
    name: str | None = Field(default=None, min_length=1, max_length=100)
    organisation_id: int | None = None
    locale: str | None = None
    is_active: bool | None = None

    _required = field_validator("name", "locale", "is_active")(_not_null)


class UserRead(BaseModel):
    id: int
    email: str
    name: str
    organisation_id: int | None
    locale: str
    is_active: bool
    roles: list[RoleRead]
    created_at: datetime


class PasswordChange(StrictModel):
    current_password: str
    new_password: str
