"""One-time form keys: a double-clicked submit does its work once.

A form carries a random key. Its first submission claims the key (a row unique per user in
``idempotency_record``) before acting, and records where it led; a second submission of the
same form is sent there instead of acting again. Of two submissions racing each other, the
second waits at the unique key for the first to commit and then finds its answer. The same key
sent with a different action (the form edited after it was sent) is refused.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from booking.models import IdempotencyRecord
from core.errors import Problem, RuleViolation
from web.messages import N_

FORM_KEY_PREFIX = "page-form:"
FORM_KEY_MAX = 100
FORM_REUSED = N_("This form was already sent.")


def new_form_key() -> str:
    return secrets.token_urlsafe(16)


# Not part of what a form does: its tokens, and a password (never kept, not even hashed here).
_NOT_THE_ACTION = frozenset({"csrf_token", "form_key", "form_token", "password"})


def form_action(name: str, values: Mapping[str, Any]) -> str:
    """What a form does: its name and the values sent. The same key sent again with other
    values (the form edited after it was sent) is then refused, not sent where the first went."""
    sent = sorted((k, str(v)) for k, v in values.items() if k not in _NOT_THE_ACTION)
    return f"{name}:{sent!r}"


def _earlier(session: Session, user_id: int, key: str) -> IdempotencyRecord | None:
    return session.exec(
        select(IdempotencyRecord).where(
            IdempotencyRecord.user_id == user_id, IdempotencyRecord.key == key
        )
    ).first()


def claim_form(
    session: Session, *, user_id: int, form_key: str, action: str, reused: str = FORM_REUSED
) -> tuple[IdempotencyRecord | None, str | None]:
    """Take a form's one-time key: ``(record, None)`` the first time (complete the record with
    :func:`answered`), ``(None, location)`` when the key was used (where the first submission
    led), ``(None, None)`` for a form without a key. ``action`` names what the form does (and
    to what); the key sent again for another action is refused with ``reused``."""
    if not form_key:
        return None, None
    key = FORM_KEY_PREFIX + form_key[:FORM_KEY_MAX]
    fingerprint = hashlib.sha256(action.encode()).hexdigest()
    earlier = _earlier(session, user_id, key)
    if earlier is None:
        record = IdempotencyRecord(
            user_id=user_id, key=key, request_hash=fingerprint, status_code=303, response={}
        )
        try:
            with session.begin_nested():
                session.add(record)
                session.flush()
            return record, None
        except IntegrityError:
            earlier = _earlier(session, user_id, key)
            if earlier is None:
                raise
    if earlier.request_hash != fingerprint or not earlier.response.get("location"):
        raise RuleViolation([Problem("form_reused", reused)])
    return None, str(earlier.response["location"])


def answered(session: Session, record: IdempotencyRecord | None, location: str) -> str:
    """Remember where a form's first submission led (its twin is sent there too)."""
    if record is not None:
        record.response = {"location": location}
        session.add(record)
        session.flush()
    return location


def unclaim(session: Session, record: IdempotencyRecord | None) -> None:
    """A refused form gives its key back, so that the corrected form can be sent with it."""
    if record is not None:
        session.delete(record)
        session.flush()
