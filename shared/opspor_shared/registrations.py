"""Registration state as both the api and the threshold-worker keep it (each in its own table).

DOMAIN.md section 3: per (pupil, date, slot) the registration with the latest `recorded_at`
wins, ties broken by event id, never by arrival order. A retraction is a tombstone in the same
ordering, so an older copy arriving later cannot bring a retracted key back.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Sequence
from datetime import date, datetime
from decimal import Decimal
from functools import cache
from typing import Protocol, TypeVar

from sqlalchemy import Numeric, Table, Text, tuple_
from sqlalchemy.dialects.postgresql import Insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from opspor_shared.db import insert_rows, model_arrays, model_columns
from opspor_shared.events import EnrolmentData, RegistrationData


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


class RegistrationRow(Protocol):
    """A current-state row as read (read-only): a RegistrationStateColumns instance, a
    SQLAlchemy row or an asyncpg record with these fields."""

    @property
    def pupil_id(self) -> str: ...
    @property
    def date(self) -> date: ...
    @property
    def slot(self) -> str: ...
    @property
    def school_id(self) -> str: ...
    @property
    def category(self) -> str | None: ...
    @property
    def extent(self) -> Decimal | None: ...
    @property
    def recorded_at(self) -> datetime: ...
    @property
    def event_id(self) -> str: ...
    @property
    def retracted(self) -> bool: ...


def school_of_latest(rows: Sequence[RegistrationRow]) -> str | None:
    """The school of a pupil's latest-dated registration (a live one if there is any; the
    newest report breaks a tie), which decides calendar and packs for a pupil without
    enrolments: in the worker, and in the dry run of a pack."""
    live = [r for r in rows if not r.retracted] or list(rows)
    if not live:
        return None
    return max(live, key=lambda r: (r.date, r.recorded_at, r.event_id)).school_id


# Current state holds one registration per (pupil, date, slot).
REGISTRATION_KEY = ("pupil_id", "date", "slot")

Fact = TypeVar("Fact", RegistrationData, EnrolmentData)


def order(item: RegistrationData | EnrolmentData) -> tuple[datetime, str]:
    return (item.recorded_at, item.event_id)


def newest_per_key(items: Iterable[Fact], key: Callable[[Fact], Hashable]) -> list[Fact]:
    winners: dict[Hashable, Fact] = {}
    for item in items:
        held = winners.get(key(item))
        if held is None or order(held) < order(item):
            winners[key(item)] = item
    return list(winners.values())


def newest_wins(stmt: Insert, keys: Sequence[str], names: Sequence[str]) -> Insert:
    """`stmt` as an upsert on `keys` in which a stored row is replaced only by a newer one
    (recorded_at, then event id), so any arrival order converges to the same state."""
    table = stmt.table
    return stmt.on_conflict_do_update(
        index_elements=[table.c[k] for k in keys],
        set_={c: stmt.excluded[c] for c in names if c not in keys},
        where=tuple_(table.c.recorded_at, table.c.event_id)
        < tuple_(stmt.excluded.recorded_at, stmt.excluded.event_id),
    )


async def _upsert_newest(
    session: AsyncSession,
    table: Table,
    keys: tuple[str, ...],
    rows: Sequence[RegistrationData | EnrolmentData],
) -> None:
    """Upserts rows whose key columns are `keys`, newest wins (see newest_wins). One statement
    with an array per column, however many rows."""
    if not rows:
        return
    statement = _upsert_newest_statement(table, keys, type(rows[0]))
    await session.execute(statement, model_arrays(table, rows))


@cache
def _upsert_newest_statement(
    table: Table, keys: tuple[str, ...], model: type[RegistrationData | EnrolmentData]
) -> Insert:
    """_upsert_newest's statement, built once per table (see insert_rows). A table keeps the
    fields it has columns for: the worker's enrolments have no grade."""
    names = model_columns(table, model)
    return newest_wins(insert_rows(table, names), keys, names)


async def apply_last_writer_wins(
    session: AsyncSession, model: type[RegistrationStateColumns], items: Sequence[RegistrationData]
) -> None:
    """Upserts `items` into `model`'s table, keeping the newest per (pupil, date, slot)."""
    newest = newest_per_key(items, lambda i: (i.pupil_id, i.date, i.slot))
    await _upsert_newest(session, model.__table__, REGISTRATION_KEY, newest)  # type: ignore[attr-defined]


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
    newest = newest_per_key(items, lambda i: (i.pupil_id, i.school_id))
    await _upsert_newest(session, model.__table__, ("pupil_id", "school_id"), newest)  # type: ignore[attr-defined]
