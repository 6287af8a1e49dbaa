"""The MIME message a delivery becomes, as a modern mail parser reads it back."""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage

import pytest

from notifications.email import OutgoingMail, build_message

INVITATION = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nMETHOD:CANCEL\r\nEND:VCALENDAR\r\n"


def mail(**changes: object) -> OutgoingMail:
    values: dict[str, object] = {
        "to": "wang@lab.cn",
        "subject": "预约已确认：扫描电镜 2026-12-01 10:00–11:00 (Asia/Shanghai)",
        "text": "仪器: 扫描电镜\n用途: 形貌观察",
        "html": "<p>仪器: 扫描电镜</p>",
    }
    values.update(changes)
    return OutgoingMail(**values)  # type: ignore[arg-type]


def read_back(outgoing: OutgoingMail, sender: str = "共享平台 <noreply@lab.cn>") -> EmailMessage:
    message = build_message(outgoing, sender=sender, domain="lab.cn")
    raw = message.as_bytes()
    assert raw.isascii(), "8-bit clean: every non-ASCII text is encoded"
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    assert not parsed.defects
    return parsed


def test_a_mail_has_its_headers_and_text_and_html_alternatives() -> None:
    parsed = read_back(mail())

    assert parsed["To"] == "wang@lab.cn"
    assert parsed["From"] == "共享平台 <noreply@lab.cn>"
    assert parsed["Subject"] == "预约已确认：扫描电镜 2026-12-01 10:00–11:00 (Asia/Shanghai)"
    assert parsed["Message-ID"].endswith("@lab.cn>")
    assert parsed["Date"]
    assert parsed.get_content_type() == "multipart/alternative"
    plain = parsed.get_body(preferencelist=("plain",))
    html = parsed.get_body(preferencelist=("html",))
    assert plain is not None
    assert plain.get_content() == "仪器: 扫描电镜\n用途: 形貌观察"
    assert html is not None
    assert html.get_content() == "<p>仪器: 扫描电镜</p>"
    assert not list(parsed.iter_attachments())


def test_an_invitation_is_an_inline_calendar_part_and_the_same_as_a_file() -> None:
    parsed = read_back(mail(calendar=INVITATION, calendar_method="CANCEL"))

    assert parsed.get_content_type() == "multipart/mixed"
    (inline,) = [p for p in parsed.walk() if p.get_content_type() == "text/calendar"]
    assert inline.get_param("method") == "CANCEL"
    assert inline.get_payload(decode=True) == INVITATION.encode()
    (attachment,) = parsed.iter_attachments()
    assert attachment.get_filename() == "invite.ics"
    assert attachment.get_payload(decode=True) == INVITATION.encode()
    assert parsed.get_body(preferencelist=("plain",)) is not None


def test_a_line_break_in_the_subject_cannot_add_a_header() -> None:
    parsed = read_back(mail(subject="仪器\r\nBcc: everyone@example.cn"))

    assert "Bcc" not in parsed
    assert "everyone@example.cn" in parsed["Subject"]


@pytest.mark.parametrize("address", ["wang@lab.cn\r\nBcc: everyone@example.cn", "a\n@lab.cn"])
def test_a_line_break_in_an_address_is_refused(address: str) -> None:
    with pytest.raises(ValueError, match="line break"):
        build_message(mail(to=address), sender="noreply@lab.cn", domain="lab.cn")
