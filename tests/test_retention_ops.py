"""Retention as operators meet it: the purge commands, the periodic loop, topic retention."""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from opspor_shared.kafka import dlq_topic, ensure_topics
from opspor_shared.purge import EXIT_BUSY, PurgeReport
from opspor_shared.runtime import run_purge
from opspor_shared.settings import ServiceSettings
from opspor_worker.models import WorkerRegistration, worker_purges


async def purge_command(database_url: str, module: str, *args: str) -> tuple[int, str]:
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9",
        "RETENTION_REGISTRATION_DAYS": "1095",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        f"{module}.purge",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, out.decode()


async def test_the_worker_purge_command_counts_deletes_and_waits_its_turn(
    clean_db: AsyncEngine, database_url: str, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    # Years before any cutoff the real clock can give from now on.
    async with sessionmaker() as session, session.begin():
        session.add(
            WorkerRegistration(
                pupil_id="p1",
                date=date(2020, 1, 6),
                slot="day",
                school_id="s1",
                category="illness",
                extent=Decimal(1),
                recorded_at=datetime(2020, 1, 6, tzinfo=UTC),
                event_id="e1",
                retracted=False,
            )
        )

    async def rows() -> tuple[int, int]:
        async with sessionmaker() as session:
            regs = await session.scalar(select(func.count()).select_from(WorkerRegistration))
            logged = await session.scalar(select(func.count()).select_from(worker_purges))
        return int(regs or 0), int(logged or 0)

    code, out = await purge_command(database_url, "opspor_worker", "--dry-run")
    assert code == 0, out
    assert "(dry run)" in out
    [line] = [line for line in out.splitlines() if "worker_registrations" in line]
    assert line.split()[1:4] == ["would", "delete", "1"]
    assert await rows() == (1, 0)

    async with clean_db.connect() as other:
        await other.execute(
            text("select pg_advisory_xact_lock(hashtext('opspor-purge'), hashtext('worker'))")
        )
        code, out = await purge_command(database_url, "opspor_worker")
        await other.rollback()
    assert code == EXIT_BUSY, out
    assert "another purge of this service is running" in out
    assert await rows() == (1, 0)

    code, out = await purge_command(database_url, "opspor_worker")
    assert code == 0, out
    assert await rows() == (0, 1)


@pytest.mark.parametrize(
    ("module", "tables"),
    [
        ("opspor_api", ("registration_events", "registrations", "api_concerns")),
        ("opspor_alerter", ("alerter_concerns", "notices", "delivery_attempts")),
    ],
)
async def test_each_service_has_a_purge_command(
    clean_db: AsyncEngine, database_url: str, module: str, tables: tuple[str, ...]
) -> None:
    code, out = await purge_command(database_url, module, "--dry-run")
    assert code == 0, out
    for table in tables:
        assert f"{table} " in out


async def test_the_periodic_purge_survives_a_failure_and_stops_when_asked() -> None:
    calls: list[asyncio.Event] = []
    stop = asyncio.Event()

    async def run_once(stop_: asyncio.Event) -> PurgeReport:
        calls.append(stop_)
        raise RuntimeError("database went away")

    task = asyncio.create_task(run_purge("test", run_once, 60.0, stop))
    for _ in range(100):
        if calls:
            break
        await asyncio.sleep(0.01)
    # It ran at once, failed, and waits for its next round instead of ending.
    assert calls == [stop]
    assert not task.done()
    stop.set()
    await asyncio.wait_for(task, timeout=5)
    assert calls == [stop]


async def test_topics_are_created_with_their_retention(
    kafka_bootstrap: str, topic_suffix: str
) -> None:
    settings = ServiceSettings(
        database_url="postgresql://unused/x",
        kafka_bootstrap_servers=kafka_bootstrap,
        topic_retention_ms=5 * 24 * 3600 * 1000,
    )
    topic = f"absence.concerns.v1.{topic_suffix}"
    await ensure_topics(settings, [topic, dlq_topic(topic)])
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        [response] = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, t) for t in (topic, dlq_topic(topic))]
        )
    finally:
        await admin.close()
    configs = {
        (resource[3], entry[0]): entry[1]
        for resource in response.resources
        for entry in resource[4]
    }
    for t in (topic, dlq_topic(topic)):
        assert configs[(t, "retention.ms")] == "432000000"
        assert configs[(t, "segment.ms")] == "86400000"
