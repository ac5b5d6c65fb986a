"""All SQL of the threshold-worker."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import date, datetime
from functools import cache
from typing import Any, NamedTuple

from sqlalchemy import Table, func, or_, select, text, union, update
from sqlalchemy.dialects.postgresql import Insert, insert
from sqlalchemy.ext.asyncio import AsyncSession

from opspor_shared.db import insert_rows, row_arrays
from opspor_shared.engine import NO_REGISTRATIONS, RegistrationColumns
from opspor_shared.events import EnrolmentData, RegistrationData
from opspor_shared.outbox import OutboxMessage, enqueue
from opspor_shared.registrations import apply_enrolments, apply_last_writer_wins
from opspor_worker.models import (
    Concern,
    SchoolHorizon,
    WorkerEnrolment,
    WorkerPupil,
    WorkerRegistration,
    worker_outbox,
)

# Per pupil, the live registrations (not retracted, with a category and extent) as one array
# per column, and the school of the latest-dated registration: one not retracted if there is
# any, the newest report breaking a tie, as opspor_shared.registrations.school_of_latest picks it
# (`collate "C"` compares event ids by code point, as Python does, whatever the database's
# collation). A row and a Python object per registration cost the day-change tick more than
# evaluating it; arrays are decoded in C. (date, slot) is unique per pupil (the primary key),
# so every array_agg has the same order and the columns line up position by position.
_REGISTRATIONS_OF_PUPILS = """
select
    pupil_id,
    array_agg(date order by date, slot) filter (where live),
    array_agg(slot order by date, slot) filter (where live),
    array_agg(category order by date, slot) filter (where live),
    array_agg(extent order by date, slot) filter (where live),
    (array_agg(school_id order by retracted, date desc, recorded_at desc,
               event_id collate "C" desc))[1]
from (
    select *, not retracted and category is not null and extent is not null as live
    from worker_registrations
    where pupil_id = any($1::text[])
) as rows
group by pupil_id
"""


class PupilRegistrations(NamedTuple):
    """What evaluation needs of a pupil's registrations: the live ones, and the school of
    the latest (None without any registration). A tuple: one is made per pupil of every
    consumed batch and tick chunk."""

    live: RegistrationColumns
    latest_school: str | None


NO_REGISTRATION_YET = PupilRegistrations(NO_REGISTRATIONS, None)


_ENROLMENTS_OF_PUPILS = """
select pupil_id, school_id, enrolled_from, enrolled_until
from worker_enrolments
where pupil_id = any($1::text[])
"""


def _concerns_of_pupils() -> str:
    """Every column of `concerns` (the names come from the model, never from input), so that
    each row makes a whole Concern."""
    table = Concern.__table__
    assert isinstance(table, Table)
    columns = ", ".join(c.name for c in table.columns)
    return f"select {columns} from concerns where pupil_id = any($1::text[])"  # noqa: S608


_CONCERNS_OF_PUPILS = _concerns_of_pupils()

_PUPIL_COLUMNS = ("pupil_id", "school_id", "evaluated_horizon", "next_change_on")


@cache
def _upsert_pupils_statement() -> Insert:
    """upsert_pupils' statement, built once (see insert_rows)."""
    table = WorkerPupil.__table__
    assert isinstance(table, Table)
    stmt = insert_rows(table, _PUPIL_COLUMNS)
    return stmt.on_conflict_do_update(
        index_elements=[WorkerPupil.pupil_id],
        set_={n: stmt.excluded[n] for n in _PUPIL_COLUMNS if n != "pupil_id"},
    )


@cache
def _insert_concerns_statement() -> tuple[Insert, list[str]]:
    """insert_concerns' statement, built once (see insert_rows), and its columns: all but
    those the database fills in."""
    table = Concern.__table__
    assert isinstance(table, Table)
    names = [c.name for c in table.columns if c.server_default is None]
    return insert_rows(table, names), names


class WorkerRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def apply_registrations(self, items: Sequence[RegistrationData]) -> None:
        await apply_last_writer_wins(self.session, WorkerRegistration, items)

    async def apply_enrolments(self, items: Sequence[EnrolmentData]) -> None:
        await apply_enrolments(self.session, WorkerEnrolment, items)

    async def enrolments(
        self, pupil_ids: Sequence[str]
    ) -> dict[str, list[tuple[str, date, date | None]]]:
        """(school, enrolled_from, enrolled_until) of each of the pupils' enrolments, as
        enrolled_stays takes them."""
        out: dict[str, list[tuple[str, date, date | None]]] = {p: [] for p in pupil_ids}
        for pupil_id, *enrolment in await self._fetch(_ENROLMENTS_OF_PUPILS, pupil_ids):
            out[pupil_id].append(tuple(enrolment))
        return out

    async def lock_pupils(self, pupil_ids: Sequence[str]) -> None:
        """Serialises evaluation per pupil between the consumer and the day-change tick.

        Locks are taken in sorted order so two transactions can never deadlock on them.
        """
        await self.session.execute(
            text(
                "select pg_advisory_xact_lock(hashtextextended(p, 7)) "
                "from (select unnest(cast(:ids as text[])) as p order by 1) as sorted"
            ),
            {"ids": sorted(set(pupil_ids))},
        )

    async def registrations(self, pupil_ids: Sequence[str]) -> dict[str, PupilRegistrations]:
        """Every pupil's registrations as evaluation reads them (see _REGISTRATIONS_OF_PUPILS)."""
        out = dict.fromkeys(pupil_ids, NO_REGISTRATION_YET)
        for pupil_id, dates, slots, categories, extents, school in await self._fetch(
            _REGISTRATIONS_OF_PUPILS, pupil_ids
        ):
            live = (
                NO_REGISTRATIONS
                if dates is None
                else RegistrationColumns(dates, slots, categories, extents)
            )
            out[pupil_id] = PupilRegistrations(live, school)
        return out

    async def _fetch(self, sql: str, pupil_ids: Sequence[str]) -> list[Any]:
        """The rows of ``sql`` for ``pupil_ids`` (its one parameter, an array), read through
        asyncpg on the session's connection, in its transaction. The reads of every consumed
        batch and tick chunk go this way: SQLAlchemy rendered one parameter per pupil of an
        ``in_()`` list (9 % of the worker's CPU on a school morning) and built a Row or ORM
        instance per row. A statement of its own each time, so PostgreSQL plans it for these
        ids: a cached one may switch to a generic plan, and one chosen while the table was
        nearly empty (a sequential scan) would stay until the next ANALYZE while it grows."""
        driver = await self._driver_connection()
        statement = await driver.prepare(sql)
        rows: list[Any] = await statement.fetch(list(pupil_ids))
        return rows

    async def _driver_connection(self) -> Any:
        connection = await self.session.connection()
        driver = (await connection.get_raw_connection()).driver_connection
        assert driver is not None  # a checked-out connection always has one
        if not driver.is_in_transaction():
            # SQLAlchemy's asyncpg adapter opens the transaction with its first statement;
            # without one, this read would run outside the transaction (and snapshot) the
            # session's later statements use.
            await connection.execute(text("select 1"))
        return driver

    async def upsert_pupils(self, rows: Sequence[dict[str, Any]]) -> None:
        """One statement with an array per column, however many pupils (a tick chunk)."""
        arrays = row_arrays({n: [r[n] for r in rows] for n in _PUPIL_COLUMNS})
        await self.session.execute(_upsert_pupils_statement(), arrays)

    async def pupils_of_school(self, school_id: str, after: str | None, limit: int) -> list[str]:
        """Pupils whose current school it is, and pupils who were enrolled there earlier
        (their days there are judged by its calendar and packs too)."""
        current = select(WorkerPupil.pupil_id.label("pupil_id")).where(
            WorkerPupil.school_id == school_id
        )
        earlier = select(WorkerEnrolment.pupil_id.label("pupil_id")).where(
            WorkerEnrolment.school_id == school_id
        )
        both = union(current, earlier).subquery()
        query = select(both.c.pupil_id)
        if after is not None:
            query = query.where(both.c.pupil_id > after)
        return list(await self.session.scalars(query.order_by(both.c.pupil_id).limit(limit)))

    async def pupils_due(
        self, school_id: str, horizon: date, after: str | None, limit: int
    ) -> list[str]:
        """Pupils of the school whose concerns can change by `horizon` without a new
        registration (or whose next change is not known yet)."""
        query = select(WorkerPupil.pupil_id).where(
            WorkerPupil.school_id == school_id,
            or_(WorkerPupil.next_change_on.is_(None), WorkerPupil.next_change_on <= horizon),
        )
        if after is not None:
            query = query.where(WorkerPupil.pupil_id > after)
        return list(await self.session.scalars(query.order_by(WorkerPupil.pupil_id).limit(limit)))

    async def concerns(self, pupil_ids: Sequence[str]) -> dict[str, dict[uuid.UUID, Concern]]:
        """The pupils' concerns, as Concern objects outside the session: every change to one is
        written by an explicit statement (set_status, revise), never by a flush."""
        out: dict[str, dict[uuid.UUID, Concern]] = {p: {} for p in pupil_ids}
        for record in await self._fetch(_CONCERNS_OF_PUPILS, pupil_ids):
            concern = Concern(**record)
            out[concern.pupil_id][concern.concern_id] = concern
        return out

    async def insert_concerns(self, concerns: Sequence[Concern]) -> None:
        """New concerns in one statement (an array per column), however many: a first tick
        after a pack change raises thousands, and the ORM would insert them one by one."""
        if not concerns:
            return
        statement, names = _insert_concerns_statement()
        arrays = row_arrays({n: [getattr(c, n) for c in concerns] for n in names})
        await self.session.execute(statement, arrays)

    async def set_status(
        self,
        concern: Concern,
        status: str,
        at: datetime,
        explanation: dict[str, Any] | None = None,
    ) -> None:
        concern.status = status
        concern.revision += 1
        concern.withdrawn_at = at if status == "withdrawn" else None
        if explanation is not None:
            concern.explanation = explanation
        await self.session.execute(
            update(Concern)
            .where(Concern.concern_id == concern.concern_id)
            .values(
                status=status,
                revision=concern.revision,
                withdrawn_at=concern.withdrawn_at,
                explanation=concern.explanation,
                updated_at=func.now(),
            )
        )

    async def revise(self, concern: Concern, explanation: dict[str, Any]) -> None:
        """A new revision of an active concern whose explanation changed."""
        concern.revision += 1
        concern.explanation = explanation
        await self.session.execute(
            update(Concern)
            .where(Concern.concern_id == concern.concern_id)
            .values(revision=concern.revision, explanation=explanation, updated_at=func.now())
        )

    async def horizons(self) -> dict[tuple[str, int], SchoolHorizon]:
        return {
            (h.school_id, h.partition): h for h in await self.session.scalars(select(SchoolHorizon))
        }

    async def set_horizon(
        self,
        school_id: str,
        partitions: Iterable[int],
        horizon: date | None,
        fingerprint: str,
        basis: str,
    ) -> None:
        rows = [
            {
                "school_id": school_id,
                "partition": p,
                "horizon": horizon,
                "fingerprint": fingerprint,
                "basis": basis,
            }
            for p in sorted(partitions)
        ]
        stmt = insert(SchoolHorizon)
        await self.session.execute(
            stmt.on_conflict_do_update(
                index_elements=[SchoolHorizon.school_id, SchoolHorizon.partition],
                set_={
                    "horizon": stmt.excluded.horizon,
                    "fingerprint": stmt.excluded.fingerprint,
                    "basis": stmt.excluded.basis,
                },
            ),
            rows,
        )

    async def publish(self, messages: Sequence[OutboxMessage]) -> None:
        await enqueue(self.session, worker_outbox, messages)
