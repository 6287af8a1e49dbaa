"""Who is calling and what their role assignments let them do.

Every object-level check goes through a :class:`Principal`: a lab manager manages *its*
facilities only, finance may be platform-wide or one organisation's, planner and admin are
platform-wide. Routes never compare role strings themselves.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlmodel import Session, select

from core.accounts.models import RoleAssignment, User
from core.accounts.rules import Role, ScopeKind
from core.errors import PermissionDenied


@dataclass(frozen=True)
class Principal:
    user: User
    assignments: tuple[RoleAssignment, ...]

    @property
    def user_id(self) -> int:
        assert self.user.id is not None
        return self.user.id

    @property
    def roles(self) -> frozenset[Role]:
        return frozenset(Role(a.role) for a in self.assignments)

    def has_role(self, *roles: Role) -> bool:
        return any(role in self.roles for role in roles)

    @property
    def is_admin(self) -> bool:
        return Role.ADMIN in self.roles

    def _scope_ids(self, role: Role, kind: ScopeKind) -> frozenset[int]:
        return frozenset(
            a.scope_id
            for a in self.assignments
            if a.role == role and a.scope_kind == kind and a.scope_id is not None
        )

    @property
    def managed_facility_ids(self) -> frozenset[int]:
        return self._scope_ids(Role.LAB_MANAGER, ScopeKind.FACILITY)

    def manages_facility(self, facility_id: int) -> bool:
        return self.is_admin or facility_id in self.managed_facility_ids

    @property
    def has_platform_finance(self) -> bool:
        return any(
            a.role == Role.FINANCE and a.scope_kind == ScopeKind.PLATFORM for a in self.assignments
        )

    def handles_finance_of(self, organisation_id: int) -> bool:
        return self.has_platform_finance or organisation_id in self._scope_ids(
            Role.FINANCE, ScopeKind.ORGANISATION
        )

    @property
    def reads_everything(self) -> bool:
        """Planners and admins read every facility's figures."""
        return self.has_role(Role.ADMIN, Role.PLANNER)

    def require_role(self, *roles: Role, action: str = "do this") -> None:
        """Raise 403 unless the caller holds one of ``roles``."""
        if not self.has_role(*roles):
            names = " or ".join(roles)
            raise PermissionDenied(f"Only a user with the role {names} may {action}.")

    def require_admin(self, action: str = "do this") -> None:
        self.require_role(Role.ADMIN, action=action)


def load_principal(session: Session, user: User) -> Principal:
    assignments = session.exec(
        select(RoleAssignment).where(RoleAssignment.user_id == user.id).order_by(RoleAssignment.id)  # type: ignore[arg-type]
    ).all()
    return Principal(user=user, assignments=tuple(assignments))


def roles_of(assignments: Iterable[RoleAssignment]) -> list[dict[str, object]]:
    return [
        {"role": a.role, "scope_kind": a.scope_kind, "scope_id": a.scope_id} for a in assignments
    ]
