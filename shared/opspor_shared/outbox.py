"""Transactional outbox: events are written in the same transaction as the facts they report,
and a relay publishes them to Kafka after commit, deleting each row once the broker acked it.

If Kafka is down the rows wait; the service keeps accepting work and the relay catches up.
A crash between the ack and the delete publishes a row twice; consumers are idempotent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from aiokafka import AIOKafkaProducer
from prometheus_client import Counter, Gauge
from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Identity,
    LargeBinary,
    MetaData,
    Table,
    Text,
    delete,
    func,
    insert,
    select,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from opspor_shared.db import unit_of_work
from opspor_shared.events import CloudEvent
from opspor_shared.logging import CORRELATION_HEADER, get_logger
from opspor_shared.stopping import sleep_or_stop

log = get_logger(__name__)

PUBLISHED = Counter("opspor_outbox_published_total", "Outbox rows published", ["table"])
RELAY_ERRORS = Counter("opspor_outbox_relay_errors_total", "Failed relay rounds", ["table"])
PENDING = Gauge(
    "opspor_outbox_pending", "Outbox rows seen waiting at the last relay round", ["table"]
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
        Column("key", Text, nullable=False),
        Column("payload", LargeBinary, nullable=False),
        Column("headers", JSONB, nullable=False, server_default="{}"),
        Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    )


@dataclass(frozen=True)
class OutboxMessage:
    topic: str
    key: str
    event: CloudEvent
    correlation_id: str | None = None

    def row(self) -> dict[str, object]:
        headers = {CORRELATION_HEADER: self.correlation_id} if self.correlation_id else {}
        return {
            "topic": self.topic,
            "key": self.key,
            "payload": self.event.to_bytes(),
            "headers": headers,
        }


async def enqueue(session: AsyncSession, table: Table, messages: Sequence[OutboxMessage]) -> None:
    if messages:
        await session.execute(insert(table), [m.row() for m in messages])


class OutboxRelay:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        table: Table,
        producer: AIOKafkaProducer,
        *,
        batch_size: int = 1000,
        idle_interval: float = 0.05,
        max_backoff: float = 5.0,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._table = table
        self._producer = producer
        self._batch_size = batch_size
        self._idle_interval = idle_interval
        self._max_backoff = max_backoff

    async def publish_once(self) -> int:
        t = self._table
        async with unit_of_work(self._sessionmaker) as session:
            rows = (
                await session.execute(
                    select(t.c.id, t.c.topic, t.c.key, t.c.payload, t.c.headers, t.c.created_at)
                    .order_by(t.c.id)
                    .limit(self._batch_size)
                    .with_for_update(skip_locked=True)
                )
            ).all()
            PENDING.labels(t.name).set(len(rows))
            # Ids grow with time, so the first row (by id) is the oldest one waiting.
            oldest_tracker(t.name).created = rows[0].created_at if rows else None
            if not rows:
                return 0
            futures = [
                await self._producer.send(
                    row.topic,
                    value=row.payload,
                    key=row.key.encode(),
                    headers=[(k, str(v).encode()) for k, v in row.headers.items()],
                )
                for row in rows
            ]
            await asyncio.gather(*futures)
            await session.execute(delete(t).where(t.c.id.in_([row.id for row in rows])))
        PUBLISHED.labels(t.name).inc(len(rows))
        return len(rows)

    async def run(self, stop: asyncio.Event) -> None:
        backoff = self._idle_interval
        while not stop.is_set():
            try:
                published = await self.publish_once()
                backoff = self._idle_interval
            except Exception as exc:
                RELAY_ERRORS.labels(self._table.name).inc()
                log.warning("outbox_relay_failed", table=self._table.name, error=type(exc).__name__)
                published = 0
                backoff = min(self._max_backoff, max(backoff * 2, 0.2))
            if published >= self._batch_size:
                continue
            await sleep_or_stop(stop, backoff)
