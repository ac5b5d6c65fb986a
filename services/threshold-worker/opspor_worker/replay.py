"""Concern events queued again from the worker's tables (the database is the record).

Each concern's current revision is queued in the outbox again; the relay publishes it to the
concerns topic. The api's projection and the alerter apply a revision only when it is newer
than the one they hold, so a replay changes nothing already right and restores what a broker
lost (the alerter mails a concern it never heard of, and nothing it has already mailed).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from opspor_shared.db import unit_of_work
from opspor_shared.outbox import enqueue
from opspor_worker.models import Concern, worker_outbox
from opspor_worker.service import concern_message

CHUNK = 2000


async def replay_concerns(
    sessionmaker: async_sessionmaker[AsyncSession],
    topic: str,
    *,
    since: datetime | None = None,
    schools: Sequence[str] = (),
) -> int:
    """Queues the current revision of every concern (changed since `since`, of `schools`)."""
    queued = 0
    after = uuid.UUID(int=0)
    while True:
        async with unit_of_work(sessionmaker) as session:
            stmt = (
                select(Concern)
                .where(Concern.concern_id > after)
                .order_by(Concern.concern_id)
                .limit(CHUNK)
            )
            if since is not None:
                stmt = stmt.where(Concern.updated_at >= since)
            if schools:
                stmt = stmt.where(Concern.school_id.in_(list(schools)))
            rows = list(await session.scalars(stmt))
            messages = [
                # The time the revision was made: retention decisions downstream depend on it.
                concern_message(c, topic, c.withdrawn_at or c.updated_at)
                for c in rows
            ]
            await enqueue(session, worker_outbox, messages)
        queued += len(rows)
        if len(rows) < CHUNK:
            return queued
        after = rows[-1].concern_id
