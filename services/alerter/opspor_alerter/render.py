"""Render stage: the text of a notice in the school's language, and the mail around it.

A notice carries the minimum (DOMAIN.md sections 6 and 9): school, pupil reference, rule,
dates and the concern id. `NoticeContent` is all that is stored for rendering, so absence
categories (illness is health data) and extents never reach the alerter's tables or a mailbox.
"""

from __future__ import annotations

import textwrap
import uuid
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


def concern_link(link_base: str | None, concern_id: str) -> str | None:
    return f"{link_base}/v1/concerns/{concern_id}" if link_base else None


_TEXT: dict[Language, dict[str, str]] = {
    "da": {
        "subject_raised": "Bekymrende fravær: elev {pupil} på {school}",
        "subject_withdrawn": "Tilbagekaldt: bekymrende fravær for elev {pupil} på {school}",
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
        "link": "Sag",
        "footer": (
            "Meddelelsen indeholder kun det nødvendige for opfølgning; detaljer om fraværet "
            "findes i skolens system. Sendt automatisk af Opspor - svar ikke på denne mail."
        ),
    },
    "nb": {
        "subject_raised": "Bekymringsfullt fravær: elev {pupil} ved {school}",
        "subject_withdrawn": (
            "Trukket tilbake: bekymringsfullt fravær for elev {pupil} ved {school}"
        ),
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
        "link": "Sak",
        "footer": (
            "Meldingen inneholder bare det som trengs for oppfølging; detaljer om fraværet "
            "finnes i skolens system. Sendt automatisk av Opspor - ikke svar på denne e-posten."
        ),
    },
    "en": {
        "subject_raised": "Concerning absence: pupil {pupil} at {school}",
        "subject_withdrawn": "Withdrawn: concerning absence of pupil {pupil} at {school}",
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
        "link": "Case",
        "footer": (
            "This notice carries only what is needed for follow-up; details of the absence are "
            "in the school's system. Sent automatically by Opspor - do not reply to this mail."
        ),
    },
}


def render(kind: Kind, content: NoticeContent, language: str, link_base: str | None) -> Rendered:
    lang = notice_language(language)
    t = _TEXT[lang]
    fmt = {"pupil": content.pupil_id, "school": content.school_name}
    fields = [
        (t["school"], content.school_name),
        (t["pupil"], content.pupil_id),
        (
            t["rule"],
            f"{content.rule} ({content.pack_id}/{content.rule_id} v{content.rule_version})",
        ),
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
    ]
    link = concern_link(link_base, content.concern_id)
    if link:
        fields.append((t["link"], link))
    width = max(len(label) for label, _ in fields) + 2
    lines = [textwrap.fill(t[f"intro_{kind}"].format(**fmt), 76), ""]
    for label, value in fields:
        lines.append(
            textwrap.fill(
                value,
                76,
                initial_indent=f"{label}:".ljust(width),
                subsequent_indent=" " * width,
                break_long_words=False,
                break_on_hyphens=False,
            )
        )
    lines += ["", textwrap.fill(t["footer"], 76), ""]
    return Rendered(t[f"subject_{kind}"].format(**fmt), "\n".join(lines), lang)


def build_email(
    *,
    kind: Kind,
    content: NoticeContent,
    language: str,
    sender: str,
    recipient: str,
    message_id: str,
    created_at: datetime,
    link_base: str | None,
) -> EmailMessage:
    rendered = render(kind, content, language, link_base)
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = recipient
    msg["Subject"] = rendered.subject
    # The notice's creation time, not the send time: a resend is byte-for-byte the same mail.
    msg["Date"] = format_datetime(created_at)
    msg["Message-ID"] = message_id
    if content.replaces_message_id:
        msg["In-Reply-To"] = content.replaces_message_id
        msg["References"] = content.replaces_message_id
    msg["Auto-Submitted"] = "auto-generated"
    msg.set_content(rendered.body, charset="utf-8", cte="quoted-printable")
    # After set_content, which clears every Content-* header set before it.
    msg["Content-Language"] = rendered.language
    return msg
