"""Hand-written edge cases of DOMAIN.md section 5, one behaviour per test."""

from __future__ import annotations

import uuid
from datetime import date
from decimal import Decimal

import pytest

from opspor_shared.calendar import Closure, SchoolCalendar, SchoolYear
from opspor_shared.engine import (
    CATEGORIES,
    CONCERN_NAMESPACE,
    Category,
    Contribution,
    Crossing,
    Period,
    Registration,
    Rule,
    RulePack,
    RulePackVersion,
    builtin_packs,
    concern_id,
    evaluate,
)

# Danish school years with the usual breaks; DK public holidays come from `holidays`.
DK = SchoolCalendar(
    "DK",
    [
        SchoolYear(
            date(2024, 8, 12),
            date(2025, 6, 27),
            closures=(
                Closure(date(2024, 10, 14), date(2024, 10, 18), "autumn break"),
                Closure(date(2024, 12, 21), date(2025, 1, 1), "Christmas"),
                Closure(date(2025, 2, 10), date(2025, 2, 14), "winter break"),
                Closure(date(2025, 4, 12), date(2025, 4, 21), "Easter"),
            ),
        ),
        SchoolYear(date(2025, 8, 11), date(2026, 6, 26)),
    ],
)
END = date(2026, 6, 26)
ALL: frozenset[Category] = frozenset(CATEGORIES)
UNAUTHORIZED: frozenset[Category] = frozenset({"unauthorized"})


def pack(
    *rules: Rule, day_threshold: str = "0.5", effective_from: date = date(2000, 1, 1)
) -> RulePack:
    version = RulePackVersion("1", effective_from, Decimal(day_threshold), rules)
    return RulePack("test", "test pack", "tests", (version,))


def absent(
    days: list[date],
    category: Category = "unauthorized",
    extent: str = "1",
    slot: str = "day",
) -> list[Registration]:
    return [Registration(d, slot, category, Decimal(extent)) for d in days]


def school_days(first: date, count: int) -> list[date]:
    return list(DK.school_days(first))[:count]


def run(
    rule_pack: RulePack,
    registrations: list[Registration],
    horizon: date = END,
    enrolled_from: date | None = None,
) -> list[Crossing]:
    return evaluate(DK, registrations, rule_pack, horizon, enrolled_from)


COUNT_7_OF_20 = Rule(
    "count-7-of-20", "count", "concern", UNAUTHORIZED, k=7, over=Period.parse("rolling:20")
)
CONSECUTIVE_5 = Rule("consecutive-5", "consecutive", "concern", UNAUTHORIZED, n=5)


def test_count_exactly_at_threshold_is_met() -> None:
    days = list(DK.days[20:40])
    crossings = run(pack(COUNT_7_OF_20), absent(days[0:14:2]))

    assert len(crossings) == 1
    crossing = crossings[0]
    assert crossing.date == days[12]
    assert crossing.value == 7
    assert crossing.threshold == 7
    assert crossing.window_days == 20
    assert crossing.window_first == DK.days[13]
    assert [c.date for c in crossing.contributing] == days[0:14:2]
    assert crossing.summary == "7 absence days of the last 20 school days, limit 7"


def test_count_one_below_threshold_is_not_met() -> None:
    assert run(pack(COUNT_7_OF_20), absent(list(DK.days[20:40])[0:12:2])) == []


def test_rolling_window_is_shorter_at_the_start() -> None:
    crossings = run(pack(COUNT_7_OF_20), absent(list(DK.days[0:7])))

    assert [(c.date, c.window_first, c.window_days) for c in crossings] == [
        (DK.days[6], DK.days[0], 7)
    ]
    assert crossings[0].summary == "7 absence days of the last 7 school days, limit 7"


def test_two_quarter_day_slots_make_an_absence_day() -> None:
    day = date(2024, 9, 3)
    one_day = Rule("one-day", "consecutive", "concern", ALL, n=1)
    registrations = absent([day], extent="0.25", slot="am") + absent(
        [day], extent="0.25", slot="pm"
    )

    crossings = run(pack(one_day), registrations)

    assert [c.date for c in crossings] == [day]
    assert crossings[0].contributing == (
        Contribution(day, "unauthorized", Decimal("0.25"), "am"),
        Contribution(day, "unauthorized", Decimal("0.25"), "pm"),
    )


def test_one_quarter_day_slot_is_not_an_absence_day() -> None:
    one_day = Rule("one-day", "consecutive", "concern", ALL, n=1)
    assert run(pack(one_day), absent([date(2024, 9, 3)], extent="0.25", slot="am")) == []


def test_day_threshold_of_the_pack_decides_absence_days() -> None:
    one_day = Rule("one-day", "consecutive", "concern", ALL, n=1)
    registrations = absent([date(2024, 9, 3)], extent="0.25", slot="am")
    assert [c.date for c in run(pack(one_day, day_threshold="0.25"), registrations)] == [
        date(2024, 9, 3)
    ]


def test_registrations_on_one_day_add_up_to_at_most_one_day() -> None:
    total = Rule("total", "total", "concern", ALL, x=Decimal("1.5"), over=Period.parse("rolling:2"))
    monday, tuesday = date(2024, 9, 2), date(2024, 9, 3)
    registrations = (
        absent([monday], extent="1", slot="am")
        + absent([monday], category="illness", extent="0.5", slot="pm")
        + absent([tuesday], extent="0.5", slot="am")
    )

    crossings = run(pack(total), registrations)

    assert [(c.date, c.value) for c in crossings] == [(tuesday, Decimal("1.5"))]
    assert crossings[0].summary == "1.5 days absent over the last 2 school days, limit 1.5"


def test_consecutive_run_is_broken_by_a_school_day_without_absence() -> None:
    week = school_days(date(2024, 9, 2), 6)  # Mon 2 Sep .. Mon 9 Sep
    assert run(pack(CONSECUTIVE_5), absent(week[:4] + week[5:])) == []


def test_consecutive_run_is_not_broken_by_weekend_or_closure() -> None:
    run_days = [
        date(2024, 10, 10),  # Thursday
        date(2024, 10, 11),  # Friday, then a weekend, the autumn break and a weekend
        date(2024, 10, 21),
        date(2024, 10, 22),
        date(2024, 10, 23),
    ]
    crossings = run(pack(CONSECUTIVE_5), absent(run_days))

    assert [(c.date, c.window_first, c.window_days, c.value) for c in crossings] == [
        (date(2024, 10, 23), date(2024, 10, 10), 5, Decimal(5))
    ]
    assert crossings[0].summary == "5 consecutive absence days, limit 5"


def test_consecutive_run_is_not_broken_by_a_public_holiday() -> None:
    # Ascension Day, Thursday 29 May 2025, is a public holiday in Denmark.
    run_days = [date(2025, 5, 27), date(2025, 5, 28), date(2025, 5, 30), date(2025, 6, 2)]
    run_days.append(date(2025, 6, 3))
    assert [c.date for c in run(pack(CONSECUTIVE_5), absent(run_days))] == [date(2025, 6, 3)]


def test_quarter_change_resets_a_quarter_share() -> None:
    share = Rule(
        "share", "share", "warn-parents", UNAUTHORIZED, p=Decimal("0.10"),
        over=Period.parse("quarter"), min_days=5,
    )  # fmt: skip
    registrations = absent(school_days(date(2024, 8, 12), 5)) + absent([date(2024, 10, 7)])

    crossings = run(pack(share), registrations)

    # 5 of 36 Q3 days keeps the share above 10% until 30 September; 1 October starts Q4 at 0%.
    assert [(c.date, c.window_first, c.window_days, c.value) for c in crossings] == [
        (date(2024, 8, 16), date(2024, 8, 12), 5, Decimal("1")),
        (date(2024, 10, 7), date(2024, 10, 1), 5, Decimal("0.2")),
    ]
    assert crossings[1].summary == (
        "20.0% absence this quarter over 5 school days, limit 10% (min 5 days)"
    )


def test_school_year_change_resets_a_school_year_count() -> None:
    aalborg = builtin_packs()["dk-aalborg-2018"]
    end_of_year = list(DK.school_days(date(2025, 6, 1), date(2025, 6, 27)))[-10:]
    start_of_year = school_days(date(2025, 8, 11), 12)
    registrations = absent(end_of_year, category="illness") + absent(
        [start_of_year[0], *start_of_year[2:11]], category="illness"
    )

    crossings = [c for c in run(aalborg, registrations) if c.rule_id == "count-10-school-year"]

    assert [(c.date, c.window_first, c.level) for c in crossings] == [
        (end_of_year[-1], date(2024, 8, 12), "ppr-may"),
        (start_of_year[10], date(2025, 8, 11), "ppr-may"),
    ]
    assert crossings[1].summary == (
        "10 absence days this school year over 11 school days, limit 10"
    )


def test_share_min_days_reached_on_a_day_without_registrations() -> None:
    national = builtin_packs()["dk-national"]
    quarter = school_days(date(2024, 10, 1), 25)
    registrations = absent(quarter[:3])

    crossings = run(national, registrations)
    twentieth = quarter[19]

    # 3 of 20 days is 15%: both limits are met, the 15% one exactly.
    assert [(c.rule_id, c.date) for c in crossings] == [
        ("share-10-quarter", twentieth),
        ("share-15-quarter", twentieth),
    ]
    assert twentieth not in {r.date for r in registrations}
    crossing = crossings[0]
    assert crossing.value == Decimal("0.15")
    assert crossing.window_first == date(2024, 10, 1)
    assert crossing.window_days == 20
    assert crossing.summary == (
        "15.0% absence this quarter over 20 school days, limit 10% (min 20 days)"
    )
    # Evaluated the day before, the same facts give no crossing: it appears when the day changes.
    assert run(national, registrations, horizon=quarter[18]) == []


def test_first_day_of_enrolment_can_be_a_crossing() -> None:
    enrolled = date(2024, 11, 6)
    count_3 = Rule(
        "count-3", "count", "concern", UNAUTHORIZED, k=1, over=Period.parse("rolling:20")
    )
    crossings = run(pack(count_3), absent([enrolled]), enrolled_from=enrolled)

    assert [(c.date, c.window_first, c.window_days) for c in crossings] == [(enrolled, enrolled, 1)]


def test_days_before_enrolment_do_not_count() -> None:
    enrolled = date(2024, 11, 6)
    registrations = absent([date(2024, 11, 4), date(2024, 11, 5), enrolled])
    count_3 = Rule(
        "count-3", "count", "concern", UNAUTHORIZED, k=3, over=Period.parse("rolling:20")
    )

    assert [c.date for c in run(pack(count_3), registrations)] == [enrolled]
    assert run(pack(count_3), registrations, enrolled_from=enrolled) == []


def test_fixed_period_starts_at_enrolment_for_a_late_enrolled_pupil() -> None:
    enrolled = date(2024, 11, 6)
    share = Rule(
        "share", "share", "warn-parents", UNAUTHORIZED, p=Decimal("0.5"),
        over=Period.parse("quarter"), min_days=2,
    )  # fmt: skip
    crossings = run(pack(share), absent([enrolled]), enrolled_from=enrolled)

    assert [(c.date, c.window_first, c.window_days, c.value) for c in crossings] == [
        (date(2024, 11, 7), enrolled, 2, Decimal("0.5"))
    ]


def test_rule_crosses_again_after_it_stops_being_met() -> None:
    count_2 = Rule("count-2", "count", "concern", UNAUTHORIZED, k=2, over=Period.parse("rolling:3"))
    days = list(DK.days[:20])
    crossings = run(pack(count_2), absent([days[0], days[1], days[10], days[11]]))

    assert [c.date for c in crossings] == [days[1], days[11]]


def test_rule_met_on_consecutive_days_crosses_once() -> None:
    crossings = run(pack(CONSECUTIVE_5), absent(list(DK.days[:15])))
    assert [c.date for c in crossings] == [DK.days[4]]


def test_aalborg_concern_rules_ignore_illness_but_ppr_may_counts_it() -> None:
    aalborg = builtin_packs()["dk-aalborg-2018"]
    ill = list(DK.days[:10])

    crossings = run(aalborg, absent(ill, category="illness"))

    assert [(c.rule_id, c.level, c.date) for c in crossings] == [
        ("count-10-school-year", "ppr-may", ill[9])
    ]
    assert {c.category for c in crossings[0].contributing} == {"illness"}


def test_aalborg_concern_rules_count_unauthorized_absence() -> None:
    aalborg = builtin_packs()["dk-aalborg-2018"]
    days = list(DK.days[:5])
    registrations = absent(days) + absent([DK.days[5]], category="illness")

    crossings = run(aalborg, registrations, horizon=DK.days[5])

    assert [(c.rule_id, c.level, c.date) for c in crossings] == [
        ("consecutive-5", "concern", days[4])
    ]
    assert all(c.category == "unauthorized" for c in crossings[0].contributing)


def test_contributing_lists_only_the_rule_categories_on_counted_days() -> None:
    day = date(2024, 9, 3)
    one_day = Rule("one-day", "consecutive", "concern", UNAUTHORIZED, n=1)
    registrations = absent([day], slot="pm") + absent([day], category="illness", slot="am")

    (crossing,) = run(pack(one_day), registrations)

    assert crossing.contributing == (Contribution(day, "unauthorized", Decimal(1), "pm"),)


def test_share_contributions_include_days_below_the_day_threshold() -> None:
    monday, tuesday = date(2024, 9, 2), date(2024, 9, 3)
    share = Rule(
        "share", "share", "concern", UNAUTHORIZED, p=Decimal("0.6"),
        over=Period.parse("rolling:2"),
    )  # fmt: skip
    registrations = absent([monday], extent="0.25") + absent([tuesday], extent="1")

    (crossing,) = run(pack(share), registrations)

    assert crossing.date == tuesday
    assert crossing.value == Decimal("0.625")
    assert [c.date for c in crossing.contributing] == [monday, tuesday]


def test_share_value_is_rounded_down_to_four_places() -> None:
    share = Rule(
        "share", "share", "concern", ALL, p=Decimal("0.3333"), over=Period.parse("rolling:3")
    )
    days = list(DK.days[:3])
    (crossing,) = run(pack(share), absent([days[2]]), horizon=days[2])

    assert crossing.value == Decimal("0.3333")
    assert crossing.value.as_tuple().exponent == -4


def test_version_switch_judges_the_crossing_by_the_version_in_force() -> None:
    over = Period.parse("rolling:20")
    v1 = RulePackVersion(
        "1", date(2024, 8, 1), Decimal("0.5"),
        (Rule("count", "count", "concern", UNAUTHORIZED, k=7, over=over),),
    )  # fmt: skip
    v2 = RulePackVersion(
        "2", date(2024, 10, 1), Decimal("0.5"),
        (Rule("count", "count", "concern", UNAUTHORIZED, k=5, over=over),),
    )  # fmt: skip
    rule_pack = RulePack("versioned", "versioned", "tests", (v1, v2))
    september = school_days(date(2024, 9, 23), 6)  # 23-30 September

    crossings = run(rule_pack, absent(september))

    # 6 absence days never meet k=7; on 1 October version 2 (k=5) is in force and is met.
    assert [(c.date, c.rule_version, c.threshold, c.value) for c in crossings] == [
        (date(2024, 10, 1), "2", Decimal(5), Decimal(6))
    ]


def test_version_switch_alone_raises_nothing_for_an_unchanged_rule() -> None:
    rule = Rule("count", "count", "concern", UNAUTHORIZED, k=5, over=Period.parse("rolling:20"))
    v1 = RulePackVersion("1", date(2024, 8, 1), Decimal("0.5"), (rule,))
    v2 = RulePackVersion("2", date(2024, 10, 1), Decimal("0.5"), (rule, CONSECUTIVE_5))
    rule_pack = RulePack("versioned", "versioned", "tests", (v1, v2))
    september = [*school_days(date(2024, 9, 20), 4), date(2024, 9, 30)]

    crossings = run(rule_pack, absent(september))

    assert [(c.rule_id, c.date, c.rule_version) for c in crossings] == [
        ("count", date(2024, 9, 30), "1")
    ]


def test_pupil_over_the_limit_when_a_pack_takes_effect_crosses_on_its_first_day() -> None:
    rule_pack = pack(CONSECUTIVE_5, effective_from=date(2024, 10, 1))
    september = school_days(date(2024, 9, 23), 7)  # 23 Sep .. 1 Oct

    crossings = run(rule_pack, absent(september))

    assert [(c.date, c.window_first) for c in crossings] == [(date(2024, 10, 1), date(2024, 9, 25))]


def test_no_crossings_before_the_first_version() -> None:
    rule_pack = pack(CONSECUTIVE_5, effective_from=date(2025, 1, 1))
    assert run(rule_pack, absent(list(DK.days[:10])), horizon=date(2024, 12, 31)) == []


def test_registrations_outside_the_pupil_days_are_ignored() -> None:
    one_day = Rule("one-day", "consecutive", "concern", ALL, n=1)
    registrations = absent(
        [
            date(2024, 9, 7),  # Saturday
            date(2024, 10, 15),  # autumn break
            date(2024, 12, 25),  # Christmas Day
            date(2024, 8, 13),  # before enrolment
            date(2024, 9, 10),  # after the horizon
        ]
    )
    assert run(pack(one_day), registrations, date(2024, 9, 9), date(2024, 9, 2)) == []


def test_horizon_on_a_weekend_evaluates_up_to_the_friday() -> None:
    days = school_days(date(2024, 9, 2), 5)
    assert [c.date for c in run(pack(CONSECUTIVE_5), absent(days), date(2024, 9, 8))] == [
        date(2024, 9, 6)
    ]


def test_enrolment_after_the_horizon_gives_nothing() -> None:
    assert run(pack(CONSECUTIVE_5), absent(list(DK.days[:5])), DK.days[4], DK.days[5]) == []


def test_total_counts_half_day_sessions_for_en_dfe_penalty_notices() -> None:
    gb = SchoolCalendar("GB", [SchoolYear(date(2024, 9, 2), date(2025, 7, 18))], "ENG")
    dfe = builtin_packs()["en-dfe"]
    days = list(gb.days[10:60:5])  # ten mornings, five school days apart
    registrations = [Registration(d, "am", "unauthorized", Decimal("0.5")) for d in days]

    crossings = [
        c
        for c in evaluate(gb, registrations, dfe, date(2025, 7, 18))
        if c.level == "penalty-notice"
    ]

    assert [(c.date, c.value, c.window_days) for c in crossings] == [(days[-1], Decimal("5"), 50)]
    assert crossings[0].window_first == gb.days[6]
    assert crossings[0].summary == "5.0 days absent over the last 50 school days, limit 5.0"


def test_school_year_share_summary_for_us_chronic_absence() -> None:
    us = SchoolCalendar("US", [SchoolYear(date(2024, 8, 26), date(2025, 6, 13))])
    chronic = builtin_packs()["us-chronic"]
    registrations = [Registration(us.days[0], "day", "illness", Decimal(1))]

    crossings = evaluate(us, registrations, chronic, date(2025, 6, 13))

    assert [(c.date, c.window_days, c.value) for c in crossings] == [
        (us.days[9], 10, Decimal("0.1"))
    ]
    assert crossings[0].summary == (
        "10.0% absence this school year over 10 school days, limit 10% (min 10 days)"
    )


def test_extent_with_more_than_four_decimal_places_is_refused() -> None:
    with pytest.raises(ValueError, match="4 decimal places"):
        run(pack(CONSECUTIVE_5), absent([DK.days[0]], extent="0.12345"))


def test_extent_above_one_day_is_refused() -> None:
    with pytest.raises(ValueError, match="at most 1"):
        run(pack(CONSECUTIVE_5), absent([DK.days[0]], extent="1.5"))


def test_unknown_category_is_refused() -> None:
    registration = Registration(DK.days[0], "day", "truancy", Decimal(1))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown category"):
        run(pack(CONSECUTIVE_5), [registration])


def test_concern_id_is_deterministic() -> None:
    first = concern_id("pupil-1", "dk-aalborg-2018", "consecutive-5", "1", date(2024, 9, 6))
    again = concern_id("pupil-1", "dk-aalborg-2018", "consecutive-5", "1", date(2024, 9, 6))

    assert first == again
    assert first.version == 5
    assert first == uuid.uuid5(
        CONCERN_NAMESPACE, "pupil-1|dk-aalborg-2018|consecutive-5|1|2024-09-06"
    )
    assert uuid.uuid5(uuid.NAMESPACE_URL, "urn:opspor:concern") == CONCERN_NAMESPACE
    others = {
        concern_id("pupil-2", "dk-aalborg-2018", "consecutive-5", "1", date(2024, 9, 6)),
        concern_id("pupil-1", "dk-slagelse-2019", "consecutive-5", "1", date(2024, 9, 6)),
        concern_id("pupil-1", "dk-aalborg-2018", "count-7-of-20", "1", date(2024, 9, 6)),
        concern_id("pupil-1", "dk-aalborg-2018", "consecutive-5", "2", date(2024, 9, 6)),
        concern_id("pupil-1", "dk-aalborg-2018", "consecutive-5", "1", date(2024, 9, 9)),
    }
    assert first not in others
    assert len(others) == 5


def test_evaluation_is_repeatable() -> None:
    aalborg = builtin_packs()["dk-aalborg-2018"]
    registrations = absent(list(DK.days[:30:2])) + absent(list(DK.days[40:52]), category="illness")
    assert run(aalborg, registrations) == run(aalborg, list(reversed(registrations)))


def test_weekday_gap_in_the_calendar_does_not_shift_windows() -> None:
    # Every window boundary is a school day of the calendar, never a weekend date.
    crossings = run(pack(COUNT_7_OF_20), absent(list(DK.days[50:57])))
    (crossing,) = crossings
    assert DK.is_school_day(crossing.window_first)
    assert DK.index_of(crossing.date) == 56
    assert DK.index_of(crossing.window_first) == 37
