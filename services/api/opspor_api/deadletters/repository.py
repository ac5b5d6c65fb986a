"""The dead letters' two stores: the `<topic>.dlq` topic on the broker (read from its one
partition without a consumer group, so reading moves no offset) and the record of re-drives in
PostgreSQL."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from opspor_api.models import DeadLetterRedrive
from opspor_shared.kafka import make_producer
from opspor_shared.kafka_security import client_kwargs
from opspor_shared.settings import ServiceSettings

# Bounds on one read: a page never waits on the broker longer than this.
READ_SECONDS = 10.0


class DeadLetterTopic:
    def __init__(self, settings: ServiceSettings, topic: str) -> None:
        self.settings = settings
        self.topic = topic
        self.partition = TopicPartition(topic, 0)  # dead-letter topics have one partition

    async def read(self, after: int | None, limit: int) -> tuple[list[Any], int, int]:
        """Up to `limit` records after the offset `after`, and the topic's (start, end)."""
        consumer = AIOKafkaConsumer(
            **client_kwargs(self.settings), group_id=None, enable_auto_commit=False
        )
        await consumer.start()
        try:
            if self.topic not in await consumer.topics():
                return [], 0, 0
            consumer.assign([self.partition])
            start = (await consumer.beginning_offsets([self.partition]))[self.partition]
            end = (await consumer.end_offsets([self.partition]))[self.partition]
            first = max(start, 0 if after is None else after + 1)
            if first >= end:
                return [], start, end
            consumer.seek(self.partition, first)
            found: list[Any] = []
            deadline = time.monotonic() + READ_SECONDS
            while len(found) < limit and time.monotonic() < deadline:
                batch = await consumer.getmany(self.partition, timeout_ms=500, max_records=limit)
                found += batch.get(self.partition, [])
                if found and found[-1].offset >= end - 1:
                    break
                await asyncio.sleep(0)
            return found[:limit], start, end
        finally:
            await consumer.stop()

    async def counts(self) -> tuple[int, int]:
        _, start, end = await self.read(None, 0)
        return start, end


async def resend(settings: ServiceSettings, records: Sequence[tuple[str, Any]], by: str) -> None:
    """Each (source topic, record) back to its topic: same key and value, with its headers and
    the re-drive marked."""
    producer: AIOKafkaProducer = make_producer(settings, "dlq-redrive")
    await producer.start()
    try:
        for topic, record in records:
            headers = [(k, v) for k, v in (record.headers or ()) if not k.startswith("opspor-dlq")]
            headers.append(("opspor-redriven-by", by.encode()))
            await producer.send_and_wait(topic, value=record.value, key=record.key, headers=headers)
    finally:
        await producer.stop()


class RedriveRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def of(self, topic: str, offsets: Sequence[int] | None = None) -> dict[int, Any]:
        query = select(DeadLetterRedrive).where(DeadLetterRedrive.topic == topic)
        if offsets is not None:
            query = query.where(DeadLetterRedrive.dlq_offset.in_(offsets))
        return {r.dlq_offset: r for r in await self.session.scalars(query)}

    async def count(self, topic: str) -> int:
        return int(
            await self.session.scalar(select(func.count()).where(DeadLetterRedrive.topic == topic))
            or 0
        )

    async def claim(self, topic: str, offsets: Sequence[int], by: str) -> list[int]:
        """Records the re-drives; returns the offsets this call claimed (a concurrent call
        waits on the rows and claims none of the same)."""
        if not offsets:
            return []
        stmt = (
            insert(DeadLetterRedrive)
            .values([{"topic": topic, "dlq_offset": o, "by": by} for o in offsets])
            .on_conflict_do_nothing()
            .returning(DeadLetterRedrive.dlq_offset)
        )
        return sorted((await self.session.scalars(stmt)).all())
