from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response
from pydantic import SkipValidation

from opspor_api.config import service
from opspor_api.config.repository import ConfigRepository
from opspor_api.config.schemas import (
    MunicipalityIn,
    MunicipalityOut,
    SchoolIn,
    SchoolOut,
    SchoolYearIn,
    SchoolYearOut,
)
from opspor_api.deps import Session
from opspor_api.errors import PROBLEM_RESPONSES
from opspor_api.validation import ID_PATTERN, IdPathUnchecked, YearLabelPathUnchecked
from opspor_shared.access import allow
from opspor_shared.auth import Principal, Role

router = APIRouter(prefix="/v1", tags=["configuration"], responses=PROBLEM_RESPONSES)

PathId = Annotated[str, Path(min_length=1, max_length=64, pattern=ID_PATTERN)]
YearLabel = Annotated[
    str, Path(min_length=9, max_length=9, pattern=r"^\d{4}-\d{4}$", examples=["2026-2027"])
]
# Configuration of the administrator's own municipality and its schools; anything else is 404.
Admin = Annotated[Principal, allow(Role.MUNICIPALITY_ADMIN)]


def _status(response: Response, created: bool) -> None:
    response.status_code = 201 if created else 200


@router.put("/municipalities/{municipality_id}", response_model=MunicipalityOut)
async def put_municipality(
    municipality_id: IdPathUnchecked,
    body: Annotated[MunicipalityIn, SkipValidation],
    principal: Admin,
    session: Session,
    response: Response,
) -> MunicipalityOut:
    out, created = await service.put_municipality(
        ConfigRepository(session), principal, municipality_id, body
    )
    _status(response, created)
    return out


@router.get("/municipalities/{municipality_id}", response_model=MunicipalityOut)
async def get_municipality(
    municipality_id: PathId, principal: Admin, session: Session
) -> MunicipalityOut:
    return await service.get_municipality(ConfigRepository(session), principal, municipality_id)


@router.put("/schools/{school_id}", response_model=SchoolOut)
async def put_school(
    school_id: IdPathUnchecked,
    body: Annotated[SchoolIn, SkipValidation],
    principal: Admin,
    session: Session,
    response: Response,
) -> SchoolOut:
    out, created = await service.put_school(ConfigRepository(session), principal, school_id, body)
    _status(response, created)
    return out


@router.get("/schools/{school_id}", response_model=SchoolOut)
async def get_school(school_id: PathId, principal: Admin, session: Session) -> SchoolOut:
    return await service.get_school(ConfigRepository(session), principal, school_id)


@router.put("/schools/{school_id}/school-years/{label}", response_model=SchoolYearOut)
async def put_school_year(
    school_id: IdPathUnchecked,
    label: YearLabelPathUnchecked,
    body: Annotated[SchoolYearIn, SkipValidation],
    principal: Admin,
    session: Session,
    response: Response,
) -> SchoolYearOut:
    out, created = await service.put_school_year(
        ConfigRepository(session), principal, school_id, label, body
    )
    _status(response, created)
    return out


@router.get("/schools/{school_id}/school-years", response_model=list[SchoolYearOut])
async def list_school_years(
    school_id: PathId, principal: Admin, session: Session
) -> list[SchoolYearOut]:
    return await service.list_school_years(ConfigRepository(session), principal, school_id)


@router.get("/schools/{school_id}/school-years/{label}", response_model=SchoolYearOut)
async def get_school_year(
    school_id: PathId, label: YearLabel, principal: Admin, session: Session
) -> SchoolYearOut:
    return await service.get_school_year(ConfigRepository(session), principal, school_id, label)
