"""Running a service's retention purge: bounded chunks, one run at a time, an append-only log.

Each service purges only the tables it writes (ARCHITECTURE.md rule 1) and records what it
deleted in its own purge log (`api_purges`, `worker_purges`, `alerter_purges`). The rules of
what to delete are in `opspor_shared.retention`; the steps that apply them live with each
service (`opspor_<service>.purge`).

* Chunks: every delete statement removes at most PURGE_CHUNK_ROWS rows and commits, so a big
  backlog never holds long locks; the number of chunks per run is bounded too (the rest waits
  for the next run).
* The log row for a chunk is written in the same transaction as its deletion: the log never
  claims a deletion that rolled back, nor misses one that committed. A run therefore writes one
  row per table per chunk that deleted something (normally one per table), all with the run's id;
  it writes nothing for tables that had nothing to delete. Rows are only ever inserted.
* One run at a time per service: a transaction-level advisory lock held on a connection of its
  own for the whole run. Another run (another replica, or the operator's command) that finds it
  taken does nothing. The lock ends with that transaction, so a run that dies or is cancelled
  never leaves it behind on a pooled connection.
* Idempotent: the conditions select only rows that are due, so a second run deletes nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from prometheus_client import Counter, Gauge
from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    ColumnElement,
    CursorResult,
    Date,
    DateTime,
    Identity,
    MetaData,
    Table,
    Text,
    Uuid,
    and_,
    delete,
    func,
    insert,
    or_,
    select,
    text,
    tuple_,
)
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from opspor_shared.clock import Clock, system_clock
from opspor_shared.db import make_engine, make_sessionmaker, unit_of_work
from opspor_shared.logging import configure_logging, get_logger
from opspor_shared.retention import RetentionWindow, retention_window
from opspor_shared.settings import ServiceSettings, load_settings

log = get_logger(__name__)

ROWS_PURGED = Counter("opspor_purge_rows_deleted_total", "Rows deleted by the purge", ["table"])
RUNS = Counter(
    "opspor_purge_runs_total",
    "Purge runs by result",
    ["service", "result"],  # done | incomplete | skipped | failed
)
LAST_RUN = Gauge(
    "opspor_purge_last_run_timestamp_seconds",
    "When the last purge run that held the lock finished",
    ["service"],
)

# Per step and run; at 10,000 rows a chunk that is 10 million rows, the rest waits a run.
MAX_CHUNKS_PER_STEP = 1000
# Exit status of the purge command when another run holds the lock (EX_TEMPFAIL).
EXIT_BUSY = 75


def purge_log_table(name: str, metadata: MetaData) -> Table:
    return Table(
        name,
        metadata,
        Column("id", BigInteger, Identity(), primary_key=True),
        Column("run_id", Uuid, nullable=False),
        Column("at", DateTime(timezone=True), nullable=False),
        Column("table_name", Text, nullable=False),
        # In words, with the dates that applied, e.g. "date < 2023-11-24".
        Column("criteria", Text, nullable=False),
        Column("cutoff", Date, nullable=False),
        Column("settle", Date, nullable=False),
        Column("rows_deleted", BigInteger, nullable=False),
        Column("logged_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        CheckConstraint("rows_deleted > 0", name="rows_deleted_positive"),
    )


@dataclass(frozen=True)
class Chunk:
    deleted: dict[str, int]  # rows deleted per table
    more: bool  # whether rows may be left that another chunk would delete


# Deletes at most `limit` rows of the step's table (and rows of other tables that belong to
# them), in the caller's transaction.
ChunkFn = Callable[[AsyncSession, int], Awaitable[Chunk]]
# For --dry-run: the rows the step would delete now, per table.
CountFn = Callable[[AsyncSession], Awaitable[dict[str, int]]]


@dataclass(frozen=True)
class PurgeStep:
    criteria: dict[str, str]  # per table it deletes from, in words
    chunk: ChunkFn
    count: CountFn
    # A smaller chunk for steps whose rows need one lock each (advisory locks share a table).
    max_chunk_rows: int | None = None


@dataclass
class PurgeReport:
    service: str
    run_id: uuid.UUID
    window: RetentionWindow
    dry_run: bool
    skipped: bool = False
    complete: bool = True
    deleted: dict[str, int] = field(default_factory=dict)
    criteria: dict[str, str] = field(default_factory=dict)

    def lines(self) -> list[str]:
        w = self.window
        head = (
            f"{self.service} purge {'(dry run) ' if self.dry_run else ''}at {w.now.isoformat()}: "
            f"cutoff {w.cutoff}, settle {w.settle}, run {self.run_id}"
        )
        if self.skipped:
            return [head, "another purge of this service is running; nothing was done"]
        verb = "would delete" if self.dry_run else "deleted"
        out = [head]
        width = max((len(t) for t in self.criteria), default=0)
        for table, criteria in self.criteria.items():
            out.append(f"  {table:<{width}}  {verb} {self.deleted.get(table, 0):>9}  ({criteria})")
        if not self.complete:
            out.append("  stopped before the end; the next run continues")
        return out


async def delete_chunk(
    session: AsyncSession, table: Table, condition: ColumnElement[bool], limit: int
) -> int:
    """Deletes at most `limit` rows matching `condition`, chosen by primary key.

    The condition is repeated on the delete itself, so a row changed by a concurrent writer
    after it was chosen is deleted only if it still matches.
    """
    pk = list(table.primary_key.columns)
    key: ColumnElement[Any] = tuple_(*pk) if len(pk) > 1 else pk[0]
    chosen = select(*pk).where(condition).limit(limit)
    return rowcount(await session.execute(delete(table).where(condition, key.in_(chosen))))


def rowcount(result: Any) -> int:
    return int(cast(CursorResult[Any], result).rowcount)


def table_of(model: type[Any]) -> Table:
    return cast(Table, model.__table__)


def closed_concern_condition(table: Table, window: RetentionWindow) -> ColumnElement[bool]:
    """opspor_shared.retention's purge rule for concerns, on a table with crossing_date,
    status and withdrawn_at (each service keeps its own copy)."""
    c = table.c
    return and_(
        c.crossing_date < window.settle,
        or_(
            and_(c.status == "withdrawn", c.withdrawn_at < window.closed_before),
            and_(c.status == "active", c.crossing_date < window.active_crossing_before),
        ),
    )


def closed_concern_criteria(window: RetentionWindow) -> str:
    return (
        f"crossing_date < {window.settle} and (withdrawn before "
        f"{window.closed_before.isoformat(timespec='seconds')} or active with crossing_date < "
        f"{window.active_crossing_before})"
    )


async def count_rows(session: AsyncSession, table: Table, condition: ColumnElement[bool]) -> int:
    return int(await session.scalar(select(func.count()).select_from(table).where(condition)) or 0)


async def purge(
    engine: AsyncEngine,
    sessionmaker: async_sessionmaker[AsyncSession],
    *,
    service: str,
    log_table: Table,
    steps: Sequence[PurgeStep],
    window: RetentionWindow,
    chunk_rows: int,
    dry_run: bool = False,
    stop: asyncio.Event | None = None,
    max_chunks: int = MAX_CHUNKS_PER_STEP,
) -> PurgeReport:
    report = PurgeReport(service=service, run_id=uuid.uuid4(), window=window, dry_run=dry_run)
    for step in steps:
        report.criteria.update(step.criteria)
    if dry_run:
        # No lock: counting is harmless next to a running purge.
        async with sessionmaker() as session:
            for step in steps:
                report.deleted.update(await step.count(session))
        return report
    async with engine.connect() as lock:
        held = await lock.scalar(
            text("select pg_try_advisory_xact_lock(hashtext('opspor-purge'), hashtext(:service))"),
            {"service": service},
        )
        if not held:
            report.skipped = True
            RUNS.labels(service, "skipped").inc()
            log.info("purge_skipped", service=service, reason="another run holds the lock")
            return report
        try:
            for step in steps:
                if not await _run_step(
                    sessionmaker, report, log_table, step, chunk_rows, stop, max_chunks
                ):
                    report.complete = False
                    break
        except Exception:
            RUNS.labels(service, "failed").inc()
            raise
        finally:
            # Ends the transaction, and with it the lock.
            await lock.rollback()
    RUNS.labels(service, "done" if report.complete else "incomplete").inc()
    LAST_RUN.labels(service).set(window.now.timestamp())
    log.info(
        "purge_done",
        service=service,
        run_id=str(report.run_id),
        cutoff=str(window.cutoff),
        settle=str(window.settle),
        complete=report.complete,
        deleted=report.deleted,
    )
    return report


async def _run_step(
    sessionmaker: async_sessionmaker[AsyncSession],
    report: PurgeReport,
    log_table: Table,
    step: PurgeStep,
    chunk_rows: int,
    stop: asyncio.Event | None,
    max_chunks: int,
) -> bool:
    """True when the step deleted everything due, False when stopped or out of chunks."""
    limit = min(chunk_rows, step.max_chunk_rows or chunk_rows)
    for _ in range(max_chunks):
        if stop is not None and stop.is_set():
            return False
        async with unit_of_work(sessionmaker) as session:
            chunk = await step.chunk(session, limit)
            deleted = chunk.deleted
            rows = [
                {
                    "run_id": report.run_id,
                    "at": report.window.now,
                    "table_name": table,
                    "criteria": step.criteria[table],
                    "cutoff": report.window.cutoff,
                    "settle": report.window.settle,
                    "rows_deleted": n,
                }
                for table, n in deleted.items()
                if n
            ]
            if rows:
                await session.execute(insert(log_table), rows)
        for table, n in deleted.items():
            report.deleted[table] = report.deleted.get(table, 0) + n
            ROWS_PURGED.labels(table).inc(n)
        if not chunk.more:
            return True
    log.warning("purge_chunk_limit_reached", tables=sorted(step.criteria), chunks=max_chunks)
    return False


def command(
    service: str,
    run: Callable[
        [AsyncEngine, async_sessionmaker[AsyncSession], ServiceSettings, Clock, bool],
        Awaitable[PurgeReport],
    ],
    argv: Sequence[str] | None = None,
) -> int:
    """`opspor-<service>-purge [--dry-run]`: one run now, counts printed per table."""
    parser = argparse.ArgumentParser(
        prog=f"opspor-{service}-purge",
        description=(
            f"Deletes the {service}'s data that is older than the retention settings "
            "(RETENTION_REGISTRATION_DAYS, RETENTION_CLOSED_CONCERN_DAYS) and records it in "
            f"{service}_purges. Reads DATABASE_URL and the retention settings from the environment."
        ),
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="count what would be deleted; delete nothing"
    )
    args = parser.parse_args(argv)
    configure_logging(f"{service}-purge", "WARNING")
    settings = load_settings(ServiceSettings, f"opspor-{service}-purge")

    async def once() -> PurgeReport:
        engine = make_engine(settings.database_url, pool_size=2)
        try:
            return await run(
                engine, make_sessionmaker(engine), settings, system_clock, args.dry_run
            )
        finally:
            await engine.dispose()

    report = asyncio.run(once())
    sys.stdout.write("\n".join(report.lines()) + "\n")
    return EXIT_BUSY if report.skipped else 0


@dataclass(frozen=True)
class ServicePurge:
    """One service's purge: its name, its log table and its steps for a retention window.

    Called as `purge_once(engine, sessionmaker, settings, clock, dry_run=..., stop=...)` by the
    service's periodic task and its command (`python -m opspor_<service>.purge`)."""

    service: str
    log_table: Table
    steps: Callable[[RetentionWindow], Sequence[PurgeStep]]

    async def __call__(
        self,
        engine: AsyncEngine,
        sessionmaker: async_sessionmaker[AsyncSession],
        settings: ServiceSettings,
        clock: Clock,
        dry_run: bool = False,
        stop: asyncio.Event | None = None,
    ) -> PurgeReport:
        window = retention_window(settings, clock())
        return await purge(
            engine,
            sessionmaker,
            service=self.service,
            log_table=self.log_table,
            steps=self.steps(window),
            window=window,
            chunk_rows=settings.purge_chunk_rows,
            dry_run=dry_run,
            stop=stop,
        )

    def main(self) -> None:
        sys.exit(command(self.service, self))
