"""Route stage: who hears of a concern (DOMAIN.md section 6).

A concern level routes to one mailbox (secure mail) and to every enabled webhook endpoint of the
school's municipality whose level and school filters let it through.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from opspor_alerter.notify import Channel
from opspor_shared.reference import SchoolRef, WebhookRef

Role = Literal["school", "ppr", "municipality", "integration"]
MailRole = Literal["school", "ppr", "municipality"]

# Every level not listed goes to the school: a new level in a rule pack must reach someone.
LEVEL_ROLES: dict[str, MailRole] = {
    "ppr-may": "ppr",
    "ppr-must": "ppr",
    "notify-municipality": "municipality",
}
WEBHOOK_PREFIX = "webhook:"


@dataclass(frozen=True)
class Route:
    recipient: str
    role: Role
    channel: Channel = "smtp"


@dataclass(frozen=True)
class Unroutable:
    role: Role
    reason: Literal["unknown_school", "no_mailbox"]


def role_for_level(level: str) -> MailRole:
    return LEVEL_ROLES.get(level, "school")


def route(level: str, school: SchoolRef | None) -> Route | Unroutable:
    return mailbox_route(role_for_level(level), school)


def mailbox_route(role: MailRole, school: SchoolRef | None) -> Route | Unroutable:
    """The mailbox of a role at a school: the school's own, or its municipality's PPR or unit."""
    if school is None:
        return Unroutable(role, "unknown_school")
    mailbox = {
        "school": school.mailbox,
        "ppr": school.ppr_mailbox,
        "municipality": school.unit_mailbox,
    }[role]
    if not mailbox or not mailbox.strip():
        return Unroutable(role, "no_mailbox")
    return Route(mailbox.strip(), role)


def webhook_recipient(municipality_id: str, webhook_id: str) -> str:
    return f"{WEBHOOK_PREFIX}{municipality_id}/{webhook_id}"


def parse_webhook_recipient(recipient: str) -> tuple[str, str] | None:
    """(municipality id, webhook id); ids cannot contain '/' (the api's id pattern)."""
    if not recipient.startswith(WEBHOOK_PREFIX):
        return None
    municipality_id, slash, webhook_id = recipient.removeprefix(WEBHOOK_PREFIX).partition("/")
    if not slash or not municipality_id or not webhook_id:
        return None
    return municipality_id, webhook_id


def webhook_routes(level: str, school: SchoolRef, endpoints: Iterable[WebhookRef]) -> list[Route]:
    return [
        Route(webhook_recipient(e.municipality_id, e.id), "integration", "webhook")
        for e in endpoints
        if e.municipality_id == school.municipality_id and e.matches(level, school.id)
    ]
