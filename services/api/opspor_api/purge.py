"""The api's retention purge (README "Retention"), and its command:

    python -m opspor_api.purge [--dry-run]

Deletes registration events and current registrations dated before the cutoff, closed
concerns of the read model past their retention, and cases closed longer than
RETENTION_CLOSED_CASE_DAYS (with their entries and free text), logging each deletion in
api_purges.
Registrations dated before the cutoff are refused at the door, so no writer competes for them.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import ColumnElement, Table, and_
from sqlalchemy.ext.asyncio import AsyncSession

from opspor_api.models import Case, ConcernView, Registration, RegistrationEvent, api_purges
from opspor_shared.purge import (
    Chunk,
    PurgeStep,
    ServicePurge,
    closed_concern_condition,
    closed_concern_criteria,
    count_rows,
    delete_chunk,
    table_of,
)
from opspor_shared.retention import RetentionWindow

SERVICE = "api"


def _step(table: Table, condition: ColumnElement[bool], criteria: str) -> PurgeStep:
    async def chunk(session: AsyncSession, limit: int) -> Chunk:
        n = await delete_chunk(session, table, condition, limit)
        return Chunk({table.name: n}, more=n == limit)

    async def count(session: AsyncSession) -> dict[str, int]:
        return {table.name: await count_rows(session, table, condition)}

    return PurgeStep({table.name: criteria}, chunk, count)


def steps(window: RetentionWindow) -> Sequence[PurgeStep]:
    events = table_of(RegistrationEvent)
    current = table_of(Registration)
    concerns = table_of(ConcernView)
    cases = table_of(Case)
    old = f"date < {window.cutoff}"
    return [
        _step(events, events.c.date < window.cutoff, old),
        _step(current, current.c.date < window.cutoff, old),
        _step(
            concerns, closed_concern_condition(concerns, window), closed_concern_criteria(window)
        ),
        # Entries and free text go with their case (on delete cascade).
        _step(
            cases,
            and_(cases.c.status == "closed", cases.c.closed_at < window.closed_case_before),
            f"closed before {window.closed_case_before.isoformat(timespec='seconds')}",
        ),
    ]


purge_once = ServicePurge(SERVICE, api_purges, steps)


if __name__ == "__main__":
    purge_once.main()
