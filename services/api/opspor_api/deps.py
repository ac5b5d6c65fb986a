"""Request-scoped dependencies. The session dependency owns commit and rollback."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from opspor_api.settings import ApiSettings
from opspor_shared.clock import Clock
from opspor_shared.db import unit_of_work
from opspor_shared.reference import CalendarCache, PackCache


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    async with unit_of_work(request.app.state.sessionmaker) as session:
        yield session


# scope="function": commit (or rollback) runs before the response is sent, so a client never
# gets a success for data that a failed commit lost.
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
