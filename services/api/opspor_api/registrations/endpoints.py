from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Response
from pydantic import SkipValidation
from sqlalchemy.ext.asyncio import AsyncSession

from opspor_api.audit.service import Auditor
from opspor_api.config.repository import ConfigRepository
from opspor_api.deps import AppClock, Calendars, Session, Settings, audited
from opspor_api.errors import PROBLEM_RESPONSES
from opspor_api.registrations import service
from opspor_api.registrations.repository import RegistrationRepository
from opspor_api.registrations.schemas import (
    BatchIn,
    IngestResult,
    RegistrationIn,
    RegistrationOut,
    RetractionIn,
)
from opspor_api.settings import ApiSettings
from opspor_api.validation import PupilPathId
from opspor_shared.access import allow
from opspor_shared.auth import Principal, Role
from opspor_shared.clock import Clock
from opspor_shared.reference import CalendarCache
from opspor_shared.retention import retention_window

router = APIRouter(prefix="/v1", tags=["registrations"], responses=PROBLEM_RESPONSES)

Writer = Annotated[Principal, allow(Role.SCHOOL_SYSTEM)]
Audit = Annotated[Auditor, audited("registration")]


ONE_ITEM_RESPONSES: dict[int | str, dict[str, object]] = {
    200: {"model": IngestResult, "description": "Already stored (duplicate)"}
}


# The bodies are checked in the route (see opspor_api.bodies), so schema and domain errors
# come back together; the OpenAPI document still shows the models.
RegistrationBody = Annotated[RegistrationIn, SkipValidation]
RetractionBody = Annotated[RetractionIn, SkipValidation]
BatchBody = Annotated[BatchIn, SkipValidation]


async def _ingest(
    raw: object,
    model: type[RegistrationIn | RetractionIn],
    batch: bool,
    principal: Principal,
    session: AsyncSession,
    calendars: CalendarCache,
    settings: ApiSettings,
    clock: Clock,
    audit: Auditor,
    response: Response,
) -> IngestResult:
    result, items = await service.ingest_body(
        RegistrationRepository(session),
        ConfigRepository(session),
        calendars,
        settings,
        retention_window(settings, clock()),
        principal,
        raw,
        model,
        batch=batch,
    )
    if not batch:
        response.status_code = 201 if result.inserted else 200
    await audit.record(((i.pupil_id, i.school_id) for i in items), response.status_code or 200)
    return result


@router.post(
    "/registrations",
    response_model=IngestResult,
    status_code=201,
    responses=ONE_ITEM_RESPONSES,
    summary="Record one absence registration (or a correction of an earlier one)",
)
async def post_registration(
    body: RegistrationBody,
    principal: Writer,
    session: Session,
    calendars: Calendars,
    settings: Settings,
    clock: AppClock,
    response: Response,
    audit: Audit,
) -> IngestResult:
    return await _ingest(
        body, RegistrationIn, False, principal, session, calendars, settings, clock, audit, response
    )


@router.post(
    "/registrations/batch",
    response_model=IngestResult,
    summary="Record up to 5,000 registrations; all or nothing",
)
async def post_batch(
    body: BatchBody,
    principal: Writer,
    session: Session,
    calendars: Calendars,
    settings: Settings,
    clock: AppClock,
    response: Response,
    audit: Audit,
) -> IngestResult:
    return await _ingest(
        body, RegistrationIn, True, principal, session, calendars, settings, clock, audit, response
    )


@router.post(
    "/registrations/retractions",
    response_model=IngestResult,
    status_code=201,
    responses=ONE_ITEM_RESPONSES,
    summary="Retract the registration for (pupil, date, slot) as of recorded_at",
)
async def post_retraction(
    body: RetractionBody,
    principal: Writer,
    session: Session,
    calendars: Calendars,
    settings: Settings,
    clock: AppClock,
    response: Response,
    audit: Audit,
) -> IngestResult:
    return await _ingest(
        body, RetractionIn, False, principal, session, calendars, settings, clock, audit, response
    )


@router.get(
    "/pupils/{pupil_id}/registrations",
    response_model=list[RegistrationOut],
    summary="A pupil's current registrations (after corrections and retractions)",
)
async def get_pupil_registrations(
    pupil_id: PupilPathId,
    principal: Annotated[Principal, allow(Role.SCHOOL_SYSTEM, Role.SCHOOL_STAFF)],
    session: Session,
    audit: Audit,
) -> list[RegistrationOut]:
    out = await service.pupil_registrations(RegistrationRepository(session), principal, pupil_id)
    await audit.record([(pupil_id, r.school_id) for r in out] or [(pupil_id, None)], 200)
    return out
