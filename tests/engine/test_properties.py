"""The engine equals the brute-force reference on random calendars, registrations and packs."""

from __future__ import annotations

import random
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import holidays
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from opspor_shared.calendar import Closure, SchoolCalendar, SchoolYear
from opspor_shared.engine import (
    CATEGORIES,
    Period,
    Registration,
    Rule,
    RulePack,
    RulePackVersion,
    evaluate,
    evaluate_packs,
)
from tests.engine.reference import project, reference

COUNTRIES = ("DK", "NO", "GB", "US", "SE")
EXTENTS = tuple(
    Decimal(e) for e in ("0.25", "0.5", "1", "0.75", "0.1234", "0.3333", "0.0001", "0.6667")
)
THRESHOLDS = tuple(Decimal(t) for t in ("0.5", "0.25", "0.3333", "1", "0.0001", "0.75"))
SHARES = tuple(Decimal(p) for p in ("0.05", "0.1", "0.25", "0.3333", "0.5", "1", "0.0001"))
TOTALS = tuple(Decimal(x) for x in ("0.5", "1", "2.5", "3.3333", "0.0001", "5"))
SLOTS = ("day", "am", "pm", "1", "2")
RULE_IDS = ("a", "b", "c", "d")
FIXED_PERIODS = ("month", "quarter", "half_year", "school_year")

PROPERTY_SETTINGS = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@st.composite
def calendars(draw: st.DrawFn) -> SchoolCalendar:
    country = draw(st.sampled_from(COUNTRIES))
    # Start late in a quarter and half-year now and then, so periods change inside a year.
    start = date(2017, 1, 1) + timedelta(days=draw(st.integers(0, 9 * 365)))
    years: list[SchoolYear] = []
    for _ in range(draw(st.integers(1, 3))):
        length = draw(st.integers(0, 180))
        last = start + timedelta(days=length)
        closures = tuple(
            Closure(first, first + timedelta(days=draw(st.integers(0, 9))), "break")
            for first in draw(
                st.lists(
                    st.builds(
                        lambda offset, s=start: s + timedelta(days=offset), st.integers(-5, length)
                    ),
                    max_size=3,
                )
            )
        )
        extra = tuple(
            start + timedelta(days=offset)
            for offset in draw(st.lists(st.integers(-4, length + 4), max_size=4))
        )
        years.append(SchoolYear(start, last, closures, extra))
        start = last + timedelta(days=draw(st.integers(1, 80)))
    return SchoolCalendar(country, years)


@st.composite
def rules(draw: st.DrawFn, rule_id: str) -> Rule:
    kind = draw(st.sampled_from(("consecutive", "count", "total", "share")))
    categories = frozenset(
        draw(st.lists(st.sampled_from(CATEGORIES), min_size=1, max_size=3, unique=True))
    )
    level = draw(st.sampled_from(("concern", "ppr-may", "warn-parents")))
    if kind == "consecutive":
        return Rule(rule_id, "consecutive", level, categories, n=draw(st.integers(1, 6)))
    if draw(st.booleans()):
        over = Period("rolling", draw(st.integers(1, 30)))
        room = over.length or 1
    else:
        over = Period(draw(st.sampled_from(FIXED_PERIODS)))
        room = 30
    if kind == "count":
        k = draw(st.integers(1, min(room, 10)))
        return Rule(rule_id, "count", level, categories, k=k, over=over)
    if kind == "total":
        x = draw(st.sampled_from([t for t in TOTALS if t <= room]))
        return Rule(rule_id, "total", level, categories, x=x, over=over)
    min_days = draw(st.integers(0, min(room, 25)))
    p = draw(st.sampled_from(SHARES))
    return Rule(rule_id, "share", level, categories, p=p, over=over, min_days=min_days)


@st.composite
def packs(draw: st.DrawFn, first: date, last: date) -> RulePack:
    # Versions start before the calendar, inside it, or (rarely) after it.
    span = (last - first).days
    offsets = st.integers(-30, span + 5) | st.just(-1)
    starts = sorted(
        {first + timedelta(days=o) for o in draw(st.lists(offsets, min_size=1, max_size=3))}
    )
    versions = []
    for number, effective_from in enumerate(starts, start=1):
        ids = draw(st.lists(st.sampled_from(RULE_IDS), min_size=1, max_size=4, unique=True))
        version_rules = tuple(draw(rules(rule_id)) for rule_id in ids)
        threshold = draw(st.sampled_from(THRESHOLDS))
        versions.append(RulePackVersion(str(number), effective_from, threshold, version_rules))
    return RulePack("random", "random pack", "hypothesis", tuple(versions))


@st.composite
def scenarios(draw: st.DrawFn) -> dict[str, Any]:
    calendar = draw(calendars())
    first = calendar.years[0].first_day
    last = calendar.years[-1].last_day
    span = (last - first).days
    seed = draw(st.integers(0, 2**32 - 1))
    density = draw(st.sampled_from((0.1, 0.3, 0.6, 0.9)))
    rng = random.Random(seed)
    registrations: dict[tuple[date, str], Registration] = {}
    # Mostly school days, plus some weekends, holidays and dates outside the years.
    candidates = [first + timedelta(days=offset) for offset in range(-10, span + 11)]
    for d in candidates:
        if rng.random() < (density if calendar.is_school_day(d) else 0.05):
            for slot in rng.sample(SLOTS, rng.choice((1, 1, 1, 2, 3))):
                registrations[(d, slot)] = Registration(
                    d, slot, rng.choice(CATEGORIES), rng.choice(EXTENTS)
                )
    horizon = last
    if draw(st.booleans()):
        horizon = first + timedelta(days=draw(st.integers(-5, span + 5)))
    enrolled_from = None
    if draw(st.integers(0, 2)) == 0:
        enrolled_from = first + timedelta(days=draw(st.integers(-5, span + 5)))
    return {
        "calendar": calendar,
        "registrations": list(registrations.values()),
        "pack": draw(packs(first, last)),
        "horizon": horizon,
        "enrolled_from": enrolled_from,
    }


@PROPERTY_SETTINGS
@given(scenarios())
def test_engine_equals_reference(scenario: dict[str, Any]) -> None:
    got = evaluate(**scenario)
    expected = reference(**scenario)
    assert [project(c) for c in got] == expected


@settings(max_examples=60, deadline=None)
@given(scenarios(), st.data())
def test_packs_evaluated_together_equal_each_alone(
    scenario: dict[str, Any], data: st.DataObject
) -> None:
    """The worker evaluates a school's packs in one call that shares the pupil's sums."""
    first = scenario["calendar"].years[0].first_day
    last = scenario["calendar"].years[-1].last_day
    chosen = [scenario.pop("pack"), data.draw(packs(first, last))]
    together = evaluate_packs(packs=chosen, **scenario)
    assert together == [evaluate(pack=pack, **scenario) for pack in chosen]


@settings(max_examples=60, deadline=None)
@given(scenarios(), st.randoms(use_true_random=False))
def test_registration_order_does_not_matter(scenario: dict[str, Any], rng: random.Random) -> None:
    shuffled = list(scenario["registrations"])
    rng.shuffle(shuffled)
    assert evaluate(**scenario) == evaluate(**{**scenario, "registrations": shuffled})


@settings(max_examples=60, deadline=None)
@given(scenarios())
def test_crossings_are_sorted_and_unique(scenario: dict[str, Any]) -> None:
    got = evaluate(**scenario)
    keys = [(c.date, c.rule_id, c.rule_version) for c in got]
    assert keys == sorted(set(keys))
    for crossing in got:
        assert crossing.window_last == crossing.date
        assert crossing.window_first <= crossing.date
        assert crossing.summary


@settings(max_examples=60, deadline=None)
@given(scenarios(), st.integers(0, 400))
def test_crossings_up_to_a_day_do_not_depend_on_later_days(
    scenario: dict[str, Any], days_later: int
) -> None:
    later = evaluate(**{**scenario, "horizon": scenario["horizon"] + timedelta(days=days_later)})
    assert evaluate(**scenario) == [c for c in later if c.date <= scenario["horizon"]]


@settings(max_examples=100, deadline=None)
@given(calendars())
def test_calendar_matches_a_day_by_day_reading(calendar: SchoolCalendar) -> None:
    expected: list[date] = []
    for year in calendar.years:
        public = holidays.country_holidays(
            calendar.country, years=range(year.first_day.year, year.last_day.year + 1)
        )
        d = year.first_day
        while d <= year.last_day:
            closed = any(c.first_day <= d <= c.last_day for c in year.closures)
            if d in year.extra_days or (d.weekday() < 5 and d not in public and not closed):
                expected.append(d)
            d += timedelta(days=1)
    assert list(calendar.days) == expected
    for index, d in enumerate(expected):
        assert calendar.index_of(d) == index
        assert calendar.is_school_day(d)
        assert calendar.school_year_of(d) is not None
