"""School calendars: which local dates are school days for one school.

A calendar is built once per school and reused for every pupil of that school, so all
lookups are precomputed in ``__init__`` and answered with a dict or a bisect.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import lru_cache
from itertools import pairwise
from types import MappingProxyType
from zoneinfo import ZoneInfo

import holidays

_ONE_DAY = timedelta(days=1)


@dataclass(frozen=True)
class Closure:
    first_day: date
    last_day: date  # inclusive
    reason: str = ""

    def __post_init__(self) -> None:
        if self.last_day < self.first_day:
            raise ValueError(
                f"closure {self.first_day.isoformat()}..{self.last_day.isoformat()}"
                f"{_reason_suffix(self.reason)}: last_day is before first_day"
            )


@dataclass(frozen=True)
class SchoolYear:
    first_day: date
    last_day: date  # inclusive
    closures: tuple[Closure, ...] = ()
    extra_days: tuple[date, ...] = ()

    def __post_init__(self) -> None:
        if self.last_day < self.first_day:
            raise ValueError(
                f"school year {self.first_day.isoformat()}..{self.last_day.isoformat()}: "
                "last_day is before first_day"
            )

    def contains(self, d: date) -> bool:
        return self.first_day <= d <= self.last_day

    def label(self) -> str:
        return f"{self.first_day.isoformat()}..{self.last_day.isoformat()}"


def _reason_suffix(reason: str) -> str:
    return f" ({reason})" if reason else ""


# Opspor's languages as the `holidays` package names them; None: the country's own language.
_HOLIDAY_LANGUAGES = {"da": "da", "nb": "no", "no": "no", "nn": "no", "en": "en_US"}


@lru_cache(maxsize=64)
def _holiday_languages(country: str) -> tuple[str, ...]:
    return tuple(holidays.country_holidays(country, years=[]).supported_languages)


@lru_cache(maxsize=512)
def _holidays(
    country: str, subdivision: str | None, year: int, language: str | None = None
) -> Mapping[date, str]:
    # Building a holidays object costs up to tens of milliseconds (DK), and calendars are
    # rebuilt whenever a school's configuration changes, so the per-year result is cached.
    try:
        found = holidays.country_holidays(
            country, subdiv=subdivision, years=year, language=language
        )
    except NotImplementedError as exc:
        where = country if subdivision is None else f"{country}/{subdivision}"
        raise ValueError(f"no public holiday data for {where}: {exc}") from exc
    return MappingProxyType({d: str(name) for d, name in found.items() if d.year == year})


class SchoolCalendar:
    """School days of one school: weekdays of its school years, minus holidays and closures."""

    def __init__(
        self, country: str, years: Sequence[SchoolYear], subdivision: str | None = None
    ) -> None:
        self.country = country
        self.subdivision = subdivision
        ordered = tuple(sorted(years, key=lambda y: (y.first_day, y.last_day)))
        for before, after in pairwise(ordered):
            if after.first_day <= before.last_day:
                raise ValueError(f"school years {before.label()} and {after.label()} overlap")
        self.years: tuple[SchoolYear, ...] = ordered
        # Ask for one year even when there are none, so an unknown country fails here.
        _holidays(country, subdivision, ordered[0].first_day.year if ordered else 2000)
        self._year_starts = tuple(y.first_day for y in ordered)

        school_days: set[date] = set()
        for year in ordered:
            public = self._holiday_dates(year.first_day, year.last_day)
            closed: set[date] = set()
            for closure in year.closures:
                d = max(closure.first_day, year.first_day)
                while d <= min(closure.last_day, year.last_day):
                    closed.add(d)
                    d += _ONE_DAY
            d = year.first_day
            while d <= year.last_day:
                if d.weekday() < 5 and d not in public and d not in closed:
                    school_days.add(d)
                d += _ONE_DAY
            # An explicit extra day is a decision of the school and wins over weekends,
            # holidays and closures; outside the year's range it has no year to belong to.
            school_days.update(d for d in year.extra_days if year.contains(d))

        self.days: tuple[date, ...] = tuple(sorted(school_days))
        self._index: dict[date, int] = {d: i for i, d in enumerate(self.days)}

    def __repr__(self) -> str:
        sub = f", subdivision={self.subdivision!r}" if self.subdivision else ""
        return (
            f"SchoolCalendar({self.country!r}{sub}, years={len(self.years)}, days={len(self.days)})"
        )

    def _holiday_dates(
        self, first: date, last: date, language: str | None = None
    ) -> dict[date, str]:
        found: dict[date, str] = {}
        for year in range(first.year, last.year + 1):
            for d, name in _holidays(self.country, self.subdivision, year, language).items():
                if first <= d <= last:
                    found[d] = name
        return found

    def is_school_day(self, d: date) -> bool:
        return d in self._index

    def index_of(self, d: date) -> int | None:
        return self._index.get(d)

    def school_days(self, first: date | None = None, last: date | None = None) -> Sequence[date]:
        start = 0 if first is None else bisect_left(self.days, first)
        stop = len(self.days) if last is None else bisect_right(self.days, last)
        return self.days[start:stop]

    def school_year_of(self, d: date) -> SchoolYear | None:
        i = bisect_right(self._year_starts, d) - 1
        if i >= 0 and self.years[i].contains(d):
            return self.years[i]
        return None

    def last_school_day_on_or_before(self, d: date) -> date | None:
        i = bisect_right(self.days, d) - 1
        return self.days[i] if i >= 0 else None

    def public_holidays(
        self, first: date, last: date, language: str | None = None
    ) -> dict[date, str]:
        """The holidays' names in the language (da, nb or en) where the `holidays` package has
        it for the country, else in the country's own language."""
        wanted = _HOLIDAY_LANGUAGES.get(language or "")
        chosen = wanted if wanted in _holiday_languages(self.country) else None
        return dict(sorted(self._holiday_dates(first, last, chosen).items()))


def horizon_for(calendar: SchoolCalendar, timezone: str, now: datetime) -> date | None:
    """The last school day on or before today in the school's time zone."""
    today = now.astimezone(ZoneInfo(timezone)).date()
    return calendar.last_school_day_on_or_before(today)
