"""Every table module, imported so that autogenerate sees the whole schema."""

import importlib
from typing import Any

# Each module registers its tables on SQLModel.metadata when imported.
TABLE_MODULES = (
    "core.accounts.models",
    "core.auth.models",
    "core.audit",
    "core.events",
    "core.platform",
    "instruments.models",
    "booking.models",
    "notifications.models",
    "reports.models",  # indexes only, on booking tables
)
for module in TABLE_MODULES:
    importlib.import_module(module)

# Indexes a migration adds for one engine only; autogenerate leaves them alone.
DIALECT_SPECIFIC_INDEXES = frozenset({"ix_instrument_search_text_trgm"})


def include_object(
    obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    return not (type_ == "index" and name in DIALECT_SPECIFIC_INDEXES)
