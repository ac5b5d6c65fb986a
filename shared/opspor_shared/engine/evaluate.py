"""Evaluate a rule pack for one pupil: the crossings, computed from scratch.

This is the single definition of DOMAIN.md section 5; the worker's incremental state and the
dry run of a changed pack must both agree with it. Choices made where DOMAIN.md leaves room:

* The pupil's school days are the calendar's school days d with enrolled_from <= d <= horizon.
  Registrations on other dates are ignored (the API refuses non-school days up front).
* ``rolling:M`` is the last M of the pupil's school days, across school years and summer
  breaks; ``consecutive`` likewise counts the pupil's school days, so a weekend, holiday,
  closure or summer break between two absence days does not break a run.
* A fixed period (month, calendar quarter, half-year Jan-Jun / Jul-Dec, the calendar's school
  year) holds the pupil's school days from the period's start, or from enrolment when that is
  later, up to and including d_i. A share is therefore measured over days the pupil was
  enrolled, and ``min_days`` counts those days.
* Rule versions. A rule keeps its id across versions. On each day the rule is judged wholly by
  the pack version in force on that day: its kind, parameters, categories and day threshold
  apply to every day of the window, including days before that version took effect (history
  is re-read under the new definition, never mixed). A rule id absent from the version in
  force, and every day before the first version, counts as "not met". A crossing on d_i is
  "met on d_i under version(d_i)" and "not met on d_{i-1} under version(d_{i-1})", and it
  belongs to version(d_i). Consequences: a version switch that leaves a rule's definition
  unchanged raises nothing new for pupils already over the limit; a tightened or newly added
  rule raises a concern on the switch day for pupils who are over its limit only under the
  new definition; when a pack first takes effect, pupils already over a limit get a concern
  on its first school day (rather than never, which judging d_{i-1} by the new version alone
  would give).
* ``value``: consecutive -> n; count -> absence days in the window; total -> sum of c(d) with
  four decimal places; share -> sum of c(d) / window days, rounded down to four decimal places
  (so a shown value never reaches the limit unless the exact share does).
* ``contributing``: the registrations in the rule's categories on the window's absence days
  (count, consecutive) or on every window day with c(d) > 0 (total, share), sorted by date,
  slot, category, extent.

Cost: O(days) per rule with prefix sums over integer units of 1/10000 day; contributions and
summaries are built only for crossing days.
"""

from __future__ import annotations

import uuid
import weakref
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Sequence
from datetime import date
from decimal import ROUND_DOWN, Decimal
from itertools import accumulate
from typing import Final

from opspor_shared.calendar import SchoolCalendar
from opspor_shared.engine.model import (
    CATEGORIES,
    UNITS_PER_DAY,
    Category,
    Contribution,
    Crossing,
    PeriodKind,
    Registration,
    Rule,
    RulePack,
    RulePackVersion,
    format_decimal,
    format_percent,
    to_units,
)

# Namespace of concern ids, fixed forever: uuid5(NAMESPACE_URL, "urn:opspor:concern").
# Changing it would give every existing concern a new id.
CONCERN_NAMESPACE: Final = uuid.UUID("86cb8814-b6b3-5aae-94eb-7635e2c575f9")


def concern_id(
    pupil_id: str, pack_id: str, rule_id: str, rule_version: str, crossing_date: date
) -> uuid.UUID:
    name = f"{pupil_id}|{pack_id}|{rule_id}|{rule_version}|{crossing_date.isoformat()}"
    return uuid.uuid5(CONCERN_NAMESPACE, name)


# Extents come from a small set (1, 0.5, 0.25, ...), so their conversion is memoised;
# there are at most 10,000 valid values.
_EXTENT_UNITS: dict[Decimal, int] = {}


def _extent_units(extent: Decimal) -> int:
    if not isinstance(extent, Decimal):
        raise TypeError(f"extent must be a Decimal, got {type(extent).__name__}")
    units = _EXTENT_UNITS.get(extent)
    if units is None:
        units = to_units(extent)
        if units is None or not 0 < units <= UNITS_PER_DAY:
            raise ValueError(
                f"extent {extent} must be greater than 0 and at most 1, "
                "with at most 4 decimal places"
            )
        _EXTENT_UNITS[extent] = units
    return units


# Per calendar and fixed period kind: for each school day index, the index of the first
# school day of the same period. Computed once per calendar object and dropped with it.
_PERIOD_STARTS: weakref.WeakKeyDictionary[SchoolCalendar, dict[str, list[int]]] = (
    weakref.WeakKeyDictionary()
)


def _period_starts(calendar: SchoolCalendar, kind: PeriodKind) -> list[int]:
    per_calendar = _PERIOD_STARTS.get(calendar)
    if per_calendar is None:
        per_calendar = {}
        _PERIOD_STARTS[calendar] = per_calendar
    starts = per_calendar.get(kind)
    if starts is None:
        starts = []
        previous: object = None
        start = 0
        for index, d in enumerate(calendar.days):
            key: object
            if kind == "month":
                key = (d.year, d.month)
            elif kind == "quarter":
                key = (d.year, (d.month - 1) // 3)
            elif kind == "half_year":
                key = (d.year, d.month > 6)
            else:
                year = calendar.school_year_of(d)
                key = None if year is None else year.first_day
            if key != previous:
                previous = key
                start = index
            starts.append(start)
        per_calendar[kind] = starts
    return starts


class _Pupil:
    """One pupil's school days and registrations, with per-category-set sums cached."""

    def __init__(
        self,
        calendar: SchoolCalendar,
        days: Sequence[date],
        first: int,
        registrations: Iterable[Registration],
    ) -> None:
        self.calendar = calendar
        self.days = days  # calendar.days[first:first + size]
        self.first = first
        self.size = len(days)
        stop = first + self.size
        self.by_day: dict[int, list[Registration]] = {}
        self.units: dict[str, dict[int, int]] = {c: {} for c in CATEGORIES}
        index_of = calendar.index_of
        for reg in registrations:
            index = index_of(reg.date)
            if index is None or not first <= index < stop:
                continue
            per_day = self.units.get(reg.category)
            if per_day is None:
                raise ValueError(f"registration on {reg.date}: unknown category {reg.category!r}")
            units = _extent_units(reg.extent)
            local = index - first
            per_day[local] = per_day.get(local, 0) + units
            self.by_day.setdefault(local, []).append(reg)
        self._c: dict[frozenset[Category], list[int] | None] = {}
        self._c_prefix: dict[frozenset[Category], list[int]] = {}
        self._absent_prefix: dict[tuple[frozenset[Category], int], list[int]] = {}
        self._starts: dict[str, list[int]] = {}

    def c(self, categories: frozenset[Category]) -> list[int] | None:
        """c(d) in units per day, or None when no registration falls in ``categories``."""
        if categories in self._c:
            return self._c[categories]
        touched: set[int] = set()
        for category in categories:
            touched.update(self.units[category])
        values: list[int] | None = None
        if touched:
            values = [0] * self.size
            for category in categories:
                for local, units in self.units[category].items():
                    values[local] += units
            for local in touched:
                if values[local] > UNITS_PER_DAY:
                    values[local] = UNITS_PER_DAY
        self._c[categories] = values
        return values

    def c_prefix(self, categories: frozenset[Category], c: list[int]) -> list[int]:
        prefix = self._c_prefix.get(categories)
        if prefix is None:
            prefix = list(accumulate(c, initial=0))
            self._c_prefix[categories] = prefix
        return prefix

    def absent_prefix(
        self, categories: frozenset[Category], threshold: int, c: list[int]
    ) -> list[int]:
        key = (categories, threshold)
        prefix = self._absent_prefix.get(key)
        if prefix is None:
            prefix = list(accumulate((v >= threshold for v in c), initial=0))
            self._absent_prefix[key] = prefix
        return prefix

    def starts(self, kind: PeriodKind) -> list[int]:
        """For each pupil day, the pupil-day index where its fixed period starts."""
        starts = self._starts.get(kind)
        if starts is None:
            global_starts = _period_starts(self.calendar, kind)
            first = self.first
            if first == 0:
                starts = global_starts
            else:
                stop = first + self.size
                starts = [s - first if s > first else 0 for s in global_starts[first:stop]]
            self._starts[kind] = starts
        return starts


def _met(pupil: _Pupil, rule: Rule, threshold: int, begin: int, end: int) -> list[bool] | None:
    """Whether ``rule`` is met on each pupil day in [begin, end); None when never."""
    c = pupil.c(rule.categories)
    if c is None:
        return None
    days = range(begin, end)
    if rule.kind == "consecutive":
        assert rule.n is not None
        n = rule.n
        absent = pupil.absent_prefix(rule.categories, threshold, c)
        return [i + 1 >= n and absent[i + 1] - absent[i + 1 - n] == n for i in days]

    over = rule.over
    assert over is not None
    if rule.kind == "share":
        # sum c / w >= p  <=>  (sum c in units) >= (p in units) * w, all integers.
        assert rule.p is not None
        sums = pupil.c_prefix(rule.categories, c)
        p = to_units(rule.p) or 0
        min_days = rule.min_days
        if over.kind == "rolling":
            m = over.length or 0
            return [
                (w := i + 1 if i < m else m) >= min_days and sums[i + 1] - sums[i + 1 - w] >= p * w
                for i in days
            ]
        starts = pupil.starts(over.kind)
        return [
            (w := i + 1 - starts[i]) >= min_days and sums[i + 1] - sums[starts[i]] >= p * w
            for i in days
        ]

    if rule.kind == "count":
        assert rule.k is not None
        sums, limit = pupil.absent_prefix(rule.categories, threshold, c), rule.k
    else:
        assert rule.x is not None
        sums, limit = pupil.c_prefix(rule.categories, c), to_units(rule.x) or 0
    if over.kind == "rolling":
        m = over.length or 0
        return [sums[i + 1] - sums[i + 1 - m if i + 1 > m else 0] >= limit for i in days]
    starts = pupil.starts(over.kind)
    return [sums[i + 1] - sums[starts[i]] >= limit for i in days]


def _window_start(pupil: _Pupil, rule: Rule, i: int) -> int:
    if rule.kind == "consecutive":
        assert rule.n is not None
        return i + 1 - rule.n
    assert rule.over is not None
    if rule.over.kind == "rolling":
        return max(0, i + 1 - (rule.over.length or 0))
    return pupil.starts(rule.over.kind)[i]


def _crossing(
    pupil: _Pupil, pack: RulePack, version: RulePackVersion, rule: Rule, threshold: int, i: int
) -> Crossing:
    c = pupil.c(rule.categories)
    assert c is not None
    start = _window_start(pupil, rule, i)
    window_days = i + 1 - start
    by_absence = rule.kind in ("consecutive", "count")
    contributing: list[Contribution] = []
    for local in range(start, i + 1):
        regs = pupil.by_day.get(local)
        if regs is None or c[local] < (threshold if by_absence else 1):
            continue
        for reg in sorted(regs, key=lambda r: (r.slot, r.category, r.extent)):
            if reg.category in rule.categories:
                contributing.append(Contribution(reg.date, reg.category, reg.extent, reg.slot))

    over = rule.over
    if rule.kind == "consecutive":
        value = Decimal(window_days)
        summary = f"{window_days} consecutive absence days, limit {rule.n}"
    else:
        assert over is not None
        if by_absence:
            absent = pupil.absent_prefix(rule.categories, threshold, c)
            value = Decimal(absent[i + 1] - absent[start])
        else:
            sums = pupil.c_prefix(rule.categories, c)
            total = sums[i + 1] - sums[start]
            # A share is rounded down in units, so it never shows the limit unless it is met.
            value = Decimal(total // window_days if rule.kind == "share" else total).scaleb(-4)
        if over.kind == "rolling":
            span = f"the last {window_days} school days"
            count_where, other_where = f"of {span}", f"over {span}"
        else:
            count_where = other_where = f"{over.describe()} over {window_days} school days"
        if rule.kind == "count":
            summary = f"{value} absence days {count_where}, limit {rule.k}"
        elif rule.kind == "total":
            assert rule.x is not None
            summary = (
                f"{format_decimal(value, 1)} days absent {other_where}, "
                f"limit {format_decimal(rule.x, 1)}"
            )
        else:
            assert rule.p is not None
            minimum = f" (min {rule.min_days} days)" if rule.min_days else ""
            percent = (value * 100).quantize(Decimal("0.1"), rounding=ROUND_DOWN)
            summary = f"{percent}% absence {other_where}, limit {format_percent(rule.p)}%{minimum}"

    return Crossing(
        pack_id=pack.id,
        rule_id=rule.id,
        rule_version=version.version,
        level=rule.level,
        kind=rule.kind,
        date=pupil.days[i],
        window_first=pupil.days[start],
        window_last=pupil.days[i],
        window_days=window_days,
        value=value,
        threshold=rule.threshold,
        contributing=tuple(contributing),
        summary=summary,
    )


def evaluate(
    calendar: SchoolCalendar,
    registrations: Iterable[Registration],
    pack: RulePack,
    horizon: date,
    enrolled_from: date | None = None,
) -> list[Crossing]:
    """Every crossing of ``pack`` for one pupil up to ``horizon``, by (date, rule id, version)."""
    all_days = calendar.days
    first = 0 if enrolled_from is None else bisect_left(all_days, enrolled_from)
    stop = bisect_right(all_days, horizon)
    if first >= stop:
        return []
    days = all_days[first:stop]

    # The pupil days on which each version is in force, as [begin, end) ranges.
    spans: list[tuple[RulePackVersion, int, int]] = []
    versions = pack.versions
    for position, version in enumerate(versions):
        begin = bisect_left(days, version.effective_from)
        end = len(days)
        if position + 1 < len(versions):
            end = bisect_left(days, versions[position + 1].effective_from)
        if begin < end:
            spans.append((version, begin, end))
    if not spans:
        return []

    pupil = _Pupil(calendar, days, first, registrations)
    crossings: list[Crossing] = []
    met_before: dict[str, bool] = {}  # per rule id: met on the day before the current span
    for version, begin, end in spans:
        threshold = to_units(version.day_threshold) or 0
        met_at_end: dict[str, bool] = {}
        for rule in version.rules:
            met = _met(pupil, rule, threshold, begin, end)
            if met is None:
                met_at_end[rule.id] = False
                continue
            was = met_before.get(rule.id, False)
            for offset, now in enumerate(met):
                if now and not was:
                    crossings.append(
                        _crossing(pupil, pack, version, rule, threshold, begin + offset)
                    )
                was = now
            met_at_end[rule.id] = was
        met_before = met_at_end
    crossings.sort(key=lambda c: (c.date, c.rule_id, c.rule_version))
    return crossings
