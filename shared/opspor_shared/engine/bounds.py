"""Which pupils cannot cross any rule of their packs, told from a few sums of their absence.

A full re-evaluation (a pack or calendar changed, a school's first tick) reads and evaluates
every registration of every pupil, while most pupils are nowhere near a limit. Every rule
needs some absence within one window before it can be met, and a pupil's absence on all dates
bounds the absence in any window:

* consecutive n, count k: n (k) absence days, days whose c(d) in the rule's categories
  reaches the version's day threshold;
* total x: c(d) summing to x;
* share p with min_days m: c(d) summing to p * max(m, 1) (the window holds at least m school
  days, and at least one).

These are the minimums the engine's ``_never_met`` applies within one pupil's evaluation.
``AbsenceFigures`` holds the sums over every dated registration of a pupil: dates the engine
would not count (before enrolment, not school days, past the horizon) only make a figure
larger, so a pupil whose figures are below every rule's minimum has no crossing whatever the
calendar, enrolment, retention cutoff or horizon. The worker reads these figures from
PostgreSQL (opspor_worker.repository) and skips reading and evaluating such pupils'
registrations; ``absence_figures`` is the same computation in Python, which the tests hold the
SQL to.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date

from opspor_shared.engine.evaluate import _extent_units, _limit, _units
from opspor_shared.engine.model import UNITS_PER_DAY, Category, RegistrationLike, RulePack

Categories = frozenset[Category]


@dataclass(frozen=True)
class Needs:
    """The figures ``can_cross`` reads for a set of packs."""

    # (categories, day threshold in units): the number of absence days.
    absence_days: frozenset[tuple[Categories, int]]
    # categories: the sum of c(d) in units, each day's c(d) at most one day.
    units: frozenset[Categories]


@dataclass(frozen=True)
class AbsenceFigures:
    """One pupil's figures; a figure not given is 0 (no registration of that kind)."""

    absence_days: Mapping[tuple[Categories, int], int] = field(default_factory=dict)
    units: Mapping[Categories, int] = field(default_factory=dict)


def needs_of(packs: Iterable[RulePack]) -> Needs:
    absence_days: set[tuple[Categories, int]] = set()
    units: set[Categories] = set()
    for pack in packs:
        for version in pack.versions:
            for rule in version.rules:
                if rule.kind in ("consecutive", "count"):
                    absence_days.add((rule.categories, _units(version.day_threshold)))
                else:
                    units.add(rule.categories)
    return Needs(frozenset(absence_days), frozenset(units))


def can_cross(packs: Iterable[RulePack], figures: AbsenceFigures) -> bool:
    """False when no rule of ``packs`` can be met on any day with this much absence."""
    for pack in packs:
        for version in pack.versions:
            threshold = _units(version.day_threshold)
            for rule in version.rules:
                limit = _limit(rule)
                if rule.kind in ("consecutive", "count"):
                    if figures.absence_days.get((rule.categories, threshold), 0) >= limit:
                        return True
                    continue
                needed = limit * max(rule.min_days, 1) if rule.kind == "share" else limit
                if figures.units.get(rule.categories, 0) >= needed:
                    return True
    return False


def absence_figures(registrations: Iterable[RegistrationLike], needs: Needs) -> AbsenceFigures:
    """The figures of one pupil's live registrations (the definition the SQL follows)."""
    per_day: dict[date, dict[str, int]] = {}
    for reg in registrations:
        day = per_day.setdefault(reg.date, {})
        day[reg.category] = day.get(reg.category, 0) + _extent_units(reg.extent)

    def c(day: dict[str, int], categories: Categories) -> int:
        return min(sum(day.get(category, 0) for category in categories), UNITS_PER_DAY)

    return AbsenceFigures(
        absence_days={
            (categories, threshold): sum(
                1 for day in per_day.values() if c(day, categories) >= threshold
            )
            for categories, threshold in needs.absence_days
        },
        units={
            categories: sum(c(day, categories) for day in per_day.values())
            for categories in needs.units
        },
    )
