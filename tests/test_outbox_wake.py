"""A commit that writes outbox rows wakes its relay at once (issue 11: freshness). The relay
here polls only every two minutes, so a row that reaches the broker within the test's bound was
published because its commit woke the relay, not because a poll found it. Real PostgreSQL and
the Tansu broker."""

from __future__ import annotations

import asyncio
import time

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from opspor_shared.db import unit_of_work
from opspor_shared.events import CloudEvent
from opspor_shared.kafka import ensure_topics, make_consumer, make_producer
from opspor_shared.outbox import OutboxMessage, OutboxRelay, enqueue
from opspor_worker.models import worker_outbox
from tests.support import broker_settings, plain_event


async def test_a_commit_wakes_the_relay_and_a_rollback_does_not(
    clean_db: AsyncEngine,
    sessionmaker: async_sessionmaker[AsyncSession],
    kafka_bootstrap: str,
    topic_suffix: str,
) -> None:
    topic = f"absence.concerns.v1.{topic_suffix}"
    settings = broker_settings(kafka_bootstrap, concerns_topic=topic, topic_partitions=1)
    await ensure_topics(settings, [topic])
    producer = make_producer(settings, "wake-test")
    await producer.start()
    relay = OutboxRelay(sessionmaker, worker_outbox, producer, idle_interval=120.0)
    stop = asyncio.Event()
    running = asyncio.create_task(relay.run(stop))

    def message(n: int) -> OutboxMessage:
        event = plain_event("wake", "elev-1", {"n": n})
        return OutboxMessage(topic=topic, key="elev-1", event=event)

    async def waiting() -> int:
        async with sessionmaker() as session:
            return int(await session.scalar(select(func.count()).select_from(worker_outbox)) or 0)

    try:
        await asyncio.sleep(0.5)  # the relay's first round found nothing; it now idles 120 s
        # A rolled-back transaction leaves nothing and wakes nobody.
        try:
            async with unit_of_work(sessionmaker) as session:
                await enqueue(session, worker_outbox, [message(0)])
                raise RuntimeError("rolled back")
        except RuntimeError:
            pass
        async with unit_of_work(sessionmaker) as session:
            await enqueue(session, worker_outbox, [message(1), message(2)])
        for _ in range(400):  # at most 20 s, far below the relay's 120 s poll
            if not await waiting():
                break
            await asyncio.sleep(0.05)
        assert await waiting() == 0, "the commit did not wake the relay"
    finally:
        stop.set()
        await asyncio.wait_for(running, timeout=10)
        await producer.stop()

    consumer = make_consumer(settings, f"wake-{topic_suffix}")
    consumer.subscribe([topic])
    await consumer.start()
    try:
        got: list[int] = []
        deadline = time.monotonic() + 20
        while len(got) < 2 and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                got += [CloudEvent.from_bytes(r.value).data["n"] for r in records]
    finally:
        await consumer.stop()
    assert got == [1, 2]
