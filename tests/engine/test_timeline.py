"""A pupil's school days across enrolments: first day of enrolment and a change of school."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from opspor_shared.calendar import Closure, SchoolCalendar, SchoolYear
from opspor_shared.engine import Crossing, Registration, builtin_packs
from opspor_shared.engine.timeline import Stay, evaluate_stays

AALBORG = builtin_packs()["dk-aalborg-2018"]
LOTEN = builtin_packs()["no-loten"]  # consecutive 3, any category


def calendar(*closures: tuple[date, date]) -> SchoolCalendar:
    year = SchoolYear(
        date(2026, 8, 10),
        date(2027, 6, 25),
        closures=tuple(Closure(a, b, "lukket") for a, b in closures),
    )
    return SchoolCalendar("DK", [year])


A = calendar()
# School B was closed the week of 14 Sep, when the pupil still attended school A.
B = calendar((date(2026, 9, 14), date(2026, 9, 18)))
ABSENT = [date(2026, 9, d) for d in (16, 17, 18, 21, 22)]  # Wed-Fri at A, Mon-Tue at B
HORIZON = date(2026, 11, 20)


def regs(days: list[date]) -> list[Registration]:
    return [Registration(d, "day", "unauthorized", Decimal(1)) for d in days]


def rules(found: list[tuple[str, Crossing]]) -> set[tuple[str, str, date]]:
    return {(school, c.rule_id, c.date) for school, c in found}


def test_a_pupil_who_moves_carries_registrations_onto_the_new_calendar() -> None:
    stays = [
        Stay("a", A, (AALBORG,), date(2026, 8, 10)),
        Stay("b", B, (AALBORG,), date(2026, 9, 21)),
    ]
    found = evaluate_stays(stays, regs(ABSENT), HORIZON)
    # Five absence days in a row across the move; the crossing belongs to the new school.
    assert rules(found) == {("b", "consecutive-5", date(2026, 9, 22))}
    # On B's calendar alone the days at A were closure days and would not count.
    assert evaluate_stays([Stay("b", B, (AALBORG,), None)], regs(ABSENT), HORIZON) == []


def test_each_day_is_judged_by_the_packs_of_the_school_attended_that_day() -> None:
    stays = [
        Stay("a", A, (LOTEN,), date(2026, 8, 10)),
        Stay("b", B, (AALBORG,), date(2026, 9, 21)),
    ]
    found = evaluate_stays(stays, regs(ABSENT), HORIZON)
    # Løten's 3-in-a-row crossed on Friday at school A; Aalborg's 5-in-a-row at school B.
    assert rules(found) == {
        ("a", "consecutive-3", date(2026, 9, 18)),
        ("b", "consecutive-5", date(2026, 9, 22)),
    }


def test_school_days_start_at_enrolment() -> None:
    late = [Stay("b", A, (AALBORG,), date(2026, 9, 21))]
    assert evaluate_stays(late, regs(ABSENT), HORIZON) == []
    # Enrolled from Thursday 17: Wednesday's absence is not one of the pupil's days, so
    # three in a row are Thursday, Friday and Monday.
    first = [Stay("b", A, (LOTEN,), date(2026, 9, 17))]
    assert rules(evaluate_stays(first, regs(ABSENT), HORIZON)) == {
        ("b", "consecutive-3", date(2026, 9, 21))
    }


def test_a_school_year_count_continues_across_a_move() -> None:
    ten = (
        [date(2026, 9, d) for d in (7, 8, 9, 10, 11)]
        + [date(2026, 9, d) for d in (28, 29, 30)]
        + [date(2026, 10, 1), date(2026, 10, 2)]
    )
    stays = [
        Stay("a", A, (AALBORG,), date(2026, 8, 10)),
        Stay("b", B, (AALBORG,), date(2026, 9, 21)),
    ]
    found = rules(evaluate_stays(stays, regs(ten), HORIZON))
    # count 10 over school_year (ppr-may): five days at A and five at B make ten.
    assert ("b", "count-10-school-year", date(2026, 10, 2)) in found


def test_an_ended_enrolment_ends_the_pupils_days_there() -> None:
    stays = [Stay("a", A, (LOTEN,), date(2026, 8, 10), date(2026, 9, 17))]
    assert evaluate_stays(stays, regs(ABSENT), HORIZON) == []
