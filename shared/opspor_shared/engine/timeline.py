"""A pupil's school days across enrolments, and the crossings of the packs of each school.

A pupil is enrolled at one school at a time (a *stay*). Their school days are each school's
days during its stay, so a pupil who changes school carries their registrations but uses the
new school's calendar from the move. A crossing on day d is judged by the packs of the school
the pupil attends on d, with windows reaching back across the move; the concern belongs to
that school. A pupil without known enrolments has one open stay at the school of their
latest registration, covering all of that school's days.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date, timedelta

from opspor_shared.calendar import SchoolCalendar, SchoolYear
from opspor_shared.engine.evaluate import evaluate_packs
from opspor_shared.engine.model import Crossing, RegistrationColumns, RegistrationLike, RulePack


@dataclass(frozen=True)
class Stay:
    school_id: str
    calendar: SchoolCalendar
    packs: tuple[RulePack, ...]
    start: date | None  # None: from the calendar's first day
    end: date | None = None  # exclusive; None: until the next stay starts, or open


def enrolled_stays(
    enrolments: Iterable[tuple[str, date, date | None]],
    fallback_school: str | None,
    schools: Mapping[str, tuple[SchoolCalendar, tuple[RulePack, ...]]],
) -> tuple[list[Stay], list[str | None]]:
    """A pupil's stays, by start, from their enrolments (school, enrolled_from, enrolled_until
    inclusive); without any, one open stay at ``fallback_school`` (the school of their latest
    registration). ``schools`` gives each known school's calendar and packs in force. A stay
    at a school it does not hold, or one without packs, is left out (its days are not judged);
    the second list names the schools left out, for the caller to log."""
    wanted: list[tuple[str | None, date | None, date | None]] = [*enrolments] or [
        (fallback_school, None, None)
    ]
    stays: list[Stay] = []
    left_out: list[str | None] = []
    for school_id, start, until in sorted(wanted, key=lambda w: (w[1] or date.min, w[0] or "")):
        known = schools.get(school_id) if school_id is not None else None
        if school_id is None or known is None or not known[1]:
            left_out.append(school_id)
            continue
        end = until + timedelta(days=1) if until else None
        stays.append(Stay(school_id, known[0], known[1], start, end))
    return stays, left_out


class SplicedCalendar(SchoolCalendar):
    """The school days of consecutive stays at different schools, as one calendar.

    A school year that continues across a move (both schools' years start in the same
    calendar year) stays one school year, so `school_year` periods count across the move.
    """

    def __init__(self, stays: Sequence[Stay]) -> None:
        last = stays[-1].calendar
        self.country = last.country
        self.subdivision = last.subdivision
        days: list[date] = []
        self._owners: list[tuple[date, SchoolCalendar]] = []
        for stay, end in zip(stays, _ends(stays), strict=True):
            picked = stay.calendar.school_days(stay.start, None)
            if end is not None:
                picked = [d for d in picked if d < end]
            if days:
                picked = [d for d in picked if d > days[-1]]
            if picked:
                self._owners.append((picked[0], stay.calendar))
                days.extend(picked)
        self.days = tuple(days)
        self._index = {d: i for i, d in enumerate(self.days)}
        self._starts = [start for start, _ in self._owners]
        self._canonical: dict[int, SchoolYear] = {}
        self.years = tuple(
            dict.fromkeys(y for d in self.days if (y := self.school_year_of(d)) is not None)
        )

    def school_year_of(self, d: date) -> SchoolYear | None:
        i = bisect_right(self._starts, d) - 1
        if i < 0:
            return None
        year = self._owners[i][1].school_year_of(d)
        if year is None:
            return None
        return self._canonical.setdefault(year.first_day.year, year)


def _ends(stays: Sequence[Stay]) -> list[date | None]:
    ends: list[date | None] = []
    for i, stay in enumerate(stays):
        following = stays[i + 1].start if i + 1 < len(stays) else None
        candidates = [d for d in (stay.end, following) if d is not None]
        ends.append(min(candidates) if candidates else None)
    return ends


def evaluate_stays(
    stays: Sequence[Stay],
    registrations: Iterable[RegistrationLike] | RegistrationColumns,
    horizon: date,
    not_before: date | None = None,
) -> list[tuple[str, Crossing]]:
    """(school id, crossing) for every crossing up to ``horizon``; stays sorted by start.

    ``not_before`` (the retention cutoff) is the earliest day of the pupil's school days."""
    if not_before is not None:
        stays = [
            replace(s, start=max(s.start or date.min, not_before))
            for s in stays
            if s.end is None or s.end > not_before
        ]
    if not stays:
        return []
    if len(stays) == 1 and stays[0].end is None:
        stay = stays[0]
        return [
            (stay.school_id, c)
            for crossings in evaluate_packs(
                stay.calendar, registrations, stay.packs, horizon, stay.start
            )
            for c in crossings
        ]
    calendar = SplicedCalendar(stays)
    owners = [(s.start or date.min, s) for s in stays]
    starts = [start for start, _ in owners]
    out: list[tuple[str, Crossing]] = []
    packs = list({id(p): p for stay in stays for p in stay.packs}.values())
    for pack, crossings in zip(
        packs, evaluate_packs(calendar, registrations, packs, horizon), strict=True
    ):
        for c in crossings:
            owner = owners[bisect_right(starts, c.date) - 1][1]
            if any(p is pack for p in owner.packs):
                out.append((owner.school_id, c))
    out.sort(key=lambda sc: (sc[1].date, sc[1].pack_id, sc[1].rule_id, sc[1].rule_version))
    return out
