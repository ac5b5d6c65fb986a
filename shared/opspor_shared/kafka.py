"""Kafka helpers: clients built from settings, explicit topic creation, and the consume loop.

Facts that shape this module (ARCHITECTURE.md section 2): offsets are committed by hand after
the database transaction that processed a batch has committed, so a crash replays the batch;
consumers are idempotent, so the replay changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, NewTopic
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaError, OffsetOutOfRangeError, TopicAlreadyExistsError
from aiokafka.partitioner import murmur2
from prometheus_client import Counter
from pydantic import ValidationError

from opspor_shared.events import CloudEvent
from opspor_shared.faults import fault_point
from opspor_shared.kafka_security import client_kwargs
from opspor_shared.logging import CORRELATION_HEADER, correlation_id, get_logger
from opspor_shared.outage import (
    NOT_READY,
    Outage,
    clear_not_ready,
    is_database_outage,
    set_not_ready,
)
from opspor_shared.settings import ServiceSettings
from opspor_shared.stopping import sleep_or_stop
from opspor_shared.topics import check_topics

log = get_logger(__name__)

CONSUMED = Counter("opspor_kafka_consumed_total", "Messages processed", ["topic", "group"])
DEAD_LETTERED = Counter("opspor_kafka_dead_lettered_total", "Messages sent to a DLQ", ["topic"])
TOPIC_DATA_LOST = Counter(
    "opspor_kafka_topic_data_lost_total",
    "Times a topic was found to have lost data (offsets beyond its end, topic gone or resized)",
    ["topic", "side"],
)
PARTITION_MISMATCH = Counter(
    "opspor_kafka_partition_mismatch_total",
    "Topics found with fewer partitions than configured",
    ["topic"],
)
HANDLER_FAILURES = Counter(
    "opspor_kafka_handler_failures_total", "Batches that failed and will be redelivered", ["group"]
)


def dlq_topic(topic: str) -> str:
    return f"{topic}.dlq"


async def ensure_topics(settings: ServiceSettings, topics: Sequence[str]) -> dict[str, int]:
    """Creates missing topics with the configured partitions; returns each topic's partitions.

    Called on every (re)connect, not only when a loop first starts: a broker that lost its
    topics would otherwise auto-create them with its own default partition count. A topic found
    with fewer partitions than configured is an error worth a page (keys would move between
    partitions); it is logged and grown to the configured count when the broker allows it.
    Other differences of existing topics (more partitions, another retention) are reported by
    opspor_shared.topics.check_topics.
    """
    admin = AIOKafkaAdminClient(**client_kwargs(settings))
    await admin.start()
    try:
        # All topics (None): a metadata request naming a topic can auto-create it.
        existing = {t["topic"]: len(t["partitions"]) for t in await admin.describe_topics(None)}
        missing = [t for t in topics if t not in existing]
        found = [t for t in topics if t in existing]
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
            for t in missing:
                existing[t] = _partitions(settings, t)
        for t in topics:
            wanted = _partitions(settings, t)
            if existing[t] < wanted:
                try:
                    await admin.create_partitions({t: NewPartitions(wanted)})
                    log.error("topic_partitions_grown", topic=t, found=existing[t], now=wanted)
                    existing[t] = wanted
                except Exception as exc:  # not every broker can grow a topic
                    # Checked on every reconnect and every topic_check_seconds: say it once.
                    if (t, existing[t]) not in _REPORTED_PARTITIONS:
                        _REPORTED_PARTITIONS.add((t, existing[t]))
                        PARTITION_MISMATCH.labels(t).inc()
                        log.error(
                            "topic_partitions_wrong",
                            topic=t,
                            found=existing[t],
                            configured=wanted,
                            grown=False,
                            error=type(exc).__name__,
                        )
        await check_topics(admin, {t: _expected(settings, t) for t in found})
        return {t: existing[t] for t in topics}
    finally:
        await admin.close()


_REPORTED_PARTITIONS: set[tuple[str, int]] = set()


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
        # On a quiet topic (concerns, cases) a fetch waits this long for data: the default
        # 500 ms was most of the time from a concern's commit to its notice. Ten idle fetches
        # a second per partition leader cost the broker next to nothing.
        fetch_max_wait_ms=50,
        session_timeout_ms=settings.kafka_session_timeout_ms,
        heartbeat_interval_ms=max(250, settings.kafka_session_timeout_ms // 4),
    )


class Assignment:
    """The partitions of one topic this process's consumer holds right now, and how many the
    topic has: work that is not driven by messages (the worker's day-change tick) is split by
    the same ownership as the messages, so two processes of one group never both do it."""

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.partitions: frozenset[int] = frozenset()
        self.total = 0

    def update(self, assigned: Iterable[TopicPartition], total: int) -> None:
        self.partitions = frozenset(tp.partition for tp in assigned if tp.topic == self.topic)
        self.total = total

    def release(self) -> None:
        """Held by nobody here (revoked, or the consumer stopped) until assigned again."""
        self.partitions = frozenset()


def partition_of(key: str, partitions: int) -> int:
    """The partition the producers' default partitioner (murmur2, as the Java client) gives a
    message with this key."""
    return int(murmur2(key.encode()) & 0x7FFFFFFF) % partitions


class LoggingRebalanceListener(ConsumerRebalanceListener):  # type: ignore[misc]
    """Offsets are committed synchronously after every batch, so a revoke has nothing to flush.
    Keeps `assignment` (when given) current."""

    def __init__(
        self,
        group_id: str,
        assignment: Assignment | None = None,
        consumer: AIOKafkaConsumer | None = None,
    ) -> None:
        self.group_id = group_id
        self.assignment = assignment
        self.consumer = consumer

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        log.info("partitions_revoked", group=self.group_id, partitions=sorted(map(str, revoked)))
        if self.assignment is not None:
            self.assignment.release()

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        log.info("partitions_assigned", group=self.group_id, partitions=sorted(map(str, assigned)))
        if self.assignment is not None and self.consumer is not None:
            total = self.consumer.partitions_for_topic(self.assignment.topic) or set()
            self.assignment.update(assigned, len(total))


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


class TopicChanged(Exception):
    """The consumed topic vanished or changed its partition count: subscribe afresh."""


class LostDataWatch:
    """Notices that a consumed topic lost data and makes the consumer re-read it from the start.

    Signs of loss: the committed offset or the fetch position of a partition lies beyond the
    partition's end (the log was truncated, or the topic deleted and recreated), or the topic
    is gone or has another partition count. One error line and a metric when it is found,
    /readyz 503 with the reason until the consumer has read the topic up to where it ended at
    that moment. Re-reading is safe: every consumer is idempotent.
    """

    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        group_id: str,
        topic: str,
        connect: Mapping[str, Any] | None = None,
    ) -> None:
        self._consumer = consumer
        # client_kwargs(settings): where the broker is and how to authenticate to it.
        self._connect = dict(connect or {})
        self._probe: AIOKafkaConsumer | None = None
        self._group = group_id
        self._topic = topic
        self._partitions: int | None = None
        self._catch_up: dict[TopicPartition, int] | None = None
        self._key = f"consumer:{group_id}:{topic}"

    def _lost(self, reason: str) -> None:
        TOPIC_DATA_LOST.labels(self._topic, "consumer").inc()
        log.error(
            "topic_data_lost",
            topic=self._topic,
            group=self._group,
            reason=reason,
            action="re-reading the topic from its earliest offset",
        )
        set_not_ready(self._key, f"{self._topic} lost data ({reason}); {self._group} re-reading")

    async def _still_there(self, tp: TopicPartition, offset: int) -> bool:
        """Whether the partition still holds the record at `offset` (the last one read).

        A reported end below our position is not proof on its own: some brokers (Tansu)
        report the end of a partition as the first offset of its last batch plus one. The
        last record read, though, is never gone from an intact log (retention keeps the
        active segment).
        """
        if not self._connect:
            return False
        if self._probe is None:
            self._probe = AIOKafkaConsumer(
                **self._connect,
                group_id=None,
                enable_auto_commit=False,
                auto_offset_reset="none",
            )
            await self._probe.start()
        self._probe.assign([tp])
        self._probe.seek(tp, offset)
        try:
            batch = await self._probe.getmany(tp, timeout_ms=2000, max_records=1)
        except OffsetOutOfRangeError:
            return False
        return any(r.offset >= offset for records in batch.values() for r in records)

    async def close(self) -> None:
        if self._probe is not None:
            with contextlib.suppress(Exception):
                await self._probe.stop()
            self._probe = None

    async def check(self) -> None:
        consumer = self._consumer
        await consumer.topics()  # a fresh metadata read of all topics
        parts = consumer.partitions_for_topic(self._topic)
        count = len(parts) if parts else 0
        if self._partitions is None and count:
            self._partitions = count
        elif self._partitions is not None and count != self._partitions:
            self._lost(f"topic has {count} partitions, had {self._partitions}")
            raise TopicChanged(self._topic)
        assigned = [tp for tp in consumer.assignment() if tp.topic == self._topic]
        if not assigned:
            if self._key in NOT_READY:  # nothing of the topic left to read here
                clear_not_ready(self._key)
            return
        ends = await consumer.end_offsets(assigned)
        beyond = []
        for tp in assigned:
            committed = await consumer.committed(tp)
            position = await consumer.position(tp)
            reached = max(committed or 0, position)
            if reached > ends[tp] and not await self._still_there(tp, reached - 1):
                beyond.append(tp)
        if beyond:
            self._lost(f"offsets beyond the end of {len(beyond)} partition(s)")
            await consumer.seek_to_beginning(*assigned)
            self._catch_up = dict(ends)
            return
        if self._catch_up is None and self._key in NOT_READY:
            # Subscribed afresh after the topic changed: ready once read up to its end.
            self._catch_up = dict(ends)
        if self._catch_up is not None:
            positions = {tp: await consumer.position(tp) for tp in assigned}
            if all(positions[tp] >= self._catch_up.get(tp, 0) for tp in assigned):
                self._catch_up = None
                clear_not_ready(self._key)
                log.warning("topic_data_reread", topic=self._topic, group=self._group)


class LostDataWatches:
    """One LostDataWatch per topic of a consumer that reads several (the alerter's)."""

    def __init__(self, watches: Sequence[LostDataWatch]) -> None:
        self._watches = list(watches)

    async def check(self) -> None:
        for watch in self._watches:
            await watch.check()

    async def close(self) -> None:
        for watch in self._watches:
            await watch.close()


async def consume_forever(
    consumer: AIOKafkaConsumer,
    producer: AIOKafkaProducer,
    group_id: str,
    handle: BatchHandler,
    stop: asyncio.Event,
    *,
    max_backoff: float = 10.0,
    watch: LostDataWatch | LostDataWatches | None = None,
    check_seconds: float = 5.0,
    outage: Outage | None = None,
) -> None:
    """Fetch, decode, handle, commit. Undecodable messages go to `<topic>.dlq`.

    When `handle` raises (database down, a bug), nothing is committed; the consumer rewinds to
    the committed offsets and the batch comes again after a bounded backoff. A broker outage is
    logged when it starts and when it ends; a failing handler likewise (the first failure with
    its traceback, since it may be a bug).
    """
    backoff = 0.2
    kafka = outage or Outage("kafka", f"consumer:{group_id}")
    handler = Outage("handler", f"consumer:{group_id}")
    loop = asyncio.get_running_loop()
    check_at = loop.time() + check_seconds
    while not stop.is_set():
        if watch is not None and loop.time() >= check_at:
            check_at = loop.time() + check_seconds
            try:
                await watch.check()
            except KafkaError as exc:
                kafka.failed(type(exc).__name__)
        try:
            batches = await consumer.getmany(timeout_ms=200, max_records=1000)
        except KafkaError as exc:
            kafka.failed(type(exc).__name__)
            await sleep_or_stop(stop, backoff)
            backoff = min(max_backoff, backoff * 2)
            continue
        if not batches:
            continue
        try:
            # One handler call (one transaction) for everything this fetch returned, however
            # many partitions it spans: a transaction per partition made the worker's cost per
            # registration several times higher at a steady rate, and its latency too. A
            # pupil's events share a partition, so their order is kept.
            good: list[Delivered] = []
            origin: dict[str, TopicPartition] = {}
            for tp, records in batches.items():
                for record in records:
                    try:
                        event = CloudEvent.from_bytes(record.value or b"")
                    except ValidationError:
                        await _dead_letter(
                            producer,
                            tp.topic,
                            record.value or b"",
                            record.key,
                            reason="undecodable",
                            group=group_id,
                            partition=tp.partition,
                            offset=record.offset,
                        )
                        continue
                    good.append(Delivered(event, _header(record.headers, CORRELATION_HEADER)))
                    origin[event.id] = tp
            if good:
                token = correlation_id.set(good[-1].correlation_id)
                try:
                    refused = await handle(good) or ()
                finally:
                    correlation_id.reset(token)
                handler.succeeded()
                for event in refused:
                    tp = origin[event.id]
                    await _dead_letter(
                        producer,
                        tp.topic,
                        event.to_bytes(),
                        event.subject.encode(),
                        reason="refused",
                        group=group_id,
                        partition=tp.partition,
                    )
            fault_point("consumer_after_handle_before_commit")
            await consumer.commit({tp: records[-1].offset + 1 for tp, records in batches.items()})
            for tp, records in batches.items():
                CONSUMED.labels(tp.topic, group_id).inc(len(records))
            kafka.succeeded()
            backoff = 0.2
        except Exception as exc:
            if isinstance(exc, KafkaError):
                kafka.failed(type(exc).__name__)
            else:
                HANDLER_FAILURES.labels(group_id).inc()
                if handler.failed(type(exc).__name__) and not is_database_outage(exc):
                    log.exception(
                        "batch_failed_will_retry", group=group_id, error=type(exc).__name__
                    )
            await sleep_or_stop(stop, backoff)
            backoff = min(max_backoff, backoff * 2)
            with contextlib.suppress(KafkaError):
                await consumer.seek_to_committed()


async def _dead_letter(
    producer: AIOKafkaProducer,
    topic: str,
    value: bytes,
    key: bytes | None,
    *,
    reason: str,
    group: str,
    partition: int,
    offset: int | None = None,
) -> None:
    """Headers say why and from where (codes and ids only, never the payload): `reason` is
    `undecodable` (not a CloudEvent) or `refused` (its data breaks the contract). An operator
    lists and re-drives dead letters through the api (opspor_api.deadletters)."""
    headers = [
        ("opspor-dlq-reason", reason.encode()),
        ("opspor-dlq-topic", topic.encode()),
        ("opspor-dlq-partition", str(partition).encode()),
        ("opspor-dlq-offset", b"" if offset is None else str(offset).encode()),
        ("opspor-dlq-group", group.encode()),
        ("opspor-dlq-at", datetime.now(UTC).isoformat(timespec="seconds").encode()),
    ]
    await producer.send_and_wait(dlq_topic(topic), value=value, key=key, headers=headers)
    DEAD_LETTERED.labels(topic).inc()
    log.warning("dead_lettered", topic=topic, reason=reason)


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
