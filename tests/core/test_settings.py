"""Settings refuse values the rules cannot work with, at start-up rather than per request."""

import pytest
from pydantic import ValidationError

from core.settings import Settings


@pytest.mark.parametrize("name", ["booking_creations_per_minute", "no_show_suspension_threshold"])
def test_a_negative_booking_limit_is_refused(name: str) -> None:
    with pytest.raises(ValidationError, match=name):
        Settings(**{name: -1})  # type: ignore[arg-type]
    assert getattr(Settings(**{name: 0}), name) == 0  # type: ignore[arg-type]
