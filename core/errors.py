"""Typed business errors. Each carries its HTTP status and a stable code; ``web`` renders them."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Problem:
    """One broken rule, tied to an input field where there is one."""

    code: str
    message: str
    field: str | None = None
    overridable: bool = False

    def as_dict(self) -> dict[str, object]:
        data: dict[str, object] = {"code": self.code, "message": self.message}
        if self.field is not None:
            data["field"] = self.field
        if self.overridable:
            data["overridable"] = True
        return data


@dataclass(eq=False)
class DomainError(Exception):
    detail: str
    code: str = "bad_request"
    problems: list[Problem] = field(default_factory=list)
    status_code: int = 400
    headers: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.detail


class NotAuthenticated(DomainError):
    def __init__(self, detail: str = "Authentication required.", code: str = "not_authenticated"):
        super().__init__(detail, code, status_code=401, headers={"WWW-Authenticate": "Bearer"})


class NotFound(DomainError):
    """Missing, or not visible to the caller: the two answers are the same on purpose."""

    def __init__(self, what: str = "Object"):
        super().__init__(f"{what} not found.", "not_found", status_code=404)


class PermissionDenied(DomainError):
    def __init__(self, detail: str = "You may not do this.", code: str = "forbidden"):
        super().__init__(detail, code, status_code=403)


class Conflict(DomainError):
    def __init__(self, detail: str, code: str = "conflict", problems: list[Problem] | None = None):
        super().__init__(detail, code, problems or [], status_code=409)


class RuleViolation(DomainError):
    """Input that breaks one or more rules; every problem is listed at once."""

    def __init__(self, problems: list[Problem], detail: str | None = None):
        message = detail or "; ".join(p.message for p in problems) or "Invalid input."
        super().__init__(message, "validation_failed", problems, status_code=422)


class Throttled(DomainError):
    def __init__(self, detail: str, retry_after_s: int, code: str = "throttled"):
        super().__init__(
            detail, code, status_code=429, headers={"Retry-After": str(max(1, retry_after_s))}
        )


def raise_if(problems: list[Problem]) -> None:
    """Raise one :class:`RuleViolation` listing every problem, if there are any."""
    if problems:
        raise RuleViolation(problems)


class ServiceUnavailable(DomainError):
    def __init__(self, detail: str, retry_after_s: int = 1, code: str = "unavailable"):
        super().__init__(
            detail, code, status_code=503, headers={"Retry-After": str(max(1, retry_after_s))}
        )
