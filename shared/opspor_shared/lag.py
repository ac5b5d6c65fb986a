"""Consumer lag and dead-letter backlog, measured from the consumer's own connection.

Lag is the partition's end offset minus the group's committed offset: what the group still has
to process. A group that stops committing (a stuck handler, a poison batch) shows a growing lag
even while the process looks healthy, which is what the operator's alert looks for.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client import Gauge

from opspor_shared.logging import get_logger
from opspor_shared.stopping import sleep_or_stop

log = get_logger(__name__)

CONSUMER_LAG = Gauge(
    "opspor_kafka_consumer_lag_messages",
    "Messages between the group's committed offset and the partition's end",
    ["group", "topic", "partition"],
)
DEAD_LETTERS = Gauge(
    "opspor_kafka_dead_letter_messages",
    "Messages held in a dead-letter topic (nothing consumes them; people read them)",
    ["topic"],
)


async def measure_once(
    consumer: AIOKafkaConsumer, group: str, dlq: str | Sequence[str], previous: set[TopicPartition]
) -> set[TopicPartition]:
    assigned = set(consumer.assignment())
    for tp in previous - assigned:
        # Another member owns it now and reports it; a stale value here would double it.
        with contextlib.suppress(KeyError):
            CONSUMER_LAG.remove(group, tp.topic, str(tp.partition))
    if assigned:
        ordered = sorted(assigned)
        ends = await consumer.end_offsets(ordered)
        starts = await consumer.beginning_offsets(ordered)
        for tp in ordered:
            committed = await consumer.committed(tp)
            done = starts[tp] if committed is None else max(committed, starts[tp])
            CONSUMER_LAG.labels(group, tp.topic, str(tp.partition)).set(max(ends[tp] - done, 0))
    # Dead-letter topics are created with one partition (opspor_shared.kafka).
    for name in [dlq] if isinstance(dlq, str) else dlq:
        dead = TopicPartition(name, 0)
        with contextlib.suppress(Exception):
            end = (await consumer.end_offsets([dead]))[dead]
            start = (await consumer.beginning_offsets([dead]))[dead]
            DEAD_LETTERS.labels(name).set(max(end - start, 0))
    return assigned


async def watch_lag(
    consumer: AIOKafkaConsumer,
    group: str,
    dlq: str | Sequence[str],
    stop: asyncio.Event,
    every_seconds: float = 15.0,
) -> None:
    previous: set[TopicPartition] = set()
    # The first round after one interval: right after the start nothing is assigned yet.
    await sleep_or_stop(stop, every_seconds)
    while not stop.is_set():
        try:
            previous = await measure_once(consumer, group, dlq, previous)
        except Exception as exc:
            # Measuring must never disturb consuming; the next round tries again.
            log.info("lag_measure_failed", group=group, error=type(exc).__name__)
        await sleep_or_stop(stop, every_seconds)
