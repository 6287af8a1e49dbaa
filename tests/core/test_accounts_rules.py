import pytest

from core.accounts.rules import (
    Role,
    ScopeKind,
    credit_code_check_char,
    credit_code_problem,
    normalise_email,
    scope_problem,
)
from web.demo import make_credit_code


@pytest.mark.parametrize(
    "code",
    [
        "91350100M000100Y43",  # a published example of a valid code
        make_credit_code("500112", "MA5U7K3D"),
    ],
)
def test_valid_credit_codes_pass(code: str) -> None:
    assert credit_code_problem(code) is None


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        ("91350100M000100Y4", "18 characters"),
        ("91350100M000100Y44", "check character"),
        ("91350100M000100YI3", "not allowed"),
        ("91ABCDEFM000100Y43", "administrative division"),
        ("", "18 characters"),
    ],
)
def test_invalid_credit_codes_say_why(code: str, reason: str) -> None:
    problem = credit_code_problem(code)
    assert problem is not None
    assert reason in problem


def test_check_character_uses_the_gb32100_alphabet() -> None:
    assert credit_code_check_char("91350100M000100Y4") == "3"


def test_email_is_unique_case_insensitively() -> None:
    assert normalise_email("  Wang.Xiaoyu@CQU.edu.CN ") == "wang.xiaoyu@cqu.edu.cn"


@pytest.mark.parametrize(
    ("role", "kind", "scope_id", "ok"),
    [
        (Role.RESEARCHER, ScopeKind.PLATFORM, None, True),
        (Role.LAB_MANAGER, ScopeKind.FACILITY, 3, True),
        (Role.LAB_MANAGER, ScopeKind.PLATFORM, None, False),
        (Role.LAB_MANAGER, ScopeKind.FACILITY, None, False),
        (Role.FINANCE, ScopeKind.PLATFORM, None, True),
        (Role.FINANCE, ScopeKind.ORGANISATION, 1, True),
        (Role.PLANNER, ScopeKind.ORGANISATION, 1, False),
        (Role.ADMIN, ScopeKind.PLATFORM, 5, False),
    ],
)
def test_each_role_takes_only_its_scopes(
    role: Role, kind: ScopeKind, scope_id: int | None, ok: bool
) -> None:
    assert (scope_problem(role, kind, scope_id) is None) is ok
