"""The worker reads a pupil's school of their latest registration from PostgreSQL (a window
function over the rows it reads anyway); the api's dry run of a pack decides it in Python
(opspor_shared.registrations.school_of_latest). Both must pick the same school, ties,
retractions and event ids that collate differently from code points included."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from opspor_shared.registrations import school_of_latest
from opspor_worker.models import WorkerRegistration
from opspor_worker.repository import WorkerRepository

PUPILS = ["p1", "p2", "p3"]
BASE = datetime(2026, 9, 1, 8, tzinfo=UTC)

# A row per (pupil, date, slot): few dates, times and schools, so that ties are common; event
# ids mix cases and punctuation, which a linguistic collation orders unlike Python.
row = st.tuples(
    st.sampled_from(["a", "b", "c"]),  # school
    st.integers(0, 2),  # recorded_at, hours after BASE
    st.text(alphabet="aAbB-_z", min_size=1, max_size=3),  # event id
    st.booleans(),  # retracted
)
rows = st.dictionaries(
    st.tuples(st.sampled_from(PUPILS), st.integers(0, 2), st.sampled_from(["day", "am", "pm"])),
    row,
    max_size=20,
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(stored=rows)
async def test_the_worker_picks_the_school_of_the_latest_registration_as_python_does(
    clean_db: AsyncEngine,
    sessionmaker: async_sessionmaker[AsyncSession],
    stored: dict[tuple[str, int, str], tuple[str, int, str, bool]],
) -> None:
    async with sessionmaker() as session:
        session.add_all(
            WorkerRegistration(
                pupil_id=pupil,
                date=date(2026, 9, 7) + timedelta(days=day),
                slot=slot,
                school_id=school,
                category=None if retracted else "unauthorized",
                extent=None if retracted else Decimal(1),
                recorded_at=BASE + timedelta(hours=hours),
                event_id=event_id,
                retracted=retracted,
            )
            for (pupil, day, slot), (school, hours, event_id, retracted) in stored.items()
        )
        await session.flush()
        read = await WorkerRepository(session).registrations(PUPILS)
        every = (
            await session.scalars(
                select(WorkerRegistration).order_by(
                    WorkerRegistration.pupil_id, WorkerRegistration.date, WorkerRegistration.slot
                )
            )
        ).all()
        for pupil in PUPILS:
            mine = [r for r in every if r.pupil_id == pupil]
            assert read.latest_school[pupil] == school_of_latest(mine), (pupil, mine)
            assert [(r.date, r.slot, r.retracted) for r in read.rows[pupil]] == [
                (r.date, r.slot, r.retracted) for r in mine
            ]
        await session.rollback()  # nothing kept: the next example starts empty
