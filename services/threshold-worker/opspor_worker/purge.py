"""The threshold-worker's retention purge (README "Retention"), and its command:

    python -m opspor_worker.purge [--dry-run]

Deletes registrations dated before the cutoff, pupils left without registrations, and closed
concerns past their retention, logging each deletion in worker_purges. Pupils and concerns are
deleted under the same per-pupil lock that evaluation takes, so a purge never races an
evaluation of the same pupil (which could re-create a pupil row's reason to exist, or emit an
event for a concern being deleted).
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import ColumnElement, Table, delete, exists, select
from sqlalchemy.ext.asyncio import AsyncSession

from opspor_shared.purge import (
    Chunk,
    CountFn,
    PurgeStep,
    ServicePurge,
    closed_concern_condition,
    closed_concern_criteria,
    count_rows,
    delete_chunk,
    rowcount,
    table_of,
)
from opspor_shared.retention import RetentionWindow
from opspor_worker.models import Concern, WorkerPupil, WorkerRegistration, worker_purges
from opspor_worker.repository import WorkerRepository

SERVICE = "worker"
# Each pupil deleted needs one advisory lock, and PostgreSQL's lock table is shared and
# small (max_locks_per_transaction x max_connections, 6,400 by default): stay well under it.
LOCKED_CHUNK_ROWS = 500


def steps(window: RetentionWindow) -> Sequence[PurgeStep]:
    registrations = table_of(WorkerRegistration)
    pupils = table_of(WorkerPupil)
    concerns = table_of(Concern)
    old = registrations.c.date < window.cutoff
    # After the registrations step these pupils have no registrations at all; the tick stops
    # evaluating them, which changes nothing: their concerns are all final.
    orphan = ~exists().where(
        registrations.c.pupil_id == pupils.c.pupil_id, registrations.c.date >= window.cutoff
    )
    closed = closed_concern_condition(concerns, window)

    async def registrations_chunk(session: AsyncSession, limit: int) -> Chunk:
        n = await delete_chunk(session, registrations, old, limit)
        return Chunk({registrations.name: n}, more=n == limit)

    async def pupils_chunk(session: AsyncSession, limit: int) -> Chunk:
        ids = list(
            await session.scalars(
                select(pupils.c.pupil_id).where(orphan).order_by(pupils.c.pupil_id).limit(limit)
            )
        )
        if not ids:
            return Chunk({pupils.name: 0}, more=False)
        await WorkerRepository(session).lock_pupils(ids)
        # Checked again under the lock: a registration may have arrived meanwhile.
        result = await session.execute(delete(pupils).where(orphan, pupils.c.pupil_id.in_(ids)))
        return Chunk({pupils.name: rowcount(result)}, more=len(ids) == limit)

    async def concerns_chunk(session: AsyncSession, limit: int) -> Chunk:
        rows = (
            await session.execute(
                select(concerns.c.concern_id, concerns.c.pupil_id)
                .where(closed)
                .order_by(concerns.c.concern_id)
                .limit(limit)
            )
        ).all()
        if not rows:
            return Chunk({concerns.name: 0}, more=False)
        await WorkerRepository(session).lock_pupils([r.pupil_id for r in rows])
        ids = [r.concern_id for r in rows]
        result = await session.execute(
            delete(concerns).where(closed, concerns.c.concern_id.in_(ids))
        )
        return Chunk({concerns.name: rowcount(result)}, more=len(rows) == limit)

    def counter(table: Table, condition: ColumnElement[bool]) -> CountFn:
        async def count(session: AsyncSession) -> dict[str, int]:
            return {table.name: await count_rows(session, table, condition)}

        return count

    return [
        PurgeStep(
            {concerns.name: closed_concern_criteria(window)},
            concerns_chunk,
            counter(concerns, closed),
            max_chunk_rows=LOCKED_CHUNK_ROWS,
        ),
        PurgeStep(
            {registrations.name: f"date < {window.cutoff}"},
            registrations_chunk,
            counter(registrations, old),
        ),
        PurgeStep(
            {pupils.name: f"no registration dated {window.cutoff} or later"},
            pupils_chunk,
            counter(pupils, orphan),
            max_chunk_rows=LOCKED_CHUNK_ROWS,
        ),
    ]


purge_once = ServicePurge(SERVICE, worker_purges, steps)


if __name__ == "__main__":
    purge_once.main()
