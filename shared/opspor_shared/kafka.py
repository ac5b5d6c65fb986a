"""Kafka helpers: clients built from settings, explicit topic creation, and the consume loop.

Facts that shape this module (ARCHITECTURE.md section 2): offsets are committed by hand after
the database transaction that processed a batch has committed, so a crash replays the batch;
consumers are idempotent, so the replay changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from prometheus_client import Counter
from pydantic import ValidationError

from opspor_shared.events import CloudEvent
from opspor_shared.kafka_security import client_kwargs
from opspor_shared.logging import CORRELATION_HEADER, correlation_id, get_logger
from opspor_shared.settings import ServiceSettings
from opspor_shared.stopping import sleep_or_stop
from opspor_shared.topics import check_topics

log = get_logger(__name__)

CONSUMED = Counter("opspor_kafka_consumed_total", "Messages processed", ["topic", "group"])
DEAD_LETTERED = Counter("opspor_kafka_dead_lettered_total", "Messages sent to a DLQ", ["topic"])
HANDLER_FAILURES = Counter(
    "opspor_kafka_handler_failures_total", "Batches that failed and will be redelivered", ["group"]
)


def dlq_topic(topic: str) -> str:
    return f"{topic}.dlq"


async def ensure_topics(settings: ServiceSettings, topics: Sequence[str]) -> None:
    admin = AIOKafkaAdminClient(**client_kwargs(settings))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in topics if t not in existing]
        await check_topics(admin, {t: _expected(settings, t) for t in topics if t in existing})
        if missing:
            # Another service may create it between our list and create.
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(
                    [
                        NewTopic(
                            t,
                            num_partitions=_partitions(settings, t),
                            replication_factor=1,
                            topic_configs=topic_configs(settings),
                        )
                        for t in missing
                    ]
                )
    finally:
        await admin.close()


def topic_configs(settings: ServiceSettings) -> dict[str, str]:
    """Retention of the events on every topic Opspor creates (deploy/ sets the same values).

    Segments roll daily, so Kafka (which deletes whole segments) drops an event at most a day
    after `retention.ms` instead of up to a week (the default segment.ms) later.
    """
    return {
        "retention.ms": str(settings.topic_retention_ms),
        "segment.ms": str(min(settings.topic_retention_ms, SEGMENT_MS)),
    }


SEGMENT_MS = 24 * 3600 * 1000


def _expected(settings: ServiceSettings, topic: str) -> dict[str, str]:
    return {
        "partitions": str(_partitions(settings, topic)),
        "retention.ms": str(settings.topic_retention_ms),
    }


def _partitions(settings: ServiceSettings, topic: str) -> int:
    # Dead letters are few and read by people; one partition keeps them in order.
    return 1 if topic.endswith(".dlq") else settings.topic_partitions


def make_producer(settings: ServiceSettings, client_id: str) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        **client_kwargs(settings),
        client_id=f"{settings.kafka_client_id_prefix}-{client_id}",
        acks="all",
        enable_idempotence=settings.kafka_enable_idempotence,
        linger_ms=5,
        request_timeout_ms=15000,
    )


def make_consumer(settings: ServiceSettings, group_id: str) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        **client_kwargs(settings),
        client_id=f"{settings.kafka_client_id_prefix}-{group_id}",
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_uncommitted",
        max_poll_records=1000,
        session_timeout_ms=settings.kafka_session_timeout_ms,
        heartbeat_interval_ms=max(250, settings.kafka_session_timeout_ms // 4),
    )


class LoggingRebalanceListener(ConsumerRebalanceListener):  # type: ignore[misc]
    """Offsets are committed synchronously after every batch, so a revoke has nothing to flush."""

    def __init__(self, group_id: str) -> None:
        self.group_id = group_id

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        log.info("partitions_revoked", group=self.group_id, partitions=sorted(map(str, revoked)))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        log.info("partitions_assigned", group=self.group_id, partitions=sorted(map(str, assigned)))


@dataclass(frozen=True)
class Delivered:
    event: CloudEvent
    correlation_id: str | None


# A handler returns the events it refuses (valid envelope, invalid data); they go to the DLQ.
BatchHandler = Callable[[list[Delivered]], Awaitable[Sequence[CloudEvent] | None]]


def _header(headers: Sequence[tuple[str, bytes]] | None, name: str) -> str | None:
    for key, value in headers or ():
        if key == name:
            return value.decode(errors="replace")
    return None


async def consume_forever(
    consumer: AIOKafkaConsumer,
    producer: AIOKafkaProducer,
    group_id: str,
    handle: BatchHandler,
    stop: asyncio.Event,
    *,
    max_backoff: float = 10.0,
) -> None:
    """Fetch, decode, handle, commit. Undecodable messages go to `<topic>.dlq`.

    When `handle` raises (database down, a bug), nothing is committed; the consumer rewinds to
    the committed offsets and the batch comes again after a bounded backoff.
    """
    backoff = 0.2
    while not stop.is_set():
        try:
            batches = await consumer.getmany(timeout_ms=200, max_records=1000)
        except KafkaError as exc:
            log.warning("kafka_fetch_failed", error=type(exc).__name__)
            await sleep_or_stop(stop, backoff)
            backoff = min(max_backoff, backoff * 2)
            continue
        if not batches:
            continue
        try:
            for tp, records in batches.items():
                good: list[Delivered] = []
                for record in records:
                    try:
                        event = CloudEvent.from_bytes(record.value or b"")
                    except ValidationError:
                        await _dead_letter(producer, tp.topic, record.value or b"", record.key)
                        continue
                    good.append(Delivered(event, _header(record.headers, CORRELATION_HEADER)))
                if good:
                    token = correlation_id.set(good[-1].correlation_id)
                    try:
                        refused = await handle(good) or ()
                    finally:
                        correlation_id.reset(token)
                    for event in refused:
                        await _dead_letter(
                            producer, tp.topic, event.to_bytes(), event.subject.encode()
                        )
                await consumer.commit({tp: records[-1].offset + 1})
                CONSUMED.labels(tp.topic, group_id).inc(len(records))
            backoff = 0.2
        except Exception as exc:
            HANDLER_FAILURES.labels(group_id).inc()
            log.exception("batch_failed_will_retry", group=group_id, error=type(exc).__name__)
            await sleep_or_stop(stop, backoff)
            backoff = min(max_backoff, backoff * 2)
            try:
                await consumer.seek_to_committed()
            except KafkaError:
                log.warning("seek_to_committed_failed", group=group_id)


async def _dead_letter(
    producer: AIOKafkaProducer, topic: str, value: bytes, key: bytes | None
) -> None:
    await producer.send_and_wait(dlq_topic(topic), value=value, key=key)
    DEAD_LETTERED.labels(topic).inc()
    log.warning("dead_lettered", topic=topic)


async def kafka_ready(settings: ServiceSettings, wait_seconds: float = 2.0) -> bool:
    """A fresh bootstrap each time: a long-lived client could report a stale connection."""
    client = AIOKafkaClient(**client_kwargs(settings))
    try:
        await asyncio.wait_for(client.bootstrap(), wait_seconds)
    except (KafkaError, TimeoutError, OSError):
        return False
    finally:
        await client.close()
    return True
