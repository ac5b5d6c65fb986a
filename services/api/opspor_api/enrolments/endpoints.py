from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from pydantic import SkipValidation

from opspor_api.audit.service import Auditor
from opspor_api.deps import Session, Settings, audited
from opspor_api.enrolments import service
from opspor_api.enrolments.repository import EnrolmentRepository
from opspor_api.enrolments.schemas import EnrolmentIn, EnrolmentOut
from opspor_api.errors import PROBLEM_RESPONSES
from opspor_api.validation import (
    ID_PATTERN,
    IdPathUnchecked,
    PupilPathId,
    PupilPathUnchecked,
)
from opspor_shared.access import allow
from opspor_shared.auth import Principal, Role

router = APIRouter(prefix="/v1", tags=["enrolments"], responses=PROBLEM_RESPONSES)

PathId = Annotated[str, Path(min_length=1, max_length=64, pattern=ID_PATTERN)]


@router.put(
    "/schools/{school_id}/enrolments/{pupil_id}",
    response_model=EnrolmentOut,
    summary="Report a pupil's enrolment at the school (the newest report wins)",
)
async def put_enrolment(
    school_id: IdPathUnchecked,
    pupil_id: PupilPathUnchecked,
    body: Annotated[EnrolmentIn, SkipValidation],
    principal: Annotated[Principal, allow(Role.SCHOOL_SYSTEM)],
    session: Session,
    settings: Settings,
    audit: Annotated[Auditor, audited("registration")],
) -> EnrolmentOut:
    out = await service.put(
        EnrolmentRepository(session), settings, principal, school_id, pupil_id, body
    )
    await audit.record([(pupil_id, school_id)], 200)
    return out


@router.get("/pupils/{pupil_id}/enrolments", response_model=list[EnrolmentOut])
async def pupil_enrolments(
    pupil_id: PupilPathId,
    principal: Annotated[Principal, allow(Role.SCHOOL_SYSTEM, Role.SCHOOL_STAFF)],
    session: Session,
    audit: Annotated[Auditor, audited("follow-up")],
) -> list[EnrolmentOut]:
    out = await service.of_pupil(EnrolmentRepository(session), principal, pupil_id)
    await audit.record([(pupil_id, e.school_id) for e in out] or [(pupil_id, None)], 200)
    return out
