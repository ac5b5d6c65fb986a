"""Route stage: which mailbox a concern level goes to (DOMAIN.md section 6)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from opspor_shared.reference import SchoolRef

Role = Literal["school", "ppr", "municipality"]

# Every level not listed goes to the school: a new level in a rule pack must reach someone.
LEVEL_ROLES: dict[str, Role] = {
    "ppr-may": "ppr",
    "ppr-must": "ppr",
    "notify-municipality": "municipality",
}


@dataclass(frozen=True)
class Route:
    recipient: str
    role: Role


@dataclass(frozen=True)
class Unroutable:
    role: Role
    reason: Literal["unknown_school", "no_mailbox"]


def role_for_level(level: str) -> Role:
    return LEVEL_ROLES.get(level, "school")


def route(level: str, school: SchoolRef | None) -> Route | Unroutable:
    role = role_for_level(level)
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
