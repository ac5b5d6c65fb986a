"""Report routes: school reports for the school's staff and the municipality's administrator,
municipality roll-ups for the administrator. Pupil-level reports (open concerns, close to a
limit) are for school staff only and write audit rows. Each answers CSV with
`Accept: text/csv`."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response

from opspor_api.audit.service import Auditor
from opspor_api.deps import AppClock, Calendars, Packs, Session, audited
from opspor_api.errors import PROBLEM_RESPONSES
from opspor_api.reports import service
from opspor_api.reports.repository import ReportRepository
from opspor_api.reports.schemas import (
    AbsenceReport,
    BaerumReport,
    CaseReport,
    CloseToLimitReport,
    CsvReport,
    MunicipalityPatternReport,
    OpenConcernCounts,
    OpenConcernsReport,
    PatternReport,
)
from opspor_api.tenancy import MunicipalityAdmin
from opspor_api.validation import ID_PATTERN
from opspor_shared.access import allow
from opspor_shared.auth import Principal, Role

router = APIRouter(prefix="/v1", tags=["reports"], responses=PROBLEM_RESPONSES)

PathId = Annotated[str, Path(min_length=1, max_length=64, pattern=ID_PATTERN)]
From = Annotated[date, Query(alias="from", description="First day of the period")]
To = Annotated[date, Query(alias="to", description="Last day of the period (inclusive)")]
On = Annotated[
    date | None,
    Query(alias="date", description="Report date; default today in the school's time zone"),
]
# Aggregates: the school's staff, and the municipality's administrator for any of its schools.
AggregateReader = Annotated[Principal, allow(Role.SCHOOL_STAFF, Role.MUNICIPALITY_ADMIN)]
# Named pupils: the school's own staff only.
PupilReader = Annotated[Principal, allow(Role.SCHOOL_STAFF)]
Audit = Annotated[Auditor, audited("follow-up")]
CSV = "text/csv"
CSV_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {"content": {CSV: {}}, "description": "The report; as CSV with `Accept: text/csv`"}
}


def csv_response(report: CsvReport, name: str) -> Response:
    """The report as a CSV download `{name}.csv` (the API's `Accept: text/csv` answer, and the
    web page's export links)."""
    return Response(
        report.to_csv(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}.csv"'},
    )


def _respond(request: Request, report: CsvReport, name: str) -> CsvReport | Response:
    if CSV not in request.headers.get("accept", ""):
        return report
    return csv_response(report, name)


@router.get(
    "/schools/{school_id}/reports/absence",
    response_model=AbsenceReport,
    responses=CSV_RESPONSE,
    summary="Absence share per category per class, grade and the school over a period",
)
async def school_absence(
    request: Request,
    school_id: PathId,
    first: From,
    last: To,
    principal: AggregateReader,
    session: Session,
    calendars: Calendars,
) -> Any:
    repo = ReportRepository(session)
    service.check_period(first, last)
    scope = await service.school_scope(repo, principal, school_id, calendars)
    report = await service.absence(repo, scope, first, last, municipal=False)
    return _respond(request, report, f"absence-{school_id}")


@router.get(
    "/municipalities/{municipality_id}/reports/absence",
    response_model=AbsenceReport,
    responses=CSV_RESPONSE,
    summary="Absence share per category per school and for the municipality over a period",
)
async def municipality_absence(
    request: Request,
    municipality_id: PathId,
    first: From,
    last: To,
    principal: MunicipalityAdmin,
    session: Session,
    calendars: Calendars,
) -> Any:
    repo = ReportRepository(session)
    service.check_period(first, last)
    scope = await service.municipality_scope(repo, municipality_id, calendars)
    report = await service.absence(repo, scope, first, last, municipal=True)
    return _respond(request, report, f"absence-{municipality_id}")


@router.get(
    "/schools/{school_id}/reports/patterns",
    response_model=PatternReport,
    responses=CSV_RESPONSE,
    summary="Absence share per weekday and per month over a period",
)
async def school_patterns(
    request: Request,
    school_id: PathId,
    first: From,
    last: To,
    principal: AggregateReader,
    session: Session,
    calendars: Calendars,
) -> Any:
    repo = ReportRepository(session)
    service.check_period(first, last)
    scope = await service.school_scope(repo, principal, school_id, calendars)
    report = await service.patterns(repo, scope, first, last)
    return _respond(request, report, f"patterns-{school_id}")


@router.get(
    "/municipalities/{municipality_id}/reports/patterns",
    response_model=MunicipalityPatternReport,
    responses=CSV_RESPONSE,
    summary="Absence share per weekday and per month per school and for the municipality",
)
async def municipality_patterns(
    request: Request,
    municipality_id: PathId,
    first: From,
    last: To,
    principal: MunicipalityAdmin,
    session: Session,
    calendars: Calendars,
) -> Any:
    repo = ReportRepository(session)
    service.check_period(first, last)
    scope = await service.municipality_scope(repo, municipality_id, calendars)
    report = await service.municipality_patterns(repo, municipality_id, scope, first, last)
    return _respond(request, report, f"patterns-{municipality_id}")


@router.get(
    "/schools/{school_id}/reports/open-concerns",
    response_model=OpenConcernsReport,
    responses=CSV_RESPONSE,
    summary="Pupils with active concerns, by level (CSV: one row per pupil and level)",
)
async def school_open_concerns(
    request: Request,
    school_id: PathId,
    principal: PupilReader,
    session: Session,
    calendars: Calendars,
    audit: Audit,
) -> Any:
    repo = ReportRepository(session)
    scope = await service.school_scope(repo, principal, school_id, calendars)
    report = await service.open_concerns(repo, principal, scope)
    await audit.record([(p.pupil_id, school_id) for p in report.pupils], 200)
    return _respond(request, report, f"open-concerns-{school_id}")


@router.get(
    "/municipalities/{municipality_id}/reports/open-concerns",
    response_model=OpenConcernCounts,
    responses=CSV_RESPONSE,
    summary="Pupils with active concerns per school and level, and for the municipality",
)
async def municipality_open_concerns(
    request: Request,
    municipality_id: PathId,
    principal: MunicipalityAdmin,
    session: Session,
    calendars: Calendars,
) -> Any:
    repo = ReportRepository(session)
    scope = await service.municipality_scope(repo, municipality_id, calendars)
    report = await service.open_concern_counts(repo, principal, municipality_id, scope)
    return _respond(request, report, f"open-concerns-{municipality_id}")


@router.get(
    "/schools/{school_id}/reports/close-to-limit",
    response_model=CloseToLimitReport,
    responses=CSV_RESPONSE,
    summary="Pupils one or two absence days from crossing a rule of the school's packs",
)
async def school_close_to_limit(
    request: Request,
    school_id: PathId,
    principal: PupilReader,
    session: Session,
    calendars: Calendars,
    packs: Packs,
    clock: AppClock,
    audit: Audit,
    on: On = None,
) -> Any:
    repo = ReportRepository(session)
    scope = await service.school_scope(repo, principal, school_id, calendars)
    report = await service.close_to_limit(repo, scope, on, clock(), calendars, packs)
    await audit.record([(r.pupil_id, school_id) for r in report.rows], 200)
    return _respond(request, report, f"close-to-limit-{school_id}")


@router.get(
    "/schools/{school_id}/reports/baerum",
    response_model=BaerumReport,
    responses=CSV_RESPONSE,
    summary="The Bærum table per school level: pupils and completely absent pupils",
)
async def school_baerum(
    request: Request,
    school_id: PathId,
    principal: AggregateReader,
    session: Session,
    calendars: Calendars,
    clock: AppClock,
    on: On = None,
) -> Any:
    repo = ReportRepository(session)
    scope = await service.school_scope(repo, principal, school_id, calendars)
    report = await service.baerum(repo, scope, on, clock())
    return _respond(request, report, f"baerum-{school_id}")


@router.get(
    "/municipalities/{municipality_id}/reports/baerum",
    response_model=BaerumReport,
    responses=CSV_RESPONSE,
    summary="The Bærum table per school and school level, and rolled up to the municipality",
)
async def municipality_baerum(
    request: Request,
    municipality_id: PathId,
    principal: MunicipalityAdmin,
    session: Session,
    calendars: Calendars,
    clock: AppClock,
    on: On = None,
) -> Any:
    repo = ReportRepository(session)
    scope = await service.municipality_scope(repo, municipality_id, calendars)
    report = service.with_municipal_rows(await service.baerum(repo, scope, on, clock()))
    return _respond(request, report, f"baerum-{municipality_id}")


@router.get(
    "/schools/{school_id}/reports/cases",
    response_model=CaseReport,
    responses=CSV_RESPONSE,
    summary="Open cases per phase, per coordinator and per overdue reason",
)
async def school_cases(
    request: Request,
    school_id: PathId,
    principal: AggregateReader,
    session: Session,
    calendars: Calendars,
) -> Any:
    repo = ReportRepository(session)
    scope = await service.school_scope(repo, principal, school_id, calendars)
    report = await service.case_counts(repo, scope, roll_up=False)
    return _respond(request, report, f"cases-{school_id}")


@router.get(
    "/municipalities/{municipality_id}/reports/cases",
    response_model=CaseReport,
    responses=CSV_RESPONSE,
    summary="Open cases per school and phase, coordinator and overdue reason, and rolled up",
)
async def municipality_cases(
    request: Request,
    municipality_id: PathId,
    principal: MunicipalityAdmin,
    session: Session,
    calendars: Calendars,
) -> Any:
    repo = ReportRepository(session)
    scope = await service.municipality_scope(repo, municipality_id, calendars)
    report = await service.case_counts(repo, scope, roll_up=True)
    return _respond(request, report, f"cases-{municipality_id}")
