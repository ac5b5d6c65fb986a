"""Consumers handle what one fetch returned in one call, across partitions (issue 11: one
transaction per partition made the worker slow at a steady rate). What must hold whatever the
fetches return: every event is handled, a refused one is dead-lettered with the partition it
came from, a broken one too, and every partition's offset is committed. Tansu broker."""

from __future__ import annotations

import asyncio
import time

from aiokafka import TopicPartition

from opspor_shared.events import CloudEvent
from opspor_shared.kafka import (
    Delivered,
    consume_forever,
    ensure_topics,
    make_consumer,
    make_producer,
    partition_of,
)
from tests.support import broker_settings, plain_event, read_records

PARTITIONS = 3


def keys_for_every_partition(per_partition: int) -> list[str]:
    """Pupil ids, `per_partition` on each partition, in no particular order."""
    found: dict[int, list[str]] = {p: [] for p in range(PARTITIONS)}
    n = 0
    while any(len(v) < per_partition for v in found.values()):
        key = f"elev-{n}"
        if len(found[partition_of(key, PARTITIONS)]) < per_partition:
            found[partition_of(key, PARTITIONS)].append(key)
        n += 1
    return [k for keys in zip(*found.values(), strict=True) for k in keys]


async def test_one_call_per_fetch_keeps_dead_letters_and_offsets_per_partition(
    kafka_bootstrap: str, topic_suffix: str
) -> None:
    topic = f"absence.registrations.v1.{topic_suffix}"
    settings = broker_settings(
        kafka_bootstrap, registrations_topic=topic, topic_partitions=PARTITIONS
    )
    await ensure_topics(settings, [topic, f"{topic}.dlq"])
    keys = keys_for_every_partition(3)
    events = [plain_event("batch", key, {"key": key}) for key in keys]
    refused = events[4]
    producer = make_producer(settings, "batch-test")
    await producer.start()
    for event in events:
        await producer.send_and_wait(topic, event.to_bytes(), key=event.subject.encode())
    broken_key = keys[-1]
    await producer.send_and_wait(topic, b"{not json", key=broken_key.encode())

    handled: list[list[str]] = []
    all_handled = asyncio.Event()

    async def handle(batch: list[Delivered]) -> list[CloudEvent]:
        handled.append([d.event.id for d in batch])
        if sum(len(b) for b in handled) >= len(events):
            all_handled.set()
        return [d.event for d in batch if d.event.id == refused.id]

    group = f"batch-test-{topic_suffix}"
    consumer = make_consumer(settings, group)
    consumer.subscribe([topic])
    await consumer.start()
    stop = asyncio.Event()
    running = asyncio.create_task(consume_forever(consumer, producer, group, handle, stop))
    try:
        await asyncio.wait_for(all_handled.wait(), timeout=30)
        deadline = time.monotonic() + 10
        # The offsets are committed after the call returns.
        partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        ends = await consumer.end_offsets(partitions)
        while time.monotonic() < deadline:
            committed = {tp: await consumer.committed(tp) for tp in partitions}
            if committed == ends:
                break
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.wait_for(running, timeout=10)
        await consumer.stop()
        await producer.stop()

    assert sorted(i for batch in handled for i in batch) == sorted(e.id for e in events)
    assert committed == ends

    letters = await read_records(kafka_bootstrap, f"{topic}.dlq", expect=2, timeout=20)
    found = {(r.key or b"").decode(): dict(r.headers or ()) for r in letters}
    assert {k: h["opspor-dlq-reason"] for k, h in found.items()} == {
        refused.subject: b"refused",
        broken_key: b"undecodable",
    }
    for key, headers in found.items():
        assert headers["opspor-dlq-partition"] == str(partition_of(key, PARTITIONS)).encode()
