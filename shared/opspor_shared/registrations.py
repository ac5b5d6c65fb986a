"""Registration state as both the api and the threshold-worker keep it (each in its own table).

DOMAIN.md section 3: per (pupil, date, slot) the registration with the latest `recorded_at`
wins, ties broken by event id, never by arrival order. A retraction is a tombstone in the same
ordering, so an older copy arriving later cannot bring a retracted key back.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Numeric, Text, tuple_
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from opspor_shared.events import EnrolmentData, RegistrationData

Key = tuple[str, date, str]


class RegistrationStateColumns:
    pupil_id: Mapped[str] = mapped_column(Text, primary_key=True)
    date: Mapped[date] = mapped_column(primary_key=True)
    slot: Mapped[str] = mapped_column(Text, primary_key=True)
    school_id: Mapped[str] = mapped_column(Text)
    category: Mapped[str | None] = mapped_column(Text)
    extent: Mapped[Decimal | None] = mapped_column(Numeric(5, 4))
    recorded_at: Mapped[datetime]
    event_id: Mapped[str] = mapped_column(Text)
    retracted: Mapped[bool]


def order(item: RegistrationData) -> tuple[datetime, str]:
    return (item.recorded_at, item.event_id)


def newest_per_key(items: Iterable[RegistrationData]) -> list[RegistrationData]:
    winners: dict[Key, RegistrationData] = {}
    for item in items:
        key = (item.pupil_id, item.date, item.slot)
        held = winners.get(key)
        if held is None or order(held) < order(item):
            winners[key] = item
    return list(winners.values())


async def apply_last_writer_wins(
    session: AsyncSession, model: type[RegistrationStateColumns], items: Sequence[RegistrationData]
) -> None:
    """Upserts `items` into `model`'s table, keeping the newest per key."""
    rows: list[dict[str, Any]] = [item.model_dump() for item in newest_per_key(items)]
    if not rows:
        return
    table = model.__table__  # type: ignore[attr-defined]
    stmt = insert(table)
    stmt = stmt.on_conflict_do_update(
        index_elements=[table.c.pupil_id, table.c.date, table.c.slot],
        set_={
            c: stmt.excluded[c]
            for c in ("school_id", "category", "extent", "recorded_at", "event_id", "retracted")
        },
        where=tuple_(table.c.recorded_at, table.c.event_id)
        < tuple_(stmt.excluded.recorded_at, stmt.excluded.event_id),
    )
    await session.execute(stmt, rows)


class EnrolmentColumns:
    pupil_id: Mapped[str] = mapped_column(Text, primary_key=True)
    school_id: Mapped[str] = mapped_column(Text, primary_key=True)
    enrolled_from: Mapped[date]
    enrolled_until: Mapped[date | None]
    recorded_at: Mapped[datetime]
    event_id: Mapped[str] = mapped_column(Text)


async def apply_enrolments(
    session: AsyncSession, model: type[EnrolmentColumns], items: Sequence[EnrolmentData]
) -> None:
    """Upserts enrolments, keeping the newest per (pupil, school) in any arrival order."""
    winners: dict[tuple[str, str], EnrolmentData] = {}
    for item in items:
        held = winners.get((item.pupil_id, item.school_id))
        if held is None or (held.recorded_at, held.event_id) < (item.recorded_at, item.event_id):
            winners[(item.pupil_id, item.school_id)] = item
    if not winners:
        return
    table = model.__table__  # type: ignore[attr-defined]
    stmt = insert(table)
    stmt = stmt.on_conflict_do_update(
        index_elements=[table.c.pupil_id, table.c.school_id],
        set_={
            c: stmt.excluded[c]
            for c in ("enrolled_from", "enrolled_until", "recorded_at", "event_id")
        },
        where=tuple_(table.c.recorded_at, table.c.event_id)
        < tuple_(stmt.excluded.recorded_at, stmt.excluded.event_id),
    )
    await session.execute(stmt, [w.model_dump() for w in winners.values()])
