"""Admin pages: organisations, users, roles, failed notifications and the audit log.

Every page here is for admins only (403 for others, the login page for strangers). The pages
call the same services as the admin API (``core.accounts.service``, ``core.audit``,
``notifications.service``); they parse forms, show the services' problems next to the fields
and redirect (303) after a change.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Annotated, Any, TypeVar
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import BaseModel, ValidationError
from sqlmodel import Session, col, func, select

from core import audit
from core.accounts import queries as account_queries
from core.accounts import service as accounts
from core.accounts.models import Organisation, User
from core.accounts.rules import LOCALES, OrganisationType, Role, ScopeKind
from core.accounts.schemas import (
    OrganisationCreate,
    OrganisationUpdate,
    RoleGrant,
    UserCreate,
    UserUpdate,
)
from core.auth.principal import Principal
from core.errors import DomainError, PermissionDenied
from core.events import OutboxEvent
from core.places import DISTRICTS, Cluster, cluster_for_district
from instruments import queries as instrument_queries
from notifications import service as notifications
from notifications.models import Delivery, DeliveryStatus
from web.deps import DbSession, ObjectId
from web.i18n import LOCALE_NAMES
from web.messages import N_
from web.pages.deps import CsrfChecked, PagePrincipal, parse_id
from web.pages.form_keys import answered, claim_form, form_action, new_form_key, unclaim
from web.routing import TransactionalRoute
from web.templating import render

router = APIRouter(route_class=TransactionalRoute, include_in_schema=False)

PAGE_SIZE = 50
# Choice lists (organisations, facilities) in forms show at most this many entries.
CHOICE_LIMIT = 500
# "Retry all" puts back at most this many parked deliveries per click.
RETRY_ALL_LIMIT = 500
# A generated password travels to the next page view in this cookie, then is forgotten.
NEW_PASSWORD_COOKIE = "labshare_new_password"

ORGANISATION_TYPES = {
    OrganisationType.UNIVERSITY: N_("University"),
    OrganisationType.INSTITUTE: N_("Research institute"),
    OrganisationType.ENTERPRISE: N_("Enterprise"),
    OrganisationType.GOVERNMENT: N_("Government"),
}
CLUSTERS = {
    Cluster.WESTERN_SCIENCE_CITY: N_("Western (Chongqing) Science City"),
    Cluster.LIANGJIANG: N_("Liangjiang Collaborative Innovation Zone"),
    Cluster.GUANGYANG_BAY: N_("Guangyang Bay Smart Innovation Eco-City"),
    Cluster.OTHER: N_("Other"),
}
ROLES = {
    Role.RESEARCHER: N_("Researcher"),
    Role.LAB_MANAGER: N_("Lab manager"),
    Role.FINANCE: N_("Finance"),
    Role.PLANNER: N_("Planner"),
    Role.ADMIN: N_("Administrator"),
}
SCOPE_KINDS = {
    ScopeKind.PLATFORM: N_("Platform-wide"),
    ScopeKind.ORGANISATION: N_("Organisation"),
    ScopeKind.FACILITY: N_("Facility"),
}

# Event topics and channels of a delivery, in words (notifications.rules names the topics).
TOPIC_LABELS = {
    "booking.requested": N_("Booking requested"),
    "booking.confirmed": N_("Booking confirmed"),
    "booking.rejected": N_("Booking rejected"),
    "booking.cancelled": N_("Booking cancelled"),
    "booking.rescheduled": N_("Booking rescheduled"),
    "booking.moved": N_("Booking moved by the facility"),
    "booking.expired": N_("Booking request expired"),
    "booking.no_show": N_("No-show recorded"),
    "booking.flagged": N_("Booking affected by an outage"),
    "booking.handed_over": N_("Booking handed over"),
    "booking.reminder": N_("Booking reminder"),
    "booking.checked_in": N_("Booking checked in"),
    "booking.completed": N_("Booking completed"),
    "booking.offer_expired": N_("Waitlist offer expired"),
    "waitlist.offered": N_("Waitlist offer"),
    "service_request.submitted": N_("Sample request submitted"),
    "service_request.accepted": N_("Sample request accepted"),
    "service_request.rejected": N_("Sample request rejected"),
    "service_request.in_progress": N_("Sample request in testing"),
    "service_request.completed": N_("Sample request completed"),
    "service_request.reported": N_("Test report ready"),
}
CHANNEL_LABELS = {
    "email": N_("E-mail"),
    "in_app": N_("In the app"),
    "webhook": N_("Webhook"),
}

# Messages of the services that these pages show as they are (they carry no values).
SHOWN_AS_IS = {
    N_("Already registered."),
    N_("An enterprise needs its unified social credit code."),
    N_("Only an enterprise can be a tech-based SME."),
    N_("A unified social credit code has 18 characters."),
    N_("Characters 3 to 8 of a credit code are the administrative division code (digits)."),
    N_("The check character (the 18th) does not match the rest of the credit code."),
    N_("No such organisation."),
    N_("A password needs at least 10 characters."),
    N_("A password has at most 256 characters."),
    N_("A platform-wide role has no scope id."),
    N_("The user already holds this role in this scope."),
    N_("The platform must keep at least one active admin."),
    N_("Only a failed delivery is retried."),
    N_("This form was already sent."),
}
# Messages built with values are shown as a translated message chosen by the problem's code.
BY_CODE = {
    "invalid_credit_code": N_(
        "Characters not allowed in a credit code (I, O, Z, S and V are never used)."
    ),
    "unknown_district": N_("Choose one of Chongqing's districts."),
    "unknown_locale": N_("Choose one of the languages."),
    "invalid_scope": N_("This role does not take this scope."),
    "unknown_scope": N_("The chosen scope does not exist."),
}
# Pydantic's error types, in words.
BY_VALIDATION_TYPE = {
    "missing": N_("This field is required."),
    "string_too_short": N_("This field is required."),
    "string_too_long": N_("This is too long."),
    "enum": N_("Choose one of the options."),
    "int_parsing": N_("Choose one of the options."),
    "bool_parsing": N_("Choose one of the options."),
}
INVALID_VALUE = N_("This value is not accepted.")
INVALID_EMAIL = N_("This is not a valid e-mail address.")


async def admin_principal(principal: PagePrincipal) -> Principal:
    if not principal.is_admin:
        raise PermissionDenied(N_("Only an administrator may open this page."))
    return principal


AdminPrincipal = Annotated[Principal, Depends(admin_principal)]


async def _posted_fields(request: Request) -> dict[str, str]:
    """The form's text fields (a field sent twice keeps its last value)."""
    form = await request.form()
    return {key: value for key, value in form.multi_items() if isinstance(value, str)}


PostedFields = Annotated[dict[str, str], Depends(_posted_fields)]
PageNumber = Annotated[int, Query(ge=1, le=1_000_000)]
Errors = dict[str, str | list[str]]
SchemaT = TypeVar("SchemaT", bound=BaseModel)


# ---- errors in words, next to their fields -------------------------------------------------


def domain_errors(exc: DomainError) -> Errors:
    """A service's problems as ``field → message id``; messages with values chosen by code."""
    errors: Errors = {}
    general: list[str] = []
    for problem in exc.problems:
        if problem.message in SHOWN_AS_IS:
            message = problem.message
        else:
            message = BY_CODE.get(problem.code, INVALID_VALUE)
        if problem.field and problem.field not in errors:
            errors[problem.field] = message
        elif not problem.field:
            general.append(message)
    if not exc.problems:
        general.append(exc.detail if exc.detail in SHOWN_AS_IS else INVALID_VALUE)
    if general:
        errors[""] = general
    return errors


def validation_errors(exc: ValidationError) -> Errors:
    errors: Errors = {}
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else ""
        if field == "email":
            message = INVALID_EMAIL
        else:
            message = BY_VALIDATION_TYPE.get(error["type"], INVALID_VALUE)
        if field not in errors:
            errors[field] = message if field else [message]
    return errors


class FormInvalid(Exception):
    def __init__(self, errors: Errors, status_code: int) -> None:
        self.errors = errors
        self.status_code = status_code


def _parse(schema: type[SchemaT], values: Mapping[str, Any]) -> SchemaT:
    try:
        return schema.model_validate(dict(values))
    except ValidationError as exc:
        raise FormInvalid(validation_errors(exc), 422) from exc


# ---- paging and form keys ----------------------------------------------------------------


def pager(path: str, page: int, total: int, filters: Mapping[str, Any]) -> dict[str, Any]:
    """Links to the previous and next pages, keeping the filters."""
    kept = {k: v for k, v in filters.items() if v not in (None, "")}
    pages = max(1, -(-total // PAGE_SIZE))

    def link(number: int) -> str:
        return f"{path}?{urlencode({**kept, 'page': number})}"

    return {
        "page": page,
        "pages": pages,
        "total": total,
        "previous": link(page - 1) if page > 1 else None,
        "next": link(page + 1) if page < pages else None,
    }


def _offset(page: int) -> int:
    return (page - 1) * PAGE_SIZE


def _blank_to_none(values: Mapping[str, str], *names: str) -> dict[str, Any]:
    out: dict[str, Any] = dict(values)
    for name in names:
        if not (out.get(name) or "").strip():
            out[name] = None
    return out


def _checked(values: Mapping[str, str], name: str) -> bool:
    return values.get(name) in ("on", "true", "1")


# ---- page reads ------------------------------------------------------------------------


def organisations_by_id(session: Session, ids: set[int]) -> dict[int, Organisation]:
    if not ids:
        return {}
    rows = session.exec(select(Organisation).where(col(Organisation.id).in_(ids))).all()
    return {row.id: row for row in rows if row.id is not None}


def users_by_id(session: Session, ids: set[int]) -> dict[int, User]:
    if not ids:
        return {}
    rows = session.exec(select(User).where(col(User.id).in_(ids))).all()
    return {row.id: row for row in rows if row.id is not None}


def failed_deliveries(
    session: Session, *, offset: int, limit: int
) -> tuple[list[tuple[Delivery, str]], int]:
    """Parked deliveries with their event's topic, newest first, and how many there are."""
    where = Delivery.status == DeliveryStatus.FAILED
    total = session.exec(select(func.count()).select_from(Delivery).where(where)).one()
    rows = session.exec(
        select(Delivery, OutboxEvent.topic)
        .join(OutboxEvent, col(OutboxEvent.id) == Delivery.event_id)
        .where(where)
        .order_by(col(Delivery.id).desc())
        .offset(offset)
        .limit(limit)
    ).all()
    return [(delivery, topic) for delivery, topic in rows], int(total)


def failed_delivery_ids(session: Session, *, limit: int) -> list[int]:
    return [
        int(i)
        for i in session.exec(
            select(Delivery.id)
            .where(Delivery.status == DeliveryStatus.FAILED)
            .order_by(col(Delivery.id))
            .limit(limit)
        ).all()
        if i is not None
    ]


def organisation_choices(session: Session) -> list[tuple[str, str]]:
    rows, _total = account_queries.list_organisations(session, limit=CHOICE_LIMIT)
    return [(str(o.id), o.name) for o in rows]


# ---- overview --------------------------------------------------------------------------


@router.get("/admin")
def overview(request: Request, principal: AdminPrincipal, session: DbSession) -> Response:
    _orgs, organisations = account_queries.list_organisations(session, limit=0)
    _users, users = account_queries.list_users(session, limit=0)
    _active, active_users = account_queries.list_users(session, is_active=True, limit=0)
    _failed, failed = failed_deliveries(session, offset=0, limit=0)
    _entries, entries = audit.list_entries(session, limit=0)
    counts = {
        "organisations": organisations,
        "users": users,
        "active_users": active_users,
        "failed_deliveries": failed,
        "audit_entries": entries,
    }
    return render(request, "admin/overview.html", {"counts": counts})


# ---- organisations -----------------------------------------------------------------------


def _organisation_form(
    request: Request,
    *,
    values: Mapping[str, Any],
    errors: Errors,
    organisation: Organisation | None = None,
    status_code: int = 200,
) -> Response:
    return render(
        request,
        "admin/organisation_form.html",
        {
            "organisation": organisation,
            "values": values,
            "errors": errors,
            "type_options": [(t.value, label) for t, label in ORGANISATION_TYPES.items()],
            "type_labels": ORGANISATION_TYPES,
            "cluster_options": [(c.value, label) for c, label in CLUSTERS.items()],
            "districts": DISTRICTS,
        },
        status_code=status_code,
    )


def _organisation_values(fields: Mapping[str, str]) -> dict[str, Any]:
    values = _blank_to_none(
        fields, "name_en", "credit_code", "cluster", "controlling_group", "type", "district"
    )
    values["is_sme"] = _checked(fields, "is_sme")
    values["is_tech_sme"] = _checked(fields, "is_tech_sme")
    return values


ORGANISATION_FIELDS = (
    "name", "name_en", "type", "credit_code", "is_sme", "is_tech_sme", "district", "cluster",
    "controlling_group",
)  # fmt: skip


@router.get("/admin/organisations")
def organisation_list(
    request: Request,
    principal: AdminPrincipal,
    session: DbSession,
    q: Annotated[str, Query(max_length=100)] = "",
    page: PageNumber = 1,
) -> Response:
    rows, total = account_queries.list_organisations(
        session, q=q or None, offset=_offset(page), limit=PAGE_SIZE
    )
    return render(
        request,
        "admin/organisations.html",
        {
            "organisations": rows,
            "q": q,
            "pager": pager("/admin/organisations", page, total, {"q": q}),
            "type_labels": ORGANISATION_TYPES,
            "cluster_labels": CLUSTERS,
        },
    )


@router.get("/admin/organisations/new")
def new_organisation(request: Request, principal: AdminPrincipal) -> Response:
    values = {"type": OrganisationType.UNIVERSITY.value, "form_key": new_form_key()}
    return _organisation_form(request, values=values, errors={})


@router.post("/admin/organisations")
def create_organisation(
    request: Request,
    _csrf: CsrfChecked,
    principal: AdminPrincipal,
    session: DbSession,
    fields: PostedFields,
) -> Response:
    claimed, earlier = claim_form(
        session,
        user_id=principal.user_id,
        form_key=fields.get("form_key", ""),
        action=form_action("admin:organisation", fields),
    )
    if earlier:
        return RedirectResponse(earlier, status_code=303)
    values = _organisation_values(fields)
    try:
        data = _parse(OrganisationCreate, {k: values.get(k) for k in ORGANISATION_FIELDS})
        organisation = accounts.create_organisation(session, actor_id=principal.user_id, data=data)
    except FormInvalid as invalid:
        unclaim(session, claimed)
        return _organisation_form(
            request, values=values, errors=invalid.errors, status_code=invalid.status_code
        )
    except DomainError as exc:
        unclaim(session, claimed)
        return _organisation_form(
            request, values=values, errors=domain_errors(exc), status_code=exc.status_code
        )
    location = answered(session, claimed, f"/admin/organisations/{organisation.id}?saved=1")
    return RedirectResponse(location, status_code=303)


@router.get("/admin/organisations/{organisation_id}")
def organisation_page(
    request: Request, organisation_id: ObjectId, principal: AdminPrincipal, session: DbSession
) -> Response:
    organisation = accounts.get_organisation(session, organisation_id)
    values = organisation.model_dump(include=set(ORGANISATION_FIELDS))
    return _organisation_form(request, values=values, errors={}, organisation=organisation)


@router.post("/admin/organisations/{organisation_id}")
def update_organisation(
    request: Request,
    organisation_id: ObjectId,
    _csrf: CsrfChecked,
    principal: AdminPrincipal,
    session: DbSession,
    fields: PostedFields,
) -> Response:
    organisation = accounts.get_organisation(session, organisation_id)
    values = _organisation_values(fields)
    values["type"] = organisation.type  # the type is fixed once registered
    changes = {k: values.get(k) for k in ORGANISATION_FIELDS if k != "type"}
    if changes["cluster"] is None and changes["district"]:
        changes["cluster"] = cluster_for_district(str(changes["district"]))
    try:
        data = _parse(OrganisationUpdate, changes)
        accounts.update_organisation(
            session, actor_id=principal.user_id, organisation_id=organisation_id, data=data
        )
    except FormInvalid as invalid:
        return _organisation_form(
            request,
            values=values,
            errors=invalid.errors,
            organisation=organisation,
            status_code=invalid.status_code,
        )
    except DomainError as exc:
        session.rollback()
        return _organisation_form(
            request,
            values=values,
            errors=domain_errors(exc),
            organisation=accounts.get_organisation(session, organisation_id),
            status_code=exc.status_code,
        )
    return RedirectResponse(f"/admin/organisations/{organisation_id}?saved=1", status_code=303)


# ---- users -----------------------------------------------------------------------------


def _user_choices(session: Session) -> dict[str, Any]:
    return {
        "organisation_options": [("", N_("No organisation")), *organisation_choices(session)],
        "locale_options": [(code, LOCALE_NAMES[code]) for code in LOCALES],
        "role_labels": ROLES,
    }


@router.get("/admin/users")
def user_list(
    request: Request,
    principal: AdminPrincipal,
    session: DbSession,
    q: Annotated[str, Query(max_length=100)] = "",
    organisation_id: Annotated[str, Query(max_length=20)] = "",
    role: Annotated[str, Query(max_length=20)] = "",
    page: PageNumber = 1,
) -> Response:
    chosen_org = parse_id(organisation_id)
    chosen_role = Role(role) if role in Role.__members__.values() else None
    rows, total = account_queries.list_users(
        session,
        q=q or None,
        organisation_id=chosen_org,
        role=chosen_role,
        offset=_offset(page),
        limit=PAGE_SIZE,
    )
    user_ids = [u.id for u in rows if u.id is not None]
    roles = account_queries.assignments_by_user(session, user_ids)
    organisations = organisations_by_id(
        session, {u.organisation_id for u in rows if u.organisation_id is not None}
    )
    filters = {"q": q, "organisation_id": organisation_id, "role": role}
    return render(
        request,
        "admin/users.html",
        {
            "users": rows,
            "roles": roles,
            "organisations": organisations,
            "values": filters,
            "pager": pager("/admin/users", page, total, filters),
            "role_options": [
                ("", N_("Any role")),
                *((r.value, label) for r, label in ROLES.items()),
            ],
            "filter_organisations": [("", N_("Any organisation")), *organisation_choices(session)],
            "role_labels": ROLES,
        },
    )


INITIAL_ROLES = (Role.RESEARCHER, Role.FINANCE, Role.PLANNER, Role.ADMIN)


def _new_user_form(
    request: Request, session: Session, *, values: Mapping[str, Any], errors: Errors,
    status_code: int = 200,
) -> Response:  # fmt: skip
    return render(
        request,
        "admin/user_new.html",
        {
            "values": values,
            "errors": errors,
            "initial_role_options": [
                ("", N_("No role")),
                *((r.value, ROLES[r]) for r in INITIAL_ROLES),
            ],
            **_user_choices(session),
        },
        status_code=status_code,
    )


@router.get("/admin/users/new")
def new_user(request: Request, principal: AdminPrincipal, session: DbSession) -> Response:
    values = {"locale": "zh-CN", "role": Role.RESEARCHER.value, "form_key": new_form_key()}
    return _new_user_form(request, session, values=values, errors={})


def _show_password_once(request: Request, response: Response, user_id: int, password: str) -> None:
    """Hand a generated password to the user's page, which shows it once and forgets it."""
    response.set_cookie(
        NEW_PASSWORD_COOKIE,
        password,
        max_age=300,
        path=f"/admin/users/{user_id}",
        httponly=True,
        secure=request.app.state.settings.cookie_secure,
        samesite="strict",
    )


@router.post("/admin/users")
def create_user(
    request: Request,
    _csrf: CsrfChecked,
    principal: AdminPrincipal,
    session: DbSession,
    fields: PostedFields,
) -> Response:
    claimed, earlier = claim_form(
        session,
        user_id=principal.user_id,
        form_key=fields.get("form_key", ""),
        action=form_action("admin:user", fields),
    )
    if earlier:
        return RedirectResponse(earlier, status_code=303)
    values = _blank_to_none(fields, "organisation_id", "password", "role")
    shown = {k: v for k, v in fields.items() if k != "password"}
    generated = None if values["password"] else secrets.token_urlsafe(12)
    role = values["role"]
    try:
        if role is not None and role not in {r.value for r in INITIAL_ROLES}:
            raise FormInvalid({"role": BY_VALIDATION_TYPE["enum"]}, 422)
        _check_organisation_id(values["organisation_id"])
        data = _parse(
            UserCreate,
            {
                "email": values.get("email") or "",
                "name": values.get("name") or "",
                "organisation_id": values["organisation_id"],
                "locale": values.get("locale") or "zh-CN",
                "password": values["password"] or generated,
                "roles": [{"role": role}] if role else [],
            },
        )
        user = accounts.create_user(session, actor_id=principal.user_id, data=data)
    except FormInvalid as invalid:
        unclaim(session, claimed)
        return _new_user_form(
            request, session, values=shown, errors=invalid.errors, status_code=invalid.status_code
        )
    except DomainError as exc:
        unclaim(session, claimed)
        return _new_user_form(
            request, session, values=shown, errors=domain_errors(exc), status_code=exc.status_code
        )
    assert user.id is not None
    location = answered(session, claimed, f"/admin/users/{user.id}?created=1")
    response = RedirectResponse(location, status_code=303)
    if generated:
        _show_password_once(request, response, user.id, generated)
    return response


def _user_page(
    request: Request,
    session: Session,
    user: User,
    *,
    values: Mapping[str, Any] | None = None,
    errors: Errors | None = None,
    role_errors: Errors | None = None,
    role_values: Mapping[str, str] | None = None,
    password_errors: Errors | None = None,
    status_code: int = 200,
) -> Response:
    assert user.id is not None
    assignments = account_queries.assignments_by_user(session, [user.id]).get(user.id, [])
    organisations, _total = account_queries.list_organisations(session, limit=CHOICE_LIMIT)
    facilities, _count = instrument_queries.list_facilities(session, limit=CHOICE_LIMIT)
    organisation_names = {o.id: o.name for o in organisations}
    facility_names = {f.id: f.name for f in facilities}
    missing_orgs = {
        a.scope_id for a in assignments
        if a.scope_kind == ScopeKind.ORGANISATION and a.scope_id not in organisation_names
    }  # fmt: skip
    if user.organisation_id is not None and user.organisation_id not in organisation_names:
        missing_orgs.add(user.organisation_id)
    organisation_names |= {
        i: o.name for i, o in organisations_by_id(session, {i for i in missing_orgs if i}).items()
    }
    missing_facilities = {
        a.scope_id for a in assignments
        if a.scope_kind == ScopeKind.FACILITY and a.scope_id not in facility_names
    }  # fmt: skip
    if missing_facilities:
        more, _n = instrument_queries.list_facilities(
            session, ids=[i for i in missing_facilities if i], include_inactive=True
        )
        facility_names |= {f.id: f.name for f in more}
    password = request.cookies.get(NEW_PASSWORD_COOKIE)
    response = render(
        request,
        "admin/user.html",
        {
            "subject": user,
            "assignments": assignments,
            "organisation_name": organisation_names.get(user.organisation_id or 0),
            "organisation_names": organisation_names,
            "facility_names": facility_names,
            "values": values if values is not None else _user_values(user),
            "errors": errors or {},
            "role_errors": role_errors or {},
            "role_values": role_values or {},
            "password_errors": password_errors or {},
            "new_password": password,
            "grant_roles": [(r.value, ROLES[r]) for r in Role],
            "scope_organisations": organisations,
            "scope_facilities": facilities,
            "scope_kinds": SCOPE_KINDS,
            **_user_choices(session),
        },
        status_code=status_code,
        headers={"Cache-Control": "no-store"},
    )
    if password:
        response.delete_cookie(NEW_PASSWORD_COOKIE, path=f"/admin/users/{user.id}")
    return response


def _user_values(user: User) -> dict[str, Any]:
    return {
        "name": user.name,
        "locale": user.locale,
        "organisation_id": user.organisation_id or "",
        "is_active": user.is_active,
    }


@router.get("/admin/users/{user_id}")
def user_page(
    request: Request, user_id: ObjectId, principal: AdminPrincipal, session: DbSession
) -> Response:
    return _user_page(request, session, accounts.get_user(session, user_id))


@router.post("/admin/users/{user_id}")
def update_user(
    request: Request,
    user_id: ObjectId,
    _csrf: CsrfChecked,
    principal: AdminPrincipal,
    session: DbSession,
    fields: PostedFields,
) -> Response:
    user = accounts.get_user(session, user_id)
    values = _blank_to_none(fields, "organisation_id")
    values["is_active"] = _checked(fields, "is_active")
    try:
        _check_organisation_id(values["organisation_id"])
        data = _parse(
            UserUpdate,
            {
                "name": values.get("name") or "",
                "locale": values.get("locale") or "",
                "organisation_id": values["organisation_id"],
                "is_active": values["is_active"],
            },
        )
        accounts.update_user(session, actor_id=principal.user_id, user_id=user_id, data=data)
    except FormInvalid as invalid:
        return _user_page(
            request, session, user, values=values, errors=invalid.errors,
            status_code=invalid.status_code,
        )  # fmt: skip
    except DomainError as exc:
        session.rollback()
        return _user_page(
            request, session, accounts.get_user(session, user_id), values=values,
            errors=domain_errors(exc), status_code=exc.status_code,
        )  # fmt: skip
    return RedirectResponse(f"/admin/users/{user_id}?saved=1", status_code=303)


def _check_organisation_id(organisation_id: str | None) -> None:
    """A posted organisation is one of the choices: an id a database can hold, or none."""
    if organisation_id is not None and parse_id(organisation_id) is None:
        raise FormInvalid({"organisation_id": BY_VALIDATION_TYPE["enum"]}, 422)


def _grant_from(fields: Mapping[str, str]) -> RoleGrant:
    """The role form's scope reads ``platform``, ``organisation:<id>`` or ``facility:<id>``."""
    kind, _sep, scope_id = (fields.get("scope") or "platform").partition(":")
    if scope_id and parse_id(scope_id) is None:
        raise FormInvalid({"scope": BY_VALIDATION_TYPE["enum"]}, 422)
    return _parse(
        RoleGrant,
        {
            "role": fields.get("role") or None,
            "scope_kind": kind if kind in ScopeKind.__members__.values() else "?",
            "scope_id": scope_id or None,
        },
    )


@router.post("/admin/users/{user_id}/roles")
def grant_role(
    request: Request,
    user_id: ObjectId,
    _csrf: CsrfChecked,
    principal: AdminPrincipal,
    session: DbSession,
    fields: PostedFields,
) -> Response:
    user = accounts.get_user(session, user_id)
    try:
        grant = _grant_from(fields)
        accounts.grant_role(session, actor_id=principal.user_id, user_id=user_id, grant=grant)
    except FormInvalid as invalid:
        errors = {("role" if k != "role" else k): v for k, v in invalid.errors.items()}
        return _user_page(
            request, session, user, role_errors=errors, role_values=fields,
            status_code=invalid.status_code,
        )  # fmt: skip
    except DomainError as exc:
        session.rollback()
        errors = domain_errors(exc)
        return _user_page(
            request, session, accounts.get_user(session, user_id),
            role_errors={"role": errors.get("role") or errors.get("") or INVALID_VALUE},
            role_values=fields,
            status_code=exc.status_code,
        )  # fmt: skip
    return RedirectResponse(f"/admin/users/{user_id}?granted=1", status_code=303)


@router.post("/admin/users/{user_id}/roles/{assignment_id}/revoke")
def revoke_role(
    user_id: ObjectId,
    assignment_id: ObjectId,
    _csrf: CsrfChecked,
    principal: AdminPrincipal,
    session: DbSession,
) -> Response:
    accounts.revoke_role(
        session, actor_id=principal.user_id, user_id=user_id, assignment_id=assignment_id
    )
    return RedirectResponse(f"/admin/users/{user_id}?revoked=1", status_code=303)


@router.post("/admin/users/{user_id}/password")
def set_password(
    request: Request,
    user_id: ObjectId,
    _csrf: CsrfChecked,
    principal: AdminPrincipal,
    session: DbSession,
    fields: PostedFields,
) -> Response:
    user = accounts.get_user(session, user_id)
    chosen = fields.get("password") or ""
    password = chosen or secrets.token_urlsafe(12)
    try:
        accounts.set_password(
            session, actor_id=principal.user_id, user_id=user_id, password=password
        )
    except DomainError as exc:
        return _user_page(
            request, session, user, password_errors=domain_errors(exc),
            status_code=exc.status_code,
        )  # fmt: skip
    response = RedirectResponse(f"/admin/users/{user_id}?password=1", status_code=303)
    if not chosen:
        _show_password_once(request, response, user_id, password)
    return response


# ---- failed notifications ------------------------------------------------------------------


@router.get("/admin/deliveries")
def delivery_list(
    request: Request, principal: AdminPrincipal, session: DbSession, page: PageNumber = 1
) -> Response:
    rows, total = failed_deliveries(session, offset=_offset(page), limit=PAGE_SIZE)
    return render(
        request,
        "admin/deliveries.html",
        {
            "deliveries": rows,
            "pager": pager("/admin/deliveries", page, total, {}),
            "topic_labels": TOPIC_LABELS,
            "channel_labels": CHANNEL_LABELS,
        },
    )


@router.post("/admin/deliveries/{delivery_id}/retry")
def retry_delivery(
    delivery_id: ObjectId, _csrf: CsrfChecked, principal: AdminPrincipal, session: DbSession
) -> Response:
    notifications.retry_failed(session, actor_id=principal.user_id, delivery_id=delivery_id)
    return RedirectResponse("/admin/deliveries?retried=1", status_code=303)


@router.post("/admin/deliveries/retry-all")
def retry_all_deliveries(
    _csrf: CsrfChecked, principal: AdminPrincipal, session: DbSession
) -> Response:
    ids = failed_delivery_ids(session, limit=RETRY_ALL_LIMIT)
    for delivery_id in ids:
        notifications.retry_failed(session, actor_id=principal.user_id, delivery_id=delivery_id)
    return RedirectResponse(f"/admin/deliveries?retried={len(ids)}", status_code=303)


# ---- audit log ---------------------------------------------------------------------------


@router.get("/admin/audit")
def audit_log(
    request: Request,
    principal: AdminPrincipal,
    session: DbSession,
    subject_type: Annotated[str, Query(max_length=40)] = "",
    subject_id: Annotated[str, Query(max_length=40)] = "",
    actor: Annotated[str, Query(max_length=254)] = "",
    action: Annotated[str, Query(max_length=80)] = "",
    page: PageNumber = 1,
) -> Response:
    actor_id: int | None = None
    errors: Errors = {}
    if actor:
        actor_id = _actor_id(session, actor)
        if actor_id is None:
            errors["actor"] = N_("No user with this e-mail address or id.")
    filters = {
        "subject_type": subject_type, "subject_id": subject_id, "actor": actor, "action": action,
    }  # fmt: skip
    rows: list[audit.AuditEntry] = []
    total = 0
    if not errors:
        rows, total = audit.list_entries(
            session, actor_id=actor_id, action=action or None, subject_type=subject_type or None,
            subject_id=subject_id or None, offset=_offset(page), limit=PAGE_SIZE,
        )  # fmt: skip
    actors = users_by_id(session, {e.actor_id for e in rows if e.actor_id is not None})
    return render(
        request,
        "admin/audit.html",
        {
            "entries": rows,
            "actors": actors,
            "values": filters,
            "errors": errors,
            "pager": pager("/admin/audit", page, total, filters),
        },
        status_code=422 if errors else 200,
    )


def _actor_id(session: Session, actor: str) -> int | None:
    """The audit filter takes a user's id or e-mail address."""
    if (chosen := parse_id(actor)) is not None:
        return chosen
    found = session.exec(select(User.id).where(User.email == actor.strip().lower())).first()
    return int(found) if found is not None else None
