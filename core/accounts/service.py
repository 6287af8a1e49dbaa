"""Creating and changing organisations, users and role assignments.

Invariants: e-mail addresses are unique case-insensitively; an enterprise has a valid credit
code and no two organisations share one; a role takes only the scopes it allows; the platform
always keeps at least one active admin; every change is audited in the same transaction.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, func, select

from core import audit
from core.accounts.models import Organisation, RoleAssignment, User
from core.accounts.rules import (
    LOCALES,
    OrganisationType,
    Role,
    ScopeKind,
    credit_code_problem,
    normalise_credit_code,
    normalise_email,
    scope_problem,
)
from core.accounts.schemas import (
    OrganisationCreate,
    OrganisationUpdate,
    RoleGrant,
    UserCreate,
    UserUpdate,
)
from core.auth.passwords import hash_password, password_problem, verify_password
from core.clock import now
from core.errors import Conflict, NotFound, Problem, RuleViolation, raise_if
from core.places import DISTRICTS, cluster_for_district


def _organisation_problems(values: dict[str, Any]) -> list[Problem]:
    problems: list[Problem] = []
    district = values.get("district")
    if district is not None and district not in DISTRICTS:
        problems.append(Problem("unknown_district", f"Unknown district: {district}.", "district"))
    code = values.get("credit_code")
    if code:
        reason = credit_code_problem(code)
        if reason:
            problems.append(Problem("invalid_credit_code", reason, "credit_code"))
    elif values.get("type") == OrganisationType.ENTERPRISE:
        problems.append(
            Problem(
                "required", "An enterprise needs its unified social credit code.", "credit_code"
            )
        )
    if values.get("is_tech_sme") and values.get("type") != OrganisationType.ENTERPRISE:
        problems.append(
            Problem("not_enterprise", "Only an enterprise can be a tech-based SME.", "is_tech_sme")
        )
    return problems


def _ensure_unique_organisation(
    session: Session, *, name: str, credit_code: str | None, exclude_id: int | None
) -> None:
    same = Organisation.name == name
    if credit_code is not None:
        same = same | (Organisation.credit_code == credit_code)
    query = select(Organisation).where(same)
    if exclude_id is not None:
        query = query.where(Organisation.id != exclude_id)
    clash = session.exec(query).first()
    if clash is not None:
        field = "name" if clash.name == name else "credit_code"
        raise Conflict(
            f"Another organisation already has this {field.replace('_', ' ')}.",
            code="duplicate_organisation",
            problems=[Problem("duplicate", "Already registered.", field)],
        )


def create_organisation(
    session: Session, *, actor_id: int | None, data: OrganisationCreate
) -> Organisation:
    """Register an organisation (university, institute, enterprise, government)."""
    values = data.model_dump()
    if values["credit_code"]:
        values["credit_code"] = normalise_credit_code(values["credit_code"])
    raise_if(_organisation_problems(values))
    if values["cluster"] is None:
        values["cluster"] = cluster_for_district(values["district"])
    _ensure_unique_organisation(
        session, name=values["name"], credit_code=values["credit_code"], exclude_id=None
    )
    organisation = Organisation.model_validate(values)
    session.add(organisation)
    session.flush()
    audit.record(
        session,
        actor_id=actor_id,
        action="organisation.created",
        subject_type="organisation",
        subject_id=organisation.id or 0,
        data={"name": organisation.name, "type": organisation.type},
    )
    return organisation


def update_organisation(
    session: Session, *, actor_id: int | None, organisation_id: int, data: OrganisationUpdate
) -> Organisation:
    """Change an organisation's details; only the fields given change."""
    organisation = get_organisation(session, organisation_id)
    changes = data.model_dump(exclude_unset=True)
    if changes.get("credit_code"):
        changes["credit_code"] = normalise_credit_code(changes["credit_code"])
    merged = organisation.model_dump() | changes
    raise_if(_organisation_problems(merged))
    _ensure_unique_organisation(
        session, name=merged["name"], credit_code=merged["credit_code"], exclude_id=organisation.id
    )
    audit.apply_update(
        session,
        organisation,
        changes,
        actor_id=actor_id,
        action="organisation.updated",
        subject_type="organisation",
    )
    return organisation


def get_organisation(session: Session, organisation_id: int) -> Organisation:
    organisation = session.get(Organisation, organisation_id)
    if organisation is None:
        raise NotFound("Organisation")
    return organisation


def _user_problems(values: dict[str, Any], session: Session) -> list[Problem]:
    problems: list[Problem] = []
    if values.get("locale") is not None and values["locale"] not in LOCALES:
        problems.append(
            Problem("unknown_locale", f"Locale must be one of {', '.join(LOCALES)}.", "locale")
        )
    org_id = values.get("organisation_id")
    if org_id is not None and session.get(Organisation, org_id) is None:
        problems.append(Problem("unknown_organisation", "No such organisation.", "organisation_id"))
    password = values.get("password")
    if password is not None:
        reason = password_problem(password)
        if reason:
            problems.append(Problem("weak_password", reason, "password"))
    return problems


# Scope kinds whose ids a later layer knows how to check (the catalogue registers facilities).
SCOPE_EXISTS: dict[ScopeKind, Callable[[Session, int], bool]] = {
    ScopeKind.ORGANISATION: lambda session, scope_id: (
        session.get(Organisation, scope_id) is not None
    )
}


def _grant_problems(
    session: Session, grants: list[RoleGrant], *, field: str = "roles"
) -> list[Problem]:
    problems = []
    for index, grant in enumerate(grants):
        kind = grant.resolved_scope_kind()
        where = f"{field}.{index}" if field == "roles" else field
        reason = scope_problem(grant.role, kind, grant.scope_id)
        if reason:
            problems.append(Problem("invalid_scope", reason, where))
            continue
        exists = SCOPE_EXISTS.get(kind)
        if (
            grant.scope_id is not None
            and exists is not None
            and not exists(session, grant.scope_id)
        ):
            problems.append(Problem("unknown_scope", f"No {kind} with id {grant.scope_id}.", where))
    return problems


def create_user(session: Session, *, actor_id: int | None, data: UserCreate) -> User:
    """Create a user with its role assignments; a taken e-mail address is a 409."""
    values = data.model_dump(exclude={"roles"})
    values["email"] = normalise_email(values["email"])
    raise_if(_user_problems(values, session) + _grant_problems(session, data.roles))
    taken = Conflict(
        "A user with this e-mail address already exists.",
        code="duplicate_email",
        problems=[Problem("duplicate", "Already registered.", "email")],
    )
    if session.exec(select(User.id).where(User.email == values["email"])).first() is not None:
        raise taken
    password = values.pop("password")
    user = User.model_validate(values)
    user.password_hash = hash_password(password) if password else None
    session.add(user)
    try:
        # A concurrent insert of the same address loses here, inside a savepoint.
        with session.begin_nested():
            session.flush()
    except IntegrityError as exc:
        raise taken from exc
    for grant in data.roles:
        _add_assignment(session, user_id=user.id or 0, grant=grant, actor_id=actor_id)
    audit.record(
        session,
        actor_id=actor_id,
        action="user.created",
        subject_type="user",
        subject_id=user.id or 0,
        data={"email": user.email, "roles": [g.role.value for g in data.roles]},
    )
    return user


def _add_assignment(
    session: Session, *, user_id: int, grant: RoleGrant, actor_id: int | None
) -> RoleAssignment:
    assignment = RoleAssignment(
        user_id=user_id,
        role=grant.role,
        scope_kind=grant.resolved_scope_kind(),
        scope_id=grant.scope_id,
        granted_by_id=actor_id,
    )
    session.add(assignment)
    session.flush()
    return assignment


def update_user(session: Session, *, actor_id: int | None, user_id: int, data: UserUpdate) -> User:
    """Change a user's name, organisation, locale or active flag."""
    user = get_user(session, user_id)
    changes = data.model_dump(exclude_unset=True)
    raise_if(_user_problems(changes, session))
    if changes.get("is_active") is False:
        _ensure_another_admin_remains(session, losing_user_id=user_id)
    audit.apply_update(
        session, user, changes, actor_id=actor_id, action="user.updated", subject_type="user"
    )
    return user


def get_user(session: Session, user_id: int) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise NotFound("User")
    return user


def grant_role(
    session: Session, *, actor_id: int | None, user_id: int, grant: RoleGrant
) -> RoleAssignment:
    """Give a user a role in a scope; granting one it already holds is a 409."""
    get_user(session, user_id)
    raise_if(_grant_problems(session, [grant], field="role"))
    kind = grant.resolved_scope_kind()
    existing = session.exec(
        select(RoleAssignment).where(
            RoleAssignment.user_id == user_id,
            RoleAssignment.role == grant.role,
            RoleAssignment.scope_kind == kind,
            RoleAssignment.scope_id == grant.scope_id,
        )
    ).first()
    if existing is not None:
        raise Conflict("The user already holds this role in this scope.", code="duplicate_role")
    assignment = _add_assignment(session, user_id=user_id, grant=grant, actor_id=actor_id)
    audit.record(
        session,
        actor_id=actor_id,
        action="role.granted",
        subject_type="user",
        subject_id=user_id,
        data={"role": grant.role.value, "scope_kind": kind.value, "scope_id": grant.scope_id},
    )
    return assignment


def revoke_role(
    session: Session, *, actor_id: int | None, user_id: int, assignment_id: int
) -> None:
    """Take a role assignment away; the last active admin keeps theirs (409)."""
    assignment = session.get(RoleAssignment, assignment_id)
    if assignment is None or assignment.user_id != user_id:
        raise NotFound("Role assignment")
    if assignment.role == Role.ADMIN:
        _ensure_another_admin_remains(session, losing_user_id=user_id)
    session.delete(assignment)
    session.flush()
    audit.record(
        session,
        actor_id=actor_id,
        action="role.revoked",
        subject_type="user",
        subject_id=user_id,
        data={
            "role": assignment.role,
            "scope_kind": assignment.scope_kind,
            "scope_id": assignment.scope_id,
        },
    )


def _ensure_another_admin_remains(session: Session, *, losing_user_id: int) -> None:
    others = session.exec(
        select(func.count())
        .select_from(RoleAssignment)
        .join(User, col(User.id) == RoleAssignment.user_id)
        .where(
            RoleAssignment.role == Role.ADMIN,
            RoleAssignment.user_id != losing_user_id,
            col(User.is_active).is_(True),
        )
    ).one()
    is_admin = session.exec(
        select(RoleAssignment.id).where(
            RoleAssignment.user_id == losing_user_id, RoleAssignment.role == Role.ADMIN
        )
    ).first()
    if is_admin is not None and others == 0:
        raise Conflict("The platform must keep at least one active admin.", code="last_admin")


def set_password(session: Session, *, actor_id: int | None, user_id: int, password: str) -> None:
    """Set a user's password (admin or CLI)."""
    reason = password_problem(password)
    if reason:
        raise RuleViolation([Problem("weak_password", reason, "password")])
    user = get_user(session, user_id)
    user.password_hash = hash_password(password)
    user.updated_at = now()
    session.add(user)
    session.flush()
    audit.record(
        session,
        actor_id=actor_id,
        action="user.password_set",
        subject_type="user",
        subject_id=user_id,
    )


def change_own_password(session: Session, *, user: User, current: str, new: str) -> None:
    """A user changes its own password, proving the current one first."""
    problems = []
    if not verify_password(user.password_hash, current):
        problems.append(
            Problem("wrong_password", "The current password is wrong.", "current_password")
        )
    reason = password_problem(new)
    if reason:
        problems.append(Problem("weak_password", reason, "new_password"))
    raise_if(problems)
    assert user.id is not None
    set_password(session, actor_id=user.id, user_id=user.id, password=new)
