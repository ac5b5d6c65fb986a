"""Who hears of a concern of each level: the municipality's routing (DOMAIN.md s.6), as data.

A routing document maps levels to recipients:

    {"levels": {"ppr-must": [{"to": "ppr"}, {"to": "mailbox", "address": "skolechef@k.dk"}],
                "*": [{"to": "school"}]}}

Recipients: `school` (the school's secure mailbox), `ppr` (the municipality's PPR mailbox),
`unit` (the municipality's unit mailbox), `mailbox` (a named address), `webhook` (a stored
webhook endpoint by id). A mail recipient may carry a send `window` ({"days": [1, 2, 3, 4, 5],
"from": "07:00", "to": "17:00"}, the school's local time): mail due outside it waits until it
opens. A mail recipient may instead (or as well) take a daily `digest` at a local time
({"to": "school", "digest": "08:00"}): one mail a day listing every concern raised and withdrawn
since the last one; with a window, the digest goes on the window's days and its time must lie
inside the window. `*` stands for every level the document does not name. A municipality
stores one document; a school may store its own, which overrides it level by level. A level is
looked up exactly in the school's, the municipality's and the default document, in that order,
and only then by `*` in the same order. Without documents the default below is today's fixed
table. The api validates documents with `parse_routing` and refuses levels that would reach
nobody; the alerter resolves recipients with `recipients`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from opspor_shared.text import control_character

Kind = Literal["school", "ppr", "unit", "mailbox", "webhook"]
KINDS: tuple[Kind, ...] = ("school", "ppr", "unit", "mailbox", "webhook")
ANY_LEVEL = "*"
_LEVEL = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# A deliberately plain check: one @, something on each side, a dot in the domain, no spaces.
_ADDRESS = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")
_CLOCK = re.compile(r"^([01][0-9]|2[0-3]):[0-5][0-9]$")


@dataclass(frozen=True)
class Window:
    """When mail may go to a recipient: these ISO weekdays (1 = Monday), from..to, in the
    school's local time. Mail due outside it waits until it opens."""

    days: tuple[int, ...]
    start: time
    end: time

    def document(self) -> dict[str, Any]:
        return {
            "days": list(self.days),
            "from": self.start.strftime("%H:%M"),
            "to": self.end.strftime("%H:%M"),
        }

    def next_open(self, after: datetime, timezone: str) -> datetime:
        """`after` itself when the window is open then, else the next opening (DST-correct:
        the opening is a local wall-clock time on the day it falls)."""
        zone = ZoneInfo(timezone)
        local = after.astimezone(zone)
        for i in range(8):
            day = local.date() + timedelta(days=i)
            if day.isoweekday() not in self.days:
                continue
            opens = datetime.combine(day, self.start, zone)
            closes = datetime.combine(day, self.end, zone)
            if i == 0 and opens <= local < closes:
                return after
            if opens > local:
                return opens.astimezone(after.tzinfo)
        raise AssertionError("a window has at least one day")  # parse_routing ensures it


@dataclass(frozen=True)
class Recipient:
    to: Kind
    address: str | None = None  # mailbox
    webhook: str | None = None  # webhook
    window: Window | None = None  # mail only
    digest: time | None = None  # mail only: one mail a day at this local time

    def document(self) -> dict[str, Any]:
        out: dict[str, Any] = {"to": self.to}
        if self.address is not None:
            out["address"] = self.address
        if self.webhook is not None:
            out["id"] = self.webhook
        if self.window is not None:
            out["window"] = self.window.document()
        if self.digest is not None:
            out["digest"] = self.digest.strftime("%H:%M")
        return out


def next_digest(at: time, window: Window | None, after: datetime, timezone: str) -> datetime:
    """The first digest time `at` at or after `after` (on a window day when there is a window),
    a local wall-clock time on its day, so a digest stays at 08:00 across a DST change."""
    zone = ZoneInfo(timezone)
    local = after.astimezone(zone)
    for i in range(8):
        day = local.date() + timedelta(days=i)
        if window is not None and day.isoweekday() not in window.days:
            continue
        slot = datetime.combine(day, at, zone)
        if slot >= local:
            return slot.astimezone(after.tzinfo)
    raise AssertionError("a window has at least one day")  # parse_routing ensures it


Routing = Mapping[str, tuple[Recipient, ...]]

DEFAULT: Routing = {
    "ppr-may": (Recipient("ppr"),),
    "ppr-must": (Recipient("ppr"),),
    "notify-municipality": (Recipient("unit"),),
    ANY_LEVEL: (Recipient("school"),),
}


def parse_routing(raw: object) -> tuple[dict[str, tuple[Recipient, ...]], list[tuple[str, str]]]:
    """The document's routing and every problem in it as (place, message), e.g.
    ("levels.ppr-must[1].address", "is not a mail address")."""
    problems: list[tuple[str, str]] = []
    if not isinstance(raw, Mapping):
        return {}, [("", "must be an object with `levels`")]
    for key in raw:
        if key != "levels":
            problems.append((str(key), "is not a field of a routing document"))
    levels = raw.get("levels")
    if not isinstance(levels, Mapping) or not levels:
        problems.append(("levels", "must map at least one level (or `*`) to its recipients"))
        return {}, problems
    routing: dict[str, tuple[Recipient, ...]] = {}
    for level, items in levels.items():
        place = f"levels.{level}"
        if not isinstance(level, str) or (level != ANY_LEVEL and not _LEVEL.fullmatch(level)):
            problems.append((place, "is not a level (lowercase letters, digits, . _ -) or `*`"))
            continue
        if not isinstance(items, list) or not items:
            problems.append((place, "routes nowhere: name at least one recipient"))
            continue
        found: list[Recipient] = []
        for i, item in enumerate(items):
            recipient = _recipient(item, f"{place}[{i}]", problems)
            if recipient is None:
                continue
            if recipient in found:
                problems.append((f"{place}[{i}]", "names the same recipient twice"))
            found.append(recipient)
        routing[level] = tuple(found)
    return routing, problems


def _recipient(item: object, place: str, problems: list[tuple[str, str]]) -> Recipient | None:
    if not isinstance(item, Mapping):
        problems.append((place, "must be an object with `to`"))
        return None
    to = item.get("to")
    allowed = {"to"} | ({"address"} if to == "mailbox" else {"id"} if to == "webhook" else set())
    if to != "webhook":
        allowed |= {"window", "digest"}  # webhooks are for machines: immediate, one per event
    ok = True
    for key in item:
        if key not in allowed:
            problems.append((f"{place}.{key}", f"is not a field of a `{to}` recipient"))
            ok = False
    if to not in KINDS:
        problems.append((f"{place}.to", f"must be one of {', '.join(KINDS)}"))
        return None
    window = None
    if "window" in item and to != "webhook":
        window = _window(item["window"], f"{place}.window", problems)
        ok = ok and window is not None
    digest = None
    if "digest" in item and to != "webhook":
        value = item["digest"]
        if not isinstance(value, str) or not _CLOCK.fullmatch(value):
            problems.append((f"{place}.digest", "must be a local time HH:MM"))
            ok = False
        else:
            digest = time.fromisoformat(value)
            if window is not None and not window.start <= digest < window.end:
                problems.append((f"{place}.digest", "lies outside the recipient's send window"))
                ok = False
    if to == "mailbox":
        address = item.get("address")
        if not isinstance(address, str) or len(address) > 254 or not _ADDRESS.fullmatch(address):
            problems.append((f"{place}.address", "is not a mail address"))
            return None
        if (found := control_character(address)) is not None:
            problems.append((f"{place}.address", f"contains the control character {found}"))
            return None
        return (
            Recipient("mailbox", address=address.strip(), window=window, digest=digest)
            if ok
            else None
        )
    if to == "webhook":
        webhook = item.get("id")
        if not isinstance(webhook, str) or not _ID.fullmatch(webhook):
            problems.append((f"{place}.id", "is not a webhook endpoint id"))
            return None
        return Recipient("webhook", webhook=webhook) if ok else None
    return Recipient(to, window=window, digest=digest) if ok else None


def _window(raw: object, place: str, problems: list[tuple[str, str]]) -> Window | None:
    if not isinstance(raw, Mapping):
        problems.append((place, 'must be {"days": [1, ..., 5], "from": "07:00", "to": "17:00"}'))
        return None
    before = len(problems)
    for key in raw:
        if key not in ("days", "from", "to"):
            problems.append((f"{place}.{key}", "is not a field of a window"))
    days = raw.get("days")
    if (
        not isinstance(days, list)
        or not days
        or any(isinstance(d, bool) or not isinstance(d, int) or not 1 <= d <= 7 for d in days)
        or len(set(days)) != len(days)
    ):
        problems.append((f"{place}.days", "must list ISO weekdays 1 (Monday) to 7, each once"))
    bounds: dict[str, time] = {}
    for key in ("from", "to"):
        value = raw.get(key)
        if not isinstance(value, str) or not _CLOCK.fullmatch(value):
            problems.append((f"{place}.{key}", "must be a local time HH:MM"))
        else:
            bounds[key] = time.fromisoformat(value)
    if len(bounds) == 2 and bounds["from"] >= bounds["to"]:
        problems.append((f"{place}.to", "must be after `from` (a window lies within one day)"))
    if len(problems) > before:
        return None
    assert isinstance(days, list)
    return Window(tuple(sorted(days)), bounds["from"], bounds["to"])


def routing_document(routing: Routing) -> dict[str, Any]:
    return {"levels": {level: [r.document() for r in rs] for level, rs in routing.items()}}


def from_document(raw: object) -> dict[str, tuple[Recipient, ...]]:
    """A stored document (validated when it was stored); a damaged one counts as absent."""
    routing, problems = parse_routing(raw) if raw else ({}, [])
    return {} if problems else routing


def recipients(
    level: str, school: Routing | None = None, municipality: Routing | None = None
) -> tuple[Recipient, ...]:
    documents = [d for d in (school, municipality, DEFAULT) if d]
    for key in (level, ANY_LEVEL):
        for document in documents:
            if key in document:
                return document[key]
    return ()  # unreachable: DEFAULT has `*`


@dataclass(frozen=True)
class LevelsReaching:
    """Which levels a school's routing sends to a recipient kind, for every level there can
    be (levels are open-ended: a municipality may invent its own): those in ``named`` that are
    in ``levels``, and every level outside ``named`` when ``others`` (the `*` routing)."""

    named: frozenset[str]
    levels: frozenset[str]
    others: bool


def levels_reaching(
    kind: Kind, school: Routing | None = None, municipality: Routing | None = None
) -> LevelsReaching:
    """The levels `recipients` sends to a recipient of ``kind``; e.g. the concerns PPR may
    read (DOMAIN.md s.9: "PPR sees the concerns routed to it")."""
    documents = [d for d in (school, municipality, DEFAULT) if d]
    named = frozenset(level for d in documents for level in d) - {ANY_LEVEL}

    def reaches(level: str) -> bool:
        return any(r.to == kind for r in recipients(level, school, municipality))

    return LevelsReaching(
        named, frozenset(level for level in named if reaches(level)), reaches(ANY_LEVEL)
    )


@dataclass(frozen=True)
class Mailboxes:
    """What a recipient kind needs to be deliverable, for one school."""

    school: str | None
    ppr: str | None
    unit: str | None
    webhooks: frozenset[str]  # ids of the municipality's enabled endpoints


def deliverable(recipient: Recipient, boxes: Mailboxes) -> bool:
    if recipient.to == "mailbox":
        return True
    if recipient.to == "webhook":
        return recipient.webhook in boxes.webhooks
    value = {"school": boxes.school, "ppr": boxes.ppr, "unit": boxes.unit}[recipient.to]
    return bool(value and value.strip())


def nowhere(
    levels: Iterable[str],
    boxes: Mailboxes,
    school: Routing | None,
    municipality: Routing | None,
    filtered_webhooks: Iterable[tuple[str, frozenset[str]]] = (),
) -> list[str]:
    """The levels whose recipients cannot be reached: no recipient deliverable, and no enabled
    webhook endpoint whose own level filter (empty: every level) takes the level."""
    hooks = list(filtered_webhooks)
    out = []
    for level in sorted(set(levels)):
        if any(deliverable(r, boxes) for r in recipients(level, school, municipality)):
            continue
        if any(not wanted or level in wanted for _, wanted in hooks):
            continue
        out.append(level)
    return out
