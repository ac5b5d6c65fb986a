from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Path, Request, Response
from pydantic import SkipValidation

from opspor_api.audit.service import Auditor
from opspor_api.deps import Calendars, Packs, Session, audited
from opspor_api.errors import PROBLEM_RESPONSES
from opspor_api.packs import dryrun, service
from opspor_api.packs.repository import PackRepository
from opspor_api.packs.schemas import DryRunIn, DryRunOut, RulePackOut, RulePackSummary
from opspor_api.tenancy import MunicipalityAdmin
from opspor_api.validation import ID_PATTERN
from opspor_shared.access import allow
from opspor_shared.auth import Role

router = APIRouter(prefix="/v1", tags=["rule packs"], responses=PROBLEM_RESPONSES)

PathId = Annotated[str, Path(min_length=1, max_length=64, pattern=ID_PATTERN)]
PackId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9._-]*$")]

_PACK_BODY = {
    "requestBody": {
        "required": True,
        "description": "A rule pack document (the shipped packs' TOML structure), as JSON or "
        "TOML. Stored versions cannot change; add a version with a later effective_from.",
        "content": {
            "application/json": {"schema": {"type": "object"}},
            "application/toml": {"schema": {"type": "string", "maxLength": 4 * 1024 * 1024}},
        },
    }
}


# Reference data, no pupil data: for whoever configures or reads concerns.
READERS = [allow(Role.MUNICIPALITY_ADMIN, Role.SCHOOL_STAFF, Role.PPR)]


@router.get(
    "/rule-packs",
    response_model=list[RulePackSummary],
    summary="The shipped packs",
    dependencies=READERS,
)
async def list_shipped() -> list[RulePackSummary]:
    return [service.summary(p) for p in service.shipped()]


@router.get(
    "/rule-packs/{pack_id}",
    response_model=RulePackOut,
    summary="One shipped pack",
    dependencies=READERS,
)
async def get_shipped(pack_id: PackId, session: Session) -> RulePackOut:
    return await service.get(PackRepository(session), None, pack_id)


@router.get(
    "/municipalities/{municipality_id}/rule-packs",
    response_model=list[RulePackSummary],
    summary="Packs a municipality can use: shipped ones and its own",
)
async def list_usable(
    municipality_id: PathId, _admin: MunicipalityAdmin, session: Session
) -> list[RulePackSummary]:
    packs = await service.usable(PackRepository(session), municipality_id)
    return [service.summary(p) for p in packs]


@router.get("/municipalities/{municipality_id}/rule-packs/{pack_id}", response_model=RulePackOut)
async def get_pack(
    municipality_id: PathId, pack_id: PackId, _admin: MunicipalityAdmin, session: Session
) -> RulePackOut:
    return await service.get(PackRepository(session), municipality_id, pack_id)


@router.put(
    "/municipalities/{municipality_id}/rule-packs/{pack_id}",
    response_model=RulePackOut,
    summary="Store a pack, or add versions to a stored one",
    openapi_extra=_PACK_BODY,
)
async def put_pack(
    municipality_id: PathId,
    pack_id: PackId,
    _admin: MunicipalityAdmin,
    request: Request,
    session: Session,
    response: Response,
) -> RulePackOut:
    document = service.read_document(
        await request.body(), request.headers.get("content-type", "application/json")
    )
    out, created = await service.put(PackRepository(session), municipality_id, pack_id, document)
    response.status_code = 201 if created else 200
    return out


@router.post(
    "/municipalities/{municipality_id}/rule-packs/dry-run",
    response_model=DryRunOut,
    summary="Which concerns a candidate pack would add or remove; changes nothing",
)
async def dry_run(
    municipality_id: PathId,
    # Checked in the service, so that schema and domain errors come back together.
    body: Annotated[DryRunIn, SkipValidation],
    _admin: MunicipalityAdmin,
    session: Session,
    calendars: Calendars,
    packs: Packs,
    audit: Annotated[Auditor, audited("support")],
) -> DryRunOut:
    out = await dryrun.dry_run(
        PackRepository(session), municipality_id, body, calendars, packs, datetime.now(UTC)
    )
    # The answer names pupils: each one listed is recorded as read.
    listed = {(c.pupil_id, c.school_id) for c in out.concerns_added + out.concerns_removed}
    await audit.record(sorted(listed), 200)
    return out
