"""Translations for pages: English message ids, a zh-CN catalogue (the default) read from .po.

The catalogue is read with Babel at start-up, so there is no compile step. A message missing
from a catalogue falls back to the English id and is logged once.
"""

from __future__ import annotations

import contextvars
import logging
from functools import lru_cache
from pathlib import Path

from babel.messages.pofile import read_po

log = logging.getLogger("labshare.i18n")

LOCALES = ("zh-CN", "en")
LOCALE_NAMES = {"zh-CN": "中文", "en": "English"}
LOCALE_DIR = Path(__file__).parent / "locale"

current_locale: contextvars.ContextVar[str] = contextvars.ContextVar(
    "current_locale", default="zh-CN"
)
_reported_missing: set[tuple[str, str]] = set()


def _babel_name(locale: str) -> str:
    return locale.replace("-", "_")


@lru_cache
def catalogue(locale: str) -> dict[str, str]:
    """msgid → translation for ``locale`` (empty for English, whose ids are the text).

    Every ``.po`` file of the locale is read (``messages.po`` plus one per area of the site,
    e.g. ``manage.po``), so each area keeps its strings in its own catalogue file.
    """
    translations: dict[str, str] = {}
    for path in sorted((LOCALE_DIR / _babel_name(locale) / "LC_MESSAGES").glob("*.po")):
        with path.open("rb") as handle:
            catalog = read_po(handle, locale=_babel_name(locale))
        translations.update(
            (str(message.id), str(message.string))
            for message in catalog
            if message.id and isinstance(message.id, str) and message.string and not message.fuzzy
        )
    return translations


def gettext(message: str) -> str:
    locale = current_locale.get()
    if locale == "en":
        return message
    translated = catalogue(locale).get(message)
    if translated is None:
        if (locale, message) not in _reported_missing:
            _reported_missing.add((locale, message))
            log.warning("no %s translation for %r; showing English", locale, message)
        return message
    return translated


def ngettext(singular: str, plural: str, n: int) -> str:
    return gettext(singular if n == 1 else plural)


def negotiate(accept_language: str | None) -> str | None:
    """The best of our locales for an Accept-Language header, or None."""
    if not accept_language:
        return None
    ranked: list[tuple[float, str]] = []
    for part in accept_language.split(","):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                quality = 0.0
        ranked.append((quality, tag.strip().lower()))
    for _, tag in sorted(ranked, key=lambda item: -item[0]):
        if tag.startswith("zh"):
            return "zh-CN"
        if tag.startswith("en"):
            return "en"
    return None
