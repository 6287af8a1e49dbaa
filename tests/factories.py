"""Plain factory functions for test data, with sensible defaults and explicit overrides."""

from __future__ import annotations

import itertools
from typing import Any

from fastapi.testclient import TestClient
from sqlmodel import Session

from core.accounts import service as accounts
from core.accounts.models import Organisation, User
from core.accounts.rules import OrganisationType, Role
from core.accounts.schemas import OrganisationCreate, RoleGrant, UserCreate
from core.auth import service as auth
from core.settings import Settings
from web.demo import make_credit_code

_counter = itertools.count(1)
PASSWORD = "correct horse battery"


def make_organisation(session: Session, **overrides: Any) -> Organisation:
    n = next(_counter)
    values: dict[str, Any] = {
        "name": f"测试大学{n}",
        "type": OrganisationType.UNIVERSITY,
        "district": "沙坪坝区",
    }
    if overrides.get("type") == OrganisationType.ENTERPRISE and "credit_code" not in overrides:
        values["credit_code"] = make_credit_code("500106", f"MA{n:06d}")
    values.update(overrides)
    return accounts.create_organisation(
        session, actor_id=None, data=OrganisationCreate.model_validate(values)
    )


def make_user(
    session: Session,
    *,
    roles: list[Role | RoleGrant] = (),  # type: ignore[assignment]
    password: str | None = PASSWORD,
    organisation: Organisation | None = None,
    **overrides: Any,
) -> User:
    n = next(_counter)
    grants = [r if isinstance(r, RoleGrant) else RoleGrant(role=r) for r in roles]
    values: dict[str, Any] = {
        "email": f"user{n}@example.cn",
        "name": f"用户{n}",
        "organisation_id": organisation.id if organisation else None,
        "password": password,
        "roles": grants,
    }
    values.update(overrides)
    return accounts.create_user(session, actor_id=None, data=UserCreate.model_validate(values))


def bearer(session: Session, user: User, settings: Settings | None = None) -> dict[str, str]:
    """Authorization headers for ``user`` without going through the (throttled) login."""
    issued = auth.issue_access_token(session, settings or Settings(), user=user)
    session.flush()
    return {"Authorization": f"Bearer {issued.token}"}


def login_page(client: TestClient, email: str, password: str = PASSWORD) -> Any:
    """Log in through the login form, as a browser would (CSRF token included)."""
    page = client.get("/login")
    token = page.text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    return client.post(
        "/login",
        data={"email": email, "password": password, "csrf_token": token, "next": "/"},
        follow_redirects=False,
    )


def csrf_from(html: str) -> str:
    return html.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]


def api_login(client: TestClient, email: str, password: str = PASSWORD) -> Any:
    """POST the OAuth2 password form to the token endpoint."""
    return client.post("/api/v1/auth/token", data={"username": email, "password": password})
