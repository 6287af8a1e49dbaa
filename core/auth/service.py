"""Logging in and staying logged in.

Invariants: secrets (session ids, tokens) are stored only as hashes; an unknown e-mail and a
wrong password give the same answer in the same time; failed logins are counted in the
database, so every process shares the throttle; expired, revoked or deactivated credentials
never resolve to a user.
"""

from __future__ import annotations

import functools
import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlmodel import Session, col, delete, func, select

from core import audit
from core.accounts.models import RoleAssignment, User
from core.accounts.rules import normalise_email
from core.auth.models import ApiToken, LoginFailure, TokenKind, WebSession
from core.auth.passwords import hash_password, needs_rehash, verify_password
from core.auth.principal import Principal
from core.clock import ensure_utc, now
from core.db import HotStatement, Preamble, as_loaded
from core.errors import NotAuthenticated, NotFound, Problem, RuleViolation, Throttled
from core.settings import Settings

BAD_CREDENTIALS = "Incorrect e-mail address or password."


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class IssuedToken:
    token: str
    record: ApiToken


def _failures_since(session: Session, key: str, since: datetime) -> tuple[int, datetime | None]:
    count, oldest = session.exec(
        select(func.count(), func.min(LoginFailure.occurred_at)).where(
            LoginFailure.key == key, col(LoginFailure.occurred_at) >= since
        )
    ).one()
    return int(count), oldest


def _check_throttle(session: Session, settings: Settings, keys: list[tuple[str, int]]) -> None:
    window = timedelta(seconds=settings.login_throttle_window_s)
    since = now() - window
    for key, limit in keys:
        count, oldest = _failures_since(session, key, since)
        if count >= limit and oldest is not None:
            retry = int((oldest + window - now()).total_seconds()) + 1
            raise Throttled(
                "Too many failed logins. Try again later.",
                retry_after_s=retry,
                code="login_throttled",
            )


def authenticate(
    session: Session, settings: Settings, *, email: str, password: str, client_address: str
) -> User:
    """The active user with these credentials; 401 otherwise, 429 after too many failures.

    A failure is recorded in the caller's transaction: the caller must commit it even though
    it answers with an error (see ``web``'s login routes). Where holding a write transaction
    through the password check matters (SQLite's one writer), use the three steps below.
    """
    user = login_candidate(session, settings, email=email, client_address=client_address)
    if not password_matches(user, password):
        record_login_failure(session, email=email, client_address=client_address)
        raise NotAuthenticated(BAD_CREDENTIALS, code="bad_credentials")
    assert user is not None
    return complete_login(session, user=user, password=password)


def _throttle_keys(email: str, client_address: str) -> tuple[str, str]:
    return f"account:{normalise_email(email)}", f"address:{client_address}"


def login_candidate(
    session: Session, settings: Settings, *, email: str, client_address: str
) -> User | None:
    """Step 1 (reads only): 429 if throttled, else the account the e-mail names, if any."""
    account_key, address_key = _throttle_keys(email, client_address)
    _check_throttle(
        session,
        settings,
        [
            (account_key, settings.login_failures_per_account),
            (address_key, settings.login_failures_per_address),
        ],
    )
    return session.exec(select(User).where(User.email == normalise_email(email))).first()


def password_matches(user: User | None, password: str) -> bool:
    """Step 2 (no database): the slow hash check, as slow for an unknown account."""
    ok = verify_password(user.password_hash if user else None, password)
    return ok and user is not None and user.is_active


def record_login_failure(session: Session, *, email: str, client_address: str) -> None:
    """Step 3 on failure: count it against the account and the address."""
    for key in _throttle_keys(email, client_address):
        session.add(LoginFailure(key=key))
    session.flush()


def complete_login(session: Session, *, user: User, password: str) -> User:
    """Step 3 on success: forget the account's failures, upgrade an old hash."""
    account_key, _ = _throttle_keys(user.email, "")
    session.execute(delete(LoginFailure).where(col(LoginFailure.key) == account_key))
    if user.password_hash and needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
        session.add(user)
    session.flush()
    return user


def forget_old_login_failures(session: Session, settings: Settings) -> int:
    """Delete failures older than the window; they no longer count."""
    cutoff = now() - timedelta(seconds=settings.login_throttle_window_s)
    result = session.execute(delete(LoginFailure).where(col(LoginFailure.occurred_at) < cutoff))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def issue_access_token(session: Session, settings: Settings, *, user: User) -> IssuedToken:
    """A bearer token that expires after ``access_token_ttl_s``."""
    assert user.id is not None
    token = "lsa_" + secrets.token_urlsafe(32)
    record = ApiToken(
        user_id=user.id,
        kind=TokenKind.ACCESS,
        token_hash=_digest(token),
        prefix=token[:10],
        expires_at=now() + timedelta(seconds=settings.access_token_ttl_s),
    )
    session.add(record)
    session.flush()
    return IssuedToken(token, record)


def issue_personal_token(
    session: Session, *, user: User, name: str, expires_at: datetime | None
) -> IssuedToken:
    """A named long-lived token for an integration; the secret is shown only now."""
    assert user.id is not None
    problems = []
    if not name.strip():
        problems.append(Problem("required", "A token needs a name.", "name"))
    if expires_at is not None and expires_at <= now():
        problems.append(Problem("in_past", "The expiry must be in the future.", "expires_at"))
    if problems:
        raise RuleViolation(problems)
    if expires_at is not None:
        expires_at = ensure_utc(expires_at)
    token = "lsp_" + secrets.token_urlsafe(32)
    record = ApiToken(
        user_id=user.id,
        kind=TokenKind.PERSONAL,
        name=name.strip(),
        token_hash=_digest(token),
        prefix=token[:10],
        expires_at=expires_at,
    )
    session.add(record)
    session.flush()
    audit.record(
        session,
        actor_id=user.id,
        action="api_token.created",
        subject_type="api_token",
        subject_id=record.id or 0,
        data={"name": record.name, "prefix": record.prefix},
    )
    return IssuedToken(token, record)


def list_personal_tokens(session: Session, *, user_id: int) -> list[ApiToken]:
    return list(
        session.exec(
            select(ApiToken)
            .where(ApiToken.user_id == user_id, ApiToken.kind == TokenKind.PERSONAL)
            .order_by(col(ApiToken.id))
        ).all()
    )


def revoke_personal_token(session: Session, *, user_id: int, token_id: int) -> ApiToken:
    """Revoke one of the caller's own personal tokens (another user's is 404, even for admins)."""
    record = session.get(ApiToken, token_id)
    if record is None or record.user_id != user_id or record.kind != TokenKind.PERSONAL:
        raise NotFound("API token")
    if record.revoked_at is None:
        record.revoked_at = now()
        session.add(record)
        audit.record(
            session,
            actor_id=user_id,
            action="api_token.revoked",
            subject_type="api_token",
            subject_id=token_id,
            data={"name": record.name},
        )
        session.flush()
    return record


def revoke_token(session: Session, *, token: str) -> None:
    """Revoke a bearer token by its secret (logout of an API client)."""
    record = session.exec(select(ApiToken).where(ApiToken.token_hash == _digest(token))).first()
    if record is not None and record.revoked_at is None:
        record.revoked_at = now()
        session.add(record)
        session.flush()


def user_for_token(session: Session, *, token: str) -> User:
    """The active user a bearer token belongs to; 401 for anything unusable."""
    row = session.exec(
        select(ApiToken, User)
        .join(User, col(User.id) == ApiToken.user_id)
        .where(ApiToken.token_hash == _digest(token))
    ).first()
    if row is None:
        raise NotAuthenticated("Invalid or expired token.", code="invalid_token")
    record, user = row
    if (
        record.revoked_at is not None
        or (record.expires_at is not None and record.expires_at <= now())
        or not user.is_active
    ):
        raise NotAuthenticated("Invalid or expired token.", code="invalid_token")
    return user


_USER_TABLE: sa.Table = User.__table__  # type: ignore[attr-defined]
_ROLE_TABLE: sa.Table = RoleAssignment.__table__  # type: ignore[attr-defined]


@functools.cache
def _token_principal(preamble: Preamble | None = None) -> HotStatement:
    """The token's validity columns, its user, and each of the user's role assignments (a row
    per assignment, one without any), and the preamble's columns for the token's user: built
    once, run with the token's hash. Core columns, labelled by table: every API request runs
    it, and an ORM query of the same rows costs several times the query."""
    token: sa.Table = ApiToken.__table__  # type: ignore[attr-defined]
    statement = (
        sa.select(
            token.c.revoked_at,
            token.c.expires_at,
            *(column.label(f"user_{column.key}") for column in _USER_TABLE.c),
            *(column.label(f"role_{column.key}") for column in _ROLE_TABLE.c),
        )
        .select_from(token)
        .join(_USER_TABLE, _USER_TABLE.c.id == token.c.user_id)
        .outerjoin(_ROLE_TABLE, _ROLE_TABLE.c.user_id == _USER_TABLE.c.id)
        .where(token.c.token_hash == sa.bindparam("token_hash"))
        .order_by(_ROLE_TABLE.c.id)
    )
    if preamble is not None:
        statement = statement.add_columns(*preamble.columns(token.c.user_id))
    return HotStatement(statement)


def principal_for_token(
    session: Session, *, token: str, preamble: Preamble | None = None
) -> Principal:
    """Who a bearer token speaks for, with the role assignments, in one query; 401 for a token
    that is unknown, expired or revoked, or whose user is deactivated.

    A ``preamble`` (where it runs on the session's database) is evaluated in the same query,
    for the token's user, and noted as run for the principal.
    """
    session.flush()
    if preamble is not None and not preamble.runs_on(session):
        preamble = None
    rows = _token_principal(preamble).rows(session.connection(), {"token_hash": _digest(token)})
    if not rows:
        raise NotAuthenticated("Invalid or expired token.", code="invalid_token")
    first = rows[0]
    if (
        first.revoked_at is not None
        or (first.expires_at is not None and first.expires_at <= now())
        or not first.user_is_active
    ):
        raise NotAuthenticated("Invalid or expired token.", code="invalid_token")
    user = as_loaded(session, User, {c.key: getattr(first, f"user_{c.key}") for c in _USER_TABLE.c})
    assignments = tuple(
        as_loaded(
            session, RoleAssignment, {c.key: getattr(row, f"role_{c.key}") for c in _ROLE_TABLE.c}
        )
        for row in rows
        if row.role_id is not None
    )
    principal = Principal(user=user, assignments=assignments)
    if preamble is not None:
        preamble.note_ran(session, principal.user_id)
    return principal


@dataclass(frozen=True)
class StartedSession:
    cookie_value: str
    record: WebSession


def start_web_session(
    session: Session, settings: Settings, *, user: User, previous_cookie: str | None
) -> StartedSession:
    """Log a user in on the web. A session id from before the login is discarded (no fixation)."""
    assert user.id is not None
    if previous_cookie:
        end_web_session(session, cookie_value=previous_cookie)
    cookie_value = secrets.token_urlsafe(32)
    record = WebSession(
        token_hash=_digest(cookie_value),
        user_id=user.id,
        csrf_token=secrets.token_urlsafe(32),
        expires_at=now() + timedelta(seconds=settings.session_absolute_timeout_s),
    )
    session.add(record)
    session.flush()
    return StartedSession(cookie_value, record)


def resolve_web_session(
    session: Session, settings: Settings, *, cookie_value: str
) -> tuple[WebSession, User] | None:
    """The live session and its user for a cookie, or None if it expired, idled out or ended."""
    row = session.exec(
        select(WebSession, User)
        .join(User, col(User.id) == WebSession.user_id)
        .where(WebSession.token_hash == _digest(cookie_value))
    ).first()
    if row is None:
        return None
    record, user = row
    current = now()
    idle_limit = record.last_seen_at + timedelta(seconds=settings.session_idle_timeout_s)
    if (
        record.revoked_at is not None
        or record.expires_at <= current
        or idle_limit <= current
        or not user.is_active
    ):
        return None
    return record, user


def session_needs_touch(record: WebSession) -> bool:
    """Record activity at most once a minute: a page view should not always be a write."""
    return now() - record.last_seen_at > timedelta(minutes=1)


def touch_web_session(session: Session, *, session_id: int) -> None:
    record = session.get(WebSession, session_id)
    if record is not None:
        record.last_seen_at = now()
        session.add(record)
        session.flush()


def end_web_session(session: Session, *, cookie_value: str) -> None:
    record = session.exec(
        select(WebSession).where(WebSession.token_hash == _digest(cookie_value))
    ).first()
    if record is not None and record.revoked_at is None:
        record.revoked_at = now()
        session.add(record)
        session.flush()


def end_all_sessions_of(session: Session, *, user_id: int, keep_session_id: int | None) -> None:
    """After a password change every other session of the user ends."""
    records = session.exec(
        select(WebSession).where(
            WebSession.user_id == user_id, col(WebSession.revoked_at).is_(None)
        )
    ).all()
    for record in records:
        if record.id != keep_session_id:
            record.revoked_at = now()
            session.add(record)
    session.flush()
