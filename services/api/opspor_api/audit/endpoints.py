from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from opspor_api.audit import service
from opspor_api.audit.repository import AuditRepository
from opspor_api.audit.schemas import AccessLogPage
from opspor_api.audit.service import Auditor
from opspor_api.deps import Session, audited
from opspor_api.errors import PROBLEM_RESPONSES, NotFound
from opspor_api.tenancy import pupil_visible
from opspor_api.validation import PupilPathId
from opspor_shared.access import allow
from opspor_shared.auth import Principal, Role

router = APIRouter(prefix="/v1", tags=["audit"], responses=PROBLEM_RESPONSES)


@router.get(
    "/pupils/{pupil_id}/access-log",
    response_model=AccessLogPage,
    summary="Who read or changed this pupil's data (newest first); municipality administrators",
)
async def pupil_access_log(
    pupil_id: PupilPathId,
    principal: Annotated[Principal, allow(Role.MUNICIPALITY_ADMIN)],
    session: Session,
    audit: Annotated[Auditor, audited("access-request")],
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> AccessLogPage:
    if not await pupil_visible(session, principal, pupil_id):
        raise NotFound(f"no pupil {pupil_id!r}")
    assert principal.municipality is not None  # required for this role
    page = await service.access_log(
        AuditRepository(session), pupil_id, principal.municipality, cursor, limit
    )
    await audit.record([(pupil_id, None)], 200)
    return page
