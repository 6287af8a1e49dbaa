"""The notification centre and the e-mail settings pages."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response
from sqlmodel import col, func, select

from notifications import rules
from notifications import service as notifications
from notifications.models import Notification, NotificationPreference
from web.deps import DbSession
from web.pages.deps import CsrfChecked, PagePrincipal
from web.routing import TransactionalRoute
from web.templating import render

router = APIRouter(route_class=TransactionalRoute, include_in_schema=False)
PAGE_SIZE = 50


@router.get("/notifications")
def notification_centre(request: Request, principal: PagePrincipal, session: DbSession) -> Response:
    notices = session.exec(
        select(Notification)
        .where(Notification.user_id == principal.user_id)
        .order_by(col(Notification.id).desc())
        .limit(PAGE_SIZE)
    ).all()
    unread = session.exec(
        select(func.count())
        .select_from(Notification)
        .where(Notification.user_id == principal.user_id, col(Notification.read_at).is_(None))
    ).one()
    return render(request, "notifications.html", {"notices": notices, "unread": unread})


@router.post("/notifications/read")
def mark_read(
    request: Request,
    _csrf: CsrfChecked,
    principal: PagePrincipal,
    session: DbSession,
    notification_id: Annotated[int | None, Form()] = None,
) -> Response:
    notifications.mark_read(session, user_id=principal.user_id, notification_id=notification_id)
    return RedirectResponse("/notifications", status_code=303)


@router.get("/account/notifications")
def email_settings(request: Request, principal: PagePrincipal, session: DbSession) -> Response:
    chosen = {
        p.topic: p.email
        for p in session.exec(
            select(NotificationPreference).where(
                NotificationPreference.user_id == principal.user_id
            )
        ).all()
    }
    topics = [(topic, chosen.get(topic, True)) for topic in sorted(rules.OPTIONAL_EMAIL_TOPICS)]
    return render(request, "email_settings.html", {"topics": topics})


@router.post("/account/notifications")
async def save_email_settings(
    request: Request, _csrf: CsrfChecked, principal: PagePrincipal, session: DbSession
) -> Response:
    form = await request.form()
    wanted = set(form.getlist("email"))
    for topic in rules.OPTIONAL_EMAIL_TOPICS:
        notifications.set_email_preference(
            session, user_id=principal.user_id, topic=topic, email_on=topic in wanted
        )
    return RedirectResponse("/account/notifications?saved=1", status_code=303)
