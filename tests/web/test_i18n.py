"""Every page string has a Chinese translation; a missing one shows English and is logged."""

import logging
import uuid
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.pofile import read_po

from web import i18n

REPO_ROOT = Path(__file__).resolve().parents[2]


def extracted_message_ids() -> dict[str, str]:
    """msgid → where it was found, extracted as `pybabel extract -F babel.cfg -k _ -k N_` does."""
    with (REPO_ROOT / "babel.cfg").open() as config:
        method_map, options_map = parse_mapping_cfg(config)
    found: dict[str, str] = {}
    for filename, lineno, message, _comments, _context in extract_from_dir(
        str(REPO_ROOT), method_map, options_map, keywords={"_": None, "N_": None}
    ):
        for msgid in message if isinstance(message, tuple) else (message,):
            if msgid:
                found.setdefault(msgid, f"{filename}:{lineno}")
    return found


def test_extraction_finds_the_messages_of_code_and_templates() -> None:
    found = extracted_message_ids()

    assert found["Incorrect e-mail address or password."].startswith("web/")
    assert found["Welcome, %(name)s"].startswith("web/templates/home.html")
    assert len(found) > 40


def test_every_message_has_a_chinese_translation() -> None:
    catalogue = i18n.catalogue("zh-CN")

    missing = {
        msgid: where
        for msgid, where in extracted_message_ids().items()
        if not catalogue.get(msgid, "").strip()
    }

    assert missing == {}, "translate these in a .po file under web/locale/zh_CN/LC_MESSAGES/"


def test_a_translated_message_is_shown_in_chinese() -> None:
    token = i18n.current_locale.set("zh-CN")
    try:
        assert i18n.gettext("Log in") == "登录"
    finally:
        i18n.current_locale.reset(token)


def test_a_missing_translation_falls_back_to_english_and_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    message = f"An untranslated message {uuid.uuid4().hex}"
    token = i18n.current_locale.set("zh-CN")
    try:
        with caplog.at_level(logging.WARNING, logger="labshare.i18n"):
            shown = i18n.gettext(message)
    finally:
        i18n.current_locale.reset(token)

    assert shown == message
    assert [r.name for r in caplog.records if message in r.getMessage()] == ["labshare.i18n"]


def test_a_message_has_one_translation_in_every_catalogue() -> None:
    """Each area keeps its own .po file; the same English id must read the same everywhere
    (the merged catalogue would otherwise show whichever file loaded last)."""
    translations: dict[str, dict[str, list[str]]] = {}
    for path in sorted((i18n.LOCALE_DIR / "zh_CN" / "LC_MESSAGES").glob("*.po")):
        with path.open("rb") as handle:
            for message in read_po(handle, locale="zh_CN"):
                if message.id and isinstance(message.id, str) and message.string:
                    translations.setdefault(message.id, {}).setdefault(
                        str(message.string), []
                    ).append(path.name)

    differing = {msgid: found for msgid, found in translations.items() if len(found) > 1}

    assert differing == {}
