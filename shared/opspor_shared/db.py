"""Database base class, engine and unit of work.

Commit happens only at the edge (request dependency, consumer unit of work); services flush.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import ARRAY, DateTime, MetaData, bindparam, column, func, text
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.sql.selectable import TableValuedAlias
from sqlalchemy.types import TypeEngine

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: DateTime(timezone=True)}


class TimestampMixin:
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


def make_engine(url: str, *, pool_size: int = 10) -> AsyncEngine:
    # hide_parameters: database errors end up in logs; their parameters can be pupil ids or
    # recipient addresses.
    return create_async_engine(
        url, pool_size=pool_size, max_overflow=10, pool_pre_ping=True, hide_parameters=True
    )


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


@asynccontextmanager
async def unit_of_work(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> AsyncIterator[AsyncSession]:
    """One transaction: commit on success, roll back on any exception."""
    async with sessionmaker() as session:
        try:
            yield session
            await session.commit()
        except BaseException:
            await session.rollback()
            raise


async def database_ready(engine: AsyncEngine, wait_seconds: float = 2.0) -> bool:
    """For /readyz: the database answers a trivial query in time."""
    try:
        async with asyncio.timeout(wait_seconds), engine.connect() as conn:
            await conn.execute(text("select 1"))
    except Exception:
        return False
    return True


def array_rows(columns: Mapping[str, tuple[TypeEngine[Any], Sequence[Any]]]) -> TableValuedAlias:
    """Rows passed as one array per column: `unnest($1::t1[], $2::t2[], ...) WITH ORDINALITY`.

    Inserting n rows this way is one statement with one parameter per column, whatever n:
    asyncpg encodes each array in C, where an executemany builds n parameter sets in Python
    (the largest cost of a 1,000-item batch before). Select from it ordered by `ordinal` when
    the order of the rows matters (an outbox's ids)."""
    arrays = [
        bindparam(f"rows_{name}", list(values), type_=ARRAY(type_))
        for name, (type_, values) in columns.items()
    ]
    return (
        func.unnest(*arrays)
        .table_valued(
            *(column(name, type_) for name, (type_, _) in columns.items()),
            with_ordinality="ordinal",
        )
        .render_derived(name="array_rows")
    )
