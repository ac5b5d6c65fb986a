"""The migrations create exactly the tables the models describe (no drift)."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

import opspor_alerter.models
import opspor_api.models
import opspor_worker.models
from opspor_shared.db import Base


async def test_models_and_migrations_agree(engine: AsyncEngine) -> None:
    assert opspor_alerter.models and opspor_api.models and opspor_worker.models

    def diff(connection: Connection) -> list[object]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, Base.metadata))

    async with engine.connect() as conn:
        assert await conn.run_sync(diff) == []
