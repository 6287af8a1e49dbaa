"""Logging in for API clients: expiring bearer tokens and personal tokens for integrations."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response, status
from fastapi.security import OAuth2PasswordRequestForm
from pydantic import BaseModel, Field

from core.accounts import service as accounts
from core.accounts.models import User
from core.accounts.schemas import PasswordChange, StrictModel
from core.auth import service as auth
from core.db import Database
from core.errors import NotAuthenticated
from core.types import UTCDateTimeIn
from web.deps import ApiPrincipal, AppSettings, DbSession, ObjectId, bearer_token, get_database
from web.routing import TransactionalRoute

router = APIRouter(prefix="/api/v1", tags=["auth"], route_class=TransactionalRoute)


class TokenResponse(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int


class PersonalTokenCreate(StrictModel):
    name: str = Field(min_length=1, max_length=100)
    expires_at: UTCDateTimeIn | None = None


class PersonalTokenRead(BaseModel):
    id: int
    name: str | None
    prefix: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None


class PersonalTokenCreated(PersonalTokenRead):
    token: str = Field(description="Shown once; store it now.")


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


@router.post("/auth/token", response_model=TokenResponse)
def issue_token(
    request: Request,
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
    database: Annotated[Database, Depends(get_database)],
    settings: AppSettings,
) -> TokenResponse:
    """Log in. The slow password check runs outside any transaction: on SQLite a login must
    not hold the process's one writer while argon2 works."""
    address = client_address(request)
    with database.transaction(write=False) as reader:
        candidate = auth.login_candidate(
            reader, settings, email=form.username, client_address=address
        )
    if not auth.password_matches(candidate, form.password):
        with database.transaction() as writer:
            auth.record_login_failure(writer, email=form.username, client_address=address)
        raise NotAuthenticated(auth.BAD_CREDENTIALS, code="bad_credentials")
    assert candidate is not None
    with database.transaction() as writer:
        user = writer.get(User, candidate.id)
        assert user is not None
        auth.complete_login(writer, user=user, password=form.password)
        issued = auth.issue_access_token(writer, settings, user=user)
    return TokenResponse(access_token=issued.token, expires_in=settings.access_token_ttl_s)


@router.post("/auth/logout", status_code=status.HTTP_204_NO_CONTENT)
def logout(request: Request, principal: ApiPrincipal, session: DbSession) -> Response:
    token = bearer_token(request)
    assert token is not None
    auth.revoke_token(session, token=token)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/auth/personal-tokens", response_model=list[PersonalTokenRead])
def list_personal_tokens(principal: ApiPrincipal, session: DbSession) -> list[PersonalTokenRead]:
    return [
        PersonalTokenRead.model_validate(t, from_attributes=True)
        for t in auth.list_personal_tokens(session, user_id=principal.user_id)
    ]


@router.post(
    "/auth/personal-tokens",
    response_model=PersonalTokenCreated,
    status_code=status.HTTP_201_CREATED,
)
def create_personal_token(
    data: PersonalTokenCreate, principal: ApiPrincipal, session: DbSession
) -> PersonalTokenCreated:
    issued = auth.issue_personal_token(
        session, user=principal.user, name=data.name, expires_at=data.expires_at
    )
    return PersonalTokenCreated(
        **PersonalTokenRead.model_validate(issued.record, from_attributes=True).model_dump(),
        token=issued.token,
    )


@router.delete("/auth/personal-tokens/{token_id}", status_code=status.HTTP_204_NO_CONTENT)
def revoke_personal_token(
    token_id: ObjectId, principal: ApiPrincipal, session: DbSession
) -> Response:
    auth.revoke_personal_token(session, user_id=principal.user_id, token_id=token_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/me/password", status_code=status.HTTP_204_NO_CONTENT)
def change_password(data: PasswordChange, principal: ApiPrincipal, session: DbSession) -> Response:
    accounts.change_own_password(
        session, user=principal.user, current=data.current_password, new=data.new_password
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)
