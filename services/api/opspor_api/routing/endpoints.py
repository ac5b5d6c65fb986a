from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Path

from opspor_api.deps import Packs, Session
from opspor_api.errors import PROBLEM_RESPONSES
from opspor_api.routing import service
from opspor_api.routing.repository import RoutingRepository
from opspor_api.routing.schemas import RoutingOut
from opspor_api.tenancy import MunicipalityAdmin
from opspor_api.validation import ID_PATTERN
from opspor_shared.access import allow
from opspor_shared.auth import Principal, Role

router = APIRouter(prefix="/v1", tags=["routing"], responses=PROBLEM_RESPONSES)

PathId = Annotated[str, Path(min_length=1, max_length=64, pattern=ID_PATTERN)]
Admin = Annotated[Principal, allow(Role.MUNICIPALITY_ADMIN)]
Document = Annotated[
    dict[str, Any],
    Body(
        description='A routing document: {"levels": {"<level>" or "*": [{"to": "school" | '
        '"ppr" | "unit"} | {"to": "mailbox", "address": ...} | {"to": "webhook", "id": ...}]}}'
    ),
]


@router.put(
    "/municipalities/{municipality_id}/routing",
    response_model=RoutingOut,
    summary="Set who gets each level's notices (levels not named keep the default table)",
)
async def put_municipality_routing(
    municipality_id: PathId,
    body: Document,
    principal: MunicipalityAdmin,
    session: Session,
    packs: Packs,
) -> RoutingOut:
    return await service.put_municipality_routing(
        RoutingRepository(session), packs, principal, municipality_id, body
    )


@router.get("/municipalities/{municipality_id}/routing", response_model=RoutingOut)
async def get_municipality_routing(
    municipality_id: PathId, principal: MunicipalityAdmin, session: Session, packs: Packs
) -> RoutingOut:
    return await service.get_municipality_routing(
        RoutingRepository(session), packs, principal, municipality_id
    )


@router.put(
    "/schools/{school_id}/routing",
    response_model=RoutingOut,
    summary="A school's routing overrides, level by level",
)
async def put_school_routing(
    school_id: PathId, body: Document, principal: Admin, session: Session, packs: Packs
) -> RoutingOut:
    return await service.put_school_routing(
        RoutingRepository(session), packs, principal, school_id, body
    )


@router.get("/schools/{school_id}/routing", response_model=RoutingOut)
async def get_school_routing(
    school_id: PathId, principal: Admin, session: Session, packs: Packs
) -> RoutingOut:
    return await service.get_school_routing(RoutingRepository(session), packs, principal, school_id)


@router.delete("/schools/{school_id}/routing", status_code=204)
async def delete_school_routing(
    school_id: PathId, principal: Admin, session: Session, packs: Packs
) -> None:
    await service.delete_school_routing(RoutingRepository(session), packs, principal, school_id)
