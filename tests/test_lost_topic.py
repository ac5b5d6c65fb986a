"""A consumer whose committed offset lies beyond its partition's end (the log was truncated, or
the topic recreated) says so once, turns not-ready with the reason, re-reads the topic from the
start and is ready again once it has caught up. Real broker (Tansu)."""

from __future__ import annotations

import asyncio
import contextlib

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client import REGISTRY

from opspor_shared.events import CloudEvent, utcnow
from opspor_shared.kafka import Delivered, LostDataWatch, consume_forever, make_producer
from opspor_shared.outage import NOT_READY
from opspor_shared.settings import ServiceSettings
from tests.auth import issuers_setting


def _lost(topic: str) -> float:
    sample = REGISTRY.get_sample_value(
        "opspor_kafka_topic_data_lost_total", {"topic": topic, "side": "consumer"}
    )
    return sample or 0.0


async def test_committed_offset_beyond_the_end_is_reported_and_the_topic_reread(
    kafka_bootstrap: str, topic_suffix: str
) -> None:
    topic, group = f"lost.{topic_suffix}", f"lost-{topic_suffix}"
    settings = ServiceSettings(
        database_url="postgresql+asyncpg://unused/unused",
        kafka_bootstrap_servers=kafka_bootstrap,
        kafka_enable_idempotence=False,
        auth_issuers=issuers_setting(),
    )
    producer = make_producer(settings, "lost-test")
    await producer.start()
    events = [
        CloudEvent(id=f"e{i}", source="/test", type="test", time=utcnow(), subject="s", data={})
        for i in range(3)
    ]
    for event in events:
        await producer.send_and_wait(topic, event.to_bytes(), partition=0)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=kafka_bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    tp = TopicPartition(topic, 0)
    consumer.assign([tp])
    # What a broker that lost the log leaves: our committed position far beyond its end.
    await consumer.commit({tp: 1000})
    consumer.seek(tp, 1000)
    seen: list[str] = []

    async def handle(batch: list[Delivered]) -> None:
        seen.extend(d.event.id for d in batch)

    watch = LostDataWatch(consumer, group, topic, {"bootstrap_servers": kafka_bootstrap})
    stop = asyncio.Event()
    before = _lost(topic)
    key = f"consumer:{group}:{topic}"
    with structlog.testing.capture_logs() as logs:
        loop = asyncio.create_task(
            consume_forever(consumer, producer, group, handle, stop, watch=watch, check_seconds=0.2)
        )
        try:
            for _ in range(100):  # bounded: 20 s
                if key in NOT_READY:
                    break
                await asyncio.sleep(0.2)
            assert "lost data" in NOT_READY[key]
            for _ in range(100):
                if sorted(seen) == ["e0", "e1", "e2"] and key not in NOT_READY:
                    break
                await asyncio.sleep(0.2)
        finally:
            stop.set()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(loop, 10)
            await watch.close()
            await consumer.stop()
            await producer.stop()
    assert sorted(seen) == ["e0", "e1", "e2"]
    assert key not in NOT_READY
    assert _lost(topic) == before + 1
    lost_lines = [e for e in logs if e["event"] == "topic_data_lost"]
    assert len(lost_lines) == 1 and lost_lines[0]["log_level"] == "error"
    assert [e["event"] for e in logs if e["event"] == "topic_data_reread"] == ["topic_data_reread"]
    assert await consumer_committed_ok(kafka_bootstrap, group, tp)


async def consumer_committed_ok(bootstrap: str, group: str, tp: TopicPartition) -> bool:
    """The re-read was committed: the group's offset is back inside the log."""
    probe = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await probe.start()
    try:
        committed = await probe.committed(tp)
    finally:
        await probe.stop()
    return bool(committed == 3)
