"""Render stage: the text of a notice in the school's language, and the mail around it.

A notice carries the minimum (DOMAIN.md sections 6 and 9): school, pupil reference, rule,
dates and the concern id. `NoticeContent` is all that is stored for rendering, so absence
categories (illness is health data) and extents never reach the alerter's tables or a mailbox.
"""

from __future__ import annotations

import textwrap
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict

from opspor_shared.events import ConcernData

Kind = Literal["raised", "withdrawn"]
Language = Literal["da", "nb", "en"]

_MESSAGE_ID_NAMESPACE = uuid.UUID("6f0f3f4e-9f7a-5d7e-9c55-2a3d0c1b8e41")


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
        )


@dataclass(frozen=True)
class Rendered:
    subject: str
    body: str
    language: Language


def message_id(concern_id: str, recipient: str, kind: str, revision: int, domain: str) -> str:
    """The same notice always gets the same Message-ID, so a resend is recognisably a resend."""
    name = f"{concern_id}|{recipient.lower()}|{kind}|{revision}"
    return f"<{uuid.uuid5(_MESSAGE_ID_NAMESPACE, name)}@{domain}>"


def notice_language(language: str) -> Language:
    if language == "da":
        return "da"
    if language in ("nb", "no", "nn"):
        return "nb"
    return "en"


def concern_link(web_base_url: str | None, concern_id: str) -> str | None:
    """The concern's page on the resource team's web page, once it exists (WEB_BASE_URL)."""
    return f"{web_base_url}/ui/concerns/{concern_id}" if web_base_url else None


_TEXT: dict[Language, dict[str, str]] = {
    "da": {
        "subject_raised": "Bekymrende fravær: {pupil}, {school} \u2013 {rules}",
        "subject_withdrawn": "Tilbagekaldt: bekymrende fravær for {pupil}, {school} \u2013 {rules}",
        "n_rules": "{n} regler",
        "intro_group": (
            "Samme registrering af fraværet har opfyldt {n} regler; de står nedenfor, hver med "
            "det regelsæt (kommunens valg) og den regel den kommer fra."
        ),
        "pack": "Regelsæt",
        "where_text": "i Opspor under skolens bekymringer for eleven (bekymrings-id ovenfor)",
        "intro_raised": "Opspor har registreret bekymrende fravær for en elev på {school}.",
        "intro_withdrawn": (
            "Bekymringen nedenfor er trukket tilbage: rettede fraværsregistreringer betyder, "
            "at reglen ikke længere er opfyldt. Den tidligere meddelelse gælder ikke længere."
        ),
        "school": "Skole",
        "pupil": "Elevreference",
        "rule": "Regel",
        "finding": "Opgørelse",
        "level": "Niveau",
        "crossing": "Grænsen overskredet",
        "window": "Periode",
        "window_value": "{first} til {last}",
        "dates": "Fraværsdage",
        "concern": "Bekymrings-id",
        "link": "Se",
        "footer": (
            "Meddelelsen indeholder kun det nødvendige for opfølgning; detaljer om fraværet "
            "findes i skolens system. Sendt automatisk af Opspor - svar ikke på denne mail."
        ),
    },
    "nb": {
        "subject_raised": "Bekymringsfullt fravær: {pupil}, {school} \u2013 {rules}",
        "subject_withdrawn": (
            "Trukket tilbake: bekymringsfullt fravær for {pupil}, {school} \u2013 {rules}"
        ),
        "n_rules": "{n} regler",
        "intro_group": (
            "Den samme fraværsføringen har oppfylt {n} regler; de står nedenfor, hver med "
            "regelsettet (kommunens valg) og regelen den kommer fra."
        ),
        "pack": "Regelsett",
        "where_text": "i Opspor under skolens bekymringer for eleven (bekymrings-id ovenfor)",
        "intro_raised": "Opspor har registrert bekymringsfullt fravær for en elev ved {school}.",
        "intro_withdrawn": (
            "Bekymringen nedenfor er trukket tilbake: rettede fraværsføringer betyr at regelen "
            "ikke lenger er oppfylt. Den tidligere meldingen gjelder ikke lenger."
        ),
        "school": "Skole",
        "pupil": "Elevreferanse",
        "rule": "Regel",
        "finding": "Opptelling",
        "level": "Nivå",
        "crossing": "Grensen overskredet",
        "window": "Periode",
        "window_value": "{first} til {last}",
        "dates": "Fraværsdager",
        "concern": "Bekymrings-id",
        "link": "Se",
        "footer": (
            "Meldingen inneholder bare det som trengs for oppfølging; detaljer om fraværet "
            "finnes i skolens system. Sendt automatisk av Opspor - ikke svar på denne e-posten."
        ),
    },
    "en": {
        "subject_raised": "Concerning absence: {pupil}, {school} \u2013 {rules}",
        "subject_withdrawn": "Withdrawn: concerning absence of {pupil}, {school} \u2013 {rules}",
        "n_rules": "{n} rules",
        "intro_group": (
            "The same absence registrations met {n} rules; each is listed below with the rule "
            "pack (the municipality's choice) and the rule it comes from."
        ),
        "pack": "Rule pack",
        "where_text": "in Opspor among the school's concerns for the pupil (concern id above)",
        "intro_raised": "Opspor has registered concerning absence for a pupil at {school}.",
        "intro_withdrawn": (
            "The concern below has been withdrawn: corrected absence registrations mean the "
            "rule is no longer met. The earlier notice no longer applies."
        ),
        "school": "School",
        "pupil": "Pupil reference",
        "rule": "Rule",
        "finding": "Finding",
        "level": "Level",
        "crossing": "Limit crossed on",
        "window": "Period",
        "window_value": "{first} to {last}",
        "dates": "Absence days",
        "concern": "Concern id",
        "link": "Where to look",
        "footer": (
            "This notice carries only what is needed for follow-up; details of the absence are "
            "in the school's system. Sent automatically by Opspor - do not reply to this mail."
        ),
    },
}


def _rule_name(content: NoticeContent) -> str:
    return f"{content.rule} ({content.pack_id})"


def subject_rules(contents: Sequence[NoticeContent], t: dict[str, str]) -> str:
    """One rule: its description and pack; several: how many and which pack/rule each."""
    if len(contents) == 1:
        return _rule_name(contents[0])
    names = ", ".join(f"{c.pack_id}/{c.rule_id}" for c in contents)
    return f"{t['n_rules'].format(n=len(contents))}: {names}"


def _concern_fields(
    content: NoticeContent, t: dict[str, str], web_base_url: str | None
) -> list[tuple[str, str]]:
    link = concern_link(web_base_url, content.concern_id)
    return [
        (t["rule"], content.rule),
        (t["pack"], f"{content.pack_id} ({content.rule_id} v{content.rule_version})"),
        (t["finding"], content.summary),
        (t["level"], content.level),
        (t["crossing"], content.crossing_date.isoformat()),
        (
            t["window"],
            t["window_value"].format(
                first=content.window_first.isoformat(), last=content.window_last.isoformat()
            ),
        ),
        (t["dates"], ", ".join(d.isoformat() for d in content.contributing_dates)),
        (t["concern"], content.concern_id),
        (t["link"], link or t["where_text"]),
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
    t = _TEXT[lang]
    first = contents[0]
    fmt = {
        "pupil": first.pupil_id,
        "school": first.school_name,
        "rules": subject_rules(contents, t),
    }
    lines = [textwrap.fill(t[f"intro_{kind}"].format(**fmt), 76), ""]
    if len(contents) == 1:
        fields = [(t["school"], first.school_name), (t["pupil"], first.pupil_id)]
        fields += _concern_fields(first, t, web_base_url)
        width = max(len(label) for label, _ in fields) + 2
        lines += [_fill(label, value, width) for label, value in fields]
    else:
        lines += [textwrap.fill(t["intro_group"].format(n=len(contents)), 76), ""]
        head = [(t["school"], first.school_name), (t["pupil"], first.pupil_id)]
        sections = [_concern_fields(c, t, web_base_url) for c in contents]
        width = max(len(label) for label, _ in head + sections[0]) + 2
        lines += [_fill(label, value, width) for label, value in head]
        for number, fields in enumerate(sections, start=1):
            lines += ["", f"{number}."]
            lines += [_fill(label, value, width, "   ") for label, value in fields]
    lines += ["", textwrap.fill(t["footer"], 76), ""]
    return Rendered(t[f"subject_{kind}"].format(**fmt), "\n".join(lines), lang)


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
    rendered = render(kind, content, language, link_base)
    contents = [content] if isinstance(content, NoticeContent) else list(content)
    # A withdrawal answers the mail(s) it withdraws, so mail clients thread them.
    replaced = list(dict.fromkeys(c.replaces_message_id for c in contents if c.replaces_message_id))
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = recipient
    msg["Subject"] = rendered.subject
    # The notice's creation time, not the send time: a resend is byte-for-byte the same mail.
    msg["Date"] = format_datetime(created_at)
    msg["Message-ID"] = message_id
    if replaced:
        msg["In-Reply-To"] = replaced[0]
        msg["References"] = " ".join(replaced)
    msg["Auto-Submitted"] = "auto-generated"
    msg.set_content(rendered.body, charset="utf-8", cte="quoted-printable")
    # After set_content, which clears every Content-* header set before it.
    msg["Content-Language"] = rendered.language
    return msg
