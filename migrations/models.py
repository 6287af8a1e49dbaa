"""Every table module, imported so that autogenerate sees the whole schema."""

from typing import Any

import instruments.models  # noqa: F401

# Indexes a migration adds for one engine only; autogenerate leaves them alone.
DIALECT_SPECIFIC_INDEXES = frozenset({"ix_instrument_search_text_trgm"})


def include_object(
    obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    return not (type_ == "index" and name in DIALECT_SPECIFIC_INDEXES)
