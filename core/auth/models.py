"""Tables: api_token, web_session, login_failure. Secrets are stored only as SHA-256 hashes."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from core.clock import now
from core.db import enum_type, utc_column


class TokenKind(StrEnum):
    ACCESS = "access"  # from POST /auth/token, expires after an hour by default
    PERSONAL = "personal"  # long-lived, named, for integrations


class ApiToken(SQLModel, table=True):
    __tablename__ = "api_token"

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="app_user.id", index=True, ondelete="CASCADE")
    kind: TokenKind = Field(sa_type=enum_type(TokenKind, 20))
    name: str | None = Field(default=None, max_length=100)
    token_hash: str = Field(max_length=64, unique=True)
    prefix: str = Field(max_length=16, description="The token's first characters, to recognise it.")
    created_at: datetime = Field(default_factory=now, sa_column=utc_column())
    expires_at: datetime | None = Field(default=None, sa_column=utc_column(nullable=True))
    last_used_at: datetime | None = Field(default=None, sa_column=utc_column(nullable=True))
    revoked_at: datetime | None = Field(default=None, sa_column=utc_column(nullable=True))


class WebSession(SQLModel, table=True):
    __tablename__ = "web_session"

    id: int | None = Field(default=None, primary_key=True)
    token_hash: str = Field(max_length=64, unique=True)
    user_id: int = Field(foreign_key="app_user.id", index=True, ondelete="CASCADE")
    csrf_token: str = Field(max_length=64)
    created_at: datetime = Field(default_factory=now, sa_column=utc_column())
    last_seen_at: datetime = Field(default_factory=now, sa_column=utc_column())
    expires_at: datetime = Field(sa_column=utc_column(), description="The absolute timeout.")
    revoked_at: datetime | None = Field(default=None, sa_column=utc_column(nullable=True))


class LoginFailure(SQLModel, table=True):
    """One failed login, counted per account and per client address over a sliding window."""

    __tablename__ = "login_failure"
    __table_args__ = (sa.Index("ix_login_failure_key_occurred_at", "key", "occurred_at"),)

    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(max_length=300, description="account:<email> or address:<ip>")
    occurred_at: datetime = Field(default_factory=now, sa_column=utc_column())
