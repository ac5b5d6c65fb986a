"""What a principal may see. Everything outside its tenancy answers exactly as if it did not
exist (404 for a path resource, the "unknown school" 422 for a body field).

The schools table is the authority on which municipality a school belongs to; a token's school
list only narrows that further, so a school claimed by a token of another municipality stays
invisible. A pupil belongs to the schools where the api holds registrations, enrolments or
concerns for it.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path
from sqlalchemy import ColumnElement, Select, and_, exists, false, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from opspor_api.errors import NotFound
from opspor_api.models import ConcernView, Enrolment, Registration, School
from opspor_api.validation import ID_PATTERN
from opspor_shared.access import allow
from opspor_shared.auth import SCHOOL_BOUND_ROLES, Principal, Role

PPR_LEVELS = ("ppr-may", "ppr-must")


def may_use_school(principal: Principal, school_id: str, municipality_id: str) -> bool:
    if principal.municipality is None or municipality_id != principal.municipality:
        return False
    return principal.role not in SCHOOL_BOUND_ROLES or school_id in principal.schools


def visible_schools(principal: Principal) -> Select[str]:
    query = select(School.id).where(School.municipality_id == principal.municipality)
    if principal.role in SCHOOL_BOUND_ROLES:
        query = query.where(School.id.in_(sorted(principal.schools)))
    return query


def concern_visible(principal: Principal) -> ColumnElement[bool]:
    if principal.municipality is None:
        return false()
    condition: ColumnElement[bool] = ConcernView.school_id.in_(visible_schools(principal))
    if principal.role is Role.PPR:
        condition = and_(condition, ConcernView.level.in_(PPR_LEVELS))
    return condition


def registration_visible(principal: Principal) -> ColumnElement[bool]:
    if principal.municipality is None:
        return false()
    return Registration.school_id.in_(visible_schools(principal))


async def school_visible(session: AsyncSession, principal: Principal, school_id: str) -> bool:
    if principal.municipality is None:
        return False
    found = await session.scalar(visible_schools(principal).where(School.id == school_id))
    return found is not None


async def pupil_visible(session: AsyncSession, principal: Principal, pupil_id: str) -> bool:
    """PPR sees a pupil only through a concern at a PPR level; the others through any
    registration, enrolment or concern at one of their schools."""
    concerns = exists().where(ConcernView.pupil_id == pupil_id, concern_visible(principal))
    condition: ColumnElement[bool]
    if principal.role is Role.PPR:
        condition = concerns
    else:
        registrations = exists().where(
            Registration.pupil_id == pupil_id, registration_visible(principal)
        )
        enrolments = exists().where(
            Enrolment.pupil_id == pupil_id, Enrolment.school_id.in_(visible_schools(principal))
        )
        condition = or_(registrations, enrolments, concerns)
    return bool(await session.scalar(select(condition)))


async def _own_municipality_admin(
    municipality_id: Annotated[str, Path(min_length=1, max_length=64, pattern=ID_PATTERN)],
    principal: Annotated[Principal, allow(Role.MUNICIPALITY_ADMIN)],
) -> Principal:
    # Another municipality's configuration answers as if it did not exist.
    if municipality_id != principal.municipality:
        raise NotFound(f"no municipality {municipality_id!r}")
    return principal


# For routes under /municipalities/{municipality_id}/...: its own administrator only.
MunicipalityAdmin = Annotated[Principal, Depends(_own_municipality_admin)]
