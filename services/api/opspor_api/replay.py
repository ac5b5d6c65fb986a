"""Events queued again from the api's tables (the database is the record).

Registrations: every accepted event is kept in `registration_events` until retention; queuing
them in the outbox again makes the relay publish them to the registrations topic once more.
The worker applies registrations newest-wins by event, so a replay changes nothing already
right and restores what a broker lost.

Cases: each case's current state is published again (opspor_api.cases.service.republish);
events carry deterministic ids, so a consumer that holds one ignores it, and the alerter keeps
one reminder per case, reason and day.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from opspor_api.cases import service as cases_service
from opspor_api.cases.repository import CaseRepository
from opspor_api.models import RegistrationEvent, api_outbox
from opspor_shared.db import unit_of_work
from opspor_shared.events import RegistrationData, registration_event
from opspor_shared.outbox import OutboxMessage, enqueue

CHUNK = 2000


def registration_message(row: RegistrationEvent, topic: str) -> OutboxMessage:
    """The same event the api published when it accepted the registration."""
    data = RegistrationData.model_validate(row, from_attributes=True)
    return OutboxMessage(topic=topic, key=data.pupil_id, event=registration_event(data))


async def replay_registrations(
    sessionmaker: async_sessionmaker[AsyncSession],
    topic: str,
    *,
    since: datetime | None = None,
    schools: Sequence[str] = (),
) -> int:
    """Queues the stored events (received since `since`, of `schools`) in chunks of their own
    transactions, so a large replay neither holds locks long nor blocks the relay."""
    queued = 0
    after = ""
    while True:
        async with unit_of_work(sessionmaker) as session:
            stmt = (
                select(RegistrationEvent)
                .where(RegistrationEvent.event_id > after)
                .order_by(RegistrationEvent.event_id)
                .limit(CHUNK)
            )
            if since is not None:
                stmt = stmt.where(RegistrationEvent.received_at >= since)
            if schools:
                stmt = stmt.where(RegistrationEvent.school_id.in_(list(schools)))
            rows = list(await session.scalars(stmt))
            await enqueue(session, api_outbox, [registration_message(r, topic) for r in rows])
        queued += len(rows)
        if len(rows) < CHUNK:
            return queued
        after = rows[-1].event_id


async def replay_cases(
    sessionmaker: async_sessionmaker[AsyncSession],
    topic: str,
    *,
    since: datetime | None = None,
    schools: Sequence[str] = (),
) -> int:
    """Queues the current state of every case (changed since `since`, of `schools`) in chunks
    of their own transactions; returns the events queued."""
    queued = 0
    after: uuid.UUID | None = None
    while True:
        async with unit_of_work(sessionmaker) as session:
            repo = CaseRepository(session, topic)
            page = await repo.every_case(after, CHUNK, since=since, schools=schools)
            queued += await cases_service.republish(repo, page, datetime.now(UTC))
        if len(page) < CHUNK:
            return queued
        after = page[-1].id
