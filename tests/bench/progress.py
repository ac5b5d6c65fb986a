"""Reads the benchmark database directly (asyncpg) to see how far the pipeline has come."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg


@dataclass
class Backlog:
    worker_registrations: int
    api_outbox: int
    worker_outbox: int
    pending_notices: int
    concerns: int  # of the schools asked about


class Progress:
    def __init__(self, database_url: str) -> None:
        self._url = database_url.replace("postgresql+asyncpg://", "postgresql://", 1)
        self._conn: Any = None

    async def __aenter__(self) -> Progress:
        self._conn = await asyncpg.connect(self._url)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._conn is not None:
            await self._conn.close()

    @property
    def conn(self) -> Any:
        return self._conn

    async def backlog(self, schools: str | Sequence[str]) -> Backlog:
        row = await self._conn.fetchrow(
            """
            select
              (select count(*) from worker_registrations where school_id = any($1)) as regs,
              (select coalesce(sum(cardinality(partition_keys)), 0) from api_outbox)
                as api_outbox,
              (select coalesce(sum(cardinality(partition_keys)), 0) from worker_outbox)
                as worker_outbox,
              (select count(*) from notices where status = 'pending') as pending,
              (select count(*) from concerns where school_id = any($1)) as concerns
            """,
            [schools] if isinstance(schools, str) else list(schools),
        )
        return Backlog(
            row["regs"], row["api_outbox"], row["worker_outbox"], row["pending"], row["concerns"]
        )

    async def vacuum(self, tables: Sequence[str], timeout: float = 60.0) -> float:
        """VACUUM (ANALYZE) the tables; returns the seconds it took."""
        began = time.monotonic()
        names = ", ".join(f'"{t}"' for t in tables)
        await self._conn.execute(f"vacuum (analyze) {names}", timeout=timeout)
        return round(time.monotonic() - began, 2)

    async def school_horizons(self) -> set[str]:
        rows = await self._conn.fetch("select school_id from worker_school_horizons")
        return {r["school_id"] for r in rows}

    async def wait_for_horizons(self, school_ids: Sequence[str], timeout: float) -> bool:
        """Until the worker's day-change tick has seen every school (so it will not later
        re-evaluate a whole school in the middle of a measurement)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if set(school_ids) <= await self.school_horizons():
                return True
            await asyncio.sleep(0.2)
        return False

    async def wait_caught_up(
        self,
        schools: str | Sequence[str],
        expected: int,
        timeout: float,
        poll: float = 0.25,
        concerns: int = 0,
    ) -> tuple[bool, float, Backlog]:
        """Polls until the worker holds `expected` registrations of the schools (and at least
        `concerns` concerns of theirs) and both outboxes are empty. Returns (caught up,
        monotonic time it was first seen, last state)."""
        deadline = time.monotonic() + timeout
        state = await self.backlog(schools)
        while True:
            seen = time.monotonic()
            done = state.worker_registrations >= expected and state.concerns >= concerns
            if done and not state.api_outbox and not state.worker_outbox:
                return True, seen, state
            if seen >= deadline:
                return False, seen, state
            await asyncio.sleep(poll)
            state = await self.backlog(schools)
