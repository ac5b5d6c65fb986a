from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from opspor_api.completeness import service
from opspor_api.completeness.repository import CompletenessRepository
from opspor_api.completeness.schemas import CompletenessReport, CompletionIn, CompletionOut
from opspor_api.deps import AppClock, Calendars, Session
from opspor_api.errors import PROBLEM_RESPONSES
from opspor_api.validation import ID_PATTERN
from opspor_shared.access import allow
from opspor_shared.auth import Principal, Role

router = APIRouter(prefix="/v1", tags=["register completeness"], responses=PROBLEM_RESPONSES)

PathId = Annotated[str, Path(min_length=1, max_length=64, pattern=ID_PATTERN)]


@router.post(
    "/schools/{school_id}/register-complete",
    response_model=CompletionOut,
    status_code=201,
    responses={200: {"model": CompletionOut, "description": "Declared before (kept as it was)"}},
    summary="Declare a school day's register complete, for the school or one class",
)
async def post_register_complete(
    school_id: PathId,
    body: CompletionIn,
    principal: Annotated[Principal, allow(Role.SCHOOL_SYSTEM)],
    session: Session,
    calendars: Calendars,
    clock: AppClock,
    response: Response,
) -> CompletionOut:
    out, created = await service.declare(
        CompletenessRepository(session), calendars, principal, school_id, body, clock()
    )
    response.status_code = 201 if created else 200
    return out


@router.get(
    "/schools/{school_id}/completeness",
    response_model=CompletenessReport,
    response_model_by_alias=True,
    summary="Per school day: was the register declared complete, and did anything arrive",
)
async def get_completeness(
    school_id: PathId,
    principal: Annotated[
        Principal, allow(Role.SCHOOL_SYSTEM, Role.SCHOOL_STAFF, Role.MUNICIPALITY_ADMIN)
    ],
    session: Session,
    calendars: Calendars,
    clock: AppClock,
    first: Annotated[
        date | None, Query(alias="from", description="First day; default: 27 days before to")
    ] = None,
    last: Annotated[date | None, Query(alias="to", description="Last day; default: today")] = None,
) -> CompletenessReport:
    return await service.report(
        CompletenessRepository(session), calendars, principal, school_id, first, last, clock()
    )
