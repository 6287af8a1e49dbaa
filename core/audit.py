"""The audit log: who changed what, when. Append-only (database triggers refuse UPDATE/DELETE).

Services record an entry in the same transaction as the change they describe, so a rolled-back
change leaves no entry and a committed one always has one.
"""

from __future__ import annotations

import contextvars
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, Session, SQLModel, col, func, select

from core.clock import now
from core.db import utc_column

# Set by the web layer per request, so entries can be matched to request logs.
current_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "current_request_id", default=None
)


class AuditEntry(SQLModel, table=True):
    __tablename__ = "audit_entry"

    id: int | None = Field(default=None, primary_key=True)
    occurred_at: datetime = Field(default_factory=now, sa_column=utc_column(index=True))
    actor_id: int | None = Field(
        default=None, index=True, description="The user who acted; empty for the system or CLI."
    )
    action: str = Field(max_length=80, index=True, description="e.g. user.created")
    subject_type: str = Field(max_length=40)
    subject_id: str = Field(max_length=40)
    data: dict[str, Any] = Field(default_factory=dict, sa_type=sa.JSON)
    request_id: str | None = Field(default=None, max_length=64)


def record(
    session: Session,
    *,
    actor_id: int | None,
    action: str,
    subject_type: str,
    subject_id: int | str,
    data: dict[str, Any] | None = None,
) -> AuditEntry:
    """Append an audit entry to the current transaction."""
    entry = AuditEntry(
        actor_id=actor_id,
        action=action,
        subject_type=subject_type,
        subject_id=str(subject_id),
        data=data or {},
        request_id=current_request_id.get(),
    )
    session.add(entry)
    session.flush()
    return entry


def list_entries(
    session: Session,
    *,
    actor_id: int | None = None,
    action: str | None = None,
    subject_type: str | None = None,
    subject_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    offset: int = 0,
    limit: int = 50,
) -> tuple[list[AuditEntry], int]:
    """Audit entries matching the filters, newest first, and how many match in all."""
    query = select(AuditEntry)
    if actor_id is not None:
        query = query.where(AuditEntry.actor_id == actor_id)
    if action:
        query = query.where(col(AuditEntry.action).startswith(action, autoescape=True))
    if subject_type:
        query = query.where(AuditEntry.subject_type == subject_type)
    if subject_id:
        query = query.where(AuditEntry.subject_id == subject_id)
    if since:
        query = query.where(col(AuditEntry.occurred_at) >= since)
    if until:
        query = query.where(col(AuditEntry.occurred_at) < until)
    total = session.exec(select(func.count()).select_from(query.subquery())).one()
    rows = session.exec(query.order_by(col(AuditEntry.id).desc()).offset(offset).limit(limit)).all()
    return list(rows), total


def apply_update(
    session: Session,
    subject: SQLModel,
    changes: dict[str, Any],
    *,
    actor_id: int | None,
    action: str,
    subject_type: str,
    also_changed: list[str] | None = None,
) -> None:
    """Set the changed fields, stamp ``updated_at``, flush, and audit which fields changed
    (``also_changed`` names what the caller changed elsewhere, e.g. linked rows)."""
    for key, value in changes.items():
        setattr(subject, key, value)
    if hasattr(subject, "updated_at"):
        subject.updated_at = now()
    session.add(subject)
    session.flush()
    record(
        session,
        actor_id=actor_id,
        action=action,
        subject_type=subject_type,
        subject_id=getattr(subject, "id", None) or 0,
        data={"changed": sorted([*changes, *(also_changed or [])])},
    )
