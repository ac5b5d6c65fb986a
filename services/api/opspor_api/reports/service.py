"""The reports of DOMAIN.md section 8 that need no cases: absence shares, open concerns,
weekday and month patterns, pupils close to a limit, and the Bærum table without its
consulted/referred columns (they come from cases, issue 14).

Definitions the domain leaves open, decided here:
* A school's pupils in a period are its enrolments overlapping the period, each counted on
  its school days within its stay; a pupil with no enrolment anywhere but registrations at the
  school in the period counts there for the whole period (the engine's fallback stay).
* c(d) = min(1, sum of the extents of the pupil's current registrations of a category on d);
  a share is the sum of c(d) over the pupils' school days divided by the number of those days,
  rounded half-even to four decimals. Registrations on days that are no school day of the
  school (after a calendar change) are not counted.
* Close to a limit: see `_near_crossings`.
* Completely absent (Bærum): enrolled on the report date's horizon (the last school day on or
  before it; a pupil without enrolment: registered at the school in those 20 days), at the
  school for at least the school's last 20 school days up to it, and absent on each of them:
  the sum of extents over all categories >= 0.5, the default day threshold (an absence day of
  a rule counting every category).
"""

from __future__ import annotations

import asyncio
from bisect import bisect_left, bisect_right
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from itertools import accumulate
from typing import Any, Literal
from zoneinfo import ZoneInfo

from opspor_api.errors import InvalidInput, NotFound, field_error
from opspor_api.reports.repository import ReportRepository, Stay, StayGroup
from opspor_api.reports.schemas import (
    AbsenceReport,
    AbsenceRow,
    BaerumReport,
    BaerumRow,
    CaseCountRow,
    CaseReport,
    CloseToLimitReport,
    LevelCount,
    MunicipalityPatternReport,
    MunicipalityPatternRow,
    NearCrossing,
    OpenConcernCounts,
    OpenConcernPupil,
    OpenConcernsReport,
    PatternReport,
    PatternRow,
    Scope,
)
from opspor_api.tenancy import concern_visible, school_visible
from opspor_shared.auth import Principal
from opspor_shared.calendar import SchoolCalendar
from opspor_shared.engine import (
    CATEGORIES,
    DEFAULT_DAY_THRESHOLD,
    Registration,
    RegistrationLike,
    RulePack,
)
from opspor_shared.engine.timeline import Stay as EngineStay
from opspor_shared.engine.timeline import evaluate_stays
from opspor_shared.reference import CalendarCache, PackCache, ReferenceRepository, SchoolRef

MAX_PERIOD_DAYS = 800  # two school years and some: bounds the work one request can ask for
FULLY_ABSENT_DAYS = 20
# Pupils without an enrolment count at a school when registered there within this many days.
UNENROLLED_LOOKBACK = timedelta(days=400)
_FOUR = Decimal("0.0001")
_ONE = Decimal(1)

# School levels per country (DOMAIN.md section 8): (name, lowest grade, highest grade).
SCHOOL_LEVELS: dict[str, tuple[tuple[str, int, int], ...]] = {
    "DK": (("indskoling", 0, 3), ("mellemtrin", 4, 6), ("udskoling", 7, 9)),
    "NO": (("barneskole", 1, 7), ("ungdomsskole", 8, 10)),
}


def school_level(country: str, grade: int | None) -> str:
    if grade is None:
        return "unknown"
    for name, low, high in SCHOOL_LEVELS.get(country, ()):
        if low <= grade <= high:
            return name
    return "other"


def check_period(first: date, last: date) -> None:
    if last < first:
        raise InvalidInput(
            "the period is empty",
            [
                field_error(("query", "from"), "is after `to`"),
                field_error(("query", "to"), "is before `from`"),
            ],
        )
    if (last - first).days > MAX_PERIOD_DAYS:
        raise InvalidInput(
            "the period is too long",
            [field_error(("query", "to"), f"a report spans at most {MAX_PERIOD_DAYS} days")],
        )


@dataclass(frozen=True)
class Coverage:
    """The schools a report covers, with their calendars."""

    refs: dict[str, SchoolRef]
    calendars: dict[str, SchoolCalendar]


async def school_scope(
    repo: ReportRepository, principal: Principal, school_id: str, calendars: CalendarCache
) -> Coverage:
    # Another tenant's school answers exactly like one that does not exist.
    if not await school_visible(repo.session, principal, school_id):
        raise NotFound(f"no school {school_id!r}")
    return await _scope(repo, calendars, [school_id])


async def municipality_scope(
    repo: ReportRepository, municipality_id: str, calendars: CalendarCache
) -> Coverage:
    reference = ReferenceRepository(repo.session)
    refs = {
        s: r for s, r in (await reference.schools()).items() if r.municipality_id == municipality_id
    }
    built = await reference.calendars({s: r.country for s, r in refs.items()}, calendars)
    return Coverage(refs, built)


async def _scope(repo: ReportRepository, cache: CalendarCache, ids: Sequence[str]) -> Coverage:
    reference = ReferenceRepository(repo.session)
    refs = await reference.schools(ids) if ids else {}
    built = await reference.calendars({s: r.country for s, r in refs.items()}, cache)
    return Coverage(refs, built)


def _share(days: Decimal, pupil_days: int) -> Decimal | None:
    if pupil_days == 0:
        return None
    return (days / pupil_days).quantize(_FOUR, ROUND_HALF_EVEN)


def _days_in(days: Sequence[date], first: date, last: date) -> int:
    return max(0, bisect_right(days, last) - bisect_left(days, first))


@dataclass
class _Tally:
    pupils: int = 0
    pupil_days: int = 0

    def __post_init__(self) -> None:
        self.sums: dict[str, Decimal] = dict.fromkeys(CATEGORIES, Decimal(0))

    def add(self, other: _Tally) -> None:
        self.pupils += other.pupils
        self.pupil_days += other.pupil_days
        for c in CATEGORIES:
            self.sums[c] += other.sums[c]

    def row(
        self, scope: Scope, school: str | None, grade: int | None, class_name: str | None
    ) -> AbsenceRow:
        s = self.sums
        return AbsenceRow(
            scope=scope,
            school_id=school,
            grade=grade,
            class_name=class_name,
            pupils=self.pupils,
            pupil_days=self.pupil_days,
            illness_days=s["illness"].quantize(_FOUR),
            authorized_days=s["authorized"].quantize(_FOUR),
            unauthorized_days=s["unauthorized"].quantize(_FOUR),
            illness_share=_share(s["illness"], self.pupil_days),
            authorized_share=_share(s["authorized"], self.pupil_days),
            unauthorized_share=_share(s["unauthorized"], self.pupil_days),
        )


def _days_off(calendar: SchoolCalendar, first: date, last: date) -> list[date]:
    return [
        day
        for n in range((last - first).days + 1)
        if not calendar.is_school_day(day := first + timedelta(days=n))
    ]


def _group_key(g: StayGroup) -> tuple[str, int | None, str | None]:
    return (g.school_id, g.grade, g.class_name)


async def absence(
    repo: ReportRepository, scope: Coverage, first: date, last: date, municipal: bool
) -> AbsenceReport:
    """Per class, grade and school (a school's report), or per school and municipality."""
    check_period(first, last)
    days = {s: scope.calendars[s].school_days(first, last) for s in scope.refs}
    tallies: dict[tuple[str, int | None, str | None], _Tally] = defaultdict(_Tally)
    if scope.refs:
        for g in await repo.stay_groups(sorted(scope.refs), first, last):
            covered = _days_in(days[g.school_id], g.first or first, g.last or last)
            if covered:
                t = tallies[_group_key(g)]
                t.pupils += g.pupils
                t.pupil_days += covered * g.pupils
        # Every day of the stays, less the days that are no school day of the school (a
        # registration there predates a calendar change): two cheap queries instead of one
        # that joins every registration to the school days.
        for school, grade, class_name, category, total in await repo.absence_by_stay(
            sorted(scope.refs), first, last
        ):
            tallies[(school, grade, class_name)].sums[category] += total
        off = {s: _days_off(scope.calendars[s], first, last) for s in scope.refs}
        off = {s: o for s, o in off.items() if o}
        if off:
            for school, grade, class_name, category, total in await repo.absence_by_group(
                off, first, last
            ):
                tallies[(school, grade, class_name)].sums[category] -= total
    rows: list[AbsenceRow] = []
    schools: dict[str, _Tally] = {s: _Tally() for s in sorted(scope.refs)}
    grades: dict[tuple[str, int | None], _Tally] = defaultdict(_Tally)

    def order(key: tuple[str, int | None, str | None]) -> tuple[str, int, str]:
        return (key[0], 99 if key[1] is None else key[1], key[2] or "")

    for key in sorted(tallies, key=order):
        t = tallies[key]
        schools[key[0]].add(t)
        grades[(key[0], key[1])].add(t)
        if not municipal:
            rows.append(t.row("class", key[0], key[1], key[2]))
    if not municipal:
        for (school, grade), t in grades.items():
            rows.append(t.row("grade", school, grade, None))
    everyone = _Tally()
    for school, t in schools.items():
        rows.append(t.row("school", school, None, None))
        everyone.add(t)
    if municipal:
        rows.append(everyone.row("municipality", None, None, None))
    return AbsenceReport(period_from=first, period_to=last, rows=rows)


# A pattern bucket: ("weekday", ISO weekday) or ("month", YYYY-MM).
_Bucket = tuple[Literal["weekday", "month"], str]


def _buckets(d: date) -> tuple[_Bucket, _Bucket]:
    return ("weekday", str(d.isoweekday())), ("month", f"{d.year:04d}-{d.month:02d}")


def _bucket_order(b: _Bucket) -> tuple[bool, str]:
    return (b[0] != "weekday", b[1])  # the weekdays first, then the months


@dataclass
class _PatternTally:
    pupil_days: int = 0
    sums: dict[str, Decimal] = field(default_factory=lambda: dict.fromkeys(CATEGORIES, Decimal(0)))

    def add(self, other: _PatternTally) -> None:
        self.pupil_days += other.pupil_days
        for c in CATEGORIES:
            self.sums[c] += other.sums[c]

    def figures(self) -> dict[str, Any]:
        n = self.pupil_days
        return {
            "pupil_days": n,
            "illness_share": _share(self.sums["illness"], n),
            "authorized_share": _share(self.sums["authorized"], n),
            "unauthorized_share": _share(self.sums["unauthorized"], n),
            "total_share": _share(sum(self.sums.values(), Decimal(0)), n),
        }


async def _pattern_tallies(
    repo: ReportRepository, scope: Coverage, first: date, last: date
) -> dict[str, dict[_Bucket, _PatternTally]]:
    """Per school and bucket: its pupils' school days there and their sums of c(d)."""
    check_period(first, last)
    days = {s: scope.calendars[s].school_days(first, last) for s in sorted(scope.refs)}
    days = {s: d for s, d in days.items() if d}
    if not days:
        return {}
    # Pupils per school day as steps at each stay's first school day and after its last:
    # linear in stays plus days, however many pupils join or leave during the period.
    steps = {s: [0] * (len(d) + 1) for s, d in days.items()}
    for g in await repo.stay_groups(list(days), first, last):
        school_days = days[g.school_id]
        lo = bisect_left(school_days, g.first or first)
        hi = bisect_right(school_days, g.last or last)
        if lo < hi:
            steps[g.school_id][lo] += g.pupils
            steps[g.school_id][hi] -= g.pupils
    tallies: dict[str, dict[_Bucket, _PatternTally]] = {}
    for s, school_days in days.items():
        # Every bucket with school days gets a row, absence or not.
        per_bucket: dict[_Bucket, _PatternTally] = defaultdict(_PatternTally)
        for d, pupils in zip(school_days, accumulate(steps[s]), strict=False):
            for b in _buckets(d):
                per_bucket[b].pupil_days += pupils
        tallies[s] = per_bucket
    open_days = {s: set(d) for s, d in days.items()}
    for school, d, category, total in await repo.absence_by_date(list(days), first, last):
        # A registration on a day that is no longer a school day (a closure added after it)
        # does not count.
        if d in open_days[school]:
            for b in _buckets(d):
                tallies[school][b].sums[category] += total
    return tallies


async def patterns(
    repo: ReportRepository, scope: Coverage, first: date, last: date
) -> PatternReport:
    """Absence share per weekday and per month of one school's pupils."""
    (school,) = scope.refs
    tallies = (await _pattern_tallies(repo, scope, first, last)).get(school, {})
    rows = [
        PatternRow(kind=b[0], key=b[1], **tallies[b].figures())
        for b in sorted(tallies, key=_bucket_order)
    ]
    return PatternReport(school_id=school, period_from=first, period_to=last, rows=rows)


async def municipality_patterns(
    repo: ReportRepository, municipality_id: str, scope: Coverage, first: date, last: date
) -> MunicipalityPatternReport:
    """Per school, then the municipality's rows (school null): the schools' sums of c(d) and
    pupil school days added up per bucket before dividing, so a school weighs by its pupil
    days, as if the municipality were one school (the absence report's municipality row does
    the same)."""
    tallies = await _pattern_tallies(repo, scope, first, last)
    pooled: dict[_Bucket, _PatternTally] = defaultdict(_PatternTally)
    rows: list[MunicipalityPatternRow] = []
    for school, per_bucket in sorted(tallies.items()):
        for b in sorted(per_bucket, key=_bucket_order):
            pooled[b].add(per_bucket[b])
            rows.append(
                MunicipalityPatternRow(
                    school_id=school, kind=b[0], key=b[1], **per_bucket[b].figures()
                )
            )
    rows += [
        MunicipalityPatternRow(school_id=None, kind=b[0], key=b[1], **pooled[b].figures())
        for b in sorted(pooled, key=_bucket_order)
    ]
    return MunicipalityPatternReport(
        municipality_id=municipality_id, period_from=first, period_to=last, rows=rows
    )


async def open_concerns(
    repo: ReportRepository, principal: Principal, scope: Coverage
) -> OpenConcernsReport:
    (school,) = scope.refs
    found = await repo.open_concerns([school], await concern_visible(repo.session, principal))
    pupils = [
        OpenConcernPupil(
            level=level,
            pupil_id=pupil,
            grade=grade,
            class_name=class_name,
            concerns=n,
            latest_crossing=latest,
        )
        for _, level, pupil, grade, class_name, n, latest in found
    ]
    per_level: dict[str, set[str]] = defaultdict(set)
    for p in pupils:
        per_level[p.level].add(p.pupil_id)
    counts = [
        LevelCount(school_id=school, level=lv, pupils=len(per_level[lv]))
        for lv in sorted(per_level)
    ]
    return OpenConcernsReport(school_id=school, counts=counts, pupils=pupils)


async def open_concern_counts(
    repo: ReportRepository, principal: Principal, municipality_id: str, scope: Coverage
) -> OpenConcernCounts:
    found = await repo.open_concerns(
        sorted(scope.refs), await concern_visible(repo.session, principal)
    )
    per: dict[tuple[str, str], set[str]] = defaultdict(set)
    total: dict[str, set[str]] = defaultdict(set)
    for school, level, pupil, *_ in found:
        per[(school, level)].add(pupil)
        total[level].add(pupil)
    counts = [
        LevelCount(school_id=s, level=lv, pupils=len(p)) for (s, lv), p in sorted(per.items())
    ]
    counts += [
        LevelCount(school_id=None, level=lv, pupils=len(p)) for lv, p in sorted(total.items())
    ]
    return OpenConcernCounts(municipality_id=municipality_id, counts=counts)


def report_day(ref: SchoolRef, on: date | None, now: datetime) -> date:
    return on if on is not None else now.astimezone(ZoneInfo(ref.timezone)).date()


async def baerum(
    repo: ReportRepository, scope: Coverage, on: date | None, now: datetime
) -> BaerumReport:
    """Per school and school level: pupils, pupils completely absent, and pupils whose case
    was consulted with or referred to PPR/PPT in the school year up to the report date (a
    pupil both consulted and referred counts as referred: each pupil once, so the sum is the
    pupils PPR/PPT knows of); municipality rows sum the schools."""
    schools = sorted(scope.refs)
    # A municipality's schools share its country, and in practice its time zone.
    day = report_day(scope.refs[schools[0]], on, now) if schools else (on or now.date())
    horizons = {s: scope.calendars[s].last_school_day_on_or_before(day) for s in schools}
    windows = {
        s: list(scope.calendars[s].school_days(None, h)[-FULLY_ABSENT_DAYS:])
        for s, h in horizons.items()
        if h is not None
    }
    windows = {s: w for s, w in windows.items() if len(w) == FULLY_ABSENT_DAYS}
    absent = set(await repo.fully_absent(windows, DEFAULT_DAY_THRESHOLD)) if windows else set()
    counts: dict[tuple[str, str], list[int]] = {}
    for s in schools:
        for name, _, _ in SCHOOL_LEVELS.get(scope.refs[s].country, ()):
            counts[(s, name)] = [0, 0, 0, 0]
    ppr = await _ppr_involvement(repo, scope, horizons, day)
    by_horizon: dict[date, list[str]] = defaultdict(list)
    for s, h in horizons.items():
        if h is not None:
            by_horizon[h].append(s)
    for h, ids in by_horizon.items():
        # A pupil without enrolment counts when registered at the school within the window
        # (the 20 school days, about four weeks): only such a pupil can be completely absent,
        # and reading further back would scan the municipality's whole year.
        since = min((windows[s][0] for s in ids if s in windows), default=h)
        for stay in await repo.stays_on(ids, h, since):
            level = school_level(scope.refs[stay.school_id].country, stay.grade)
            cell = counts.setdefault((stay.school_id, level), [0, 0, 0, 0])
            cell[0] += 1
            involvement = ppr.get((stay.school_id, stay.pupil_id))
            if involvement is not None:
                cell[2 if involvement == "consulted" else 3] += 1
            window = windows.get(stay.school_id)
            if (
                window
                and (stay.enrolled_from is None or stay.enrolled_from <= window[0])
                and (stay.school_id, stay.pupil_id) in absent
            ):
                cell[1] += 1
    rows = [_baerum_row(s, lv, cell) for (s, lv), cell in sorted(counts.items())]
    return BaerumReport(report_date=day, rows=rows)


def _baerum_row(school_id: str | None, level: str, cell: Sequence[int]) -> BaerumRow:
    n, absent, consulted, referred = cell
    return BaerumRow(
        school_id=school_id,
        school_level=level,
        pupils=n,
        completely_absent=absent,
        consulted=consulted,
        referred=referred,
        ppr_total=consulted + referred,
    )


async def _ppr_involvement(
    repo: ReportRepository, scope: Coverage, horizons: Mapping[str, date | None], day: date
) -> dict[tuple[str, str], str]:
    """(school, pupil) -> `referred` or `consulted`, counting referrals from the first day of
    each school's school year (of the report date) up to the report date."""
    since: dict[str, date] = {}
    for s, h in horizons.items():
        year = scope.calendars[s].school_year_of(h or day)
        since[s] = year.first_day if year is not None else day
    if not since:
        return {}
    found: dict[tuple[str, str], str] = {}
    for school, pupil, kind, on in await repo.ppr_referrals(list(since), min(since.values()), day):
        if on >= since[school] and found.get((school, pupil)) != "referred":
            found[(school, pupil)] = kind
    return found


def with_municipal_rows(report: BaerumReport) -> BaerumReport:
    totals: dict[str, list[int]] = {}
    for r in report.rows:
        cell = totals.setdefault(r.school_level, [0, 0, 0, 0])
        for i, value in enumerate((r.pupils, r.completely_absent, r.consulted, r.referred)):
            cell[i] += value
    extra = [_baerum_row(None, lv, cell) for lv, cell in totals.items()]
    return BaerumReport(report_date=report.report_date, rows=report.rows + extra)


# --- cases ------------------------------------------------------------------------------


async def case_counts(repo: ReportRepository, scope: Coverage, roll_up: bool) -> CaseReport:
    """Open cases per phase, per coordinator and per overdue reason, each with how many of
    them are overdue; with `roll_up`, the municipality rows (school null) sum the schools."""
    counts: dict[tuple[str | None, str, str], list[int]] = defaultdict(lambda: [0, 0])
    for school, phase, coordinator, reasons in await repo.open_cases(sorted(scope.refs)):
        overdue = 1 if reasons else 0
        keys = [("phase", phase), ("coordinator", coordinator or "none")]
        keys += [("overdue-reason", r) for r in reasons]
        for dimension, key in keys:
            for owner in (school, None) if roll_up else (school,):
                cell = counts[(owner, dimension, key)]
                cell[0] += 1
                cell[1] += overdue
    order = {"phase": 0, "coordinator": 1, "overdue-reason": 2}
    rows = [
        CaseCountRow(
            school_id=school,
            dimension=dimension,  # type: ignore[arg-type]
            key=key,
            open_cases=n,
            overdue_cases=o,
        )
        for (school, dimension, key), (n, o) in sorted(
            counts.items(),
            key=lambda kv: (kv[0][0] is None, kv[0][0] or "", order[kv[0][1]], kv[0][2]),
        )
    ]
    return CaseReport(rows=rows)


# --- close to a limit -------------------------------------------------------------------


@dataclass(frozen=True)
class _PupilFacts:
    stay: Stay
    stays: list[EngineStay]
    registrations: Sequence[RegistrationLike]


def _engine_stays(
    pupil: Stay,
    enrolments: Sequence[Any],
    refs: dict[str, SchoolRef],
    calendars: dict[str, SchoolCalendar],
    packs: dict[tuple[str, str], RulePack],
) -> list[EngineStay]:
    """The pupil's stays as the threshold-worker builds them (opspor_worker.service._stays):
    one per enrolment, or one open stay at this school without any."""
    wanted: list[tuple[str, date | None, date | None]] = [
        (e.school_id, e.enrolled_from, e.enrolled_until) for e in enrolments
    ] or [(pupil.school_id, None, None)]
    out: list[EngineStay] = []
    for school_id, start, until in sorted(wanted, key=lambda w: (w[1] or date.min, w[0])):
        ref = refs.get(school_id)
        chosen = (
            tuple(
                packs[(ref.municipality_id, p)]
                for p in ref.rule_packs
                if (ref.municipality_id, p) in packs
            )
            if ref
            else ()
        )
        if ref is None or not chosen:
            continue
        end = until + timedelta(days=1) if until else None
        out.append(EngineStay(ref.id, calendars[ref.id], chosen, start, end))
    return out


def _near_crossings(
    school: str, horizon: date, next_days: Sequence[date], pupils: Iterable[_PupilFacts]
) -> list[NearCrossing]:
    """The exact definition of "close to a limit".

    For each pupil, the engine runs twice up to the second school day after the horizon h
    (next_days = d_{h+1}, d_{h+2} of the school's calendar): once on the current registrations
    (baseline) and once with a whole absence day in every category added on each of those two
    days (so c(d) = 1 for every rule's category set). A crossing of the simulated run on
    d_{h+k}, owned by this school and absent from the baseline, is a rule the pupil would cross
    with k more absence days (k = 1 or 2) on d_{h+k}. A crossing of the baseline after h
    needs no absence (a share rule reaching its min_days, say) and is not listed. A rule
    already met on h cannot cross again on the next days, so it is not listed either.
    """
    last = next_days[-1]
    out: list[NearCrossing] = []
    for p in pupils:
        extra = [Registration(d, f"simulated-{c}", c, _ONE) for d in next_days for c in CATEGORIES]
        simulated = [
            (owner, c)
            for owner, c in evaluate_stays(p.stays, [*p.registrations, *extra], last)
            if owner == school and c.date > horizon
        ]
        if not simulated:
            continue  # most pupils: the baseline run is only needed to rule candidates out
        baseline = {
            (owner, c.pack_id, c.rule_id, c.rule_version, c.date)
            for owner, c in evaluate_stays(p.stays, p.registrations, last)
            if c.date > horizon
        }
        for owner, c in simulated:
            if (owner, c.pack_id, c.rule_id, c.rule_version, c.date) in baseline:
                continue
            pack = next(s for s in p.stays if s.school_id == owner).packs
            rule = next(
                r.describe()
                for pk in pack
                if pk.id == c.pack_id
                for v in pk.versions
                if v.version == c.rule_version
                for r in v.rules
                if r.id == c.rule_id
            )
            out.append(
                NearCrossing(
                    pupil_id=p.stay.pupil_id,
                    grade=p.stay.grade,
                    class_name=p.stay.class_name,
                    pack_id=c.pack_id,
                    rule_id=c.rule_id,
                    rule_version=c.rule_version,
                    level=c.level,
                    rule=rule,
                    more_days=next_days.index(c.date) + 1,  # type: ignore[arg-type]
                    crossing_date=c.date,
                )
            )
    out.sort(key=lambda n: (n.more_days, n.crossing_date, n.pupil_id, n.pack_id, n.rule_id))
    return out


async def close_to_limit(
    repo: ReportRepository,
    scope: Coverage,
    on: date | None,
    now: datetime,
    calendars: CalendarCache,
    pack_cache: PackCache,
) -> CloseToLimitReport:
    (school,) = scope.refs
    ref, calendar = scope.refs[school], scope.calendars[school]
    horizon = calendar.last_school_day_on_or_before(report_day(ref, on, now))
    next_days = calendar.school_days(horizon + timedelta(days=1), None)[:2] if horizon else []
    if horizon is None or not next_days:
        return CloseToLimitReport(school_id=school, horizon=horizon, pupils=0, rows=[])
    stays = await repo.stays_on([school], horizon, horizon - UNENROLLED_LOOKBACK)
    ids = [s.pupil_id for s in stays]
    enrolments: dict[str, list[Any]] = defaultdict(list)
    for e in await repo.enrolments_of(ids):
        enrolments[e.pupil_id].append(e)
    registrations: dict[str, list[Registration]] = defaultdict(list)
    for row in await repo.registrations_of(ids):
        registrations[row.pupil_id].append(
            Registration(row.date, row.slot, row.category, row.extent)
        )
    reference = ReferenceRepository(repo.session)
    needed = {school} | {e.school_id for rows in enrolments.values() for e in rows}
    refs = await reference.schools(sorted(needed))
    built = await reference.calendars({s: r.country for s, r in refs.items()}, calendars)
    held = await reference.packs(
        {(r.municipality_id, p) for r in refs.values() for p in r.rule_packs}, pack_cache
    )
    packs = {k: v.pack for k, v in held.items()}
    facts = [
        _PupilFacts(
            s,
            _engine_stays(s, enrolments[s.pupil_id], refs, built, packs),
            registrations[s.pupil_id],
        )
        for s in stays
    ]
    facts = [f for f in facts if f.stays]
    # Pure CPU work: off the event loop, so other requests keep being served meanwhile.
    rows = await asyncio.to_thread(_near_crossings, school, horizon, list(next_days), facts)
    return CloseToLimitReport(
        school_id=school, horizon=horizon, pupils=len({r.pupil_id for r in rows}), rows=rows
    )
