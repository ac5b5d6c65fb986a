"""A brute-force reading of DOMAIN.md section 5, for checking the engine against.

Written without the engine's helpers: for every school day it rebuilds the window by scanning
and recomputes c(d), absence days and the rule, with Fractions. Slow and plain on purpose.
Version semantics follow the module comment of ``opspor_shared.engine.evaluate``: on each day
a rule is judged wholly by the version in force on that day; a rule id the version lacks, and
every day before the first version, is "not met".
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction

from opspor_shared.calendar import SchoolCalendar
from opspor_shared.engine.model import (
    Contribution,
    Crossing,
    Registration,
    Rule,
    RulePack,
    RulePackVersion,
)


@dataclass(frozen=True)
class Expected:
    rule_id: str
    rule_version: str
    level: str
    date: dt.date
    window_first: dt.date
    window_last: dt.date
    window_days: int
    value: Decimal
    threshold: Decimal
    contributing: tuple[Contribution, ...]


def project(crossing: Crossing) -> Expected:
    return Expected(
        rule_id=crossing.rule_id,
        rule_version=crossing.rule_version,
        level=crossing.level,
        date=crossing.date,
        window_first=crossing.window_first,
        window_last=crossing.window_last,
        window_days=crossing.window_days,
        value=crossing.value,
        threshold=crossing.threshold,
        contributing=crossing.contributing,
    )


def _same_period(kind: str, calendar: SchoolCalendar, a: dt.date, b: dt.date) -> bool:
    if kind == "month":
        return (a.year, a.month) == (b.year, b.month)
    if kind == "quarter":
        return a.year == b.year and (a.month - 1) // 3 == (b.month - 1) // 3
    if kind == "half_year":
        return a.year == b.year and (a.month <= 6) == (b.month <= 6)
    assert kind == "school_year"
    return calendar.school_year_of(a) == calendar.school_year_of(b)


def _window(rule: Rule, calendar: SchoolCalendar, days: list[dt.date], i: int) -> list[int] | None:
    """Indices of the window ending at day i, or None when the rule cannot have one yet."""
    if rule.kind == "consecutive":
        assert rule.n is not None
        if i + 1 < rule.n:
            return None
        return list(range(i - rule.n + 1, i + 1))
    assert rule.over is not None
    if rule.over.kind == "rolling":
        assert rule.over.length is not None
        return [j for j in range(i + 1) if i - j < rule.over.length]
    return [j for j in range(i + 1) if _same_period(rule.over.kind, calendar, days[j], days[i])]


ByDate = dict[dt.date, list[Registration]]


def _c(rule: Rule, registrations: ByDate, d: dt.date) -> Fraction:
    on_day = registrations.get(d, [])
    if not on_day:
        return Fraction(0)
    total = sum((Fraction(r.extent) for r in on_day if r.category in rule.categories), Fraction(0))
    return min(Fraction(1), total)


def _judge(
    rule: Rule,
    version: RulePackVersion,
    calendar: SchoolCalendar,
    days: list[dt.date],
    registrations: ByDate,
    i: int,
) -> tuple[bool, list[int], Decimal]:
    """(met, window, measured value) of ``rule`` on day i."""
    window = _window(rule, calendar, days, i)
    if window is None:
        return False, [], Decimal(0)
    threshold = Fraction(version.day_threshold)
    c = [_c(rule, registrations, days[j]) for j in window]
    absence_days = sum(1 for v in c if v >= threshold)
    total = sum(c, Fraction(0))
    if rule.kind == "consecutive":
        return absence_days == len(window), window, Decimal(len(window))
    if rule.kind == "count":
        assert rule.k is not None
        return absence_days >= rule.k, window, Decimal(absence_days)
    if rule.kind == "total":
        assert rule.x is not None
        value = Decimal(total.numerator) / Decimal(total.denominator)
        return total >= Fraction(rule.x), window, value.quantize(Decimal("0.0001"))
    assert rule.p is not None
    share = total / len(window)
    met = len(window) >= rule.min_days and share >= Fraction(rule.p)
    return met, window, Decimal(math.floor(share * 10000)) / Decimal(10000)


def reference(
    calendar: SchoolCalendar,
    registrations: list[Registration],
    pack: RulePack,
    horizon: dt.date,
    enrolled_from: dt.date | None = None,
) -> list[Expected]:
    days = [
        d for d in calendar.days if d <= horizon and (enrolled_from is None or d >= enrolled_from)
    ]
    by_date: ByDate = {}
    for registration in registrations:
        by_date.setdefault(registration.date, []).append(registration)
    rule_ids = sorted({rule.id for version in pack.versions for rule in version.rules})
    met_before = dict.fromkeys(rule_ids, False)
    found: list[Expected] = []
    for i, d in enumerate(days):
        version = pack.version_on(d)
        for rule_id in rule_ids:
            rule = None
            if version is not None:
                rule = next((r for r in version.rules if r.id == rule_id), None)
            met = False
            if rule is not None and version is not None:
                met, window, value = _judge(rule, version, calendar, days, by_date, i)
                if met and not met_before[rule_id]:
                    found.append(_expected(rule, version, calendar, days, by_date, window, value))
            met_before[rule_id] = met
    found.sort(key=lambda e: (e.date, e.rule_id, e.rule_version))
    return found


def _expected(
    rule: Rule,
    version: RulePackVersion,
    calendar: SchoolCalendar,
    days: list[dt.date],
    registrations: ByDate,
    window: list[int],
    value: Decimal,
) -> Expected:
    contributing: list[Contribution] = []
    for j in window:
        c = _c(rule, registrations, days[j])
        counts = (
            c >= Fraction(version.day_threshold) if rule.kind in ("consecutive", "count") else c > 0
        )
        if not counts:
            continue
        on_day = [r for r in registrations.get(days[j], []) if r.category in rule.categories]
        for r in sorted(on_day, key=lambda r: (r.slot, r.category, r.extent)):
            contributing.append(Contribution(r.date, r.category, r.extent, r.slot))
    threshold = {"consecutive": rule.n, "count": rule.k, "total": rule.x, "share": rule.p}[
        rule.kind
    ]
    return Expected(
        rule_id=rule.id,
        rule_version=version.version,
        level=rule.level,
        date=days[window[-1]],
        window_first=days[window[0]],
        window_last=days[window[-1]],
        window_days=len(window),
        value=value,
        threshold=Decimal(threshold),  # type: ignore[arg-type]
        contributing=tuple(contributing),
    )
