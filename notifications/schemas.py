"""API shapes of calendar feeds."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from core.accounts.schemas import StrictModel
from notifications.models import FeedKind


class CalendarFeedCreate(StrictModel):
    kind: FeedKind
    subject_id: int | None = Field(
        default=None,
        description="The instrument's or facility's id; a user feed is always the caller's own.",
    )


class CalendarFeedRead(BaseModel):
    id: int
    kind: FeedKind
    subject_id: int
    full_details: bool = Field(description="False: busy times only, nobody's name or purpose.")
    url: str = Field(description="webcal:// link for calendar apps; the token is the only key.")
    https_url: str = Field(description="The same feed over the site's own scheme.")
    created_at: datetime
