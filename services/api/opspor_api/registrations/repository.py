from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from decimal import Decimal
from functools import cache

from sqlalchemy import ColumnElement, Date, Select, Table, cast, func, select
from sqlalchemy.dialects.postgresql import distinct_on, insert
from sqlalchemy.ext.asyncio import AsyncSession

from opspor_api.models import Registration, RegistrationEvent, api_outbox
from opspor_shared.db import insert_rows, model_arrays, model_columns
from opspor_shared.events import RegistrationData
from opspor_shared.outbox import OutboxMessage, enqueue
from opspor_shared.registrations import REGISTRATION_KEY, newest_wins


def _events() -> Table:
    table = RegistrationEvent.__table__
    assert isinstance(table, Table)
    return table


@cache
def _store_statement() -> Select[str]:
    """``store``'s statement, built once (see insert_rows). Among new events for the same
    (pupil, date, slot) the newest is applied, as apply_last_writer_wins does; event ids
    compare by code point there, so here too."""
    events = _events()
    current = Registration.__table__
    assert isinstance(current, Table)
    names = model_columns(current, RegistrationData)
    new = (
        insert_rows(events, model_columns(events, RegistrationData))
        .on_conflict_do_nothing(index_elements=[events.c.event_id])
        .returning(*(events.c[n] for n in names))
        .cte("new_events")
    )
    newest = (
        select(*(new.c[n] for n in names))
        .ext(distinct_on(*(new.c[k] for k in REGISTRATION_KEY)))
        .order_by(
            *(new.c[k] for k in REGISTRATION_KEY),
            new.c.recorded_at.desc(),
            new.c.event_id.collate("C").desc(),
        )
    )
    apply = newest_wins(insert(current).from_select(names, newest), REGISTRATION_KEY, names)
    return select(new.c.event_id).add_cte(apply.cte("applied"))


class RegistrationRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def store(self, items: Sequence[RegistrationData]) -> set[str]:
        """Stores the events not stored before and applies them to the current state, in one
        statement (the rows are sent once); returns the ids that were new."""
        rows = await self.session.execute(_store_statement(), model_arrays(_events(), items))
        return set(rows.scalars())

    async def events(self, event_ids: Sequence[str]) -> dict[str, RegistrationEvent]:
        rows = await self.session.scalars(
            select(RegistrationEvent).where(RegistrationEvent.event_id.in_(event_ids))
        )
        return {r.event_id: r for r in rows}

    async def current_for_pupil(
        self, pupil_id: str, visible: ColumnElement[bool]
    ) -> list[Registration]:
        rows = await self.session.scalars(
            select(Registration)
            .where(Registration.pupil_id == pupil_id, visible)
            .order_by(Registration.date, Registration.slot)
        )
        return list(rows)

    async def absence_by_month(
        self, school_id: str, first: date, last: date
    ) -> list[tuple[date, str, Decimal]]:
        month = cast(func.date_trunc("month", Registration.date), Date)
        rows = await self.session.execute(
            select(month, Registration.category, func.sum(Registration.extent))
            .where(
                Registration.school_id == school_id,
                Registration.date.between(first, last),
                Registration.retracted.is_(False),
                Registration.category.is_not(None),
            )
            .group_by(month, Registration.category)
            .order_by(month, Registration.category)
        )
        # Rows with a category always have an extent (a retraction has neither).
        return [(m, str(c), d or Decimal(0)) for m, c, d in rows]

    async def publish(self, messages: Sequence[OutboxMessage]) -> None:
        await enqueue(self.session, api_outbox, messages)
