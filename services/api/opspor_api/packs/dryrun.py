"""Dry run: which concerns a candidate pack would add or remove, changing nothing.

Both sides are computed from scratch from the api's current registrations and enrolments with
the same engine and the same stays the worker uses, so the comparison is exact and independent
of the worker's state. Crossings are compared by (pupil, school, rule id, rule version, date,
level): a candidate that keeps a rule's id and version keeps its concerns.
"""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime
from typing import Any

from opspor_api.bodies import parse, refuse, valid_fields
from opspor_api.errors import FieldError, NotFound, field_error
from opspor_api.packs.repository import PackRepository
from opspor_api.packs.schemas import (
    LIST_LIMIT,
    DryRunConcern,
    DryRunCount,
    DryRunIn,
    DryRunOut,
)
from opspor_api.packs.service import pack_location
from opspor_shared.calendar import SchoolCalendar, horizon_for
from opspor_shared.engine import PackError, Registration, RulePack, parse_pack
from opspor_shared.engine.timeline import enrolled_stays, evaluate_stays
from opspor_shared.reference import CalendarCache, PackCache, ReferenceRepository
from opspor_shared.registrations import school_of_latest

MAX_DAYS = 800  # two school years and some: a bound on the work one request can ask for

Key = tuple[str, str, str, str, date, str]


@dataclass(frozen=True)
class _Schools:
    """What the comparison needs of the schools, read before it runs in a thread."""

    # Every school a pupil of the compared ones attends: its calendar and real packs decide
    # the pupil's stays exactly as in the worker (a stay at a school without packs is left out).
    judged: dict[str, tuple[SchoolCalendar, tuple[RulePack, ...]]]
    timezones: dict[str, str]
    compared: frozenset[str]  # where the candidate is tried
    current: RulePack | None  # the replaced pack, None when the candidate is added
    now: datetime


def _check(fields: dict[str, Any]) -> tuple[RulePack | None, list[FieldError]]:
    """The candidate pack and the day range, of the fields that passed the schema."""
    errors = []
    first_day, last_day = fields.get("first_day"), fields.get("last_day")
    if first_day is not None and last_day is not None:
        if last_day < first_day:
            errors.append(field_error(("last_day",), "is before first_day"))
        elif (last_day - first_day).days > MAX_DAYS:
            errors.append(field_error(("last_day",), f"a dry run spans at most {MAX_DAYS} days"))
    pack = None
    if (document := fields.get("pack")) is not None:
        try:
            pack = parse_pack(document)
        except PackError as exc:
            errors.extend(field_error(("pack", *pack_location(w)), m) for w, m in exc.problems)
    return pack, errors


def _concern(pupil: str, school: str, c: Any) -> DryRunConcern:
    return DryRunConcern(
        pupil_id=pupil,
        school_id=school,
        pack_id=c.pack_id,
        rule_id=c.rule_id,
        rule_version=c.rule_version,
        level=c.level,
        crossing_date=c.date,
        summary=c.summary,
    )


def _compare(
    schools: _Schools,
    candidate: RulePack,
    registrations: Sequence[Any],
    enrolments: dict[str, list[tuple[str, date, date | None]]],
    first_day: date,
    last_day: date,
) -> DryRunOut:
    by_pupil: dict[str, list[Any]] = defaultdict(list)
    for row in registrations:
        by_pupil[row.pupil_id].append(row)
    added: dict[Key, DryRunConcern] = {}
    removed: dict[Key, DryRunConcern] = {}
    unchanged = 0
    evaluated = 0
    for pupil, rows in by_pupil.items():
        stays, _ = enrolled_stays(enrolments.get(pupil, []), school_of_latest(rows), schools.judged)
        if not any(s.school_id in schools.compared for s in stays):
            continue
        current = stays[-1]
        horizon = horizon_for(current.calendar, schools.timezones[current.school_id], schools.now)
        if horizon is None:
            continue
        evaluated += 1
        facts = [Registration(r.date, r.slot, r.category, r.extent) for r in rows]
        sides: list[dict[Key, DryRunConcern]] = []
        for pack in (schools.current, candidate):
            # The pack tried on this side at the compared schools, none elsewhere: the other
            # packs' crossings are the same on both sides. Every stay keeps its days.
            tried = tuple(
                replace(
                    s, packs=(pack,) if pack is not None and s.school_id in schools.compared else ()
                )
                for s in stays
            )
            found: dict[Key, DryRunConcern] = {}
            for owner, c in evaluate_stays(tried, facts, min(horizon, last_day)):
                if c.date >= first_day:
                    key = (pupil, owner, c.rule_id, c.rule_version, c.date, c.level)
                    found[key] = _concern(pupil, owner, c)
            sides.append(found)
        now, then = sides
        unchanged += len(now.keys() & then.keys())
        added.update((k, v) for k, v in then.items() if k not in now)
        removed.update((k, v) for k, v in now.items() if k not in then)

    counts: Counter[tuple[str, str, str]] = Counter()
    for key in added:
        counts[(key[1], key[5], "added")] += 1
    for key in removed:
        counts[(key[1], key[5], "removed")] += 1
    per = sorted({(s, level) for s, level, _ in counts})
    ordered_added = sorted(added.values(), key=lambda c: (c.crossing_date, c.pupil_id, c.rule_id))
    ordered_removed = sorted(
        removed.values(), key=lambda c: (c.crossing_date, c.pupil_id, c.rule_id)
    )
    return DryRunOut(
        schools=sorted(schools.compared),
        pupils_evaluated=evaluated,
        added=len(added),
        removed=len(removed),
        unchanged=unchanged,
        counts=[
            DryRunCount(
                school_id=s,
                level=level,
                added=counts[(s, level, "added")],
                removed=counts[(s, level, "removed")],
            )
            for s, level in per
        ],
        concerns_added=ordered_added[:LIST_LIMIT],
        concerns_removed=ordered_removed[:LIST_LIMIT],
        truncated=len(added) > LIST_LIMIT or len(removed) > LIST_LIMIT,
    )


async def dry_run(
    repo: PackRepository,
    municipality_id: str,
    raw: object,
    calendars: CalendarCache,
    packs: PackCache,
    now: datetime,
) -> DryRunOut:
    """Checks the request against the schema and the domain at once (every bad field named in
    one answer), then compares."""
    body, errors = parse(DryRunIn, raw)
    fields = valid_fields(DryRunIn, raw, errors, (), ("pack", "replaces", "first_day", "last_day"))
    candidate, more = _check(fields)
    errors += more
    reference = ReferenceRepository(repo.session)
    every = await reference.schools()
    refs = {s: r for s, r in every.items() if r.municipality_id == municipality_id}
    if not refs:
        refuse(errors, "nothing was compared")
        raise NotFound(f"no municipality {municipality_id!r} with schools")
    if (replaces := fields.get("replaces")) is not None:
        refs = {s: r for s, r in refs.items() if replaces in r.rule_packs}
        if not refs:
            errors.append(
                field_error(("replaces",), "is not in force at any school of the municipality")
            )
    refuse(errors, "nothing was compared")
    assert body is not None and candidate is not None
    held = await reference.packs(
        {(municipality_id, body.replaces)} if body.replaces else set(), packs
    )
    registrations = await repo.live_registrations(sorted(refs))
    pupils = sorted({r.pupil_id for r in registrations})
    enrolments = await repo.enrolments(pupils)
    attended = {r.school_id for r in registrations} | {
        school for rows in enrolments.values() for school, _, _ in rows
    }
    known = {s: every[s] for s in attended | set(refs) if s in every}
    schools = _Schools(
        judged=await reference.judged(known, calendars, packs),
        timezones={s: r.timezone for s, r in known.items()},
        compared=frozenset(refs),
        current=held[(municipality_id, body.replaces)].pack if body.replaces else None,
        now=now,
    )
    # Pure CPU work: off the event loop, so other requests keep being served meanwhile.
    return await asyncio.to_thread(
        _compare, schools, candidate, registrations, enrolments, body.first_day, body.last_day
    )
