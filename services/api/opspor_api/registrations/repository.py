from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from decimal import Decimal

from sqlalchemy import ColumnElement, Date, Table, cast, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from opspor_api.models import Registration, RegistrationEvent, api_outbox
from opspor_shared.db import insert_models
from opspor_shared.events import RegistrationData
from opspor_shared.outbox import OutboxMessage, enqueue
from opspor_shared.registrations import apply_last_writer_wins


class RegistrationRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def insert_events(self, items: Sequence[RegistrationData]) -> set[str]:
        """Stores new events; returns the ids that were new (the rest were already stored)."""
        table = RegistrationEvent.__table__
        assert isinstance(table, Table)
        stmt = (
            insert_models(table, items)
            .on_conflict_do_nothing(index_elements=[table.c.event_id])
            .returning(table.c.event_id)
        )
        return set((await self.session.execute(stmt)).scalars())

    async def events(self, event_ids: Sequence[str]) -> dict[str, RegistrationEvent]:
        rows = await self.session.scalars(
            select(RegistrationEvent).where(RegistrationEvent.event_id.in_(event_ids))
        )
        return {r.event_id: r for r in rows}

    async def apply_current(self, items: Sequence[RegistrationData]) -> None:
        await apply_last_writer_wins(self.session, Registration, items)

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
