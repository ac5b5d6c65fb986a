"""Retention in the threshold-worker, on real PostgreSQL: final concerns, the cutoff at ingest,
and the purge of its tables with its log."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, date, datetime
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from opspor_shared.events import CONCERN_RAISED, CONCERN_WITHDRAWN, ConcernData
from opspor_shared.reference import CalendarCache
from opspor_worker.models import Concern, WorkerPupil, WorkerRegistration, worker_purges
from opspor_worker.purge import purge_once
from opspor_worker.service import Context
from opspor_worker.settings import WorkerSettings
from tests.support import school_days, seed_reference
from tests.worker.test_worker import NOW, concerns, feed, outbox, reg

SessionMaker = async_sessionmaker[AsyncSession]

# With RETENTION_REGISTRATION_DAYS=400 on Friday 18 June 2027: cutoff C = 2026-05-14 and
# settle date S = 2027-05-15. With RETENTION_CLOSED_CONCERN_DAYS=30, an active final concern is
# purged when it crossed before 2027-04-15, a withdrawn one when withdrawn before 2027-05-19.
LATER = datetime(2027, 6, 18, 11, 0, tzinfo=UTC)
CUTOFF = date(2026, 5, 14)
SETTLE = date(2027, 5, 15)


@pytest.fixture
async def ctx(clean_db: AsyncEngine, sessionmaker: SessionMaker) -> Context:
    await seed_reference(sessionmaker)
    settings = WorkerSettings(
        database_url="postgresql://unused/x",
        kafka_bootstrap_servers="unused:9092",
        concerns_topic="concerns",
        retention_registration_days=400,
        retention_closed_concern_days=30,
        purge_chunk_rows=2,
    )
    return Context(settings=settings, calendars=CalendarCache(), clock=lambda: NOW)


def summary(events: list[Any]) -> list[tuple[str, str, str]]:
    out = []
    for e in events:
        data = ConcernData.model_validate(e.data)
        out.append((e.type, data.explanation.rule_id, data.crossing_date.isoformat()))
    return out


async def test_a_correction_to_a_final_period_changes_nothing_a_later_one_still_does(
    ctx: Context, sessionmaker: SessionMaker
) -> None:
    ctx.clock = lambda: datetime(2026, 9, 14, 11, 0, tzinfo=UTC)  # settle date 2026-08-15
    september = school_days(date(2026, 9, 7), 5)
    await feed(sessionmaker, ctx, [reg("p1", d) for d in september])
    [raised] = await outbox(sessionmaker)
    assert summary([raised]) == [(CONCERN_RAISED, "consecutive-5", "2026-09-11")]

    ctx.clock = lambda: LATER  # September 2026 is now before the settle date: final
    late = datetime(2027, 6, 1, tzinfo=UTC)
    # The parents did call in; a full evaluation would withdraw the concern.
    assert (
        await feed(
            sessionmaker, ctx, [reg("p1", september[2], category="illness", recorded_at=late)]
        )
        == 0
    )
    # A new run in the final period would raise one; it does not either.
    assert (
        await feed(sessionmaker, ctx, [reg("p1", d) for d in school_days(date(2026, 9, 21), 5)])
        == 0
    )
    held = (await concerns(sessionmaker))["consecutive-5"]
    assert (held.status, held.revision, held.crossing_date) == ("active", 1, date(2026, 9, 11))

    # After the settle date the rules work as always: raise, then withdraw on a correction.
    may = school_days(date(2027, 5, 24), 5)
    assert await feed(sessionmaker, ctx, [reg("p1", d) for d in may]) == 1
    assert (
        await feed(sessionmaker, ctx, [reg("p1", may[2], category="illness", recorded_at=late)])
        == 1
    )
    assert summary(await outbox(sessionmaker)) == [
        (CONCERN_RAISED, "consecutive-5", "2026-09-11"),
        (CONCERN_RAISED, "consecutive-5", "2027-05-28"),
        (CONCERN_WITHDRAWN, "consecutive-5", "2027-05-28"),
    ]
    async with sessionmaker() as session:
        withdrawn = await session.scalar(
            select(Concern).where(Concern.crossing_date == date(2027, 5, 28))
        )
    assert withdrawn is not None and withdrawn.withdrawn_at == LATER


async def test_registrations_dated_before_the_cutoff_are_not_kept(
    ctx: Context, sessionmaker: SessionMaker
) -> None:
    ctx.clock = lambda: LATER
    await feed(sessionmaker, ctx, [reg("p1", date(2026, 5, 13)), reg("p2", CUTOFF)])
    async with sessionmaker() as session:
        kept = (await session.execute(select(WorkerRegistration.pupil_id))).scalars().all()
        pupils = (await session.execute(select(WorkerPupil.pupil_id))).scalars().all()
    assert (kept, pupils) == (["p2"], ["p2"])


def concern_row(
    crossing: date, status: str, withdrawn_at: datetime | None, pupil: str = "p-c"
) -> Concern:
    return Concern(
        concern_id=uuid.uuid4(),
        pupil_id=pupil,
        school_id="vestbjerg",
        municipality_id="aalborg",
        pack_id="dk-aalborg-2018",
        rule_id="consecutive-5",
        rule_version="1",
        level="concern",
        crossing_date=crossing,
        status=status,
        revision=1 if status == "active" else 2,
        explanation={},
        withdrawn_at=withdrawn_at,
    )


async def seed_for_purge(ctx: Context, sessionmaker: SessionMaker) -> dict[str, uuid.UUID]:
    """Registrations stored by the worker as it runs (a year earlier), concerns as rows."""
    ctx.clock = lambda: datetime(2026, 5, 20, 11, 0, tzinfo=UTC)
    await feed(sessionmaker, ctx, [reg("p-old", d) for d in school_days(date(2026, 5, 4), 5)])
    await feed(sessionmaker, ctx, [reg("p-mixed", date(2026, 5, 11))])
    await feed(sessionmaker, ctx, [reg("p-mixed", date(2026, 9, 7)), reg("p-edge", CUTOFF)])
    rows = {
        "active-old": concern_row(date(2027, 3, 1), "active", None),
        "active-recently-final": concern_row(date(2027, 4, 20), "active", None),
        "withdrawn-old": concern_row(
            date(2027, 2, 1), "withdrawn", datetime(2027, 4, 1, tzinfo=UTC)
        ),
        "withdrawn-lately": concern_row(
            date(2027, 2, 1), "withdrawn", datetime(2027, 6, 1, tzinfo=UTC)
        ),
        "withdrawn-not-final": concern_row(
            date(2027, 5, 20), "withdrawn", datetime(2027, 4, 1, tzinfo=UTC)
        ),
    }
    async with sessionmaker() as session, session.begin():
        session.add_all(rows.values())
    ctx.clock = lambda: LATER
    return {name: row.concern_id for name, row in rows.items()}


async def state(
    sessionmaker: SessionMaker,
) -> tuple[list[tuple[str, str]], list[str], set[uuid.UUID]]:
    async with sessionmaker() as session:
        regs = (
            await session.execute(
                select(WorkerRegistration.pupil_id, WorkerRegistration.date).order_by(
                    WorkerRegistration.pupil_id, WorkerRegistration.date
                )
            )
        ).all()
        pupils = list(
            await session.scalars(select(WorkerPupil.pupil_id).order_by(WorkerPupil.pupil_id))
        )
        held = set(await session.scalars(select(Concern.concern_id)))
    return [(p, d.isoformat()) for p, d in regs], pupils, held


async def log_rows(sessionmaker: SessionMaker) -> list[Any]:
    async with sessionmaker() as session:
        return list(
            (await session.execute(select(worker_purges).order_by(worker_purges.c.id))).all()
        )


async def test_purge_deletes_exactly_what_is_due_and_logs_it(
    ctx: Context, sessionmaker: SessionMaker, engine: AsyncEngine
) -> None:
    ids = await seed_for_purge(ctx, sessionmaker)

    dry = await purge_once(engine, sessionmaker, ctx.settings, ctx.clock, dry_run=True)
    assert dry.deleted == {"concerns": 2, "worker_registrations": 6, "worker_pupils": 1}
    assert await log_rows(sessionmaker) == []
    assert len((await state(sessionmaker))[0]) == 8  # the dry run deleted nothing

    report = await purge_once(engine, sessionmaker, ctx.settings, ctx.clock)
    assert (report.skipped, report.complete) == (False, True)
    assert report.deleted == dry.deleted
    regs, pupils, held = await state(sessionmaker)
    # Dated on the cutoff is kept; the day before is not.
    assert regs == [("p-edge", "2026-05-14"), ("p-mixed", "2026-09-07")]
    assert pupils == ["p-edge", "p-mixed"]
    assert held == {
        ids["active-recently-final"],
        ids["withdrawn-lately"],
        ids["withdrawn-not-final"],
    }

    logged = await log_rows(sessionmaker)
    # Chunks of 2 rows (PURGE_CHUNK_ROWS=2), each logged in its own transaction.
    assert [(r.table_name, r.rows_deleted) for r in logged] == [
        ("concerns", 2),
        ("worker_registrations", 2),
        ("worker_registrations", 2),
        ("worker_registrations", 2),
        ("worker_pupils", 1),
    ]
    assert {(r.run_id, r.at, r.cutoff, r.settle) for r in logged} == {
        (report.run_id, LATER, CUTOFF, SETTLE)
    }
    assert logged[1].criteria == "date < 2026-05-14"
    assert logged[0].criteria == (
        "crossing_date < 2027-05-15 and (withdrawn before 2027-05-19T11:00:00+00:00 "
        "or active with crossing_date < 2027-04-15)"
    )

    again = await purge_once(engine, sessionmaker, ctx.settings, ctx.clock)
    assert sum(again.deleted.values()) == 0
    assert len(await log_rows(sessionmaker)) == len(logged)


async def test_a_purge_that_finds_another_running_does_nothing(
    ctx: Context, sessionmaker: SessionMaker, engine: AsyncEngine
) -> None:
    await seed_for_purge(ctx, sessionmaker)
    async with engine.connect() as other:
        await other.execute(
            text("select pg_advisory_xact_lock(hashtext('opspor-purge'), hashtext('worker'))")
        )
        report = await purge_once(engine, sessionmaker, ctx.settings, ctx.clock)
        assert report.skipped and report.deleted == {}
        assert len((await state(sessionmaker))[0]) == 8
        await other.rollback()
    # Two at once: whichever order they run in, each row is deleted and logged once.
    both = await asyncio.gather(
        purge_once(engine, sessionmaker, ctx.settings, ctx.clock),
        purge_once(engine, sessionmaker, ctx.settings, ctx.clock),
    )
    total = sum(r.deleted.get("worker_registrations", 0) for r in both)
    logged = [r for r in await log_rows(sessionmaker) if r.table_name == "worker_registrations"]
    assert total == sum(r.rows_deleted for r in logged) == 6


async def test_a_purge_asked_to_stop_leaves_the_rest_for_the_next_run(
    ctx: Context, sessionmaker: SessionMaker, engine: AsyncEngine
) -> None:
    await seed_for_purge(ctx, sessionmaker)
    stop = asyncio.Event()
    stop.set()
    report = await purge_once(engine, sessionmaker, ctx.settings, ctx.clock, stop=stop)
    assert not report.complete and sum(report.deleted.values()) == 0
    report = await purge_once(engine, sessionmaker, ctx.settings, ctx.clock)
    assert report.complete and report.deleted["worker_registrations"] == 6
