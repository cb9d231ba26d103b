"""The report's language: translated sentences (gettext catalogues) and numbers written for it.

Messages are written in English in the code, marked with `_()` (or `ngettext()` when they
count), and translated by the catalogue `analysis/locale/<lang>/LC_MESSAGES/foodlab.po`,
compiled to the `.mo` next to it (`make messages`; a test checks the `.mo` is current).
Another language is another catalogue. Numbers use the language's decimal symbol from the
CLDR data Babel ships, so the digits are the same in every language.

The language is a context variable: `with use_language("id"): render_report(...)` makes
every `_()` and every number below it Indonesian, in this thread or task only.
"""

from __future__ import annotations

import gettext
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from babel.numbers import get_decimal_symbol

from core.errors import InvalidInput

DOMAIN = "foodlab"
LOCALE_DIR = Path(__file__).parent / "locale"
LANGUAGES = {"en": "English", "id": "Bahasa Indonesia"}


@dataclass(frozen=True)
class Language:
    code: str
    translations: gettext.NullTranslations
    decimal_symbol: str


@cache
def language(code: str) -> Language:
    if code not in LANGUAGES:
        raise InvalidInput(
            f"lang: unknown language {code!r}; allowed: {', '.join(LANGUAGES)}", "lang"
        )
    translations = (
        gettext.NullTranslations()  # the messages are English
        if code == "en"
        else gettext.translation(DOMAIN, LOCALE_DIR, languages=[code])
    )
    return Language(code, translations, get_decimal_symbol(code))


_active: ContextVar[Language | None] = ContextVar("report_language", default=None)


def current() -> Language:
    return _active.get() or language("en")


@contextmanager
def use_language(code: str) -> Iterator[Language]:
    token = _active.set(language(code))
    try:
        yield current()
    finally:
        _active.reset(token)


def _(message: str) -> str:
    return current().translations.gettext(message)


def ngettext(singular: str, plural: str, count: int) -> str:
    return current().translations.ngettext(singular, plural, count)


def number(value: float, spec: str) -> str:
    """`format(value, spec)` with the language's decimal symbol ('0,963' in Indonesian)."""
    return format(value, spec).replace(".", current().decimal_symbol)


def N_(message: str) -> str:  # noqa: N802 - the gettext convention
    """Marks a message for the catalogue where it is defined; `_()` translates it where shown."""
    return message
