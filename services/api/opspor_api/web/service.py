"""The web page's logic: server-side sessions, and each page's data assembled from the same
services the JSON endpoints call (same tenancy, same 404s)."""

from __future__ import annotations

import contextlib
import hashlib
import secrets
import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncSession

from opspor_api.calendars import why_not_school_day
from opspor_api.cases import service as cases_service
from opspor_api.cases.repository import CaseRepository
from opspor_api.cases.schemas import CaseSummary
from opspor_api.concerns import service as concerns_service
from opspor_api.concerns.repository import ConcernRepository
from opspor_api.concerns.schemas import ConcernOut
from opspor_api.errors import NotFound
from opspor_api.models import WebSession
from opspor_api.registrations import service as registrations_service
from opspor_api.registrations.repository import RegistrationRepository
from opspor_api.reports import service as reports_service
from opspor_api.reports.repository import ReportRepository
from opspor_api.reports.schemas import CsvReport, MunicipalityPatternReport
from opspor_api.web.oidc import LoginRequest
from opspor_api.web.repository import WebSessionRepository
from opspor_api.web.schemas import (
    CaseView,
    Day,
    LevelGroup,
    Month,
    MonthBar,
    MunicipalityRollup,
    MunicipalityView,
    OpenGoal,
    PupilView,
    Requirement,
    RuleKey,
    SchoolCount,
    SchoolReports,
    SchoolView,
)
from opspor_shared.auth import Principal, Role
from opspor_shared.calendar import SchoolCalendar
from opspor_shared.reference import CalendarCache, PackCache, ReferenceRepository, SchoolRef
from opspor_shared.wording import RuleSpec, spec_in

# What needs action first: the levels of the shipped packs from the most to the least urgent
# (a referral to PPR before a talk with the parents). Levels a municipality invents come after
# these, in alphabetical order.
LEVEL_ORDER = (
    "ppr-must",
    "ppr-may",
    "notify-municipality",
    "severe",
    "penalty-notice",
    "notify-la",
    "persistent",
    "chronic",
    "concern",
    "warn-parents",
    "call-home",
)
MAX_SCHOOL_CONCERNS = 500
# Writing last_seen_at on every page view would turn each read into a write; a minute's
# precision is plenty for an idle timeout counted in minutes.
TOUCH_AFTER = timedelta(seconds=60)
LOGIN_TIMEOUT = timedelta(minutes=10)


def level_rank(level: str) -> tuple[int, str]:
    try:
        return (LEVEL_ORDER.index(level), level)
    except ValueError:
        return (len(LEVEL_ORDER), level)


# Sessions ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SessionPolicy:
    idle: timedelta
    absolute: timedelta


def _hash(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


@dataclass(frozen=True)
class SessionInfo:
    """A plain copy of the session row: error pages read it after the request's transaction
    has been rolled back, when the ORM row could no longer be read."""

    id_hash: str
    csrf_token: str
    language: str | None
    principal: Principal | None
    login_state: str | None
    code_verifier: str | None
    nonce: str | None
    return_to: str | None


def _info(row: WebSession) -> SessionInfo:
    principal = None
    if row.role is not None and row.subject is not None and row.issuer is not None:
        principal = Principal(
            subject=row.subject,
            role=Role(row.role),
            issuer=row.issuer,
            municipality=row.municipality,
            schools=frozenset(row.schools),
            client=row.client,
        )
    return SessionInfo(
        id_hash=row.id_hash,
        csrf_token=row.csrf_token,
        language=row.language,
        principal=principal,
        login_state=row.login_state,
        code_verifier=row.code_verifier,
        nonce=row.nonce,
        return_to=row.return_to,
    )


async def load_session(
    repo: WebSessionRepository, raw: str | None, now: datetime, policy: SessionPolicy
) -> SessionInfo | None:
    if not raw or len(raw) > 128:
        return None
    row = await repo.get(_hash(raw))
    if row is None:
        return None
    if row.expires_at <= now or row.last_seen_at <= now - policy.idle:
        await repo.remove(row.id_hash)
        return None
    if now - row.last_seen_at >= TOUCH_AFTER:
        await repo.touch(row.id_hash, last_seen_at=now)
    return _info(row)


async def begin_login(
    repo: WebSessionRepository,
    login: LoginRequest,
    return_to: str,
    language: str | None,
    now: datetime,
    policy: SessionPolicy,
    replacing: SessionInfo | None = None,
) -> str:
    """A sign-in in progress, instead of the browser's current session if any; returns the new
    cookie value."""
    if replacing is not None:
        await repo.remove(replacing.id_hash)
    await repo.remove_expired(now, now - policy.idle)
    raw = secrets.token_urlsafe(32)
    await repo.add(
        WebSession(
            id_hash=_hash(raw),
            last_seen_at=now,
            expires_at=now + LOGIN_TIMEOUT,
            csrf_token=secrets.token_urlsafe(32),
            language=language,
            login_state=login.state,
            code_verifier=login.code_verifier,
            nonce=login.nonce,
            return_to=return_to,
            schools=[],
        )
    )
    return raw


async def complete_login(
    repo: WebSessionRepository,
    pending: SessionInfo,
    principal: Principal,
    now: datetime,
    policy: SessionPolicy,
) -> str:
    """The signed-in session, under a new id: an id planted before sign-in (session fixation)
    is worth nothing afterwards. Returns the new cookie value."""
    await repo.remove(pending.id_hash)
    raw = secrets.token_urlsafe(32)
    await repo.add(
        WebSession(
            id_hash=_hash(raw),
            last_seen_at=now,
            expires_at=now + policy.absolute,
            csrf_token=secrets.token_urlsafe(32),
            language=pending.language,
            subject=principal.subject,
            role=principal.role.value,
            issuer=principal.issuer,
            municipality=principal.municipality,
            schools=sorted(principal.schools),
            client=principal.client,
        )
    )
    return raw


async def end_session(repo: WebSessionRepository, row: SessionInfo) -> None:
    await repo.remove(row.id_hash)


async def choose_language(repo: WebSessionRepository, row: SessionInfo, language: str) -> None:
    await repo.touch(row.id_hash, language=language)


def safe_return_to(target: str | None) -> str:
    """Only a path of the web page itself: never another site (open redirect)."""
    if (
        not target
        or not target.startswith("/ui")
        or target.startswith("//")
        or "\\" in target
        or len(target) > 500
    ):
        return "/ui/"
    return target


# Pages ------------------------------------------------------------------------------------


def school_today(school: SchoolRef, now: datetime) -> date:
    return now.astimezone(ZoneInfo(school.timezone)).date()


def _year_around(calendar: SchoolCalendar, today: date) -> tuple[date, date]:
    """The school year containing today, else the last one begun, else the next one."""
    if (year := calendar.school_year_of(today)) is not None:
        return year.first_day, year.last_day
    begun = [y for y in calendar.years if y.first_day <= today]
    if begun:
        return begun[-1].first_day, begun[-1].last_day
    if calendar.years:
        return calendar.years[0].first_day, calendar.years[0].last_day
    return today - timedelta(days=365), today


async def _school(session: AsyncSession, school_id: str) -> SchoolRef:
    found = await ReferenceRepository(session).school(school_id)
    if found is None:
        raise NotFound(f"no school {school_id!r}")
    return found


async def _calendar(
    session: AsyncSession, school: SchoolRef, calendars: CalendarCache
) -> SchoolCalendar:
    reference = ReferenceRepository(session)
    return (await reference.calendars({school.id: school.country}, calendars))[school.id]


async def rule_specs(
    session: AsyncSession, packs: PackCache, rules: Iterable[RuleKey]
) -> dict[RuleKey, RuleSpec]:
    """Rules as their pack versions define them, so the page can word a rule and a finding in
    the reader's language, as the mails do; a rule whose pack version is gone is left out (the
    page then shows the engine's words)."""
    wanted = set(rules)
    reference = ReferenceRepository(session)
    schools = await reference.schools(sorted({school for school, *_ in wanted}))

    def pack_key(rule: RuleKey) -> tuple[str, str]:
        school = schools.get(rule[0])
        return (school.municipality_id if school else "", rule[1])

    found = await reference.packs({pack_key(r) for r in wanted}, packs)
    specs: dict[RuleKey, RuleSpec] = {}
    for rule in wanted:
        ref = found.get(pack_key(rule))
        spec = spec_in(ref.pack if ref else None, rule[2], rule[3])
        if spec is not None:
            specs[rule] = spec
    return specs


def concern_rules(concerns: Iterable[ConcernOut]) -> set[RuleKey]:
    return {(c.school_id, c.pack_id, c.rule_version, c.rule_id) for c in concerns}


async def school_view(
    session: AsyncSession,
    principal: Principal,
    school_id: str,
    calendars: CalendarCache,
    packs: PackCache,
    now: datetime,
) -> SchoolView:
    # The concerns service decides visibility (404 outside the tenancy) before anything else.
    page = await concerns_service.school_page(
        ConcernRepository(session),
        principal,
        school_id,
        "active",
        None,
        None,
        MAX_SCHOOL_CONCERNS,
    )
    school = await _school(session, school_id)
    by_level: dict[str, list[ConcernOut]] = defaultdict(list)
    for concern in page.items:
        by_level[concern.level].append(concern)
    groups = [
        # Within a level, the concern waiting longest comes first.
        LevelGroup(level, sorted(items, key=lambda c: (c.crossing_date, c.pupil_id)))
        for level, items in sorted(by_level.items(), key=lambda kv: level_rank(kv[0]))
    ]
    calendar = await _calendar(session, school, calendars)
    first, last = _year_around(calendar, school_today(school, now))
    rows = await registrations_service.school_absence_by_month(
        RegistrationRepository(session), principal, school_id, first, last
    )
    months: dict[date, dict[str, Decimal]] = {}
    month = first.replace(day=1)
    while month <= last:
        months[month] = {}
        month = (month + timedelta(days=32)).replace(day=1)
    for row in rows:
        months.setdefault(row.month, {})[row.category] = row.days
    return SchoolView(
        school=school,
        groups=groups,
        truncated=page.next_cursor is not None,
        months=[MonthBar(m, d) for m, d in sorted(months.items())],
        period=(first, last),
        specs=await rule_specs(session, packs, concern_rules(page.items)),
    )


def _months(
    calendar: SchoolCalendar, first: date, last: date, absence: dict[date, dict[str, Decimal]]
) -> list[Month]:
    out: list[Month] = []
    month = first.replace(day=1)
    while month <= last:
        following = (month + timedelta(days=32)).replace(day=1)
        weeks: list[list[Day | None]] = []
        d = month - timedelta(days=month.weekday())
        while d < following:
            week: list[Day | None] = []
            for offset in range(5):
                day = d + timedelta(days=offset)
                if day.month != month.month or not first <= day <= last:
                    week.append(None)
                    continue
                school_day = calendar.is_school_day(day)
                week.append(
                    Day(
                        date=day,
                        school_day=school_day,
                        closed_reason=None if school_day else why_not_school_day(calendar, day),
                        absence=absence.get(day, {}),
                    )
                )
            if any(week):
                weeks.append(week)
            d += timedelta(days=7)
        out.append(Month(month, weeks))
        month = following
    return out


async def pupil_view(
    session: AsyncSession,
    principal: Principal,
    pupil_id: str,
    calendars: CalendarCache,
    packs: PackCache,
    now: datetime,
) -> PupilView:
    concerns = await concerns_service.pupil_concerns(
        ConcernRepository(session), principal, pupil_id, None
    )
    # PPR sees concerns routed to it, not the absence record (as in the API).
    shows_absence = principal.role in (Role.SCHOOL_STAFF, Role.SCHOOL_SYSTEM)
    registrations = (
        await registrations_service.pupil_registrations(
            RegistrationRepository(session), principal, pupil_id
        )
        if shows_absence
        else []
    )
    latest = sorted(
        [(r.date, r.school_id) for r in registrations]
        + [(c.crossing_date, c.school_id) for c in concerns]
    )
    school = await _school(session, latest[-1][1]) if latest else None
    months: list[Month] = []
    totals: dict[str, Decimal] = defaultdict(Decimal)
    if school is not None and shows_absence:
        calendar = await _calendar(session, school, calendars)
        first, last = _year_around(calendar, school_today(school, now))
        absence: dict[date, dict[str, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
        for r in registrations:
            if r.school_id == school.id and r.category and r.extent and first <= r.date <= last:
                absence[r.date][r.category] += r.extent
                totals[r.category] += r.extent
        months = _months(calendar, first, last, absence)
    cases: list[CaseSummary] = []
    phase_names: dict[str, Mapping[str, str]] = {}
    with contextlib.suppress(NotFound):  # NotFound: no case that this reader may see
        repo = CaseRepository(session)
        cases = await cases_service.pupil_cases(repo, principal, pupil_id)
        models = await cases_service.models_of(repo, cases[0].municipality_id)
        for c in cases:
            phase = models[c.model_id].phase(c.phase)
            phase_names[str(c.id)] = phase.names if phase else {}
    return PupilView(
        pupil_id=pupil_id,
        cases=sorted(cases, key=lambda c: (c.status != "open", -c.opened_on.toordinal())),
        phase_names=phase_names,
        school=school,
        concerns=sorted(
            concerns, key=lambda c: (c.status != "active", level_rank(c.level), c.crossing_date)
        ),
        months=months,
        shows_absence=shows_absence,
        totals=dict(totals),
        specs=await rule_specs(session, packs, concern_rules(concerns)),
    )


async def municipality_view(session: AsyncSession, principal: Principal) -> MunicipalityView:
    if principal.municipality is None:
        raise NotFound("no municipality")
    schools = [
        s
        for s in (await ReferenceRepository(session).schools()).values()
        if s.municipality_id == principal.municipality
    ]
    counts = await concerns_service.active_counts(ConcernRepository(session), principal)
    levels = sorted({lv for c in counts.values() for lv in c}, key=level_rank)
    rows = [SchoolCount(s, counts.get(s.id, {})) for s in sorted(schools, key=lambda s: s.name)]
    # Schools with the most open concerns first: where the resource team is needed.
    rows.sort(key=lambda r: -r.total)
    return MunicipalityView(
        municipality_id=principal.municipality,
        name=schools[0].municipality_name if schools else principal.municipality,
        schools=rows,
        levels=levels,
    )


async def case_view(session: AsyncSession, principal: Principal, case_id: uuid.UUID) -> CaseView:
    repo = CaseRepository(session)
    loaded = await cases_service.load(repo, principal, case_id)
    model, case, entries = loaded.model, loaded.case, loaded.entries
    out = await cases_service.view_of(repo, principal, loaded)
    phase = model.phase(case.phase)
    assert phase is not None  # a case's phase is one of its model's
    following = model.next_phase(case.phase)
    texted = await repo.texted(case.id)
    missing = set(cases_service.missing(model, case, entries, texted))
    texts = {e.id: e.text for e in out.entries}
    goals = cases_service.latest_goals(entries)
    return CaseView(
        case=out,
        model=model,
        school_name=loaded.school.name,
        timezone=loaded.school.timezone,
        phase=phase,
        requirements=[Requirement(r, r not in missing) for r in phase.requires],
        next_phase=None if following is None or following == model.closed else following,
        close_needs={
            o: cases_service.close_missing(model, case, entries, o, texted) for o in model.outcomes
        },
        failed_contact_days=cases_service.failed_contact_days(entries),
        goals=[OpenGoal(i, texts.get(i), status) for i, status in sorted(goals.items())],
        can_move=principal.role is Role.SCHOOL_STAFF and case.status == "open",
        can_record=principal.role in (Role.SCHOOL_STAFF, Role.PPR) and case.status == "open",
        shows_text=cases_service.full_text_reader(principal),
    )


async def school_reports(
    session: AsyncSession,
    principal: Principal,
    school_id: str,
    calendars: CalendarCache,
    packs: PackCache,
    period: tuple[date, date],
    language: str,
    now: datetime,
) -> SchoolReports:
    """The reports of DOMAIN.md s.8 for one school, from the reports and cases services (the
    same numbers as the API). Called after school_view, which has checked the tenancy."""
    if principal.role is not Role.SCHOOL_STAFF:
        return SchoolReports(None, {}, None, None, None, None, None)
    repo = ReportRepository(session)
    scope = await reports_service.school_scope(repo, principal, school_id, calendars)
    cases_repo = CaseRepository(session)
    page = await cases_service.school_cases(
        cases_repo, principal, school_id, {"status": "open", "overdue": True}, None, 200
    )
    model = await cases_service.school_model(cases_repo, school_id)
    baerum = await reports_service.baerum(repo, scope, None, now)
    near = (await reports_service.close_to_limit(repo, scope, None, now, calendars, packs)).rows
    return SchoolReports(
        overdue=sorted(page.items, key=lambda c: (c.next_evaluation_due or c.opened_on, c.id)),
        phase_names={
            p.id: p.names.get(language) or p.names.get("en") or p.id for p in model.phases
        },
        cases=(await reports_service.case_counts(repo, scope, roll_up=False)).rows,
        near=near,
        weekdays=[
            r
            for r in (
                await reports_service.patterns(repo, scope, *_so_far(scope, period, now))
            ).rows
            if r.kind == "weekday"
        ],
        baerum=baerum.rows,
        report_date=baerum.report_date,
        specs=await rule_specs(
            session, packs, {(school_id, n.pack_id, n.rule_version, n.rule_id) for n in near}
        ),
    )


async def school_report(
    session: AsyncSession,
    principal: Principal,
    school_id: str,
    name: str,
    calendars: CalendarCache,
    packs: PackCache,
    period: tuple[date, date],
    now: datetime,
) -> CsvReport:
    repo = ReportRepository(session)
    scope = await reports_service.school_scope(repo, principal, school_id, calendars)
    if name == "cases":
        return await reports_service.case_counts(repo, scope, roll_up=False)
    if name == "baerum":
        return await reports_service.baerum(repo, scope, None, now)
    if name == "close-to-limit":
        return await reports_service.close_to_limit(repo, scope, None, now, calendars, packs)
    return await reports_service.patterns(repo, scope, *_so_far(scope, period, now))


def _so_far(
    scope: reports_service.Coverage, period: tuple[date, date], now: datetime
) -> tuple[date, date]:
    """The page's school year up to the school's today: school days still to come have no
    registrations yet, and counted as days without absence they would dilute every share."""
    (ref,) = scope.refs.values()
    first, last = period
    return first, max(first, min(last, school_today(ref, now)))


def municipality_period(scope: reports_service.Coverage, now: datetime) -> tuple[date, date] | None:
    """The school year so far: from the earliest first day of each school's year around today
    to today (at the latest its last day). School days still to come have no registrations
    yet; counted as days without absence they would dilute every share. None before any
    school's year has begun, or without schools."""
    spans = []
    for s, ref in scope.refs.items():
        today = school_today(ref, now)
        first, last = _year_around(scope.calendars[s], today)
        spans.append((first, min(last, today)))
    if not spans:
        return None
    first, last = min(f for f, _ in spans), max(la for _, la in spans)
    return (first, last) if first <= last else None


async def municipality_rollup(
    session: AsyncSession,
    principal: Principal,
    calendars: CalendarCache,
    language: str,
    now: datetime,
) -> MunicipalityRollup:
    if principal.role is not Role.MUNICIPALITY_ADMIN or principal.municipality is None:
        return MunicipalityRollup(None, None, None)
    repo = ReportRepository(session)
    scope = await reports_service.municipality_scope(repo, principal.municipality, calendars)
    baerum = reports_service.with_municipal_rows(
        await reports_service.baerum(repo, scope, None, now)
    )
    cases = await reports_service.case_counts(repo, scope, roll_up=True)
    models = await cases_service.models_of(CaseRepository(session), principal.municipality)
    names = {
        p.id: p.names.get(language) or p.names.get("en") or p.id
        for m in models.values()
        for p in m.phases
    }
    report = await _patterns_so_far(repo, principal.municipality, scope, now)
    # The page shows the municipality's rows; the school rows are in the CSV.
    patterns = [r for r in report.rows if r.school_id is None] if report else []
    return MunicipalityRollup(
        cases.rows,
        baerum.rows,
        baerum.report_date,
        names,
        weekdays=[r for r in patterns if r.kind == "weekday"],
        months=[r for r in patterns if r.kind == "month"],
        period=(report.period_from, report.period_to) if report else None,
    )


async def _patterns_so_far(
    repo: ReportRepository, municipality_id: str, scope: reports_service.Coverage, now: datetime
) -> MunicipalityPatternReport | None:
    """The municipality's patterns report over the school year so far (municipality_period);
    None before any school's year has begun."""
    period = municipality_period(scope, now)
    if period is None:
        return None
    return await reports_service.municipality_patterns(repo, municipality_id, scope, *period)


async def municipality_patterns_so_far(
    session: AsyncSession, principal: Principal, calendars: CalendarCache, now: datetime
) -> MunicipalityPatternReport:
    """The municipality page's patterns as the CSV export gives them: the same document as the
    API's answer, each school and the municipality, for the period the page shows."""
    if principal.municipality is None:
        raise NotFound("no municipality")
    repo = ReportRepository(session)
    scope = await reports_service.municipality_scope(repo, principal.municipality, calendars)
    report = await _patterns_so_far(repo, principal.municipality, scope, now)
    if report is None:
        raise NotFound("no school year has begun")
    return report
