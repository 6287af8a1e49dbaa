"""Calendar feeds: manage subscriptions (/api/v1/calendar-feeds) and serve them (/calendar/...).

The feed itself needs no login: its token is the key. A poll whose If-None-Match names the
current ETag, or whose If-Modified-Since date is not before the feed's last change, is
answered 304 from one aggregate query, without building the calendar.
"""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any

from fastapi import APIRouter, Header, Response, status

from notifications import feeds
from notifications.models import CalendarFeed
from notifications.schemas import CalendarFeedCreate, CalendarFeedRead
from web.api.schemas import Paginated
from web.deps import ApiPrincipal, AppSettings, DbSession, ObjectId
from web.routing import TransactionalRoute

router = APIRouter(tags=["calendar"], route_class=TransactionalRoute)

CALENDAR_TYPE = "text/calendar; charset=utf-8"
# Subscribers may keep a copy but must ask again (cheaply, with the ETag) before using it; a
# feed that names people must not sit in shared caches.
CACHE_CONTROL = "private, no-cache"


class CalendarFeedList(Paginated[CalendarFeedRead]):
    """A page of the caller's calendar feeds."""


def feed_read(feed: CalendarFeed, settings: AppSettings) -> CalendarFeedRead:
    url, https_url = feeds.feed_urls(settings.base_url, feed.token)
    return CalendarFeedRead(
        id=feed.id or 0,
        kind=feed.kind,
        subject_id=feed.subject_id,
        full_details=feed.full_details,
        url=url,
        https_url=https_url,
        created_at=feed.created_at,
    )


def http_date(value: str | None) -> datetime | None:
    """An If-Modified-Since date; None when absent or not a date (the header is then ignored)."""
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """RFC 9110 weak comparison against an If-None-Match list (or ``*``)."""
    if not if_none_match:
        return False
    candidates = [c.strip() for c in if_none_match.split(",")]
    return any(c == "*" or c.removeprefix("W/") == etag for c in candidates)


@router.get(
    "/calendar/{token}.ics",
    response_class=Response,
    responses={200: {"content": {"text/calendar": {}}}, 304: {"description": "Not modified"}},
)
def calendar_feed(
    token: str,
    session: DbSession,
    settings: AppSettings,
    if_none_match: str | None = Header(default=None),
    if_modified_since: str | None = Header(default=None),
) -> Response:
    """A calendar feed (iCalendar, METHOD:PUBLISH); 404 for an unknown or revoked token.
    A poll with the current ETag (If-None-Match), or without one but with an If-Modified-Since
    date the feed has not changed since, is answered 304 without building the calendar."""
    subscription = feeds.subscription(session, token=token)
    state = feeds.feed_state(session, subscription)
    headers = {"ETag": state.etag, "Cache-Control": CACHE_CONTROL}
    if state.last_modified_header is not None:
        headers["Last-Modified"] = format_datetime(state.last_modified_header, usegmt=True)
    if if_none_match is not None:  # RFC 9110 §13.1.3: the date is then not looked at
        not_modified = etag_matches(if_none_match, state.etag)
    else:
        since = http_date(if_modified_since)
        not_modified = since is not None and state.unchanged_since(since)
    if not_modified:
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=headers)
    body = feeds.render_feed(session, subscription, host=feeds.calendar_host(settings.base_url))
    return Response(body, media_type=CALENDAR_TYPE, headers=headers)


@router.post(
    "/api/v1/calendar-feeds",
    response_model=CalendarFeedRead,
    status_code=status.HTTP_201_CREATED,
)
def create_calendar_feed(
    data: CalendarFeedCreate, principal: ApiPrincipal, session: DbSession, settings: AppSettings
) -> Any:
    """Subscribe to your bookings (`user`), an instrument's or a facility's; busy times only
    unless you manage that facility."""
    feed = feeds.create_feed(session, actor=principal, kind=data.kind, subject_id=data.subject_id)
    return feed_read(feed, settings)


@router.get("/api/v1/calendar-feeds", response_model=CalendarFeedList)
def list_calendar_feeds(principal: ApiPrincipal, session: DbSession, settings: AppSettings) -> Any:
    """Your live calendar feeds."""
    items = [feed_read(f, settings) for f in feeds.list_feeds(session, actor=principal)]
    return CalendarFeedList(items=items, total=len(items))


@router.delete("/api/v1/calendar-feeds/{feed_id}", status_code=status.HTTP_204_NO_CONTENT)
def revoke_calendar_feed(
    feed_id: ObjectId, principal: ApiPrincipal, session: DbSession
) -> Response:
    """Turn a feed off; its link answers 404 from now on."""
    feeds.revoke_feed(session, actor=principal, feed_id=feed_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/api/v1/calendar-feeds/{feed_id}/regenerate", response_model=CalendarFeedRead)
def regenerate_calendar_feed(
    feed_id: ObjectId, principal: ApiPrincipal, session: DbSession, settings: AppSettings
) -> Any:
    """A new link for the feed; the old one answers 404 from now on."""
    feed = feeds.regenerate_feed(session, actor=principal, feed_id=feed_id)
    return feed_read(feed, settings)
