"""Run the Alembic migrations programmatically (make run, tests, container entrypoints)."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from alembic import command
from alembic.config import Config

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"


def alembic_config(database_url: str) -> Config:
    config = Config(str(MIGRATIONS / "alembic.ini"))
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", database_url)
    return config


def upgrade(database_url: str) -> None:
    command.upgrade(alembic_config(database_url), "head")


async def upgrade_async(database_url: str) -> None:
    # env.py runs its own event loop, so it needs a thread of its own.
    await asyncio.to_thread(upgrade, database_url)


def main() -> None:
    """`opspor-migrate`: brings the database at DATABASE_URL to the newest revision."""
    url = os.environ.get("DATABASE_URL")
    if not url:
        sys.stderr.write(
            "opspor-migrate: missing DATABASE_URL in the environment "
            "(a PostgreSQL URL such as postgresql://opspor@db:5432/opspor)\n"
        )
        raise SystemExit(2)
    upgrade(url)


if __name__ == "__main__":
    main()
