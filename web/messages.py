"""Messages from the domain layers that pages show, marked here so Babel extracts them.

Domains speak English (they may not depend on the web layer's translations); pages pass the
message through the catalogue when they show it.
"""

from __future__ import annotations


def N_(message: str) -> str:
    return message


DOMAIN_MESSAGES = [
    N_("The current password is wrong."),
    N_("A password needs at least 10 characters."),
    N_("A password has at most 256 characters."),
    N_("Incorrect e-mail address or password."),
    N_("Too many failed logins. Try again later."),
    N_("The form's security token is missing or expired. Reload the page and try again."),
    N_("The form's security token is missing or expired."),
    N_("Authentication required."),
    N_("You may not do this."),
    N_("Internal error. It has been logged."),
    N_("A value is outside the range the platform accepts."),
    N_("not found"),
    N_("method not allowed"),
    N_("researcher"),
    N_("lab_manager"),
    N_("finance"),
    N_("planner"),
    N_("admin"),
    N_("organisation"),
    N_("facility"),
    N_("booking.requested"),
    N_("booking.confirmed"),
    N_("booking.rejected"),
    N_("booking.cancelled"),
    N_("booking.rescheduled"),
    N_("booking.expired"),
    N_("booking.no_show"),
    N_("booking.flagged"),
    N_("booking.handed_over"),
    N_("booking.reminder"),
    N_("waitlist.offered"),
    N_("service_request.submitted"),
    N_("service_request.accepted"),
    N_("service_request.rejected"),
    N_("service_request.reported"),
]
