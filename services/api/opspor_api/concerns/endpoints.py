from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query

from opspor_api.concerns import service
from opspor_api.concerns.repository import ConcernRepository
from opspor_api.concerns.schemas import ConcernOut, ConcernPage
from opspor_api.deps import Session
from opspor_api.errors import PROBLEM_RESPONSES
from opspor_api.validation import ID_PATTERN

router = APIRouter(prefix="/v1", tags=["concerns"], responses=PROBLEM_RESPONSES)

PathId = Annotated[str, Path(min_length=1, max_length=64, pattern=ID_PATTERN)]
Status = Literal["active", "withdrawn"]
Level = Annotated[str, Query(min_length=1, max_length=64, pattern=ID_PATTERN)]


@router.get(
    "/pupils/{pupil_id}/concerns",
    response_model=list[ConcernOut],
    summary="A pupil's concerns with their explanations",
)
async def pupil_concerns(
    pupil_id: PathId, session: Session, status: Status | None = None
) -> list[ConcernOut]:
    rows = await ConcernRepository(session).for_pupil(pupil_id, status)
    return [service.concern_out(r) for r in rows]


@router.get(
    "/schools/{school_id}/concerns",
    response_model=ConcernPage,
    summary="A school's concerns, newest crossing first, cursor-paginated",
)
async def school_concerns(
    school_id: PathId,
    session: Session,
    status: Status | None = None,
    level: Level | None = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> ConcernPage:
    return await service.school_page(
        ConcernRepository(session), school_id, status, level, cursor, limit
    )


@router.get("/concerns/{concern_id}", response_model=ConcernOut)
async def get_concern(concern_id: uuid.UUID, session: Session) -> ConcernOut:
    return await service.get_concern(ConcernRepository(session), concern_id)
