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
from opspor_api.models import ConcernView, Enrolment, Municipality, Registration, School
from opspor_api.validation import ID_PATTERN
from opspor_shared.access import allow
from opspor_shared.auth import SCHOOL_BOUND_ROLES, Principal, Role
from opspor_shared.routing import Routing, from_document, levels_reaching


def may_use_school(principal: Principal, school_id: str, municipality_id: str) -> bool:
    if principal.municipality is None or municipality_id != principal.municipality:
        return False
    return principal.role not in SCHOOL_BOUND_ROLES or school_id in principal.schools


def visible_schools(principal: Principal) -> Select[str]:
    query = select(School.id).where(School.municipality_id == principal.municipality)
    if principal.role in SCHOOL_BOUND_ROLES:
        query = query.where(School.id.in_(sorted(principal.schools)))
    return query


async def concern_visible(session: AsyncSession, principal: Principal) -> ColumnElement[bool]:
    if principal.municipality is None:
        return false()
    condition: ColumnElement[bool] = ConcernView.school_id.in_(visible_schools(principal))
    if principal.role is Role.PPR:
        condition = and_(condition, await _routed_to_ppr(session, principal.municipality))
    return condition


async def _routed_to_ppr(session: AsyncSession, municipality_id: str) -> ColumnElement[bool]:
    """PPR sees the concerns routed to it (DOMAIN.md s.9): those whose level the routing in
    force at their school sends to the PPR mailbox, the same routing the alerter mails by. A
    routing change therefore changes what PPR can open, for past concerns too: what it may
    read follows who is meant to act now."""
    municipality = from_document(
        await session.scalar(select(Municipality.routing).where(Municipality.id == municipality_id))
    )
    own = (
        await session.execute(
            select(School.id, School.routing).where(
                School.municipality_id == municipality_id, School.routing.is_not(None)
            )
        )
    ).all()
    # Schools without a routing of their own share the municipality's.
    parts = [
        and_(
            ConcernView.school_id.not_in([school_id for school_id, _ in own]),
            _levels_to_ppr(None, municipality),
        )
    ]
    for school_id, document in own:
        parts.append(
            and_(
                ConcernView.school_id == school_id,
                _levels_to_ppr(from_document(document), municipality),
            )
        )
    return or_(*parts)


def _levels_to_ppr(school: Routing | None, municipality: Routing) -> ColumnElement[bool]:
    reaching = levels_reaching("ppr", school, municipality)
    condition: ColumnElement[bool] = ConcernView.level.in_(sorted(reaching.levels))
    if reaching.others:
        condition = or_(condition, ConcernView.level.not_in(sorted(reaching.named)))
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
    """PPR sees a pupil only through a concern routed to it; the others through any
    registration, enrolment or concern at one of their schools."""
    concerns = exists().where(
        ConcernView.pupil_id == pupil_id, await concern_visible(session, principal)
    )
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
