"""Pure rules of delivery: who hears of which event, in which words, and when to retry.

Invariants owned here: each event goes once to each recipient on each channel (the delivery
table's unique key enforces it); optional e-mails respect the recipient's preference; a failed
attempt waits longer each time (exponential backoff with a ceiling); a permanent refusal (an
invalid address) is not retried.
"""

from __future__ import annotations

from datetime import timedelta

# Topic → (zh-CN subject, English subject). {instrument} and {start} are filled in.
SUBJECTS: dict[str, dict[str, str]] = {
    "booking.requested": {"zh-CN": "预约申请待审核：{instrument}", "en": "Booking request to approve: {instrument}"},
    "booking.confirmed": {"zh-CN": "预约已确认：{instrument} {start}", "en": "Booking confirmed: {instrument} {start}"},
    "booking.rejected": {"zh-CN": "预约未通过：{instrument}", "en": "Booking rejected: {instrument}"},
    "booking.cancelled": {"zh-CN": "预约已取消：{instrument} {start}", "en": "Booking cancelled: {instrument} {start}"},
    "booking.rescheduled": {"zh-CN": "预约已改期：{instrument} {start}", "en": "Booking moved: {instrument} {start}"},
    "booking.expired": {"zh-CN": "预约申请已过期：{instrument}", "en": "Booking request expired: {instrument}"},
    "booking.no_show": {"zh-CN": "爽约记录：{instrument} {start}", "en": "Recorded as a no-show: {instrument} {start}"},
    "booking.flagged": {"zh-CN": "预约受停机影响：{instrument} {start}", "en": "Booking affected by an outage: {instrument} {start}"},
    "booking.handed_over": {"zh-CN": "预约已转交：{instrument} {start}", "en": "Booking handed over: {instrument} {start}"},
    "booking.reminder": {"zh-CN": "预约提醒：{instrument} {start}", "en": "Reminder: {instrument} {start}"},
    "waitlist.offered": {"zh-CN": "候补机时可预约：{instrument} {start}", "en": "Waitlist offer: {instrument} {start}"},
    "service_request.submitted": {"zh-CN": "新的送样申请", "en": "New sample service request"},
    "service_request.accepted": {"zh-CN": "送样申请已受理", "en": "Sample service request accepted"},
    "service_request.rejected": {"zh-CN": "送样申请未受理", "en": "Sample service request rejected"},
    "service_request.reported": {"zh-CN": "检测报告已出具", "en": "Test report ready"},
}  # fmt: skip

# Topics whose e-mail a user may turn off; the rest (decisions about their bookings) always go.
OPTIONAL_EMAIL_TOPICS = frozenset(
    {"booking.reminder", "booking.requested", "service_request.submitted"}
)
# Topics a booking's facility managers hear of, besides the booker.
MANAGER_TOPICS = frozenset({"booking.requested", "service_request.submitted"})
# Topics whose e-mail carries a calendar invitation, and with which method.
INVITATION_METHOD = {
    "booking.confirmed": "REQUEST",
    "booking.rescheduled": "REQUEST",
    "booking.cancelled": "CANCEL",
    "booking.rejected": "CANCEL",
    "booking.expired": "CANCEL",
}
# Topics that only concern the facility's own systems (webhooks), not people.
NOT_FOR_PEOPLE = frozenset({"booking.checked_in", "booking.completed", "booking.moved",
                            "booking.offer_expired", "service_request.in_progress", "service_request.completed"})  # fmt: skip

BACKOFF_BASE = timedelta(seconds=30)
BACKOFF_CEILING = timedelta(hours=1)


def backoff(attempts: int) -> timedelta:
    """How long to wait after the ``attempts``-th failure: 30 s, 1 min, 2 min … at most 1 h."""
    return min(BACKOFF_BASE * 2 ** max(0, attempts - 1), BACKOFF_CEILING)


def subject_template(topic: str, locale: str) -> tuple[str, bool]:
    """The subject template in ``locale``; falls back to the other language (second: fell back)."""
    texts = SUBJECTS.get(topic, {})
    if locale in texts:
        return texts[locale], False
    for other in ("zh-CN", "en"):
        if other in texts:
            return texts[other], True
    return topic, True


def wants_email(topic: str, preferences: dict[str, bool]) -> bool:
    """Whether a recipient gets this topic's e-mail, given its switched-off topics."""
    if topic not in OPTIONAL_EMAIL_TOPICS:
        return True
    return preferences.get(topic, True)


def for_people(topic: str) -> bool:
    return topic not in NOT_FOR_PEOPLE


def link_path(topic: str, payload: dict[str, object], *, for_booker: bool) -> str:
    """The page an e-mail links to: the booker's booking or request, or the managers' list."""
    booking_id = payload.get("booking_id")
    if isinstance(booking_id, int):
        return f"/my/bookings/{booking_id}" if for_booker else "/manage/approvals"
    request_id = payload.get("service_request_id")
    if isinstance(request_id, int):
        return (
            f"/my/service-requests/{request_id}"
            if for_booker
            else f"/manage/service-requests/{request_id}"
        )
    return "/notifications"
