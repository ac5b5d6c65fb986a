"""The worker's read of a pupil's registrations (one row per pupil, an array per column, the
latest school picked by PostgreSQL) against the Python definitions it replaces: the live rows
as the engine takes them, and `school_of_latest` as the api's dry run picks it."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import NamedTuple

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from opspor_shared.db import unit_of_work
from opspor_shared.registrations import school_of_latest
from opspor_worker.repository import WorkerRepository


class Row(NamedTuple):
    pupil_id: str
    date: date
    slot: str
    school_id: str
    category: str | None
    extent: Decimal | None
    recorded_at: datetime
    event_id: str
    retracted: bool


BASE = datetime(2026, 9, 1, 8, tzinfo=UTC)
# Few values each, so that dates, report times and slots tie often; event ids whose order
# differs between code points and a linguistic collation (case, punctuation, digits). Event
# ids are unique, as each row's is the id of the event that wrote it (the api keeps one
# event per id): a full tie has no defined winner.
row = st.builds(
    Row,
    pupil_id=st.sampled_from(["p1", "p2", "p3"]),
    date=st.sampled_from([date(2026, 9, d) for d in (7, 8, 9)]),
    slot=st.sampled_from(["day", "am", "pm", "Lesson-2", "lesson 1"]),
    school_id=st.sampled_from(["a", "b", "c"]),
    category=st.sampled_from(["illness", "authorized", "unauthorized", None]),
    extent=st.sampled_from([Decimal("1.0000"), Decimal("0.5000"), None]),
    recorded_at=st.sampled_from([BASE, BASE + timedelta(hours=1)]),
    event_id=st.text(alphabet="aAeEzZ-_19é", min_size=1, max_size=3),
    retracted=st.booleans(),
)


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    rows=st.lists(
        row,
        max_size=25,
        unique_by=(lambda r: (r.pupil_id, r.date, r.slot), lambda r: r.event_id),
    )
)
async def test_the_read_gives_the_live_registrations_and_the_latest_school(
    clean_db: AsyncEngine, sessionmaker: async_sessionmaker[AsyncSession], rows: list[Row]
) -> None:
    async with unit_of_work(sessionmaker) as session:
        await session.execute(text("delete from worker_registrations"))
        if rows:
            await session.execute(
                text(
                    "insert into worker_registrations (pupil_id, date, slot, school_id, "
                    "category, extent, recorded_at, event_id, retracted) values (:pupil_id, "
                    ":date, :slot, :school_id, :category, :extent, :recorded_at, :event_id, "
                    ":retracted)"
                ),
                [r._asdict() for r in rows],
            )
    pupils = ["p1", "p2", "p3", "nobody"]
    async with unit_of_work(sessionmaker) as session:
        read = await WorkerRepository(session).registrations(pupils)

    assert set(read) == set(pupils)
    for pupil in pupils:
        mine = [r for r in rows if r.pupil_id == pupil]
        live = read[pupil].live
        # Position i of each column is one registration: compared as whole registrations.
        got = sorted(zip(live.dates, live.slots, live.categories, live.extents, strict=True))
        wanted = sorted(
            (r.date, r.slot, r.category, r.extent)
            for r in mine
            if not r.retracted and r.category is not None and r.extent is not None
        )
        assert got == wanted
        assert read[pupil].latest_school == school_of_latest(mine)
