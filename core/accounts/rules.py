"""Pure rules about accounts: credit codes, e-mail addresses, which scope each role takes."""

from __future__ import annotations

from enum import StrEnum

# GB 32100-2015: the unified social credit code (统一社会信用代码) alphabet omits I, O, Z, S, V.
CREDIT_CODE_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
CREDIT_CODE_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)


class OrganisationType(StrEnum):
    UNIVERSITY = "university"
    INSTITUTE = "institute"
    ENTERPRISE = "enterprise"
    GOVERNMENT = "government"


class Role(StrEnum):
    RESEARCHER = "researcher"
    LAB_MANAGER = "lab_manager"
    FINANCE = "finance"
    PLANNER = "planner"
    ADMIN = "admin"


class ScopeKind(StrEnum):
    PLATFORM = "platform"
    ORGANISATION = "organisation"
    FACILITY = "facility"


ALLOWED_SCOPES: dict[Role, frozenset[ScopeKind]] = {
    Role.RESEARCHER: frozenset({ScopeKind.PLATFORM}),
    Role.LAB_MANAGER: frozenset({ScopeKind.FACILITY}),
    Role.FINANCE: frozenset({ScopeKind.PLATFORM, ScopeKind.ORGANISATION}),
    Role.PLANNER: frozenset({ScopeKind.PLATFORM}),
    Role.ADMIN: frozenset({ScopeKind.PLATFORM}),
}

LOCALES = ("zh-CN", "en")


def credit_code_check_char(first17: str) -> str:
    """The 18th character of a credit code, computed from the first 17 (GB 32100-2015)."""
    total = sum(
        CREDIT_CODE_ALPHABET.index(ch) * w
        for ch, w in zip(first17, CREDIT_CODE_WEIGHTS, strict=True)
    )
    return CREDIT_CODE_ALPHABET[(31 - total % 31) % 31]


def credit_code_problem(code: str) -> str | None:
    """Why ``code`` is not a valid unified social credit code, or None when it is."""
    if len(code) != 18:
        return "A unified social credit code has 18 characters."
    bad = sorted({ch for ch in code if ch not in CREDIT_CODE_ALPHABET})
    if bad:
        return f"Characters not allowed in a credit code: {''.join(bad)}."
    if not code[2:8].isdigit():
        return "Characters 3 to 8 of a credit code are the administrative division code (digits)."
    if credit_code_check_char(code[:17]) != code[17]:
        return "The check character (the 18th) does not match the rest of the credit code."
    return None


def normalise_credit_code(code: str) -> str:
    return code.strip().upper()


def normalise_email(email: str) -> str:
    """E-mail addresses are unique case-insensitively; we store them lower-cased."""
    return email.strip().lower()


def scope_problem(role: Role, scope_kind: ScopeKind, scope_id: int | None) -> str | None:
    if scope_kind not in ALLOWED_SCOPES[role]:
        allowed = ", ".join(sorted(ALLOWED_SCOPES[role]))
        return f"Role {role} takes a scope of: {allowed}."
    if scope_kind is ScopeKind.PLATFORM and scope_id is not None:
        return "A platform-wide role has no scope id."
    if scope_kind is not ScopeKind.PLATFORM and scope_id is None:
        return f"A role scoped to a {scope_kind} needs the {scope_kind}'s id."
    return None
