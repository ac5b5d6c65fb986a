"""Alembic environment: one schema, three owners (api, threshold-worker, alerter).

The URL comes from the alembic config (set by opspor_shared.migrate) or DATABASE_URL.
"""

from __future__ import annotations

import asyncio
import os

from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

# Each import registers its service's tables on Base.metadata.
import opspor_alerter.models  # noqa: F401
import opspor_api.models  # noqa: F401
import opspor_worker.models  # noqa: F401
from opspor_shared.db import Base
from opspor_shared.settings import ServiceSettings

target_metadata = Base.metadata


def _url() -> str:
    url = context.config.get_main_option("sqlalchemy.url") or os.environ["DATABASE_URL"]
    return ServiceSettings._async_driver(url)


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


async def _run_async() -> None:
    engine = create_async_engine(_url())
    async with engine.connect() as connection:
        await connection.run_sync(_run)
    await engine.dispose()


if context.is_offline_mode():
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_run_async())
