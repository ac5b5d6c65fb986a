"""Fixtures on real components: PostgreSQL migrated by Alembic and the Tansu Kafka broker.

DATABASE_URL / KAFKA_BOOTSTRAP_SERVERS, when set, point the suite at existing servers;
otherwise the machine's PostgreSQL on :5432 (or an embedded one) and an embedded broker are used.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from opspor_shared.db import make_engine, make_sessionmaker
from opspor_shared.devstack.kafka import EmbeddedBroker
from opspor_shared.devstack.postgres import admin_url, create_database, drop_database
from opspor_shared.migrate import upgrade_async

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def var_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("var")


@pytest.fixture(scope="session")
async def database_url(var_dir: Path) -> AsyncIterator[str]:
    admin = admin_url(ROOT / "var")
    name = f"opspor_test_{os.getpid()}"
    url = await create_database(admin, name, recreate=True)
    async_url = url.replace("postgresql://", "postgresql+asyncpg://", 1)
    await upgrade_async(async_url)
    yield async_url
    await drop_database(admin, name)


@pytest.fixture(scope="session")
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(database_url, pool_size=5)
    yield engine
    await engine.dispose()


@pytest.fixture(scope="session")
def sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return make_sessionmaker(engine)


@pytest.fixture
async def clean_db(engine: AsyncEngine) -> AsyncEngine:
    """Empties every table before the test (per-test isolation)."""
    async with engine.begin() as conn:
        # Replica mode skips ordinary triggers for this transaction only: the append-only
        # audit_log refuses TRUNCATE otherwise (tests/api/test_audit.py proves both).
        await conn.execute(text("set local session_replication_role = replica"))
        tables = (
            await conn.execute(
                text(
                    "select tablename from pg_tables where schemaname = 'public' "
                    "and tablename <> 'alembic_version'"
                )
            )
        ).scalars()
        names = ", ".join(f'"{t}"' for t in tables)
        await conn.execute(text(f"truncate {names} restart identity cascade"))
    return engine


@pytest.fixture(scope="session")
def kafka_bootstrap(var_dir: Path) -> Iterator[str]:
    if servers := os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        yield servers
        return
    with EmbeddedBroker(log_file=var_dir / "tansu.log") as broker:
        yield broker.bootstrap_servers


@pytest.fixture
def topic_suffix() -> str:
    """Unique topic names per test, so tests sharing a broker never read each other's events."""
    return uuid.uuid4().hex[:10]
