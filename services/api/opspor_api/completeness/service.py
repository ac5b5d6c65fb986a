"""Register completeness (DOMAIN.md s.10): an absence system sees only absences, so a school
that did not take the register looks like a school where every pupil came.

Decision: a missing register changes nothing in detection. The worker evaluates what was
registered, exactly as before; the completeness report shows the missing days and the operator
is warned of a silent school. Holding rules back at the last complete day would delay real
concerns at every school that declares nothing (most school systems do not yet), and a late
register still arrives as registrations that the worker evaluates like any correction.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from prometheus_client import Counter, Gauge

from opspor_api.calendars import why_not_school_day
from opspor_api.completeness.repository import CompletenessRepository
from opspor_api.completeness.schemas import (
    CompletenessDay,
    CompletenessReport,
    CompletionIn,
    CompletionOut,
    DayStatus,
)
from opspor_api.errors import FieldError, InvalidInput, NotFound, field_error
from opspor_api.tenancy import school_visible
from opspor_shared.auth import Principal
from opspor_shared.reference import CalendarCache, ReferenceRepository, SchoolRef

DECLARATIONS = Counter(
    "opspor_register_declarations_total",
    "Register-complete declarations received, by whether they were new",
    ["result"],
)
SILENT_DAYS = Gauge(
    "opspor_school_silent_school_days",
    "Finished school days in a row, counted back from the last one, on which a school sent "
    "neither a registration nor a register-complete declaration (at most 10)",
    ["municipality", "school"],
)
SILENT_LOOKBACK_DAYS = 10
MAX_REPORT_DAYS = 366


def _today(ref: SchoolRef, now: datetime) -> date:
    return now.astimezone(ZoneInfo(ref.timezone)).date()


async def _school(repo: CompletenessRepository, principal: Principal, school_id: str) -> SchoolRef:
    # Another tenant's school answers exactly like one that does not exist.
    ref = await ReferenceRepository(repo.session).school(school_id)
    if ref is None or not await school_visible(repo.session, principal, school_id):
        raise NotFound(f"no school {school_id!r}")
    return ref


async def declare(
    repo: CompletenessRepository,
    calendars: CalendarCache,
    principal: Principal,
    school_id: str,
    body: CompletionIn,
    now: datetime,
) -> tuple[CompletionOut, bool]:
    ref = await _school(repo, principal, school_id)
    calendar = (
        await ReferenceRepository(repo.session).calendars({school_id: ref.country}, calendars)
    )[school_id]
    errors: list[FieldError] = []
    if not calendar.is_school_day(body.date):
        reason = why_not_school_day(calendar, body.date)
        errors.append(
            field_error(("date",), f"{body.date} is not a school day at this school ({reason})")
        )
    elif body.date > _today(ref, now):
        errors.append(field_error(("date",), f"{body.date} is in the future at this school"))
    if errors:
        raise InvalidInput(f"{len(errors)} invalid field(s); nothing was stored", errors)
    class_id = body.class_id or ""
    created = await repo.insert(school_id, body.date, class_id, body.recorded_at or now)
    DECLARATIONS.labels("stored" if created else "duplicate").inc()
    row = await repo.one(school_id, body.date, class_id)
    assert row is not None  # inserted now or before, and never deleted
    out = CompletionOut(
        school_id=row.school_id,
        date=row.date,
        class_id=row.class_id or None,
        recorded_at=row.recorded_at,
        received_at=row.received_at,
    )
    return out, created


async def report(
    repo: CompletenessRepository,
    calendars: CalendarCache,
    principal: Principal,
    school_id: str,
    first: date | None,
    last: date | None,
    now: datetime,
) -> CompletenessReport:
    ref = await _school(repo, principal, school_id)
    today = _today(ref, now)
    last = last or today
    # date.min + 27 days: no default range reaches before the first representable day.
    first = first or max(last, date.min + timedelta(days=27)) - timedelta(days=27)
    errors: list[FieldError] = []
    if first > last:
        errors.append(field_error(("query", "from"), f"{first} is after to ({last})"))
    elif (last - first).days >= MAX_REPORT_DAYS:
        errors.append(
            field_error(("query", "to"), f"the range may span at most {MAX_REPORT_DAYS} days")
        )
    if errors:
        raise InvalidInput(f"{len(errors)} invalid parameter(s)", errors)
    calendar = (
        await ReferenceRepository(repo.session).calendars({school_id: ref.country}, calendars)
    )[school_id]
    # Days not begun yet cannot be missing.
    days = calendar.school_days(first, min(last, today))
    declared = await repo.declarations([school_id], first, last)
    counts = await repo.registration_counts([school_id], first, last)
    out: list[CompletenessDay] = []
    for d in days:
        classes = declared.get((school_id, d), [])
        in_force, held = counts.get((school_id, d), (0, 0))
        status: DayStatus = "complete" if "" in classes else "partial" if classes else "missing"
        out.append(
            CompletenessDay(
                date=d,
                status=status,
                classes_complete=[c for c in classes if c],
                registrations=in_force,
                silent=not classes and held == 0,
            )
        )
    return CompletenessReport.model_validate(
        {
            "school_id": school_id,
            "from": first,
            "to": last,
            "school_days": len(out),
            "complete": sum(d.status == "complete" for d in out),
            "partial": sum(d.status == "partial" for d in out),
            "missing": sum(d.status == "missing" for d in out),
            "days": out,
        }
    )


async def silent_school_days(
    repo: CompletenessRepository, calendars: CalendarCache, now: datetime
) -> dict[str, tuple[str, int]]:
    """school -> (municipality, finished school days in a row without anything from it),
    counting back from the last finished school day (today is still going on)."""
    reference = ReferenceRepository(repo.session)
    schools = await reference.schools()
    if not schools:
        return {}
    cals = await reference.calendars({s: r.country for s, r in schools.items()}, calendars)
    finished = {
        sid: list(
            cals[sid].school_days(None, _today(ref, now) - timedelta(days=1))[
                -SILENT_LOOKBACK_DAYS:
            ]
        )
        for sid, ref in schools.items()
    }
    starts = [days[0] for days in finished.values() if days]
    ends = [days[-1] for days in finished.values() if days]
    declared: dict[tuple[str, date], list[str]] = {}
    counts: dict[tuple[str, date], tuple[int, int]] = {}
    if starts:
        ids = sorted(schools)
        declared = await repo.declarations(ids, min(starts), max(ends))
        counts = await repo.registration_counts(ids, min(starts), max(ends))
    out: dict[str, tuple[str, int]] = {}
    for sid, days in finished.items():
        silent = 0
        for d in reversed(days):
            if (sid, d) in declared or counts.get((sid, d), (0, 0))[1] > 0:
                break
            silent += 1
        out[sid] = (schools[sid].municipality_id, silent)
    return out


def publish_silent(found: dict[str, tuple[str, int]]) -> None:
    # Cleared and refilled without an await in between: a scrape never sees half a picture,
    # and a school that was deleted loses its series.
    SILENT_DAYS.clear()
    for school, (municipality, days) in found.items():
        SILENT_DAYS.labels(municipality, school).set(days)
