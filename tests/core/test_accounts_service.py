import pytest
from sqlmodel import Session, select

from core import audit
from core.accounts import service
from core.accounts.models import User
from core.accounts.rules import OrganisationType, Role, ScopeKind
from core.accounts.schemas import OrganisationUpdate, RoleGrant, UserUpdate
from core.errors import Conflict, NotFound, RuleViolation
from core.places import Cluster
from tests.factories import make_organisation, make_user


def test_an_organisation_gets_its_cluster_from_its_district(session: Session) -> None:
    organisation = make_organisation(session, district="两江新区")
    assert organisation.cluster == Cluster.LIANGJIANG
    explicit = make_organisation(session, district="北碚区", cluster=Cluster.LIANGJIANG)
    assert explicit.cluster == Cluster.LIANGJIANG


def test_an_enterprise_needs_a_valid_credit_code_and_every_problem_is_listed(
    session: Session,
) -> None:
    with pytest.raises(RuleViolation) as missing:
        make_organisation(session, type=OrganisationType.ENTERPRISE, credit_code=None)
    assert [p.field for p in missing.value.problems] == ["credit_code"]

    with pytest.raises(RuleViolation) as several:
        make_organisation(
            session,
            type=OrganisationType.ENTERPRISE,
            credit_code="91350100M000100Y44",
            district="火星区",
        )
    assert {p.code for p in several.value.problems} == {"invalid_credit_code", "unknown_district"}


def test_two_organisations_cannot_share_a_credit_code(session: Session) -> None:
    first = make_organisation(session, type=OrganisationType.ENTERPRISE)
    with pytest.raises(Conflict):
        make_organisation(
            session, type=OrganisationType.ENTERPRISE, credit_code=first.credit_code.lower()
        )


def test_update_changes_only_given_fields_and_is_audited(session: Session) -> None:
    organisation = make_organisation(session, is_sme=False)
    service.update_organisation(
        session,
        actor_id=None,
        organisation_id=organisation.id,
        data=OrganisationUpdate(controlling_group="渝新控股集团"),
    )
    assert organisation.controlling_group == "渝新控股集团"
    assert organisation.district == "沙坪坝区"
    entries, _ = audit.list_entries(
        session, subject_type="organisation", action="organisation.updated"
    )
    assert entries[0].data == {"changed": ["controlling_group"]}


def test_email_addresses_are_unique_whatever_their_case(session: Session) -> None:
    make_user(session, email="Wang@Example.cn")
    with pytest.raises(Conflict) as clash:
        make_user(session, email="wang@EXAMPLE.cn")
    assert clash.value.code == "duplicate_email"
    assert session.exec(select(User).where(User.email == "wang@example.cn")).one()


def test_a_user_gets_roles_in_their_scopes(session: Session) -> None:
    organisation = make_organisation(session)
    user = make_user(
        session,
        roles=[
            Role.RESEARCHER,
            RoleGrant(
                role=Role.FINANCE, scope_kind=ScopeKind.ORGANISATION, scope_id=organisation.id
            ),
        ],
    )
    from core.auth.principal import load_principal

    principal = load_principal(session, user)
    assert principal.roles == {Role.RESEARCHER, Role.FINANCE}
    assert principal.handles_finance_of(organisation.id)
    assert not principal.handles_finance_of(organisation.id + 1)
    assert not principal.has_platform_finance


def test_a_role_in_an_unknown_organisation_is_refused(session: Session) -> None:
    with pytest.raises(RuleViolation) as refused:
        make_user(
            session,
            roles=[RoleGrant(role=Role.FINANCE, scope_kind=ScopeKind.ORGANISATION, scope_id=99999)],
        )
    assert refused.value.problems[0].code == "unknown_scope"


def test_granting_a_held_role_again_is_a_conflict(session: Session) -> None:
    user = make_user(session, roles=[Role.PLANNER])
    with pytest.raises(Conflict):
        service.grant_role(
            session, actor_id=None, user_id=user.id, grant=RoleGrant(role=Role.PLANNER)
        )


def test_the_last_admin_cannot_lose_the_role_or_be_deactivated(session: Session) -> None:
    # Any admin already in the database (none in a fresh test database) would make this pass.
    admin = make_user(session, roles=[Role.ADMIN])
    from core.accounts.queries import assignments_by_user

    assignment = assignments_by_user(session, [admin.id])[admin.id][0]
    others = session.exec(select(User)).all()
    assert len([u for u in others if u.id != admin.id]) == 0
    with pytest.raises(Conflict) as last:
        service.revoke_role(session, actor_id=None, user_id=admin.id, assignment_id=assignment.id)
    assert last.value.code == "last_admin"
    with pytest.raises(Conflict):
        service.update_user(
            session, actor_id=None, user_id=admin.id, data=UserUpdate(is_active=False)
        )

    make_user(session, roles=[Role.ADMIN])
    service.revoke_role(session, actor_id=None, user_id=admin.id, assignment_id=assignment.id)


def test_changing_ones_password_needs_the_current_one(session: Session) -> None:
    user = make_user(session)
    with pytest.raises(RuleViolation) as refused:
        service.change_own_password(session, user=user, current="wrong password", new="short")
    assert {p.field for p in refused.value.problems} == {"current_password", "new_password"}


def test_every_change_is_audited_with_its_actor(session: Session) -> None:
    admin = make_user(session, roles=[Role.ADMIN])
    user = make_user(session)
    service.update_user(session, actor_id=admin.id, user_id=user.id, data=UserUpdate(name="新名字"))
    entries, total = audit.list_entries(session, actor_id=admin.id)
    assert total == 1
    assert entries[0].action == "user.updated"
    assert entries[0].subject_id == str(user.id)


def test_a_missing_user_is_not_found(session: Session) -> None:
    with pytest.raises(NotFound):
        service.get_user(session, 123456)
