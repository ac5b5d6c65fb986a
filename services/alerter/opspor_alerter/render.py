"""Render stage: the text of a notice in the school's language, and the mail around it.

A notice carries the minimum (DOMAIN.md sections 6 and 9): school, pupil reference, rule,
dates and the concern id. `NoticeContent` is all that is stored for rendering, so absence
categories (illness is health data) and extents never reach the alerter's tables or a mailbox.
"""

from __future__ import annotations

import re
import textwrap
import unicodedata
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict

from opspor_alerter.models import DIGEST_PREFIX
from opspor_shared.events import ConcernData
from opspor_shared.wording import (
    Language,
    RuleSpec,
    day,
    describe_finding,
    describe_rule,
    level_name,
    notice_language,
    texts,
)

Kind = Literal["raised", "withdrawn"]

_MESSAGE_ID_NAMESPACE = uuid.UUID("6f0f3f4e-9f7a-5d7e-9c55-2a3d0c1b8e41")


# The engine's rule text ends with the categories it counts: "(unauthorized)", "(illness,
# authorized)" or "(all categories)".
_CATEGORY = "(illness|authorized|unauthorized)"
_ENGINE_CATEGORIES = re.compile(rf" \((all categories|{_CATEGORY}(, {_CATEGORY})*)\)$")


class NoticeContent(BaseModel):
    model_config = ConfigDict(frozen=True)

    concern_id: str
    pupil_id: str
    school_id: str
    school_name: str
    level: str
    pack_id: str
    rule_id: str
    rule_version: str
    rule: str
    summary: str
    crossing_date: date
    window_first: date
    window_last: date
    contributing_dates: list[date]
    # What was measured (for the finding in the reader's language) and the rule's definition
    # (looked up in its pack when the notice is recorded; None in notices recorded before).
    value: Decimal | None = None
    threshold: Decimal | None = None
    window_days: int | None = None
    spec: RuleSpec | None = None
    # For a withdrawal: the Message-ID of the notice it withdraws, so mail clients thread them.
    replaces_message_id: str | None = None

    @classmethod
    def from_concern(cls, concern: ConcernData, school_name: str) -> NoticeContent:
        e = concern.explanation
        return cls(
            concern_id=concern.concern_id,
            pupil_id=concern.pupil_id,
            school_id=concern.school_id,
            school_name=school_name,
            level=concern.level,
            pack_id=e.pack_id,
            rule_id=e.rule_id,
            rule_version=e.rule_version,
            rule=e.rule,
            summary=e.summary,
            crossing_date=concern.crossing_date,
            window_first=e.window_first,
            window_last=e.window_last,
            contributing_dates=sorted({c.date for c in e.contributing}),
            value=e.value,
            threshold=e.threshold,
            window_days=e.window_days,
        )

    def described(self, language: str) -> tuple[str, str]:
        """(rule, finding) in the language; the engine's English words without a spec."""
        if self.spec is None or None in (self.value, self.threshold, self.window_days):
            # Without the categories the engine names: which absence a rule counts says what
            # kind of absence the pupil had.
            return _ENGINE_CATEGORIES.sub("", self.rule), self.summary
        return describe_rule(self.spec, language), describe_finding(
            self.spec,
            self.value,  # type: ignore[arg-type]
            self.threshold,  # type: ignore[arg-type]
            self.window_days,  # type: ignore[arg-type]
            language,
        )


def header_text(value: str) -> str:
    """A value made safe for a header line: every control, line and paragraph separator
    character becomes a space. CR and LF would end the header; U+2028, U+0085 and friends
    are line breaks to Python's own parser (str.splitlines), so a receiving parser could take
    the rest for a header of its own. "=?" is broken up too: Python's mail generator decodes
    an RFC 2047 encoded word it finds in a value when it folds the line, so an encoded CR LF
    would come out as a real one. The api refuses control characters in names at input; this
    keeps a mail whole whatever reaches the alerter."""
    text = "".join(" " if unicodedata.category(c) in _UNSAFE_IN_HEADER else c for c in value)
    return text.replace("=?", "= ?")


_UNSAFE_IN_HEADER = frozenset({"Cc", "Zl", "Zp"})


@dataclass(frozen=True)
class Rendered:
    subject: str
    body: str
    language: Language


def message_id(concern_id: str, recipient: str, kind: str, revision: int, domain: str) -> str:
    """The same notice always gets the same Message-ID, so a resend is recognisably a resend."""
    name = f"{concern_id}|{recipient.lower()}|{kind}|{revision}"
    return f"<{uuid.uuid5(_MESSAGE_ID_NAMESPACE, name)}@{domain}>"


def digest_group(slot: datetime) -> str:
    """The group of a recipient's digest at `slot` (a local time with its UTC offset, so the
    digest's local date can be read back from the key)."""
    return f"{DIGEST_PREFIX}{slot.isoformat()}"


def digest_slot(group: str) -> datetime:
    return datetime.fromisoformat(group.removeprefix(DIGEST_PREFIX).split("|")[0])


def mail_kind(group: str | None, kind: str) -> str:
    """What one mail carries: a digest carries raises and withdrawals together."""
    return "digest" if group is not None and group.startswith(DIGEST_PREFIX) else kind


def concern_link(web_base_url: str | None, concern_id: str) -> str | None:
    """The concern's page on the resource team's web page, once it exists (WEB_BASE_URL)."""
    return f"{web_base_url}/ui/concerns/{concern_id}" if web_base_url else None


def _rule_name(content: NoticeContent, language: str) -> str:
    return f"{content.described(language)[0]} ({content.pack_id})"


def subject_rules(contents: Sequence[NoticeContent], t: Callable[[str], str], language: str) -> str:
    """One rule: its description and pack; several: how many and which pack/rule each."""
    if len(contents) == 1:
        return _rule_name(contents[0], language)
    names = ", ".join(f"{c.pack_id}/{c.rule_id}" for c in contents)
    return f"{t('notice.n_rules').format(n=len(contents))}: {names}"


def _concern_fields(
    content: NoticeContent, t: Callable[[str], str], language: str, web_base_url: str | None
) -> list[tuple[str, str]]:
    link = concern_link(web_base_url, content.concern_id)
    rule, finding = content.described(language)
    return [
        (t("notice.rule"), rule),
        (t("notice.pack"), f"{content.pack_id} ({content.rule_id} v{content.rule_version})"),
        (t("notice.finding"), finding),
        (t("notice.level"), level_name(content.level, language)),
        (t("notice.crossing"), day(content.crossing_date, language)),
        (
            t("notice.window"),
            t("notice.window_value").format(
                first=day(content.window_first, language), last=day(content.window_last, language)
            ),
        ),
        (
            t("notice.dates"),
            ", ".join(day(d, language, "short") for d in content.contributing_dates),
        ),
        (t("notice.concern"), content.concern_id),
        (t("notice.link"), link or t("notice.where_text")),
    ]


def _fill(label: str, value: str, width: int, indent: str = "") -> str:
    return textwrap.fill(
        value,
        76,
        initial_indent=indent + f"{label}:".ljust(width),
        subsequent_indent=" " * (len(indent) + width),
        break_long_words=False,
        break_on_hyphens=False,
    )


def render(
    kind: Kind,
    content: NoticeContent | Sequence[NoticeContent],
    language: str,
    web_base_url: str | None,
) -> Rendered:
    """One notice, listing every concern it carries (the concerns of one evaluation)."""
    contents = sorted(
        [content] if isinstance(content, NoticeContent) else content,
        key=lambda c: (c.pack_id, c.rule_id, c.crossing_date, c.concern_id),
    )
    lang = notice_language(language)
    t = texts(lang)
    first = contents[0]
    fmt = {
        "pupil": first.pupil_id,
        "school": first.school_name,
        "rules": subject_rules(contents, t, lang),
    }
    lines = [textwrap.fill(t(f"notice.intro_{kind}").format(**fmt), 76), ""]
    if len(contents) == 1:
        fields = [(t("notice.school"), first.school_name), (t("notice.pupil"), first.pupil_id)]
        fields += _concern_fields(first, t, lang, web_base_url)
        width = max(len(label) for label, _ in fields) + 2
        lines += [_fill(label, value, width) for label, value in fields]
    else:
        lines += [textwrap.fill(t("notice.intro_group").format(n=len(contents)), 76), ""]
        head = [(t("notice.school"), first.school_name), (t("notice.pupil"), first.pupil_id)]
        sections = [_concern_fields(c, t, lang, web_base_url) for c in contents]
        width = max(len(label) for label, _ in head + sections[0]) + 2
        lines += [_fill(label, value, width) for label, value in head]
        for number, fields in enumerate(sections, start=1):
            lines += ["", f"{number}."]
            lines += [_fill(label, value, width, "   ") for label, value in fields]
    lines += ["", textwrap.fill(t("notice.footer"), 76), ""]
    return Rendered(t(f"notice.subject_{kind}").format(**fmt), "\n".join(lines), lang)


# Levels in the order a reader acts on them: the most serious first; others after, by name.
_LEVEL_ORDER = ("notify-municipality", "ppr-must", "ppr-may", "severe", "persistent", "concern")


def _level_rank(level: str) -> tuple[int, str]:
    return (_LEVEL_ORDER.index(level) if level in _LEVEL_ORDER else len(_LEVEL_ORDER), level)


def _digest_entry(
    number: int,
    kind: Kind,
    c: NoticeContent,
    t: Callable[[str], str],
    lang: str,
    width: int,
    web_base_url: str | None,
) -> list[str]:
    """One concern of a digest: pupil, rule and pack; for a new one also the finding, the day
    the limit was crossed and where to look."""
    rule, finding = c.described(lang)
    head = textwrap.fill(
        f"{t('notice.pupil')} {c.pupil_id}: {rule} ({c.pack_id})",
        76,
        initial_indent=f"  {number}. ",
        subsequent_indent="     ",
        break_long_words=False,
        break_on_hyphens=False,
    )
    fields = [(t("notice.concern"), c.concern_id)]
    if kind == "raised":
        link = concern_link(web_base_url, c.concern_id) or t("notice.where_text")
        fields = [
            (t("notice.finding"), finding),
            (t("notice.crossing"), day(c.crossing_date, lang)),
            *fields,
            (t("notice.link"), link),
        ]
    return [head, *(_fill(label, value, width, "     ") for label, value in fields)]


def render_digest(
    items: Sequence[tuple[Kind, NoticeContent]],
    language: str,
    digest_date: date,
    web_base_url: str | None,
) -> Rendered:
    """A recipient's daily digest: every concern raised and withdrawn since the last digest,
    grouped by school, then level (most serious first), new before withdrawn."""
    lang = notice_language(language)
    t = texts(lang)
    new = sum(1 for kind, _ in items if kind == "raised")
    fmt = {"date": day(digest_date, lang), "new": new, "withdrawn": len(items) - new}
    lines = [textwrap.fill(t("digest.intro").format(**fmt), 76)]
    schools = sorted({(c.school_name, c.school_id) for _, c in items})
    labels = [t("notice.finding"), t("notice.crossing"), t("notice.concern"), t("notice.link")]
    width = max(len(label) for label in labels) + 2
    for name, school_id in schools:
        heading = f"{name} ({school_id})"
        lines += ["", "", heading, "=" * len(heading)]
        of_school = [(k, c) for k, c in items if c.school_id == school_id]
        for level in sorted({c.level for _, c in of_school}, key=_level_rank):
            lines += ["", f"{t('notice.level')}: {level_name(level, lang)}"]
            for kind in ("raised", "withdrawn"):
                listed = sorted(
                    (c for k, c in of_school if k == kind and c.level == level),
                    key=lambda c: (c.pupil_id, c.pack_id, c.rule_id, c.concern_id),
                )
                if not listed:
                    continue
                lines += [
                    "",
                    textwrap.fill(
                        t(f"digest.{kind}"), 76, initial_indent="  ", subsequent_indent="  "
                    ),
                ]
                for number, c in enumerate(listed, start=1):
                    lines += _digest_entry(number, kind, c, t, lang, width, web_base_url)
    lines += ["", textwrap.fill(t("notice.footer"), 76), ""]
    return Rendered(t("digest.subject").format(**fmt), "\n".join(lines), lang)


def mail(
    rendered: Rendered,
    *,
    sender: str,
    recipient: str,
    message_id: str,
    date: datetime,
    replaces: Sequence[str] = (),
) -> EmailMessage:
    """A rendered text as a mail: the subject made header-safe, `date` the mail's own time (not
    the send time, so a resend is byte-for-byte the same mail), and `replaces` the Message-IDs
    it answers, so mail clients thread a withdrawal with what it withdraws."""
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = recipient
    msg["Subject"] = header_text(rendered.subject)
    msg["Date"] = format_datetime(date)
    msg["Message-ID"] = message_id
    if replaces:
        msg["In-Reply-To"] = replaces[0]
        msg["References"] = " ".join(replaces)
    msg["Auto-Submitted"] = "auto-generated"
    msg.set_content(rendered.body, charset="utf-8", cte="quoted-printable")
    # After set_content, which clears every Content-* header set before it.
    msg["Content-Language"] = rendered.language
    return msg


def build_digest_email(
    *,
    items: Sequence[tuple[Kind, NoticeContent]],
    group: str,
    language: str,
    sender: str,
    recipient: str,
    message_id: str,
    link_base: str | None,
) -> EmailMessage:
    """The digest as a mail. Its Date is the digest's own time, so a resend is the same mail."""
    slot = digest_slot(group)
    return mail(
        render_digest(items, language, slot.date(), link_base),
        sender=sender,
        recipient=recipient,
        message_id=message_id,
        date=slot,
    )


def build_email(
    *,
    kind: Kind,
    content: NoticeContent | Sequence[NoticeContent],
    language: str,
    sender: str,
    recipient: str,
    message_id: str,
    created_at: datetime,
    link_base: str | None,
) -> EmailMessage:
    contents = [content] if isinstance(content, NoticeContent) else list(content)
    # A withdrawal answers the mail(s) it withdraws, so mail clients thread them.
    replaced = list(dict.fromkeys(c.replaces_message_id for c in contents if c.replaces_message_id))
    return mail(
        render(kind, content, language, link_base),
        sender=sender,
        recipient=recipient,
        message_id=message_id,
        date=created_at,
        replaces=replaced,
    )
