"""Request-scoped dependencies. The session dependency owns commit and rollback."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import Depends, Header, Request
from fastapi.routing import APIRoute
from pydantic import WithJsonSchema
from sqlalchemy.ext.asyncio import AsyncSession

from opspor_api.audit.repository import AuditRepository
from opspor_api.audit.schemas import PURPOSES, Purpose
from opspor_api.audit.service import Auditor
from opspor_api.settings import ApiSettings
from opspor_shared.access import principal_for
from opspor_shared.clock import Clock
from opspor_shared.db import unit_of_work
from opspor_shared.reference import CalendarCache, PackCache


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    async with unit_of_work(request.app.state.sessionmaker) as session:
        yield session
    # Committed: if requests were answered 503 for the database, that outage is over.
    request.app.state.database_outage.succeeded()


# scope="function": commit (or rollback) runs before the response is sent, so a client never
# gets a success for data that a failed commit lost. Audit rows ride in the same transaction.
Session = Annotated[AsyncSession, Depends(get_session, scope="function")]


# async: a plain def would cost a thread-pool hop on every request.
async def get_calendars(request: Request) -> CalendarCache:
    cache: CalendarCache = request.app.state.calendars
    return cache


async def get_packs(request: Request) -> PackCache:
    cache: PackCache = request.app.state.packs
    return cache


async def get_settings(request: Request) -> ApiSettings:
    settings: ApiSettings = request.app.state.settings
    return settings


async def get_clock(request: Request) -> Clock:
    clock: Clock = request.app.state.clock
    return clock


Calendars = Annotated[CalendarCache, Depends(get_calendars)]
Packs = Annotated[PackCache, Depends(get_packs)]
AppClock = Annotated[Clock, Depends(get_clock)]
Settings = Annotated[ApiSettings, Depends(get_settings)]

_PURPOSE_HELP = "Why pupil data is accessed; recorded in the audit log. One of: " + "; ".join(
    f"`{k}` ({v})" for k, v in PURPOSES.items()
)


def audited(default: Purpose) -> Any:
    """An Auditor for a route that reads or writes pupil-level data; X-Purpose overrides the
    route's default purpose."""

    async def dependency(
        request: Request,
        session: Session,
        purpose: Annotated[
            Purpose | None,
            Header(alias="X-Purpose", description=_PURPOSE_HELP),
            # Optional, but never null: a header is absent or one of the purposes.
            WithJsonSchema({"type": "string", "enum": list(PURPOSES)}),
        ] = None,
    ) -> Auditor:
        route = request.scope.get("route")
        return Auditor(
            repo=AuditRepository(session),
            # Verified once per request; this only reads it back from the request scope.
            principal=await principal_for(request.scope, request.app.state.verifier),
            method=request.method,
            endpoint=route.path if isinstance(route, APIRoute) else request.url.path,
            purpose=purpose or default,
        )

    return Depends(dependency)
