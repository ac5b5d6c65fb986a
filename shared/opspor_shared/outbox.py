"""Transactional outbox: events are written in the same transaction as the facts they report,
and a relay publishes them to Kafka after commit, deleting each row once the broker acked it.

A row holds the events of one transaction for one topic, in order, with their keys and
headers side by side: a 1,000-item request writes and deletes one row, not 1,000. Order across
topics means nothing to Kafka; order inside a topic (and so inside a partition) is kept.

If Kafka is down the rows wait; the service keeps accepting work and the relay catches up.
A crash between the ack and the delete publishes a row twice; consumers are idempotent.
The relay returns after a failed round so its caller reconnects and ensures the topics again.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.structs import RecordMetadata
from prometheus_client import Counter, Gauge
from sqlalchemy import (
    ARRAY,
    BigInteger,
    Column,
    DateTime,
    Identity,
    LargeBinary,
    MetaData,
    Row,
    Select,
    Table,
    Text,
    bindparam,
    delete,
    event,
    func,
    insert,
    select,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session

from opspor_shared.db import unit_of_work
from opspor_shared.events import CloudEvent
from opspor_shared.faults import fault_point
from opspor_shared.kafka import TOPIC_DATA_LOST, partition_of
from opspor_shared.logging import CORRELATION_HEADER, get_logger
from opspor_shared.outage import Outage, clear_not_ready, set_not_ready

log = get_logger(__name__)

PUBLISHED = Counter("opspor_outbox_published_total", "Events published from the outbox", ["table"])
RELAY_ERRORS = Counter("opspor_outbox_relay_errors_total", "Failed relay rounds", ["table"])
PENDING = Gauge(
    "opspor_outbox_pending",
    "Outbox rows (each holds one or more events) seen waiting at the last relay round",
    ["table"],
)
OLDEST_AGE = Gauge(
    "opspor_outbox_oldest_pending_age_seconds",
    "Age of the oldest unpublished outbox row seen; keeps growing while the relay cannot run",
    ["table"],
)


class _Oldest:
    """The oldest pending row's creation time as last seen, turned into an age at scrape time,
    so the age keeps growing while the relay is stuck and nothing updates it."""

    def __init__(self, table: str) -> None:
        self.created: datetime | None = None
        OLDEST_AGE.labels(table).set_function(self.age)

    def age(self) -> float:
        if self.created is None:
            return 0.0
        return max((datetime.now(UTC) - self.created).total_seconds(), 0.0)


_OLDEST: dict[str, _Oldest] = {}


def oldest_tracker(table: str) -> _Oldest:
    if table not in _OLDEST:
        _OLDEST[table] = _Oldest(table)
    return _OLDEST[table]


async def peek_oldest(sessionmaker: async_sessionmaker[AsyncSession], table: Table) -> None:
    """Updates the age gauge when the relay cannot publish (the broker is down)."""
    async with sessionmaker() as session:
        oldest = await session.scalar(select(func.min(table.c.created_at)))
    oldest_tracker(table.name).created = oldest


def outbox_table(name: str, metadata: MetaData) -> Table:
    return Table(
        name,
        metadata,
        Column("id", BigInteger, Identity(), primary_key=True),
        Column("topic", Text, nullable=False),
        Column("partition_keys", ARRAY(Text), nullable=False),
        Column("payloads", ARRAY(LargeBinary), nullable=False),
        # One JSON object per event, in the order of `partition_keys`.
        Column("headers", JSONB, nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    )


def waiting_events(table: Table) -> Select[int]:
    """How many events wait in an outbox table (a row holds one or more)."""
    return select(func.coalesce(func.sum(func.cardinality(table.c.partition_keys)), 0))


@dataclass(frozen=True)
class OutboxMessage:
    topic: str
    key: str
    event: CloudEvent
    correlation_id: str | None = None

    def headers(self) -> dict[str, str]:
        return {CORRELATION_HEADER: self.correlation_id} if self.correlation_id else {}


# Relays of this process wait for their table's event (or their idle interval): a commit that
# wrote outbox rows wakes the relay at once, instead of after up to one polling interval.
# Per event loop: an asyncio.Event belongs to the loop that first waits on it. A session that
# wrote outbox rows names their tables in its info under _WROTE until it commits.
_WROTE = "outbox_tables_written"
_WAKE: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, asyncio.Event]] = (
    weakref.WeakKeyDictionary()
)


def wake_event(table: str) -> asyncio.Event:
    events = _WAKE.setdefault(asyncio.get_running_loop(), {})
    return events.setdefault(table, asyncio.Event())


@event.listens_for(Session, "after_commit")
def _wake_relays(session: Session) -> None:
    names = session.info.pop(_WROTE, ())
    try:
        events = _WAKE.get(asyncio.get_running_loop(), {})
    except RuntimeError:  # a synchronous session outside any loop: no relay here to wake
        return
    for name in names:
        if (wake := events.get(name)) is not None:
            wake.set()


@event.listens_for(Session, "after_rollback")
def _forget_rows(session: Session) -> None:
    session.info.pop(_WROTE, None)


async def enqueue(session: AsyncSession, table: Table, messages: Sequence[OutboxMessage]) -> None:
    """One statement and one row per topic, however many messages; ids and the order inside a
    row follow `messages`, so the relay publishes them in that order. The table's relay is
    woken when the session commits."""
    if not messages:
        return
    session.info.setdefault(_WROTE, set()).add(table.name)
    per_topic: dict[str, list[OutboxMessage]] = {}
    for m in messages:
        per_topic.setdefault(m.topic, []).append(m)
    await session.execute(
        insert(table),
        [
            {
                "topic": topic,
                "partition_keys": [m.key for m in run],
                "payloads": [m.event.to_bytes() for m in run],
                "headers": [m.headers() for m in run],
            }
            for topic, run in per_topic.items()
        ],
    )


# Called with the topic that lost events; returns how many events it queued again.
TopicLostHandler = Callable[[str], Awaitable[int]]


class OutboxRelay:
    """Publishes outbox rows in id order and deletes them once the broker acked them.

    It also remembers the highest offset the broker gave each partition. A later ack with a
    lower offset means the topic lost what was published before (a broker that keeps topics in
    memory restarted, or a topic was deleted and recreated): the rows are gone from the outbox,
    so the relay logs one error, turns /readyz 503 and calls `on_topic_lost`, which queues the
    service's events again from its tables (see opspor_shared.replay). /readyz is ready again
    once that backlog is published.
    """

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        table: Table,
        producer: AIOKafkaProducer | None,
        *,
        batch_size: int = 1000,
        idle_interval: float = 0.25,
        max_backoff: float = 5.0,
        on_topic_lost: TopicLostHandler | None = None,
        ensure: Callable[[], Awaitable[object]] | None = None,
        ensure_every_seconds: float = 30.0,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._table = table
        self.producer = producer
        self._batch_size = batch_size
        self._idle_interval = idle_interval
        self._max_backoff = max_backoff
        self._on_topic_lost = on_topic_lost
        self._high: dict[tuple[str, int], int] = {}
        self._replaying = False
        self._key = f"relay:{table.name}"
        # The three statements of a round, built once: a busy relay runs a round for nearly
        # every commit of its service. `ids` expands to one parameter per chosen row.
        c = table.c
        self._lock_waiting = (
            select(c.id, func.cardinality(c.partition_keys), c.created_at)
            .order_by(c.id)
            .limit(batch_size)
            .with_for_update(skip_locked=True)
        )
        chosen = c.id.in_(bindparam("ids", expanding=True))
        self._read_chosen = (
            select(c.topic, c.partition_keys, c.payloads, c.headers).where(chosen).order_by(c.id)
        )
        self._delete_chosen = delete(table).where(chosen)
        # Topics are ensured on every reconnect by the caller, and also every so often: a
        # broker restarted while the relay was idle is not noticed by a failed send, and would
        # auto-create the topic with its own partition count at the next one.
        self._ensure = ensure
        self._ensure_every = ensure_every_seconds

    async def publish_once(self) -> tuple[int, bool]:
        """Publishes the oldest rows, up to `batch_size` events (at least one row, however
        long); returns how many events it published and whether more rows were waiting."""
        t = self._table
        assert self.producer is not None
        lost: set[str] = set()
        async with unit_of_work(self._sessionmaker) as session:
            # Lock first, by id and size only, then read the chosen rows' events: a row can
            # hold thousands of them.
            waiting = (await session.execute(self._lock_waiting)).all()
            PENDING.labels(t.name).set(len(waiting))
            # Ids grow with time, so the first row (by id) is the oldest one waiting.
            oldest_tracker(t.name).created = waiting[0].created_at if waiting else None
            chosen: list[int] = []
            events = 0
            for row_id, size, _ in waiting:
                if chosen and events + size > self._batch_size:
                    break
                chosen.append(row_id)
                events += size
            if not chosen:
                return 0, False
            rows = (await session.execute(self._read_chosen, {"ids": chosen})).all()
            fault_point("relay_before_publish")
            acks = await self._send(rows)
            for meta in acks:
                key = (meta.topic, meta.partition)
                if meta.offset < self._high.get(key, -1):
                    lost.add(meta.topic)
                self._high[key] = max(meta.offset, self._high.get(key, -1))
            fault_point("relay_after_publish_before_delete")
            await session.execute(self._delete_chosen, {"ids": chosen})
        PUBLISHED.labels(t.name).inc(events)
        for topic in sorted(lost):
            await self._topic_lost(topic)
        return events, len(chosen) < len(waiting) or len(waiting) == self._batch_size

    async def _send(self, rows: Sequence[Row[Any, Any, Any, Any]]) -> list[RecordMetadata]:
        """Sends the rows' events in order as record batches, one open batch per partition,
        each event to the partition `send` would choose (murmur2 of its key). One `send` per
        event cost three times the CPU: a future and an accumulator lookup each."""
        assert self.producer is not None
        producer = self.producer
        futures = []
        for row in rows:
            partitions = len(await producer.partitions_for(row.topic))
            batches: dict[int, BatchBuilder] = {}
            for key, payload, headers in zip(
                row.partition_keys, row.payloads, row.headers, strict=True
            ):
                partition = partition_of(key, partitions)
                record = {
                    "key": key.encode(),
                    "value": payload,
                    "timestamp": None,
                    "headers": [(k, str(v).encode()) for k, v in headers.items()],
                }
                batch = batches.get(partition)
                # A full batch takes nothing more (append answers None): send it, start the
                # next one. An empty batch always takes its first record.
                if batch is None or batch.append(**record) is None:
                    if batch is not None:
                        futures.append(
                            await producer.send_batch(batch, row.topic, partition=partition)
                        )
                    batch = batches[partition] = producer.create_batch()
                    batch.append(**record)
            for partition, batch in batches.items():
                futures.append(await producer.send_batch(batch, row.topic, partition=partition))
        return list(await asyncio.gather(*futures))

    async def _topic_lost(self, topic: str) -> None:
        # Offsets restart from the new log: forget the old marks of this topic.
        self._high = {k: v for k, v in self._high.items() if k[0] != topic}
        TOPIC_DATA_LOST.labels(topic, "producer").inc()
        queued = await self._on_topic_lost(topic) if self._on_topic_lost is not None else 0
        action = (
            f"queued {queued} events again from the database"
            if self._on_topic_lost is not None
            else "run opspor-replay to publish the events again"
        )
        log.error("topic_data_lost", topic=topic, table=self._table.name, action=action)
        set_not_ready(self._key, f"{topic} lost published events; {action}")
        self._replaying = True

    async def run(self, stop: asyncio.Event, outage: Outage | None = None) -> bool:
        """Publishes until `stop`; returns after a failed round (the caller reconnects).

        True when at least one round succeeded before that.
        """
        succeeded = False
        loop = asyncio.get_running_loop()
        ensure_at = loop.time() + self._ensure_every
        while not stop.is_set():
            try:
                if self._ensure is not None and loop.time() >= ensure_at:
                    ensure_at = loop.time() + self._ensure_every
                    await self._ensure()
                published, more = await self.publish_once()
            except Exception as exc:
                RELAY_ERRORS.labels(self._table.name).inc()
                if outage is not None:
                    outage.failed(type(exc).__name__)
                else:
                    log.warning(
                        "outbox_relay_failed", table=self._table.name, error=type(exc).__name__
                    )
                return succeeded
            succeeded = True
            if outage is not None:
                outage.succeeded()
            if more:
                continue
            if self._replaying and published == 0:
                self._replaying = False
                clear_not_ready(self._key)
                log.warning("topic_data_republished", table=self._table.name)
            await self._idle(stop)
        return succeeded

    async def _idle(self, stop: asyncio.Event) -> None:
        """Until a commit wrote rows to the table, `stop`, or the idle interval (rows written by
        other processes are found by polling)."""
        wake = wake_event(self._table.name)
        waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(wake.wait())]
        try:
            await asyncio.wait(
                waiters, timeout=self._idle_interval, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for waiter in waiters:
                waiter.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)
        wake.clear()
