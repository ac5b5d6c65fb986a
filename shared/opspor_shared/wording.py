"""Every word of a notice or reminder, in the school's language (issue 9), and the words the
web page uses for a concern's rule and finding, in the reader's.

The texts live in gettext catalogues (locale/<language>/LC_MESSAGES/notices.po, compiled to the
.mo beside it and committed, like the web page's); their msgids are keys such as
`notice.subject_raised`, so a test can check that every key has a text in Danish, Norwegian
bokmål and English. Rules are described from their definition (RuleSpec) in the language, not
from the engine's English text; a notice recorded before specs were stored (or whose pack
version can no longer be found) falls back to that English text.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import date
from decimal import ROUND_DOWN, Decimal
from pathlib import Path
from typing import Literal

from babel import dates
from babel.support import NullTranslations, Translations
from pydantic import BaseModel, ConfigDict

from opspor_shared.engine.model import Rule, RulePack

Language = Literal["da", "nb", "en"]
LOCALE_DIR = Path(__file__).parent / "locale"
DOMAIN = "notices"
# Babel locales for dates: British English writes 12 March 2026, not March 12, 2026.
_BABEL_LOCALE = {"da": "da_DK", "nb": "nb_NO", "en": "en_GB"}


def notice_language(language: str) -> Language:
    if language == "da":
        return "da"
    if language in ("nb", "no", "nn"):
        return "nb"
    return "en"


@functools.cache
def _translations(language: Language) -> NullTranslations:
    return Translations.load(str(LOCALE_DIR), [language], domain=DOMAIN)


def texts(language: str) -> Callable[[str], str]:
    """The text of a key in the language (the key itself if a catalogue lacks it, which
    tests/alerter/test_wording.py rules out)."""
    return _translations(notice_language(language)).gettext


def day(d: date, language: str, style: Literal["long", "short"] = "long") -> str:
    """A date as the reader writes it (12. marts 2026); `short` (12.03.2026) for lists."""
    return dates.format_date(d, format=style, locale=_BABEL_LOCALE[notice_language(language)])


def level_name(level: str, language: str) -> str:
    """A level in words; a level a municipality invented shows as itself."""
    key = f"level.{level}"
    text = texts(language)(key)
    return level if text == key else text


class RuleSpec(BaseModel):
    """A rule's definition, stored with a notice so it can be described in any language."""

    model_config = ConfigDict(frozen=True)

    kind: str
    categories: list[str]
    n: int | None = None
    k: int | None = None
    x: Decimal | None = None
    p: Decimal | None = None
    over: str | None = None
    min_days: int = 0

    @classmethod
    def of(cls, rule: Rule) -> RuleSpec:
        return cls(
            kind=rule.kind,
            categories=sorted(rule.categories),
            n=rule.n,
            k=rule.k,
            x=rule.x,
            p=rule.p,
            over=str(rule.over) if rule.over is not None else None,
            min_days=rule.min_days,
        )


def spec_in(pack: RulePack | None, version: str, rule_id: str) -> RuleSpec | None:
    """The definition of a rule in a pack version; None when the version or rule is not
    there (a concern of a pack since removed: it is then named in the engine's words)."""
    found = next((v for v in (pack.versions if pack else ()) if v.version == version), None)
    rule = found.rule(rule_id) if found is not None else None
    return RuleSpec.of(rule) if rule is not None else None


def _number(value: Decimal, language: str) -> str:
    text = format(value.normalize(), "f")
    return text.replace(".", ",") if notice_language(language) != "en" else text


def _period(over: str | None, t: Callable[[str], str], preposition: str) -> str:
    kind, _, length = (over or "").partition(":")
    if kind == "rolling":
        return t(f"period.rolling.{preposition}").format(days=length)
    return t(f"period.{kind}")


def describe_rule(spec: RuleSpec, language: str) -> str:
    """The rule without its absence categories: which kinds of absence a rule counts would
    tell the reader what kind of absence the pupil had (illness is health data), and a notice
    carries the minimum (DOMAIN.md s.6 and 9)."""
    t = texts(language)
    if spec.kind == "consecutive":
        return t("rule.consecutive").format(n=spec.n)
    if spec.kind == "count":
        return t("rule.count").format(k=spec.k, period=_period(spec.over, t, "of"))
    if spec.kind == "total":
        assert spec.x is not None
        return t("rule.total").format(
            x=_number(spec.x, language), period=_period(spec.over, t, "over")
        )
    assert spec.p is not None
    minimum = t("rule.minimum").format(days=spec.min_days) if spec.min_days else ""
    return t("rule.share").format(
        p=_number(spec.p * 100, language),
        period=_period(spec.over, t, "over"),
        minimum=minimum,
    )


def describe_finding(
    spec: RuleSpec, value: Decimal, threshold: Decimal, window_days: int, language: str
) -> str:
    """What was measured against the limit, as the engine's summary says it, in the language."""
    t = texts(language)
    rolling = (spec.over or "").startswith("rolling:")
    if spec.kind == "consecutive":
        return t("finding.consecutive").format(
            value=_number(value, language), limit=_number(threshold, language)
        )
    preposition = "of" if spec.kind == "count" else "over"
    period = (
        t(f"period.rolling.{preposition}").format(days=window_days)
        if rolling
        else t("period.fixed.days").format(period=_period(spec.over, t, "over"), days=window_days)
    )
    if spec.kind == "share":
        percent = (value * 100).quantize(Decimal("0.1"), rounding=ROUND_DOWN)
        return t("finding.share").format(
            value=_number(percent, language),
            period=period,
            limit=_number(threshold * 100, language),
        )
    return t(f"finding.{spec.kind}").format(
        value=_number(value, language), period=period, limit=_number(threshold, language)
    )
