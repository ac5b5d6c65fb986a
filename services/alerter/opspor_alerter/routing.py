"""Route stage: who hears of a concern (DOMAIN.md section 6).

A concern level routes to the recipients the municipality's routing names for it (the school's
overrides first; without documents the default table: the school's mailbox, PPR's for
`ppr-may`/`ppr-must`, the unit's for `notify-municipality`; see opspor_shared.routing), and to
every enabled webhook endpoint of the school's municipality whose own level and school filters
let it through. A webhook the routing names gets the level whatever its filters say.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import time
from typing import Literal

from opspor_alerter.notify import Channel
from opspor_shared.reference import SchoolRef, WebhookRef
from opspor_shared.routing import Window, from_document, recipients

Role = Literal["school", "ppr", "municipality", "mailbox", "integration"]
MailRole = Literal["school", "ppr", "municipality"]

WEBHOOK_PREFIX = "webhook:"
_MAIL_ROLES: dict[str, MailRole] = {"school": "school", "ppr": "ppr", "unit": "municipality"}


@dataclass(frozen=True)
class Route:
    recipient: str
    role: Role
    channel: Channel = "smtp"
    window: Window | None = None  # when mail may go (the routing's send window)
    digest: time | None = None  # one mail a day at this local time instead of one per concern


@dataclass(frozen=True)
class Unroutable:
    role: Role
    reason: Literal["unknown_school", "no_mailbox", "no_endpoint"]


def role_for_level(level: str) -> MailRole:
    """Whose mailbox the default table sends a level to (for reporting an unknown school)."""
    first = recipients(level)[0].to
    return _MAIL_ROLES.get(first, "school")


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


def routes_for(
    level: str, school: SchoolRef, endpoints: Iterable[WebhookRef]
) -> tuple[list[Route], list[Unroutable]]:
    """Everyone who gets a concern of this level at this school, and who could not be reached
    (a mailbox no longer configured, a webhook endpoint removed or disabled since the routing
    was stored)."""
    hooks = {e.id: e for e in endpoints if e.municipality_id == school.municipality_id}
    found: list[Route] = []
    missing: list[Unroutable] = []
    chosen = recipients(level, from_document(school.school_routing), from_document(school.routing))
    for r in chosen:
        if r.to == "mailbox" and r.address:
            found.append(Route(r.address, "mailbox", window=r.window, digest=r.digest))
        elif r.to == "webhook":
            hook = hooks.get(r.webhook or "")
            if hook is None or not hook.enabled:
                missing.append(Unroutable("integration", "no_endpoint"))
            else:
                found.append(
                    Route(
                        webhook_recipient(hook.municipality_id, hook.id), "integration", "webhook"
                    )
                )
        else:
            route_ = mailbox_route(_MAIL_ROLES[r.to], school)
            if isinstance(route_, Unroutable):
                missing.append(route_)
            else:
                found.append(replace(route_, window=r.window, digest=r.digest))
    found += webhook_routes(level, school, hooks.values())
    unique = list({r.recipient: r for r in found}.values())
    return unique, missing
