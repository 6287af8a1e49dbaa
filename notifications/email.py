"""E-mail: composing a message in the recipient's language and handing it to an SMTP server.

Sending happens only in the worker, never inside a request. A refusal that will not change
(the server refuses the recipient) is permanent; a connection failure or timeout is not.
"""

from __future__ import annotations

import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from core.settings import Settings


class PermanentFailure(Exception):
    """Retrying will not help (e.g. the recipient address is refused)."""


class TemporaryFailure(Exception):
    """Retry later (server down, timeout, 4xx)."""


@dataclass(frozen=True)
class OutgoingMail:
    to: str
    subject: str
    text: str
    html: str
    calendar: str | None = None  # an iCalendar invitation (METHOD:REQUEST or CANCEL)
    calendar_method: str | None = None


def build_message(mail: OutgoingMail, *, sender: str, domain: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = mail.to
    message["Subject"] = mail.subject
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = make_msgid(domain=domain)
    message.set_content(mail.text)
    message.add_alternative(mail.html, subtype="html")
    if mail.calendar is not None:
        # As calendar clients expect: an inline text/calendar part, and the same as a file.
        message.add_alternative(
            mail.calendar, subtype="calendar", params={"method": mail.calendar_method or "REQUEST"}
        )
        message.add_attachment(
            mail.calendar.encode(), maintype="application", subtype="ics", filename="invite.ics"
        )
    return message


class Mailer:
    """One SMTP connection reused for many messages (a worker's batch), opened when first
    needed and reopened after a failure."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.client: smtplib.SMTP | None = None
        # Once the server is unreachable, the rest of the batch waits for the next round
        # instead of each message waiting out its own timeout.
        self.unreachable: str | None = None

    def __enter__(self) -> Mailer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.client is not None:
            try:
                self.client.quit()
            except (OSError, smtplib.SMTPException):
                self.client.close()
            self.client = None

    def _connect(self) -> smtplib.SMTP:
        settings = self.settings
        context = ssl.create_default_context()
        if settings.smtp_security == "tls":
            client: smtplib.SMTP = smtplib.SMTP_SSL(
                settings.smtp_host,
                settings.smtp_port,
                timeout=settings.smtp_timeout_s,
                context=context,
            )
        else:
            client = smtplib.SMTP(
                settings.smtp_host, settings.smtp_port, timeout=settings.smtp_timeout_s
            )
        client.ehlo()
        if settings.smtp_security == "starttls":
            client.starttls(context=context)
            client.ehlo()
        if settings.smtp_username:
            client.login(settings.smtp_username, settings.smtp_password)
        return client

    def send(self, message: EmailMessage) -> None:
        """Hand one message over; PermanentFailure or TemporaryFailure say why not."""
        if self.unreachable is not None:
            raise TemporaryFailure(self.unreachable)
        try:
            if self.client is None:
                self.client = self._connect()
            refused = self.client.send_message(message)
        except smtplib.SMTPRecipientsRefused as exc:
            self._reset()
            raise PermanentFailure(f"recipient refused: {exc.recipients}") from exc
        except smtplib.SMTPResponseException as exc:
            self._reset()
            if 500 <= exc.smtp_code < 600:
                raise PermanentFailure(f"{exc.smtp_code} {exc.smtp_error!r}") from exc
            raise TemporaryFailure(f"{exc.smtp_code} {exc.smtp_error!r}") from exc
        except (OSError, smtplib.SMTPException) as exc:
            self.client = None
            self.unreachable = f"{type(exc).__name__}: {exc}"
            raise TemporaryFailure(self.unreachable) from exc
        if refused:
            raise PermanentFailure(f"refused: {refused}")

    def _reset(self) -> None:
        """After a refusal the connection may be mid-transaction: start the next one clean."""
        if self.client is not None:
            try:
                self.client.rset()
            except (OSError, smtplib.SMTPException):
                self.client.close()
                self.client = None


def send(settings: Settings, message: EmailMessage) -> str:
    """Send one message on a connection of its own; returns the server's answer (the admin's
    test e-mail shows it)."""
    with Mailer(settings) as mailer:
        mailer.send(message)
        assert mailer.client is not None
        try:
            code, answer = mailer.client.noop()
        except (OSError, smtplib.SMTPException) as exc:
            raise TemporaryFailure(f"{type(exc).__name__}: {exc}") from exc
        return f"{code} {answer.decode(errors='replace')}"
