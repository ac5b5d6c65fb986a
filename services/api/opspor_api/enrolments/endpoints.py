from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from opspor_api.deps import Session, Settings
from opspor_api.enrolments import service
from opspor_api.enrolments.repository import EnrolmentRepository
from opspor_api.enrolments.schemas import EnrolmentIn, EnrolmentOut
from opspor_api.errors import PROBLEM_RESPONSES
from opspor_api.validation import ID_PATTERN

router = APIRouter(prefix="/v1", tags=["enrolments"], responses=PROBLEM_RESPONSES)

PathId = Annotated[str, Path(min_length=1, max_length=64, pattern=ID_PATTERN)]


@router.put(
    "/schools/{school_id}/enrolments/{pupil_id}",
    response_model=EnrolmentOut,
    summary="Report a pupil's enrolment at the school (the newest report wins)",
)
async def put_enrolment(
    school_id: PathId, pupil_id: PathId, body: EnrolmentIn, session: Session, settings: Settings
) -> EnrolmentOut:
    return await service.put(EnrolmentRepository(session), settings, school_id, pupil_id, body)


@router.get("/pupils/{pupil_id}/enrolments", response_model=list[EnrolmentOut])
async def pupil_enrolments(pupil_id: PathId, session: Session) -> list[EnrolmentOut]:
    return await service.of_pupil(EnrolmentRepository(session), pupil_id)
