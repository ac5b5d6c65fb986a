"""The figures the tick reads from PostgreSQL to skip pupils below every limit equal their
Python definitions (opspor_shared.engine.bounds, opspor_shared.registrations)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from opspor_shared.engine import builtin_packs
from opspor_shared.engine.bounds import AbsenceFigures, absence_figures, needs_of
from opspor_shared.registrations import school_of_latest
from opspor_worker.models import WorkerRegistration
from opspor_worker.repository import WorkerRepository, live_registrations
from opspor_worker.service import Context

FIRST = date(2027, 1, 4)
EXTENTS = ("1", "0.5", "0.125", "0.3333", "0.0001")

rows = st.lists(
    st.fixed_dictionaries(
        {
            "pupil_id": st.sampled_from(["p1", "p2", "p3"]),
            "date": st.integers(0, 12).map(lambda n: FIRST + timedelta(days=n)),
            "slot": st.sampled_from(["day", "am", "pm", "1", "2"]),
            "school_id": st.sampled_from(["a", "b"]),
            "category": st.sampled_from(["illness", "authorized", "unauthorized"]),
            "extent": st.sampled_from(EXTENTS).map(Decimal),
            # Same instants now and then, so the event id breaks ties.
            "recorded_at": st.integers(0, 3).map(
                lambda n: datetime(2027, 1, 20, tzinfo=UTC) + timedelta(hours=n)
            ),
            "event_id": st.sampled_from(["e", "E", "f", "é", "Z"]),
            "retracted": st.booleans(),
        }
    ),
    max_size=30,
    unique_by=lambda r: (r["pupil_id"], r["date"], r["slot"]),
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(drawn=rows)
async def test_the_figures_and_latest_schools_summed_by_postgresql_equal_the_definitions(
    ctx: Context, sessionmaker: async_sessionmaker[AsyncSession], drawn: list[dict[str, Any]]
) -> None:
    for n, row in enumerate(drawn):
        # Event ids are unique (one per registration); their first letters decide the order.
        row["event_id"] += f"-{n:02d}"
        if row["retracted"]:
            row["category"] = row["extent"] = None  # as a retraction is stored
    # Both builtin packs with rules over one category and over all three, thresholds 0.5.
    packs = list(builtin_packs().values())
    needs = needs_of(packs)
    pupils = ["p1", "p2", "p3", "nobody"]
    async with sessionmaker() as session, session.begin():
        await session.execute(text("truncate worker_registrations"))
        if drawn:
            await session.execute(insert(WorkerRegistration), drawn)
    async with sessionmaker() as session, session.begin():
        repo = WorkerRepository(session)
        figures = await repo.absence_figures(pupils, needs)
        latest = await repo.latest_schools(pupils)
        rows_of = await repo.registrations(pupils)
    for pupil in pupils:
        expected = absence_figures(live_registrations(rows_of[pupil]), needs)
        got = figures.get(pupil, AbsenceFigures())
        assert {k: got.absence_days.get(k, 0) for k in needs.absence_days} == dict(
            expected.absence_days
        )
        assert {k: got.units.get(k, 0) for k in needs.units} == dict(expected.units)
        assert latest.get(pupil) == school_of_latest(rows_of[pupil])
