"""Database base class, engine and unit of work.

Commit happens only at the edge (request dependency, consumer unit of work); services flush.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from functools import cache
from typing import Any

from pydantic import BaseModel
from sqlalchemy import (
    ARRAY,
    DateTime,
    MetaData,
    Table,
    bindparam,
    column,
    func,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import Insert, insert
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

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


def insert_rows(table: Table, names: Sequence[str]) -> Insert:
    """INSERT INTO table (names) SELECT from one array per column, in the arrays' order; the
    arrays are the statement's parameters, as ``row_arrays`` names them.

    Inserting n rows this way is one statement with one parameter per column, whatever n:
    asyncpg encodes each array in C, where an executemany builds n parameter sets in Python
    (the largest cost of a 1,000-item batch before). The PostgreSQL insert it returns takes ON
    CONFLICT and RETURNING as usual. Columns that are arrays themselves cannot be sent so
    (unnest would flatten them).

    The statement holds no values, so callers build it once (functools.cache) and execute it
    with each request's arrays: building the api's upsert of a registration took SQLAlchemy
    0.9 ms, and building statements once cut a single registration POST's api CPU by about a
    third (README, *Statements built once*)."""
    arrays = [bindparam(f"rows_{n}", type_=ARRAY(table.c[n].type)) for n in names]
    source = (
        func.unnest(*arrays)
        .table_valued(*(column(n, table.c[n].type) for n in names), with_ordinality="ordinal")
        .render_derived(name="array_rows")
    )
    chosen = select(*(source.c[n] for n in names)).order_by(source.c.ordinal)
    return insert(table).from_select(list(names), chosen)


def row_arrays(columns: Mapping[str, list[Any]]) -> dict[str, list[Any]]:
    """The parameters of an ``insert_rows`` statement: one array per column."""
    return {f"rows_{name}": values for name, values in columns.items()}


@cache
def model_columns(table: Table, model: type[BaseModel]) -> tuple[str, ...]:
    """The fields of `model` that are columns of `table` (a table keeps what it needs): the
    columns of an ``insert_rows`` statement for `model` and of its ``model_arrays``."""
    return tuple(name for name in model.model_fields if name in table.c)


def model_arrays(table: Table, items: Sequence[BaseModel]) -> dict[str, list[Any]]:
    """``row_arrays`` of ``items`` (all of one model) for ``table``'s columns."""
    names = model_columns(table, type(items[0]))
    return row_arrays({name: [getattr(i, name) for i in items] for name in names})
