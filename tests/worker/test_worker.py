"""The threshold-worker's logic on real PostgreSQL: storing, evaluating, diffing, ticking."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from opspor_shared.db import unit_of_work
from opspor_shared.events import (
    CONCERN_RAISED,
    CONCERN_WITHDRAWN,
    REGISTRATION_RECORDED,
    REGISTRATION_RETRACTED,
    CloudEvent,
    ConcernData,
    RegistrationData,
)
from opspor_shared.kafka import Delivered
from opspor_worker.models import Concern, worker_outbox
from opspor_worker.repository import WorkerRepository
from opspor_worker.service import Context, handle_registrations, tick
from tests.support import school_days

# Friday 20 Nov 2026, noon in Copenhagen: horizon = that Friday.
NOW = datetime(2026, 11, 20, 11, 0, tzinfo=UTC)
FIRST = date(2026, 9, 7)  # a Monday, no holidays in the following weeks


def reg(
    pupil: str,
    day: date,
    *,
    category: str = "unauthorized",
    extent: str = "1",
    slot: str = "day",
    recorded_at: datetime | None = None,
    retracted: bool = False,
    event_id: str | None = None,
) -> Delivered:
    data = RegistrationData(
        event_id=event_id or uuid.uuid4().hex,
        pupil_id=pupil,
        school_id="vestbjerg",
        date=day,
        slot=slot,
        category=None if retracted else category,  # type: ignore[arg-type]
        extent=None if retracted else Decimal(extent),
        recorded_at=recorded_at or datetime.combine(day, datetime.min.time(), UTC),
        retracted=retracted,
    )
    event = CloudEvent(
        id=data.event_id,
        source="/tests",
        type=REGISTRATION_RETRACTED if retracted else REGISTRATION_RECORDED,
        time=data.recorded_at,
        subject=pupil,
        data=data.model_dump(mode="json"),
    )
    return Delivered(event, None)


async def feed(
    sessionmaker: async_sessionmaker[AsyncSession], ctx: Context, batch: Sequence[Delivered]
) -> int:
    async with unit_of_work(sessionmaker) as session:
        return await handle_registrations(WorkerRepository(session), ctx, batch)


async def concerns(sessionmaker: async_sessionmaker[AsyncSession]) -> dict[str, Concern]:
    async with sessionmaker() as session:
        return {c.rule_id: c for c in await session.scalars(select(Concern))}


async def outbox(sessionmaker: async_sessionmaker[AsyncSession]) -> list[CloudEvent]:
    async with sessionmaker() as session:
        rows = await session.execute(select(worker_outbox.c.payloads).order_by(worker_outbox.c.id))
        return [CloudEvent.from_bytes(p) for r in rows for p in r.payloads]


async def test_five_consecutive_days_raise_one_concern_with_an_explanation(
    ctx: Context, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    days = school_days(FIRST, 5)
    assert await feed(sessionmaker, ctx, [reg("p1", d) for d in days[:4]]) == 0
    assert await feed(sessionmaker, ctx, [reg("p1", days[4])]) == 1
    held = await concerns(sessionmaker)
    assert set(held) == {"consecutive-5"}
    concern = held["consecutive-5"]
    assert (concern.status, concern.revision, concern.crossing_date) == ("active", 1, days[4])
    explanation = concern.explanation
    assert explanation["window_first"] == days[0].isoformat()
    assert [c["date"] for c in explanation["contributing"]] == [d.isoformat() for d in days]
    assert "limit 5" in explanation["summary"]
    [event] = await outbox(sessionmaker)
    assert event.type == CONCERN_RAISED
    assert event.id == f"{concern.concern_id}:1"
    data = ConcernData.model_validate(event.data)
    assert (data.school_id, data.municipality_id, data.level) == ("vestbjerg", "aalborg", "concern")


async def test_replaying_the_same_events_changes_nothing(
    ctx: Context, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    batch = [reg("p1", d) for d in school_days(FIRST, 5)]
    await feed(sessionmaker, ctx, batch)
    before = await outbox(sessionmaker)
    assert await feed(sessionmaker, ctx, batch) == 0
    assert await feed(sessionmaker, ctx, list(reversed(batch))) == 0
    assert len(await outbox(sessionmaker)) == len(before) == 1


async def test_a_correction_withdraws_and_a_later_one_raises_again(
    ctx: Context, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    days = school_days(FIRST, 5)
    await feed(sessionmaker, ctx, [reg("p1", d) for d in days])
    at = datetime(2026, 11, 1, tzinfo=UTC)
    # The parents did call in: day 3 was illness, recorded later.
    await feed(sessionmaker, ctx, [reg("p1", days[2], category="illness", recorded_at=at)])
    concern = (await concerns(sessionmaker))["consecutive-5"]
    assert (concern.status, concern.revision) == ("withdrawn", 2)
    # An older copy arriving late changes nothing (last recorded_at wins).
    await feed(sessionmaker, ctx, [reg("p1", days[2], recorded_at=at - timedelta(days=1))])
    assert (await concerns(sessionmaker))["consecutive-5"].status == "withdrawn"
    # A newer correction back to unauthorized raises the same concern again.
    await feed(sessionmaker, ctx, [reg("p1", days[2], recorded_at=at + timedelta(days=1))])
    concern = (await concerns(sessionmaker))["consecutive-5"]
    assert (concern.status, concern.revision) == ("active", 3)
    types = [e.type for e in await outbox(sessionmaker)]
    assert types == [CONCERN_RAISED, CONCERN_WITHDRAWN, CONCERN_RAISED]


async def test_a_retraction_withdraws(
    ctx: Context, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    days = school_days(FIRST, 5)
    await feed(sessionmaker, ctx, [reg("p1", d) for d in days])
    late = datetime(2026, 11, 1, tzinfo=UTC)
    await feed(sessionmaker, ctx, [reg("p1", days[0], retracted=True, recorded_at=late)])
    assert (await concerns(sessionmaker))["consecutive-5"].status == "withdrawn"


async def test_days_after_the_horizon_count_only_once_the_day_has_come(
    ctx: Context, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    # Planned absence registered ahead: Mon 16 - Fri 20 Nov and Mon 23 Nov.
    days = school_days(date(2026, 11, 18), 5)  # Wed 18 .. Tue 24 Nov
    now = datetime(2026, 11, 23, 6, 0, tzinfo=UTC)  # Monday morning
    ctx.clock = lambda: now - timedelta(days=3)  # Friday 20 Nov
    await feed(sessionmaker, ctx, [reg("p1", d) for d in days])
    assert await concerns(sessionmaker) == {}
    ctx.clock = lambda: now  # the day changes: Monday 23 Nov is now the horizon
    assert await tick(sessionmaker, ctx) == 0  # 4 of 5 days have come
    ctx.clock = lambda: now + timedelta(days=1)
    assert await tick(sessionmaker, ctx) == 1
    assert (await concerns(sessionmaker))["consecutive-5"].crossing_date == days[4]
    # Nothing changed since the last tick: nothing is evaluated again.
    assert await tick(sessionmaker, ctx) == 0
