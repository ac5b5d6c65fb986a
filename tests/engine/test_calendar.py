from __future__ import annotations

from datetime import date

import pytest

from opspor_shared.calendar import Closure, SchoolCalendar, SchoolYear

YEAR_2024 = SchoolYear(
    date(2024, 8, 12),
    date(2025, 6, 27),
    closures=(Closure(date(2024, 10, 14), date(2024, 10, 18), "autumn break"),),
    extra_days=(
        date(2024, 9, 7),  # a Saturday
        date(2024, 10, 16),  # inside the autumn break
        date(2024, 12, 25),  # Christmas Day
        date(2025, 7, 5),  # after the last day: ignored
    ),
)
YEAR_2025 = SchoolYear(date(2025, 8, 11), date(2026, 6, 26))
DK = SchoolCalendar("DK", [YEAR_2025, YEAR_2024])


def test_weekdays_are_school_days_and_weekends_are_not() -> None:
    assert DK.is_school_day(date(2024, 9, 2))
    assert not DK.is_school_day(date(2024, 9, 8))  # Sunday


def test_public_holidays_are_not_school_days() -> None:
    assert not DK.is_school_day(date(2025, 5, 29))  # Ascension Day
    assert not DK.is_school_day(date(2025, 4, 21))  # Easter Monday
    assert DK.public_holidays(date(2025, 5, 1), date(2025, 6, 30)) == {
        date(2025, 5, 29): "Ascension Day",
        date(2025, 6, 8): "Pentecost",
        date(2025, 6, 9): "Pentecost Monday",
    }


def test_closures_are_not_school_days() -> None:
    assert not DK.is_school_day(date(2024, 10, 14))
    assert not DK.is_school_day(date(2024, 10, 18))
    assert DK.is_school_day(date(2024, 10, 21))


def test_extra_days_count_even_on_weekends_holidays_and_closures() -> None:
    assert DK.is_school_day(date(2024, 9, 7))
    assert DK.is_school_day(date(2024, 10, 16))
    assert DK.is_school_day(date(2024, 12, 25))


def test_extra_days_outside_the_school_year_are_ignored() -> None:
    assert not DK.is_school_day(date(2025, 7, 5))


def test_days_outside_school_years_are_not_school_days() -> None:
    assert not DK.is_school_day(date(2025, 7, 1))
    assert DK.school_year_of(date(2025, 7, 1)) is None


def test_days_are_sorted_and_indexed() -> None:
    assert list(DK.days) == sorted(DK.days)
    assert DK.index_of(DK.days[0]) == 0
    assert DK.days[0] == date(2024, 8, 12)
    assert DK.index_of(DK.days[-1]) == len(DK.days) - 1
    assert DK.index_of(date(2024, 9, 8)) is None


def test_school_days_between_two_dates_are_inclusive() -> None:
    assert list(DK.school_days(date(2024, 9, 6), date(2024, 9, 9))) == [
        date(2024, 9, 6),
        date(2024, 9, 7),  # the extra Saturday
        date(2024, 9, 9),
    ]
    assert list(DK.school_days(last=date(2024, 8, 13))) == [date(2024, 8, 12), date(2024, 8, 13)]
    assert list(DK.school_days(first=date(2026, 6, 26))) == [date(2026, 6, 26)]
    assert list(DK.school_days(date(2025, 7, 1), date(2025, 7, 31))) == []


def test_school_year_of_finds_the_year_containing_a_date() -> None:
    assert DK.school_year_of(date(2024, 8, 12)) == YEAR_2024
    assert DK.school_year_of(date(2025, 6, 21)) == YEAR_2024  # a Saturday inside the range
    assert DK.school_year_of(date(2026, 1, 5)) == YEAR_2025
    assert DK.school_year_of(date(2024, 8, 11)) is None
    assert DK.years == (YEAR_2024, YEAR_2025)


def test_last_school_day_on_or_before() -> None:
    assert DK.last_school_day_on_or_before(date(2024, 9, 15)) == date(2024, 9, 13)
    assert DK.last_school_day_on_or_before(date(2024, 9, 13)) == date(2024, 9, 13)
    assert DK.last_school_day_on_or_before(date(2025, 8, 1)) == date(2025, 6, 27)
    assert DK.last_school_day_on_or_before(date(2024, 8, 11)) is None


def test_subdivision_holidays_apply() -> None:
    year = SchoolYear(date(2024, 11, 25), date(2024, 12, 6))
    scotland = SchoolCalendar("GB", [year], subdivision="SCT")
    england = SchoolCalendar("GB", [year], subdivision="ENG")
    # St Andrew's Day (Saturday 30 November 2024) is observed on Monday 2 December in Scotland.
    assert not scotland.is_school_day(date(2024, 12, 2))
    assert england.is_school_day(date(2024, 12, 2))


@pytest.mark.parametrize("country", ["DK", "NO", "GB", "US", "SE"])
def test_supported_countries_build(country: str) -> None:
    calendar = SchoolCalendar(country, [SchoolYear(date(2024, 12, 16), date(2025, 1, 10))])
    assert not calendar.is_school_day(date(2024, 12, 25))
    assert not calendar.is_school_day(date(2025, 1, 1))


def test_overlapping_school_years_are_refused() -> None:
    with pytest.raises(ValueError, match="overlap"):
        SchoolCalendar(
            "DK",
            [
                SchoolYear(date(2024, 8, 12), date(2025, 6, 27)),
                SchoolYear(date(2025, 6, 27), date(2026, 6, 26)),
            ],
        )


def test_school_year_ending_before_it_starts_is_refused() -> None:
    with pytest.raises(ValueError, match="last_day is before first_day"):
        SchoolYear(date(2025, 6, 27), date(2024, 8, 12))


def test_closure_ending_before_it_starts_is_refused() -> None:
    with pytest.raises(ValueError, match=r"closure .*\(autumn\): last_day is before first_day"):
        Closure(date(2024, 10, 18), date(2024, 10, 14), "autumn")


def test_unknown_country_is_refused() -> None:
    with pytest.raises(ValueError, match="no public holiday data for XX"):
        SchoolCalendar("XX", [])


def test_unknown_subdivision_is_refused() -> None:
    with pytest.raises(ValueError, match="DK/ZZ"):
        SchoolCalendar("DK", [YEAR_2024], subdivision="ZZ")


def test_calendar_without_years_has_no_school_days() -> None:
    calendar = SchoolCalendar("NO", [])
    assert calendar.days == ()
    assert calendar.last_school_day_on_or_before(date(2025, 1, 1)) is None
