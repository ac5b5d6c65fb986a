"""A pupil whose absence is below every rule's minimum has no crossing (engine.bounds)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

from hypothesis import given, settings, target
from hypothesis import strategies as st

from opspor_shared.engine import (
    Category,
    Period,
    Registration,
    Rule,
    RulePack,
    RulePackVersion,
    evaluate,
)
from opspor_shared.engine.bounds import absence_figures, can_cross, needs_of
from tests.engine.test_properties import scenarios
from tests.support import school_days
from tests.worker.test_convergence import calendar


def pack_of(*rules: Rule, threshold: str = "0.5") -> RulePack:
    version = RulePackVersion("1", date(2020, 1, 1), Decimal(threshold), rules)
    return RulePack("p", "p", "test", (version,))


def cannot_cross(pack: RulePack, registrations: list[Registration]) -> bool:
    return not can_cross([pack], absence_figures(registrations, needs_of([pack])))


@settings(max_examples=400, deadline=None)
@given(scenarios(), st.data())
def test_a_pupil_below_every_minimum_has_no_crossing(
    scenario: dict[str, Any], data: st.DataObject
) -> None:
    # Few registrations, so that many pupils fall just below or just above a minimum.
    registrations = scenario["registrations"]
    kept = data.draw(st.integers(0, min(len(registrations), 12)))
    scenario["registrations"] = registrations[:kept]
    crossings = evaluate(**scenario)
    below = cannot_cross(scenario["pack"], scenario["registrations"])
    target(float(below and kept), label="registrations of pupils found below")
    if below:
        assert crossings == []


DAYS = school_days(date(2027, 1, 4), 25)
UNAUTHORIZED: frozenset[Category] = frozenset({"unauthorized"})


def absent(days: list[date], category: str = "unauthorized", extent: str = "1") -> list[Any]:
    return [Registration(d, "day", category, Decimal(extent)) for d in days]  # type: ignore[arg-type]


def test_the_minimums_are_exactly_those_of_the_rules() -> None:
    five = pack_of(Rule("c", "consecutive", "concern", UNAUTHORIZED, n=5))
    assert cannot_cross(five, absent(DAYS[:4]))
    # Lessons below the day threshold are no absence days, however many.
    assert cannot_cross(five, absent(DAYS[:4]) + absent(DAYS[4:20], extent="0.25"))
    # Other categories do not count for the rule.
    assert cannot_cross(five, absent(DAYS[:4]) + absent(DAYS[4:9], category="illness"))
    assert not cannot_cross(five, absent(DAYS[:5]))
    assert [c.date for c in evaluate(calendar(), absent(DAYS[:5]), five, DAYS[-1])] == [DAYS[4]]

    # A share of 10 % with min_days 20 needs two days' absence: 1.75 is below.
    share = pack_of(
        Rule(
            "s",
            "share",
            "concern",
            UNAUTHORIZED,
            p=Decimal("0.1"),
            over=Period("quarter"),
            min_days=20,
        )
    )
    assert cannot_cross(share, absent(DAYS[:7], extent="0.25"))
    assert not cannot_cross(share, absent(DAYS[:8], extent="0.25"))
    assert [
        c.date for c in evaluate(calendar(), absent(DAYS[:8], extent="0.25"), share, DAYS[-1])
    ] == [DAYS[19]]

    # A day's c(d) counts at most one day towards a total, whatever its registrations add up to.
    total = pack_of(Rule("t", "total", "concern", UNAUTHORIZED, x=Decimal(2), over=Period("month")))
    two_slots = [Registration(DAYS[0], slot, "unauthorized", Decimal(1)) for slot in ("am", "pm")]
    assert cannot_cross(total, two_slots)
    assert not cannot_cross(total, two_slots + absent(DAYS[1:2]))
