"""Languages of the web page: Danish, Norwegian bokmål and English. Texts live in gettext
catalogues under locale/ (the .po files are the source; the compiled .mo files are committed
next to them so a fresh clone works, and a test checks they match). Dates and numbers are
formatted by Babel for the chosen locale."""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import NamedTuple
from zoneinfo import ZoneInfo

from babel import dates, numbers
from babel.support import NullTranslations, Translations

from opspor_shared.events import ExplanationData
from opspor_shared.wording import RuleSpec, describe_finding, describe_rule

LOCALE_DIR = Path(__file__).parent / "locale"
DOMAIN = "messages"
# Language code -> its own name, as the switch shows it.
LANGUAGES: dict[str, str] = {"da": "Dansk", "nb": "Norsk bokmål", "en": "English"}
DEFAULT_LANGUAGE = "da"
# Browsers send "no" or "nn" for Norwegian more often than "nb"; bokmål is what we have.
ALIASES = {"no": "nb", "nn": "nb"}


@functools.cache
def translations(language: str) -> NullTranslations:
    return Translations.load(str(LOCALE_DIR), [language], domain=DOMAIN)


def negotiate(chosen: str | None, accept_language: str | None) -> str:
    """The user's choice when made, else the best of the browser's languages we have."""
    if chosen in LANGUAGES:
        return chosen
    weighted: list[tuple[float, int, str]] = []
    for position, part in enumerate((accept_language or "").split(",")[:20]):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                continue
        primary = tag.strip().lower().split("-")[0]
        code = ALIASES.get(primary, primary)
        if code in LANGUAGES and quality > 0:
            weighted.append((-quality, position, code))
    return min(weighted)[2] if weighted else DEFAULT_LANGUAGE


class Described(NamedTuple):
    rule: str
    finding: str


class Formatter:
    """What templates need for one request: translated texts and locale-aware dates, with
    times shown in the school's (or municipality's) time zone."""

    def __init__(self, language: str, timezone: str = "Europe/Copenhagen") -> None:
        self.language = language
        self.tz = ZoneInfo(timezone)
        self._t = translations(language)
        self.gettext: Callable[[str], str] = self._t.gettext
        self.ngettext: Callable[[str, str, int], str] = self._t.ngettext

    def label(self, kind: str, key: str) -> str:
        """A code (level, category, role) in words; unknown codes, such as a level a
        municipality made up, show as themselves."""
        message = f"{kind}:{key}"
        translated = self.gettext(message)
        return key if translated == message else translated

    def described(self, spec: RuleSpec | None, explanation: ExplanationData) -> Described:
        """A concern's rule and finding in the reader's language, as the mails word them, with
        the absence categories the rule counts (the resource team sees the days anyway); the
        engine's English words when the rule's definition is not at hand."""
        if spec is None:
            return Described(explanation.rule, explanation.summary)
        finding = describe_finding(
            spec, explanation.value, explanation.threshold, explanation.window_days, self.language
        )
        return Described(self.rule(spec, explanation.rule), finding)

    def rule(self, spec: RuleSpec | None, engine_words: str) -> str:
        """A rule in the reader's language with the categories it counts."""
        if spec is None:
            return engine_words
        categories = ", ".join(self.label("category", c) for c in spec.categories)
        return f"{describe_rule(spec, self.language)} ({categories})"

    def day(self, d: date, style: str = "medium") -> str:
        return dates.format_date(d, format=style, locale=self.language)

    def moment(self, moment: datetime) -> str:
        return dates.format_datetime(moment, format="short", tzinfo=self.tz, locale=self.language)

    def month(self, d: date) -> str:
        return dates.format_date(d, format="LLLL y", locale=self.language)

    def weekday(self, d: date) -> str:
        return dates.format_date(d, format="EEE", locale=self.language)

    def percent(self, share: Decimal | float | None) -> str:
        """A share (0.0 to 1.0) as a percentage; no pupil days shows as a dash."""
        if share is None:
            return "\u2013"  # an en dash
        return numbers.format_percent(share, format="#,##0.0 %", locale=self.language)

    def number(self, value: Decimal | float | int) -> str:
        return numbers.format_decimal(value, format="#,##0.##", locale=self.language)
