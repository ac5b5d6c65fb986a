"""Decision (README, "Register completeness"): a missing register changes nothing in detection.
The worker evaluates what was registered whether or not the school declared its registers
complete; declaring them later changes no concern either. The report and the silent-school
alert are where a missing register shows."""

from __future__ import annotations

from datetime import date

from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from opspor_api.models import RegisterCompletion
from opspor_worker.service import Context, tick
from tests.support import school_days
from tests.worker.test_worker import FIRST, NOW, concerns, feed, outbox, reg


async def declare(sessionmaker: async_sessionmaker[AsyncSession], days: list[date]) -> None:
    async with sessionmaker() as session, session.begin():
        await session.execute(
            insert(RegisterCompletion),
            [
                {"school_id": "vestbjerg", "date": d, "class_id": "", "recorded_at": NOW}
                for d in days
            ],
        )


async def test_days_without_a_register_neither_hold_back_nor_change_a_concern(
    ctx: Context, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    days = school_days(FIRST, 10)
    # Only the first two days were declared complete; the absences still count.
    await declare(sessionmaker, days[:2])
    await feed(sessionmaker, ctx, [reg("p1", d) for d in days[:5]])
    held = await concerns(sessionmaker)
    assert held["consecutive-5"].crossing_date == days[4]
    before = await outbox(sessionmaker)
    # The school declares the rest afterwards; the next tick changes nothing.
    await declare(sessionmaker, days[2:])
    await tick(sessionmaker, ctx)
    assert await outbox(sessionmaker) == before
    assert {k: (c.status, c.revision) for k, c in (await concerns(sessionmaker)).items()} == {
        k: (c.status, c.revision) for k, c in held.items()
    }
