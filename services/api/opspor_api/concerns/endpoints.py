from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query

from opspor_api.audit.service import Auditor
from opspor_api.cases.repository import CaseRepository
from opspor_api.concerns import service
from opspor_api.concerns.repository import ConcernRepository
from opspor_api.concerns.schemas import AcknowledgementIn, ConcernOut, ConcernPage
from opspor_api.deps import Session, Settings, audited
from opspor_api.errors import PROBLEM_RESPONSES
from opspor_api.validation import ID_PATTERN, PupilPathId
from opspor_shared.access import allow
from opspor_shared.auth import Principal, Role

router = APIRouter(prefix="/v1", tags=["concerns"], responses=PROBLEM_RESPONSES)

PathId = Annotated[str, Path(min_length=1, max_length=64, pattern=ID_PATTERN)]
Status = Literal["active", "withdrawn"]
Level = Annotated[str, Query(min_length=1, max_length=64, pattern=ID_PATTERN)]
# School staff see their schools' concerns; PPR the PPR-level concerns of its municipality.
Reader = Annotated[Principal, allow(Role.SCHOOL_STAFF, Role.PPR)]
Audit = Annotated[Auditor, audited("follow-up")]


@router.get(
    "/pupils/{pupil_id}/concerns",
    response_model=list[ConcernOut],
    summary="A pupil's concerns with their explanations",
)
async def pupil_concerns(
    pupil_id: PupilPathId,
    principal: Reader,
    session: Session,
    audit: Audit,
    status: Status | None = None,
) -> list[ConcernOut]:
    rows = await service.pupil_concerns(ConcernRepository(session), principal, pupil_id, status)
    await audit.record([(pupil_id, r.school_id) for r in rows] or [(pupil_id, None)], 200)
    return rows


@router.get(
    "/schools/{school_id}/concerns",
    response_model=ConcernPage,
    summary="A school's concerns, newest crossing first, cursor-paginated",
)
async def school_concerns(
    school_id: PathId,
    principal: Reader,
    session: Session,
    audit: Audit,
    status: Status | None = None,
    level: Level | None = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> ConcernPage:
    page = await service.school_page(
        ConcernRepository(session), principal, school_id, status, level, cursor, limit
    )
    await audit.record([(c.pupil_id, c.school_id) for c in page.items], 200)
    return page


@router.get("/concerns/{concern_id}", response_model=ConcernOut, summary="One concern")
async def get_concern(
    concern_id: uuid.UUID, principal: Reader, session: Session, audit: Audit
) -> ConcernOut:
    concern = await service.get_concern(ConcernRepository(session), principal, concern_id)
    await audit.record([(concern.pupil_id, concern.school_id)], 200)
    return concern


@router.put(
    "/concerns/{concern_id}/acknowledgement",
    response_model=ConcernOut,
    summary="Acknowledge a concern: seen, or handled in one of the pupil's cases",
)
async def acknowledge(
    concern_id: uuid.UUID,
    body: AcknowledgementIn,
    principal: Reader,
    session: Session,
    settings: Settings,
    audit: Audit,
) -> ConcernOut:
    concern = await service.acknowledge(
        ConcernRepository(session),
        CaseRepository(session, settings.cases_topic),
        principal,
        concern_id,
        body,
    )
    await audit.record([(concern.pupil_id, concern.school_id)], 200)
    return concern
