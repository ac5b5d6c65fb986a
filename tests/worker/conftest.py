from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from opspor_shared.reference import CalendarCache
from opspor_worker.service import Context
from opspor_worker.settings import WorkerSettings
from tests.auth import issuers_setting
from tests.support import seed_reference
from tests.worker.test_worker import NOW


@pytest.fixture
async def ctx(clean_db: AsyncEngine, sessionmaker: async_sessionmaker[AsyncSession]) -> Context:
    await seed_reference(sessionmaker)
    settings = WorkerSettings(
        database_url="postgresql://unused/x",
        kafka_bootstrap_servers="unused:9092",
        concerns_topic="concerns",
        auth_issuers=issuers_setting(),
    )
    return Context(settings=settings, calendars=CalendarCache(), clock=lambda: NOW)
