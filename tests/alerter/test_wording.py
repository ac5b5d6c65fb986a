"""The words of notices and reminders (issue 9): the catalogues are complete in Danish,
Norwegian bokmål and English, every rule of every shipped pack is described in each language
without naming absence categories, and no field of a notice can add or change a mail header."""

from __future__ import annotations

import io
import re
from datetime import UTC, date, datetime
from decimal import Decimal
from email import message_from_bytes, policy
from pathlib import Path

import pytest
from babel.messages.mofile import read_mo, write_mo
from babel.messages.pofile import read_po

from opspor_alerter.reminders import ReminderContent, build_reminder_email
from opspor_alerter.render import NoticeContent, build_digest_email, build_email
from opspor_shared.engine import builtin_packs
from opspor_shared.wording import (
    LOCALE_DIR,
    RuleSpec,
    describe_finding,
    describe_rule,
    level_name,
)

LANGUAGES = ("da", "nb", "en")
ALERTER = Path(LOCALE_DIR).parent


def catalogue(language: str, mo: bool = False) -> dict[str, str]:
    path = LOCALE_DIR / language / "LC_MESSAGES" / ("notices.mo" if mo else "notices.po")
    with open(path, "rb") as f:
        cat = read_mo(f) if mo else read_po(f)
    return {str(m.id): str(m.string) for m in cat if m.id}


def keys_in_code() -> set[str]:
    """Keys the code asks for: literal t("...") calls, and the families built from a prefix."""
    found: set[str] = set()
    for module in ALERTER.glob("*.py"):
        found |= set(re.findall(r"""\bt\(\s*["']([a-z_.-]+)["']\s*\)""", module.read_text()))
    return found


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_key_has_a_text_in_every_language_and_the_mo_is_compiled(language: str) -> None:
    texts = catalogue(language)
    english = catalogue("en")
    assert set(texts) == set(english), set(texts) ^ set(english)
    assert not [k for k, v in texts.items() if not v.strip()], "empty texts"
    assert keys_in_code() <= set(texts), keys_in_code() - set(texts)
    # The families the code composes from a code: notice subjects and intros per kind,
    # reminder reasons, rule kinds, periods.
    for key in (
        *(f"notice.{p}_{k}" for p in ("subject", "intro") for k in ("raised", "withdrawn")),
        *(f"reminder.{r}" for r in ("evaluation-overdue", "planned-end-passed")),
        "reminder.ppr-referral-missing",
        *(f"digest.{k}" for k in ("raised", "withdrawn")),
        *(f"rule.{k}" for k in ("consecutive", "count", "total", "share")),
        *(f"finding.{k}" for k in ("consecutive", "count", "total", "share")),
        *(f"period.{k}" for k in ("month", "quarter", "half_year", "school_year")),
    ):
        assert key in texts, key
    assert catalogue(language, mo=True) == texts, (
        f"stale .mo: run .venv/bin/pybabel compile -d {LOCALE_DIR} -D notices"
    )
    with open(LOCALE_DIR / language / "LC_MESSAGES" / "notices.po", "rb") as f:
        buffer = io.BytesIO()
        write_mo(buffer, read_po(f))
    assert buffer.getvalue()


# Words that would give away the kind of absence (DOMAIN.md s.9) in any of the languages.
CATEGORY_WORDS = ("illness", "unauthorized", "authorized", "sygdom", "sykdom", "lovlig", "dokument")


def test_every_shipped_rule_reads_in_the_schools_language_without_its_categories() -> None:
    english_words = re.compile(r"\b(absence|days|consecutive|school|last|limit|this)\b")
    described = 0
    for pack in builtin_packs().values():
        for version in pack.versions:
            for rule in version.rules:
                spec = RuleSpec.of(rule)
                value = Decimal(rule.threshold)
                for language in LANGUAGES:
                    for text in (
                        describe_rule(spec, language),
                        describe_finding(spec, value, rule.threshold, 20, language),
                    ):
                        assert not any(w in text.lower() for w in CATEGORY_WORDS), text
                        if language != "en":
                            assert not english_words.search(text), (language, text)
                        described += 1
    assert described > 50
    share = RuleSpec(kind="share", categories=["unauthorized"], p=Decimal("0.10"), over="quarter")
    assert describe_rule(share, "da") == "10 % fravær dette kvartal"
    assert describe_rule(share, "en") == "10% absence this quarter"
    count = RuleSpec(kind="count", categories=["illness"], k=15, over="rolling:60")
    assert describe_rule(count, "nb") == "15 fraværsdager av de siste 60 skoledagene"
    assert level_name("ppr-must", "nb") == "PPT skal involveres"
    assert level_name("egen-niveau", "da") == "egen-niveau"


def content(**hostile: object) -> NoticeContent:
    values: dict[str, object] = {
        "concern_id": "7d1f4c3e-0000-4000-8000-000000000001",
        "pupil_id": "pupil-1",
        "school_id": "school-1",
        "school_name": "Vestbjerg Skole",
        "level": "concern",
        "pack_id": "dk-aalborg-2018",
        "rule_id": "count-7-of-20",
        "rule_version": "1",
        "rule": "7 absence days of the last 20 school days (unauthorized)",
        "summary": "8 absence days of the last 20 school days, limit 7",
        "crossing_date": date(2026, 3, 12),
        "window_first": date(2026, 2, 12),
        "window_last": date(2026, 3, 12),
        "contributing_dates": [date(2026, 2, 16)],
    }
    return NoticeContent.model_validate(values | hostile)


def test_without_a_rule_definition_the_engines_words_lose_their_categories() -> None:
    rule, finding = content().described("da")
    assert rule == "7 absence days of the last 20 school days"
    assert finding == "8 absence days of the last 20 school days, limit 7"


INJECTIONS = (
    "x\r\nBcc: evil@example.org",
    "x\nSubject: hijacked",
    "x\rX-Injected: yes",
    "x\u2028Bcc: evil@example.org",
    "x\u0085Bcc: evil@example.org",
    "=?utf-8?q?=0D=0ABcc:_evil@example.org?=",
)


@pytest.mark.parametrize("hostile", INJECTIONS)
def test_no_field_of_a_notice_or_reminder_can_add_or_change_a_header(hostile: str) -> None:
    """The api refuses control characters in names at input (shared/opspor_shared/text.py);
    this proves the mail side holds on its own: every text field carrying the attack, and the
    headers that come out are exactly the ones the alerter sets."""
    expected = {
        "From",
        "To",
        "Subject",
        "Date",
        "Message-ID",
        "Auto-Submitted",
        "Content-Type",
        "Content-Transfer-Encoding",
        "MIME-Version",
        "Content-Language",
    }
    fields = ("pupil_id", "school_id", "school_name", "level", "pack_id", "rule_id", "rule")
    notice = content(**{f: hostile for f in (*fields, "summary", "rule_version")})
    mails = [
        build_email(
            kind=kind,
            content=notice,
            language=language,
            sender="opspor@example.org",
            recipient="skole@example.org",
            message_id="<n@opspor.test>",
            created_at=datetime(2026, 3, 12, 8, tzinfo=UTC),
            link_base="https://opspor.example",
        )
        for kind in ("raised", "withdrawn")
        for language in LANGUAGES
    ]
    mails += [
        build_digest_email(
            items=[("raised", notice), ("withdrawn", notice)],
            group="digest:2026-03-12T08:00:00+01:00",
            language=language,
            sender="opspor@example.org",
            recipient="skole@example.org",
            message_id="<d@opspor.test>",
            link_base="https://opspor.example",
        )
        for language in LANGUAGES
    ]
    reminder = ReminderContent.model_validate(
        {
            "case_id": "7d1f4c3e-0000-4000-8000-000000000002",
            "pupil_id": hostile,
            "school_id": hostile,
            "school_name": hostile,
            "model_id": hostile,
            "phase": hostile,
            "responsible_role": "school",
            "reason": "evaluation-overdue",
            "due_date": "2026-04-17",
            "day": "2026-04-20",
            "opened_on": "2026-03-01",
        }
    )
    mails += [
        build_reminder_email(
            content=reminder,
            language=language,
            role="school",
            sender="opspor@example.org",
            recipient="skole@example.org",
            message_id="<r@opspor.test>",
            created_at=datetime(2026, 4, 20, 8, tzinfo=UTC),
            web_base_url=None,
        )
        for language in LANGUAGES
    ]
    for mail in mails:
        # What a receiving server parses from the bytes on the wire.
        parsed = message_from_bytes(mail.as_bytes(policy=policy.SMTP), policy=policy.default)
        assert set(parsed.keys()) == expected, parsed.keys()
        assert parsed["Bcc"] is None and parsed["X-Injected"] is None
        assert len(parsed.get_all("Subject") or []) == 1
        assert [str(v) for v in parsed.get_all("To") or []] == ["skole@example.org"]
