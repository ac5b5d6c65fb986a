"""Routing the municipality sets (issue 9): validated documents, a per-school override, a log
of every change, and the rule that no level of the packs in use may reach nobody. The format
and the resolution are opspor_shared.routing's, shared with the alerter that acts on them."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from opspor_api.errors import FieldError, InvalidInput, NotFound
from opspor_api.routing.repository import RoutingRepository
from opspor_api.routing.schemas import RoutingOut
from opspor_shared.auth import Principal
from opspor_shared.engine import builtin_packs
from opspor_shared.reference import PackCache, ReferenceRepository
from opspor_shared.routing import (
    ANY_LEVEL,
    Mailboxes,
    Routing,
    from_document,
    nowhere,
    parse_routing,
    recipients,
    routing_document,
)

KEEP: Any = object()


def place_error(place: str, detail: str) -> FieldError:
    """A field error at a place written as the routing parser writes it."""
    pointer = "/" + re.sub(r"\[(\d+)\]", r"/\1", place).replace(".", "/") if place else ""
    return FieldError(field=place or "body", pointer=pointer, detail=detail)


async def pack_levels(
    repo: RoutingRepository, cache: PackCache, municipality_id: str, pack_ids: Iterable[str]
) -> set[str]:
    wanted = list(dict.fromkeys(pack_ids))
    found = await ReferenceRepository(repo.session).packs(
        [(municipality_id, p) for p in wanted if p not in builtin_packs()], cache
    )
    packs = [builtin_packs()[p] for p in wanted if p in builtin_packs()]
    packs += [ref.pack for ref in found.values()]
    return {rule.level for pack in packs for version in pack.versions for rule in version.rules}


async def unreachable(
    repo: RoutingRepository,
    cache: PackCache,
    municipality_id: str,
    municipality: Mapping[str, Any] | None = None,
    schools: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[tuple[str | None, str]]:
    """(school id, level) for every level of a school's packs that would reach nobody, with
    the given changes applied to what is stored (None as school: the municipality before it
    has schools, judged for a school with its own mailbox)."""
    m = await repo.municipality(municipality_id)
    mine: dict[str, Any] = {
        "rule_packs": m.rule_packs if m else [],
        "ppr_mailbox": m.ppr_mailbox if m else None,
        "unit_mailbox": m.unit_mailbox if m else None,
        "routing": m.routing if m else None,
    } | dict(municipality or {})
    each: dict[str | None, dict[str, Any]] = {
        s.id: {"rule_packs": s.rule_packs, "mailbox": s.mailbox, "routing": s.routing}
        for s in await repo.schools_of(municipality_id)
    }
    for changed, changes in (schools or {}).items():
        base = {"rule_packs": None, "mailbox": None, "routing": None}
        each[changed] = each.get(changed, base) | dict(changes)
    if not each:
        each[None] = {"rule_packs": None, "mailbox": "the school's own", "routing": None}
    hooks = [w for w in await repo.webhooks_of(municipality_id) if w.enabled]
    ids = frozenset(w.id for w in hooks)
    municipal = from_document(mine["routing"])
    out: list[tuple[str | None, str]] = []
    for school_id, school in sorted(each.items(), key=lambda kv: kv[0] or ""):
        levels = await pack_levels(
            repo, cache, municipality_id, school["rule_packs"] or mine["rule_packs"]
        )
        boxes = Mailboxes(school["mailbox"], mine["ppr_mailbox"], mine["unit_mailbox"], ids)
        filters = [
            (w.id, frozenset(w.levels))
            for w in hooks
            if not w.school_ids or school_id in w.school_ids
        ]
        for level in nowhere(levels, boxes, from_document(school["routing"]), municipal, filters):
            out.append((school_id, level))
    return out


def nowhere_errors(found: Sequence[tuple[str | None, str]], field: str) -> list[FieldError]:
    by_level: dict[str, list[str]] = {}
    for school_id, level in found:
        by_level.setdefault(level, []).append(school_id if school_id else "any school")
    return [
        place_error(
            field.format(level=level),
            f"level {level!r} would reach nobody at {', '.join(schools)}: no recipient with a "
            "configured mailbox or an enabled webhook endpoint",
        )
        for level, schools in sorted(by_level.items())
    ]


async def _parse(
    repo: RoutingRepository, municipality_id: str, raw: object
) -> tuple[Routing, list[FieldError]]:
    routing, problems = parse_routing(raw)
    errors = [place_error(place, detail) for place, detail in problems]
    known = {w.id for w in await repo.webhooks_of(municipality_id)}
    levels = raw.get("levels") if isinstance(raw, Mapping) else None
    # Read off the document as written, so the place is the client's index.
    for level, items in (levels if isinstance(levels, Mapping) else {}).items():
        for i, item in enumerate(items if isinstance(items, list) else []):
            if not isinstance(item, Mapping) or item.get("to") != "webhook":
                continue
            hook = item.get("id")
            if isinstance(hook, str) and hook not in known:
                errors.append(
                    place_error(f"levels.{level}[{i}].id", "is not a webhook endpoint of yours")
                )
    return routing, errors


async def _out(
    repo: RoutingRepository,
    cache: PackCache,
    municipality_id: str,
    school_id: str | None,
    stored: Routing,
    school: Routing | None,
    municipal: Routing,
    pack_ids: Sequence[str],
) -> RoutingOut:
    levels = [*sorted(await pack_levels(repo, cache, municipality_id, pack_ids)), ANY_LEVEL]
    return RoutingOut(
        municipality_id=municipality_id,
        school_id=school_id,
        levels=routing_document(stored)["levels"],
        effective={
            level: [r.document() for r in recipients(level, school, municipal)] for level in levels
        },
    )


def _own(principal: Principal, municipality_id: str) -> None:
    if municipality_id != principal.municipality:
        raise NotFound(f"no municipality {municipality_id!r}")


async def put_municipality_routing(
    repo: RoutingRepository,
    cache: PackCache,
    principal: Principal,
    municipality_id: str,
    raw: object,
) -> RoutingOut:
    _own(principal, municipality_id)
    m = await repo.municipality(municipality_id)
    if m is None:
        raise NotFound(f"no municipality {municipality_id!r}")
    routing, errors = await _parse(repo, municipality_id, raw)
    document = routing_document(routing)
    if not errors:
        found = await unreachable(repo, cache, municipality_id, {"routing": document})
        errors = nowhere_errors(found, "levels.{level}")
    if errors:
        raise InvalidInput(f"{len(errors)} problem(s) in the routing; nothing was changed", errors)
    await repo.set_municipality_routing(municipality_id, document)
    await repo.log_change(municipality_id, None, document, principal.subject)
    return await _out(repo, cache, municipality_id, None, routing, None, routing, m.rule_packs)


async def get_municipality_routing(
    repo: RoutingRepository, cache: PackCache, principal: Principal, municipality_id: str
) -> RoutingOut:
    _own(principal, municipality_id)
    m = await repo.municipality(municipality_id)
    if m is None:
        raise NotFound(f"no municipality {municipality_id!r}")
    routing = from_document(m.routing)
    return await _out(repo, cache, municipality_id, None, routing, None, routing, m.rule_packs)


async def _own_school(repo: RoutingRepository, principal: Principal, school_id: str) -> Any:
    school = await repo.school(school_id)
    if school is None or school.municipality_id != principal.municipality:
        raise NotFound(f"no school {school_id!r}")
    m = await repo.municipality(school.municipality_id)
    assert m is not None  # foreign key
    return school, m


async def put_school_routing(
    repo: RoutingRepository, cache: PackCache, principal: Principal, school_id: str, raw: object
) -> RoutingOut:
    school, m = await _own_school(repo, principal, school_id)
    routing, errors = await _parse(repo, m.id, raw)
    document = routing_document(routing)
    if not errors:
        found = await unreachable(repo, cache, m.id, schools={school_id: {"routing": document}})
        errors = nowhere_errors([f for f in found if f[0] == school_id], "levels.{level}")
    if errors:
        raise InvalidInput(f"{len(errors)} problem(s) in the routing; nothing was changed", errors)
    await repo.set_school_routing(school_id, document)
    await repo.log_change(m.id, school_id, document, principal.subject)
    packs = school.rule_packs or m.rule_packs
    return await _out(
        repo, cache, m.id, school_id, routing, routing, from_document(m.routing), packs
    )


async def get_school_routing(
    repo: RoutingRepository, cache: PackCache, principal: Principal, school_id: str
) -> RoutingOut:
    school, m = await _own_school(repo, principal, school_id)
    routing = from_document(school.routing)
    packs = school.rule_packs or m.rule_packs
    return await _out(
        repo, cache, m.id, school_id, routing, routing, from_document(m.routing), packs
    )


async def delete_school_routing(
    repo: RoutingRepository, cache: PackCache, principal: Principal, school_id: str
) -> None:
    school, m = await _own_school(repo, principal, school_id)
    if school.routing is None:
        return
    found = await unreachable(repo, cache, m.id, schools={school_id: {"routing": None}})
    if errors := nowhere_errors([f for f in found if f[0] == school_id], "school_id"):
        raise InvalidInput("without its overrides a level would reach nobody", errors)
    await repo.set_school_routing(school_id, None)
    await repo.log_change(m.id, school_id, None, principal.subject)
