"""Case reminders (issue 14, DOMAIN.md sections 6 and 7): an overdue case reminds the mailbox of
the party responsible for its phase, through the same notification log and delivery loop as
concern notices.

The api publishes case events on `absence.cases.v1`; the alerter acts on
`dk.absence.case.overdue` only and ignores the other case types. One reminder is recorded per
(case, reason, day, recipient): the api judges overdue each day, and a repeated event for the same
day (a replay, a redelivery) meets the unique constraint and sends nothing.
"""

from __future__ import annotations

import textwrap
import uuid
from dataclasses import dataclass
from datetime import date, datetime
from email.message import EmailMessage
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator
from sqlalchemy.ext.asyncio import AsyncSession

from opspor_alerter.render import Rendered, mail, message_id
from opspor_alerter.repository import NoticeRepository
from opspor_alerter.routing import MailRole, Unroutable, mailbox_route
from opspor_alerter.settings import AlerterSettings
from opspor_shared.events import CloudEvent
from opspor_shared.logging import get_logger
from opspor_shared.reference import ReferenceRepository
from opspor_shared.retention import RetentionWindow
from opspor_shared.wording import day, notice_language, texts

log = get_logger(__name__)

CASE_EVENT_PREFIX = "dk.absence.case."
CASE_OVERDUE = "dk.absence.case.overdue"
REMINDER = "reminder"

Reason = Literal["evaluation-overdue", "planned-end-passed", "ppr-referral-missing"]
# Derives a reminder's id (stored as the notice's concern_id) from its case, reason and day.
_REMINDER_NAMESPACE = uuid.UUID("0b7c2f5e-1d7a-5b4e-8f3c-6a1e9d2c4b70")


class CaseOverdueData(BaseModel):
    """Data of dk.absence.case.overdue as the api publishes it (deploy/asyncapi.yaml).

    Ids, roles, phase and dates only: case events never carry free text.
    """

    model_config = ConfigDict(frozen=True)

    case_id: uuid.UUID
    pupil_id: str
    school_id: str
    municipality_id: str
    model_id: str
    phase: str
    responsible_role: str
    responsible_party: MailRole
    reason: Reason
    day: date
    due_date: date | None
    opened_on: date

    @model_validator(mode="after")
    def _ids(self) -> CaseOverdueData:
        if not (self.pupil_id and self.school_id and self.municipality_id):
            raise ValueError("pupil_id, school_id and municipality_id must not be empty")
        return self


def reminder_cutoff(window: RetentionWindow) -> date:
    """Reminders of days before this are purged, and overdue events for them are skipped."""
    return window.closed_before.date()


def reminder_id(case_id: uuid.UUID, reason: str, day: date) -> uuid.UUID:
    return uuid.uuid5(_REMINDER_NAMESPACE, f"{case_id}:overdue:{reason}:{day.isoformat()}")


def expected_event_id(data: CaseOverdueData) -> str:
    return f"{data.case_id}:overdue:{data.reason}:{data.day.isoformat()}"


class ReminderContent(BaseModel):
    """All a reminder stores for rendering: no free text of the case ever reaches the alerter."""

    model_config = ConfigDict(frozen=True)

    case_id: str
    pupil_id: str
    school_id: str
    school_name: str
    model_id: str
    phase: str
    responsible_role: str
    reason: Reason
    day: date
    due_date: date | None
    opened_on: date


@dataclass
class ReminderOutcome:
    recorded: list[tuple[str, str, str]]  # (channel, kind, role)
    unroutable: list[tuple[str, str]]  # (role, reason)


async def record_case_event(
    session: AsyncSession,
    event: CloudEvent,
    settings: AlerterSettings,
    outcome: ReminderOutcome,
    window: RetentionWindow,
) -> Literal["applied", "ignored", "rejected", "duplicate", "past_retention"]:
    """Decide what one case event means for the notification log; never sends anything."""
    if event.type != CASE_OVERDUE:
        return "ignored"
    try:
        data = CaseOverdueData.model_validate(event.data)
    except ValidationError:
        log.warning("case_event_rejected", event_id=event.id, reason="invalid data")
        return "rejected"
    if event.id != expected_event_id(data) or event.subject != str(data.case_id):
        # The id is the dedup contract with the api; a different one means a different producer.
        log.warning("case_event_rejected", event_id=event.id, reason="id or subject mismatch")
        return "rejected"
    if data.day < reminder_cutoff(window):
        log.info("case_event_past_retention", event_id=event.id)
        return "past_retention"
    school = await ReferenceRepository(session).school(data.school_id)
    target = mailbox_route(data.responsible_party, school)
    if isinstance(target, Unroutable):
        log.warning(
            "reminder_unroutable",
            case_id=str(data.case_id),
            school_id=data.school_id,
            role=target.role,
            reason=target.reason,
        )
        outcome.unroutable.append((target.role, target.reason))
        return "applied"
    assert school is not None  # a routable target has a school
    content = ReminderContent(
        case_id=str(data.case_id),
        pupil_id=data.pupil_id,
        school_id=data.school_id,
        school_name=school.name,
        model_id=data.model_id,
        phase=data.phase,
        responsible_role=data.responsible_role,
        reason=data.reason,
        day=data.day,
        due_date=data.due_date,
        opened_on=data.opened_on,
    )
    rid = reminder_id(data.case_id, data.reason, data.day)
    notice_id = await NoticeRepository(session).insert_notice(
        concern_id=rid,
        kind=REMINDER,
        revision=0,
        channel="smtp",
        recipient=target.recipient,
        recipient_role=target.role,
        school_id=data.school_id,
        language=school.language,
        message_id=message_id(str(rid), target.recipient, REMINDER, 0, settings.message_id_domain),
        payload=content.model_dump(mode="json"),
        case_id=data.case_id,
        reason=data.reason,
        reminder_day=data.day,
    )
    if notice_id is None:
        log.info("reminder_already_recorded", case_id=str(data.case_id), reason=data.reason)
        return "duplicate"
    log.info(
        "notice_recorded",
        notice_id=notice_id,
        case_id=str(data.case_id),
        kind=REMINDER,
        channel="smtp",
        role=target.role,
    )
    outcome.recorded.append(("smtp", REMINDER, target.role))
    return "applied"


# --- rendering ---------------------------------------------------------------------------------

_PARTIES = ("school", "ppr", "municipality")


def case_link(web_base_url: str | None, case_id: str) -> str | None:
    return f"{web_base_url}/ui/cases/{case_id}" if web_base_url else None


def render_reminder(
    content: ReminderContent, language: str, role: str, web_base_url: str | None
) -> Rendered:
    lang = notice_language(language)
    t = texts(lang)
    roles = dict(zip(_PARTIES, t("reminder.roles").split("|"), strict=True))
    reason = t(f"reminder.{content.reason}")
    link = case_link(web_base_url, content.case_id)
    none = t("reminder.none")
    fields = [
        (t("reminder.school"), content.school_name),
        (t("reminder.pupil"), content.pupil_id),
        (t("reminder.reason"), reason),
        (t("reminder.due"), day(content.due_date, lang) if content.due_date else none),
        (t("reminder.day"), day(content.day, lang)),
        (t("reminder.phase"), f"{content.phase} ({content.model_id})"),
        (t("reminder.opened"), day(content.opened_on, lang)),
        (t("reminder.case"), content.case_id),
        (t("reminder.where"), link or t("reminder.where_text").format(case=content.case_id)),
    ]
    width = max(len(label) for label, _ in fields) + 2
    lines = [textwrap.fill(t("reminder.intro").format(role=roles.get(role, role)), 76), ""]
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
    lines += ["", textwrap.fill(t("reminder.footer"), 76), ""]
    subject = t("reminder.subject").format(
        pupil=content.pupil_id, school=content.school_name, reason=reason
    )
    return Rendered(subject, "\n".join(lines), lang)


def build_reminder_email(
    *,
    content: ReminderContent,
    language: str,
    role: str,
    sender: str,
    recipient: str,
    message_id: str,
    created_at: datetime,
    web_base_url: str | None,
) -> EmailMessage:
    return mail(
        render_reminder(content, language, role, web_base_url),
        sender=sender,
        recipient=recipient,
        message_id=message_id,
        date=created_at,
    )
