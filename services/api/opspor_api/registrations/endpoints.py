from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response
from sqlalchemy.ext.asyncio import AsyncSession

from opspor_api.config.repository import ConfigRepository
from opspor_api.deps import AppClock, Calendars, Session, Settings
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
from opspor_api.validation import ID_PATTERN
from opspor_shared.clock import Clock
from opspor_shared.reference import CalendarCache
from opspor_shared.retention import retention_window

router = APIRouter(prefix="/v1", tags=["registrations"], responses=PROBLEM_RESPONSES)


ONE_ITEM_RESPONSES: dict[int | str, dict[str, object]] = {
    200: {"model": IngestResult, "description": "Already stored (duplicate)"}
}


async def _ingest_one(
    item: RegistrationIn | RetractionIn,
    session: AsyncSession,
    calendars: CalendarCache,
    settings: ApiSettings,
    clock: Clock,
    response: Response,
) -> IngestResult:
    result = await service.ingest(
        RegistrationRepository(session),
        ConfigRepository(session),
        calendars,
        settings,
        retention_window(settings, clock()),
        [item],
        [()],
    )
    response.status_code = 201 if result.inserted else 200
    return result


@router.post(
    "/registrations",
    response_model=IngestResult,
    status_code=201,
    responses=ONE_ITEM_RESPONSES,
    summary="Record one absence registration (or a correction of an earlier one)",
)
async def post_registration(
    body: RegistrationIn,
    session: Session,
    calendars: Calendars,
    settings: Settings,
    clock: AppClock,
    response: Response,
) -> IngestResult:
    return await _ingest_one(body, session, calendars, settings, clock, response)


@router.post(
    "/registrations/batch",
    response_model=IngestResult,
    summary="Record up to 5,000 registrations; all or nothing",
)
async def post_batch(
    body: BatchIn, session: Session, calendars: Calendars, settings: Settings, clock: AppClock
) -> IngestResult:
    return await service.ingest(
        RegistrationRepository(session),
        ConfigRepository(session),
        calendars,
        settings,
        retention_window(settings, clock()),
        body.items,
        [("items", i) for i in range(len(body.items))],
    )


@router.post(
    "/registrations/retractions",
    response_model=IngestResult,
    status_code=201,
    responses=ONE_ITEM_RESPONSES,
    summary="Retract the registration for (pupil, date, slot) as of recorded_at",
)
async def post_retraction(
    body: RetractionIn,
    session: Session,
    calendars: Calendars,
    settings: Settings,
    clock: AppClock,
    response: Response,
) -> IngestResult:
    return await _ingest_one(body, session, calendars, settings, clock, response)


@router.get(
    "/pupils/{pupil_id}/registrations",
    response_model=list[RegistrationOut],
    summary="A pupil's current registrations (after corrections and retractions)",
)
async def get_pupil_registrations(
    pupil_id: Annotated[str, Path(min_length=1, max_length=64, pattern=ID_PATTERN)],
    session: Session,
) -> list[RegistrationOut]:
    rows = await RegistrationRepository(session).current_for_pupil(pupil_id)
    return [
        RegistrationOut.model_validate(r, from_attributes=True) for r in rows if not r.retracted
    ]
