from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from opspor_api.deadletters import service
from opspor_api.deadletters.repository import RedriveRepository
from opspor_api.deadletters.schemas import DeadLetterPage, RedriveIn, RedriveOut, TopicSummary
from opspor_api.deps import Session, Settings
from opspor_api.errors import PROBLEM_RESPONSES
from opspor_shared.access import allow
from opspor_shared.auth import Principal, Role

router = APIRouter(prefix="/v1/operations", tags=["operations"], responses=PROBLEM_RESPONSES)

Operations = Annotated[Principal, allow(Role.OPERATIONS)]
Topic = Annotated[str, Path(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._-]+$")]
# Dead letters are shown by ids only (no payload), so reading them is not a read of pupil
# data for the access log; a re-drive is recorded with who and when (dead_letter_redrives).


@router.get(
    "/dead-letters",
    response_model=list[TopicSummary],
    summary="Dead-letter topics: messages, and how many wait to be re-driven",
)
async def summaries(
    principal: Operations, session: Session, settings: Settings
) -> list[TopicSummary]:
    return await service.summaries(settings, RedriveRepository(session))


@router.get(
    "/dead-letters/{topic}",
    response_model=DeadLetterPage,
    summary="The dead letters of a topic: why, from where, when, ids (never the payload)",
)
async def page(
    topic: Topic,
    principal: Operations,
    session: Session,
    settings: Settings,
    after: Annotated[int | None, Query(ge=0)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> DeadLetterPage:
    return await service.page(settings, RedriveRepository(session), topic, after, limit)


@router.post(
    "/dead-letters/{topic}/redrive",
    response_model=RedriveOut,
    summary="Send dead letters back to their topic after a fix: some offsets, or all; each once",
)
async def redrive(
    topic: Topic, body: RedriveIn, principal: Operations, session: Session, settings: Settings
) -> RedriveOut:
    return await service.redrive(settings, RedriveRepository(session), principal, topic, body)
