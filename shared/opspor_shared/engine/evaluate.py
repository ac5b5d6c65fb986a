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

Cost: per rule, O(r log r) for a pupil with r registrations, whatever the number of school
days. c(d) is kept only on the days it is above 0, with running sums in integer units of
1/10000 day, so a window's sum or count is two bisections; and a rule is judged only on the
days where it can start to be met (see ``_candidates``) instead of on every school day.
Contributions and summaries are built only for crossing days.
"""

from __future__ import annotations

import uuid
import weakref
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Sequence
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
    RegistrationColumns,
    RegistrationLike,
    Rule,
    RulePack,
    RulePackVersion,
    columns_of,
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


# Per calendar: index lists derived from its school days, computed once per calendar object
# and dropped with it.
_PER_CALENDAR: weakref.WeakKeyDictionary[SchoolCalendar, dict[tuple[str, str], list[int]]] = (
    weakref.WeakKeyDictionary()
)


def _per_calendar(
    calendar: SchoolCalendar, key: tuple[str, str], compute: Callable[[], list[int]]
) -> list[int]:
    cached = _PER_CALENDAR.setdefault(calendar, {})
    found = cached.get(key)
    if found is None:
        found = cached[key] = compute()
    return found


def _period_starts(calendar: SchoolCalendar, kind: PeriodKind) -> list[int]:
    """For each school day index, the index of the first school day of the same period."""

    def compute() -> list[int]:
        starts: list[int] = []
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
        return starts

    return _per_calendar(calendar, ("starts", kind), compute)


def _period_firsts(calendar: SchoolCalendar, kind: PeriodKind) -> list[int]:
    """The school day indices on which a fixed period starts, in order."""
    return _per_calendar(
        calendar,
        ("firsts", kind),
        lambda: [i for i, start in enumerate(_period_starts(calendar, kind)) if start == i],
    )


# Thresholds, totals and shares of the packs in units; a handful of distinct values.
_UNITS: dict[Decimal, int] = {}


def _units(value: Decimal) -> int:
    units = _UNITS.get(value)
    if units is None:
        units = to_units(value) or 0
        _UNITS[value] = units
    return units


class _Sums:
    """c(d) of one category set, kept only on the pupil days where it is above 0.

    ``local`` holds those days in order and ``cum`` the running sum of their units, so a
    window's sum or its number of absence days costs two bisections, whatever its length:
    the cost follows the pupil's registrations, not the number of school days.
    """

    __slots__ = ("_absent", "cum", "local", "units")

    def __init__(self, per_day: dict[int, int]) -> None:
        self.local = sorted(per_day)
        self.units = [min(per_day[d], UNITS_PER_DAY) for d in self.local]
        self.cum = list(accumulate(self.units, initial=0))
        self._absent: dict[int, list[int]] = {}

    def total(self, start: int, stop: int) -> int:
        """The sum of c(d) over pupil days [start, stop)."""
        local, cum = self.local, self.cum
        return cum[bisect_left(local, stop)] - cum[bisect_left(local, start)]

    def absent(self, threshold: int) -> list[int]:
        """The absence days (c(d) >= threshold), in order."""
        days = self._absent.get(threshold)
        if days is None:
            days = [d for d, u in zip(self.local, self.units, strict=True) if u >= threshold]
            self._absent[threshold] = days
        return days


class _Pupil:
    """One pupil's school days and registrations, with per-category-set sums cached."""

    def __init__(
        self,
        calendar: SchoolCalendar,
        days: Sequence[date],
        first: int,
        registrations: RegistrationColumns,
    ) -> None:
        self.calendar = calendar
        self.days = days  # calendar.days[first:first + size]
        self.first = first
        self.size = len(days)
        self.registrations = registrations
        stop = first + self.size
        self.units: dict[str, dict[int, int]] = {c: {} for c in CATEGORIES}
        self._by_day: dict[int, list[int]] | None = None
        index_of = calendar.index_of
        known_extents = _EXTENT_UNITS
        columns = zip(
            registrations.dates, registrations.categories, registrations.extents, strict=True
        )
        for day, category, extent in columns:
            index = index_of(day)
            if index is None or not first <= index < stop:
                continue
            per_day = self.units.get(category)
            if per_day is None:
                raise ValueError(f"registration on {day}: unknown category {category!r}")
            units = known_extents.get(extent) if type(extent) is Decimal else None
            if units is None:
                units = _extent_units(extent)
            local = index - first
            per_day[local] = per_day.get(local, 0) + units
        self._sums: dict[frozenset[Category], _Sums | None] = {}
        self._calendar_starts: dict[str, list[int]] = {}  # per kind, calendar day indices

    @property
    def by_day(self) -> dict[int, list[int]]:
        """Per pupil day, the positions of its registrations in the columns: for the
        contributions of the few crossing days, so found again only when one is built."""
        if self._by_day is None:
            self._by_day = {}
            index_of, first, stop = self.calendar.index_of, self.first, self.first + self.size
            for position, day in enumerate(self.registrations.dates):
                index = index_of(day)
                if index is not None and first <= index < stop:
                    self._by_day.setdefault(index - first, []).append(position)
        return self._by_day

    def sums(self, categories: frozenset[Category]) -> _Sums | None:
        """c(d) for ``categories``, or None when no registration falls in them."""
        if categories in self._sums:
            return self._sums[categories]
        per_day: dict[int, int] = {}
        for category in categories:
            for local, units in self.units[category].items():
                per_day[local] = per_day.get(local, 0) + units
        sums = _Sums(per_day) if per_day else None
        self._sums[categories] = sums
        return sums

    def period_start(self, kind: PeriodKind, i: int) -> int:
        """The pupil day on which the fixed period holding pupil day ``i`` starts for the pupil."""
        starts = self._calendar_starts.get(kind)
        if starts is None:
            starts = self._calendar_starts[kind] = _period_starts(self.calendar, kind)
        start = starts[self.first + i] - self.first
        return start if start > 0 else 0

    def period_firsts(self, kind: PeriodKind, lo: int, hi: int) -> list[int]:
        """The pupil days in [lo, hi) on which a fixed period starts for the pupil, in order."""
        firsts = _period_firsts(self.calendar, kind)
        first = self.first
        out = [
            g - first
            for g in firsts[
                bisect_left(firsts, first + max(lo, 1)) : bisect_left(firsts, first + hi)
            ]
        ]
        if lo <= 0 < hi:
            out.insert(0, 0)  # the pupil's first day starts a period, whatever the calendar says
        return out


def _window_start(pupil: _Pupil, rule: Rule, i: int) -> int:
    if rule.kind == "consecutive":
        assert rule.n is not None
        return i + 1 - rule.n
    over = rule.over
    assert over is not None
    if over.kind == "rolling":
        m = over.length or 0
        return i + 1 - m if i + 1 > m else 0
    return pupil.period_start(over.kind, i)


def _limit(rule: Rule) -> int:
    """n, k, or x or p in units."""
    if rule.kind == "consecutive":
        assert rule.n is not None
        return rule.n
    if rule.kind == "count":
        assert rule.k is not None
        return rule.k
    value = rule.x if rule.kind == "total" else rule.p
    assert value is not None
    return _units(value)


def _is_met(pupil: _Pupil, rule: Rule, sums: _Sums, threshold: int, limit: int, i: int) -> bool:
    """Whether ``rule`` is met on pupil day ``i`` (DOMAIN.md section 5)."""
    kind = rule.kind
    if kind == "consecutive":
        if i + 1 < limit:
            return False
        absent = sums.absent(threshold)
        return bisect_right(absent, i) - bisect_left(absent, i + 1 - limit) == limit
    start = _window_start(pupil, rule, i)
    if kind == "count":
        absent = sums.absent(threshold)
        return bisect_right(absent, i) - bisect_left(absent, start) >= limit
    if kind == "total":
        return sums.total(start, i + 1) >= limit
    # sum c / w >= p  <=>  (sum c in units) >= (p in units) * w, all integers.
    w = i + 1 - start
    return w >= rule.min_days and sums.total(start, i + 1) >= limit * w


def _never_met(rule: Rule, sums: _Sums, threshold: int, limit: int, end: int) -> bool:
    """True when even all of the pupil's absence before ``end`` in one window is too little."""
    kind = rule.kind
    if kind in ("consecutive", "count"):
        return bisect_left(sums.absent(threshold), end) < limit
    # A share needs at least p of one day's units: its window holds at least one day.
    needed = limit * max(rule.min_days, 1) if kind == "share" else limit
    return sums.total(0, end) < needed


def _candidates(
    pupil: _Pupil, rule: Rule, sums: _Sums, threshold: int, begin: int, end: int
) -> list[int]:
    """The pupil days in [begin, end) on which ``rule`` can start to be met.

    A window never starts earlier than the previous day's window (rolling windows slide,
    fixed periods restart), so on a day that adds nothing to it (c(d) = 0, or not an absence
    day for count and consecutive), its sum and absence days cannot grow: if the rule is met
    there, it was met the day before. Only a share can still start to be met on such a day,
    when its window reaches min_days (its sum stays and its day count grows, which lowers the
    share). The span's first day is judged against the previous version, so it is always one.
    """
    marks = sums.absent(threshold) if rule.kind in ("consecutive", "count") else sums.local
    days = [begin, *marks[bisect_right(marks, begin) : bisect_left(marks, end)]]
    if rule.kind == "share" and rule.min_days > 0:
        assert rule.over is not None
        reach = rule.min_days - 1  # window start + reach = the day the window holds min_days
        if rule.over.kind == "rolling":
            firsts = [0]
        else:
            firsts = pupil.period_firsts(rule.over.kind, begin - reach + 1, end - reach)
        extra = [
            f + reach
            for f in firsts
            if begin < f + reach < end
            and (rule.over.kind == "rolling" or pupil.period_start(rule.over.kind, f + reach) == f)
        ]
        if extra:
            days = sorted({*days, *extra})
    return days


def _crossing(
    pupil: _Pupil,
    pack: RulePack,
    version: RulePackVersion,
    rule: Rule,
    threshold: int,
    sums: _Sums,
    i: int,
) -> Crossing:
    start = _window_start(pupil, rule, i)
    window_days = i + 1 - start
    by_absence = rule.kind in ("consecutive", "count")
    minimum = threshold if by_absence else 1
    lo, hi = bisect_left(sums.local, start), bisect_right(sums.local, i)
    contributing: list[Contribution] = []
    by_day = pupil.by_day
    dates, slots, categories, extents = pupil.registrations
    for local, units in zip(sums.local[lo:hi], sums.units[lo:hi], strict=True):
        if units < minimum:
            continue
        for p in sorted(by_day[local], key=lambda p: (slots[p], categories[p], extents[p])):
            category = categories[p]
            if category in rule.categories:
                contributing.append(Contribution(dates[p], category, extents[p], slots[p]))

    over = rule.over
    if rule.kind == "consecutive":
        value = Decimal(window_days)
        summary = f"{window_days} consecutive absence days, limit {rule.n}"
    else:
        assert over is not None
        if by_absence:
            absent = sums.absent(threshold)
            value = Decimal(bisect_right(absent, i) - bisect_left(absent, start))
        else:
            total = sums.total(start, i + 1)
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
            minimum_text = f" (min {rule.min_days} days)" if rule.min_days else ""
            percent = (value * 100).quantize(Decimal("0.1"), rounding=ROUND_DOWN)
            summary = (
                f"{percent}% absence {other_where}, limit {format_percent(rule.p)}%{minimum_text}"
            )

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
    registrations: Iterable[RegistrationLike] | RegistrationColumns,
    pack: RulePack,
    horizon: date,
    enrolled_from: date | None = None,
) -> list[Crossing]:
    """Every crossing of ``pack`` for one pupil up to ``horizon``, by (date, rule id, version)."""
    return evaluate_packs(calendar, registrations, (pack,), horizon, enrolled_from)[0]


def evaluate_packs(
    calendar: SchoolCalendar,
    registrations: Iterable[RegistrationLike] | RegistrationColumns,
    packs: Sequence[RulePack],
    horizon: date,
    enrolled_from: date | None = None,
) -> list[list[Crossing]]:
    """``evaluate`` for each of ``packs``, in order; the pupil's days and sums are built once."""
    all_days = calendar.days
    first = 0 if enrolled_from is None else bisect_left(all_days, enrolled_from)
    stop = bisect_right(all_days, horizon)
    if first >= stop:
        return [[] for _ in packs]
    days = all_days[first:stop]
    pupil: _Pupil | None = None
    out: list[list[Crossing]] = []
    for pack in packs:
        spans = _spans(pack, days)
        if not spans:
            out.append([])
            continue
        if pupil is None:
            pupil = _Pupil(calendar, days, first, columns_of(registrations))
        out.append(_evaluate_pack(pupil, pack, spans))
    return out


def _spans(pack: RulePack, days: Sequence[date]) -> list[tuple[RulePackVersion, int, int]]:
    """The pupil days on which each version is in force, as [begin, end) ranges."""
    spans: list[tuple[RulePackVersion, int, int]] = []
    versions = pack.versions
    for position, version in enumerate(versions):
        begin = bisect_left(days, version.effective_from)
        end = len(days)
        if position + 1 < len(versions):
            end = bisect_left(days, versions[position + 1].effective_from)
        if begin < end:
            spans.append((version, begin, end))
    return spans


def _evaluate_pack(
    pupil: _Pupil, pack: RulePack, spans: Sequence[tuple[RulePackVersion, int, int]]
) -> list[Crossing]:
    crossings: list[Crossing] = []
    met_before: dict[str, bool] = {}  # per rule id: met on the day before the current span
    for version, begin, end in spans:
        threshold = _units(version.day_threshold)
        met_at_end: dict[str, bool] = {}
        for rule in version.rules:
            sums = pupil.sums(rule.categories)
            if sums is None:
                met_at_end[rule.id] = False
                continue
            limit = _limit(rule)
            if _never_met(rule, sums, threshold, limit, end):
                met_at_end[rule.id] = False
                continue
            # Between two candidate days a rule can only stop being met (see _candidates), so
            # after a candidate where it was not met, it is not met up to the next one either.
            last, last_met = begin - 1, met_before.get(rule.id, False)
            for i in _candidates(pupil, rule, sums, threshold, begin, end):
                was = last_met
                if was and last != i - 1:
                    was = _is_met(pupil, rule, sums, threshold, limit, i - 1)
                now = _is_met(pupil, rule, sums, threshold, limit, i)
                if now and not was:
                    crossings.append(_crossing(pupil, pack, version, rule, threshold, sums, i))
                last, last_met = i, now
            if last_met and last != end - 1:
                last_met = _is_met(pupil, rule, sums, threshold, limit, end - 1)
            met_at_end[rule.id] = last_met
        met_before = met_at_end
    crossings.sort(key=lambda c: (c.date, c.rule_id, c.rule_version))
    return crossings
