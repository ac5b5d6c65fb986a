"""An outbox row holds a transaction's events (issue 11: one row per request, not per event),
and the relay sends them as record batches per partition. What must not change with that:
every event reaches the broker once, on the partition the producers' murmur2 partitioner
gives its key (the one the worker's tick assumes a pupil is on), in commit order per key, and
a relay round takes at most `batch_size` events unless a single row holds more.
Real PostgreSQL and the Tansu broker."""

from __future__ import annotations

from aiokafka import ConsumerRecord
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from opspor_shared.db import unit_of_work
from opspor_shared.events import CloudEvent
from opspor_shared.kafka import ensure_topics, make_producer, partition_of
from opspor_shared.logging import CORRELATION_HEADER
from opspor_shared.outbox import OutboxMessage, OutboxRelay, enqueue, waiting_events
from opspor_worker.models import worker_outbox
from tests.support import broker_settings, plain_event, read_records

PARTITIONS = 4
KEYS = [f"elev-{n}" for n in range(7)]


def message(topic: str, key: str, n: int) -> OutboxMessage:
    event = plain_event("rows", key, {"n": n})
    return OutboxMessage(topic=topic, key=key, event=event, correlation_id=f"request-{n // 10}")


def seen(record: ConsumerRecord[bytes, bytes]) -> tuple[int, str, int, str]:
    """(partition, key, n, correlation header) of a published event."""
    headers = dict(record.headers or ())
    return (
        record.partition,
        (record.key or b"").decode(),
        CloudEvent.from_bytes(record.value or b"").data["n"],
        headers.get(CORRELATION_HEADER, b"").decode(),
    )


async def test_rows_of_many_events_reach_their_partitions_once_and_in_order(
    clean_db: AsyncEngine,
    sessionmaker: async_sessionmaker[AsyncSession],
    kafka_bootstrap: str,
    topic_suffix: str,
) -> None:
    topic = f"absence.concerns.v1.{topic_suffix}"
    other = f"absence.cases.v1.{topic_suffix}"
    settings = broker_settings(kafka_bootstrap, concerns_topic=topic, topic_partitions=PARTITIONS)
    await ensure_topics(settings, [topic, other])
    # Three transactions of 10, 25 and 5 events over seven keys, and one event for another
    # topic in the first: four rows. With batch_size 12 the relay takes the first row alone,
    # then the 25-event row alone (more than a batch, but a row is never split), then the
    # rest.
    sizes = [10, 25, 5]
    async with unit_of_work(sessionmaker) as session:
        first = [message(topic, KEYS[i % len(KEYS)], i) for i in range(sizes[0])]
        await enqueue(
            session, worker_outbox, [*first[:3], message(other, "elev-x", 999), *first[3:]]
        )
    n = sizes[0]
    for size in sizes[1:]:
        async with unit_of_work(sessionmaker) as session:
            await enqueue(
                session,
                worker_outbox,
                [message(topic, KEYS[i % len(KEYS)], i) for i in range(n, n + size)],
            )
        n += size
    async with sessionmaker() as session:
        rows = await session.scalar(select(func.count()).select_from(worker_outbox))
        events = await session.scalar(waiting_events(worker_outbox))
    assert (rows, events) == (4, 41)

    producer = make_producer(settings, "rows-test")
    await producer.start()
    relay = OutboxRelay(sessionmaker, worker_outbox, producer, batch_size=12)
    try:
        rounds = [await relay.publish_once() for _ in range(4)]
    finally:
        await producer.stop()
    # (events, more waiting): 10 from row 1 (+ the other topic's row: 11), then 25, then 5.
    assert rounds == [(11, True), (25, True), (5, False), (0, False)]

    # Asks for one more than was sent: anything published twice would be read too.
    got = [seen(r) for r in await read_records(kafka_bootstrap, topic, expect=41, timeout=3)]
    assert len(got) == 40, got
    assert sorted(e[2] for e in got) == list(range(40))
    for partition, key, number, correlation in got:
        assert partition == partition_of(key, PARTITIONS)
        assert correlation == f"request-{number // 10}"
    for key in KEYS:
        numbers = [number for _, k, number, _ in got if k == key]
        assert numbers == sorted(numbers), f"{key} out of order: {numbers}"
    elsewhere = [seen(r) for r in await read_records(kafka_bootstrap, other, expect=2, timeout=3)]
    assert [(k, number) for _, k, number, _ in elsewhere] == [("elev-x", 999)]
