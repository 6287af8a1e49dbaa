"""E-mail: composing a message in the recipient's language and handing it to an SMTP server.

Sending happens only in the worker, never inside a request. A refusal that will not change
(the server refuses the recipient) is permanent; a connection failure or timeout is not.
"""

from __future__ import annotations

import smtplib
import ssl
from dataclasses import dataclass
from email.header import Header
from email.message import Message
from email.mime.application import MIMEApplication
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import formataddr, formatdate, make_msgid, parseaddr
from functools import lru_cache

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


def build_message(mail: OutgoingMail, *, sender: str, domain: str) -> Message:
    """The MIME message: plain text and HTML as alternatives (and the invitation as a third,
    plus the same as an .ics file). Built with the classic ``email.mime`` classes: the worker
    builds one per mail, and they cost a quarter of ``EmailMessage``'s header parsing."""
    for address in (sender, mail.to):
        if "\r" in address or "\n" in address:
            raise ValueError(f"a line break in an e-mail address: {address!r}")
    body = MIMEMultipart("alternative")
    body.attach(MIMEText(mail.text, "plain", "utf-8"))
    body.attach(MIMEText(mail.html, "html", "utf-8"))
    message: Message = body
    if mail.calendar is not None:
        # As calendar clients expect: an inline text/calendar part, and the same as a file.
        inline = MIMEText(mail.calendar, "calendar", "utf-8")
        inline.set_param("method", mail.calendar_method or "REQUEST")
        body.attach(inline)
        attached = MIMEApplication(mail.calendar.encode(), "ics")
        attached.add_header("Content-Disposition", "attachment", filename="invite.ics")
        message = MIMEMultipart("mixed", _subparts=[body, attached])
    message["From"] = _sender_header(sender)
    message["To"] = mail.to
    # Encoded words (RFC 2047): a subject may hold Chinese, or a line break from a name. The
    # classic API takes a Header here (typeshed only knows str).
    message["Subject"] = Header(mail.subject, "utf-8")  # type: ignore[assignment]
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = make_msgid(domain=domain)
    return message


@lru_cache(maxsize=8)
def _sender_header(sender: str) -> str:
    """``Name <address>`` with a non-ASCII name encoded (RFC 2047)."""
    return formataddr(parseaddr(sender), charset="utf-8")


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
        # Only for TLS: building a context loads the system's certificates (milliseconds).
        context = ssl.create_default_context() if settings.smtp_security != "none" else None
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

    def send(self, message: Message) -> None:
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


def send(settings: Settings, message: Message) -> str:
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
