"""Phase (c): re-evaluating a full school year for every pupil, from the database to the diff.

A database of its own is created and migrated, then seeded directly (this phase measures the
worker, not ingest): one municipality, `schools` schools with one Danish school year each
(autumn and Christmas breaks, DK public holidays), `pupils` pupils and about 14 registrations
per pupil in `worker_registrations` / `worker_pupils`, written with COPY. The worker's real
`tick()` then runs in a separate process (tests/bench/reeval_worker.py) with its clock on the
second-to-last school day of the year: every school is due, so every pupil is read, evaluated
from scratch, diffed against `concerns`, and every raised concern is written to `worker_outbox`.
A second tick over the same data (the schools' horizons forgotten, nothing else changed)
must write no event; it measures the cost of a re-evaluation that finds nothing new. A third
tick runs on the last school day: only the day changed, so only the pupils whose concerns can
change that day (registrations on it, a share rule reaching min_days) are evaluated.

The registrations are drawn with a fixed seed. Each pupil has an absence propensity r
(lognormal): illness episodes of 1-3 days and half days grow with r, late arrivals and skipped
lessons (slots "1".."8", extent 0.125, mostly unauthorized) grow with r, authorized leave does
not, and unauthorized days (alone or in short runs) grow with r cubed. So most pupils have a
handful of registrations and a long tail has many: with the defaults about 7 % of the pupils
cross a `concern`-level limit of dk-aalborg-2018 or dk-national and about 18 % the PPR limit of
10 absence days in the year.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import random
import sys
import time
from collections.abc import Container, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock_time
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
from sqlalchemy import insert

from opspor_api.models import Municipality, School, SchoolYearRow
from opspor_shared.db import make_engine
from opspor_shared.devstack.postgres import admin_url, create_database, drop_database
from opspor_shared.migrate import upgrade_async
from opspor_shared.settings import ServiceSettings
from tests.bench import sql_job
from tests.bench.profile import Profiler
from tests.bench.system import CpuMeter
from tests.bench.workload import MUNICIPALITY, TIMEZONE, calendar
from tests.support import SCHOOL_YEAR, YEAR_BODY

# The packs the benchmark's pupils are evaluated with (the municipality's, which every school
# uses): the one place to change them.
RULE_PACKS: tuple[str, ...] = ("dk-aalborg-2018", "dk-national")

ONE = Decimal("1")
HALF = Decimal("0.5")
LESSON = Decimal("0.125")  # one of eight lessons
ENROLMENT_COLUMNS = (
    "pupil_id",
    "school_id",
    "enrolled_from",
    "enrolled_until",
    "recorded_at",
    "event_id",
)
# Movers change school after the Christmas break: its first school day.
MOVE_DAY = date(2027, 1, 4)
REGISTRATION_COLUMNS = (
    "pupil_id",
    "date",
    "slot",
    "school_id",
    "category",
    "extent",
    "recorded_at",
    "event_id",
    "retracted",
)
Row = tuple[str, date, str, str, str, Decimal, datetime, str, bool]


def school_id(n: int) -> str:
    return f"bench-reeval-{n:03d}"


def pupil_id(school: int, n: int) -> str:
    return f"elev-r{school:03d}-{n:05d}"


def _poisson(rng: random.Random, lam: float) -> int:
    """Knuth's method; lam stays small here (under about 40)."""
    limit = math.exp(-lam)
    k, p = 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


def pupil_absences(
    rng: random.Random, days: Sequence[date]
) -> dict[tuple[int, str], tuple[str, Decimal]]:
    """(school day index, slot) -> (category, extent) of one pupil's year; see the module doc.

    A whole-day registration and half-day ones never share a date, so a day's extents never
    need capping; lesson slots may add to a half day (c(d) caps them, as it would in reality).
    """
    n = len(days)
    r = rng.lognormvariate(0.0, 0.75)
    cells: dict[tuple[int, str], tuple[str, Decimal]] = {}

    def put(i: int, slot: str, category: str, extent: Decimal) -> None:
        if not 0 <= i < n or (i, "day") in cells:
            return
        if slot == "day" and ((i, "am") in cells or (i, "pm") in cells):
            return
        cells.setdefault((i, slot), (category, extent))

    for _ in range(_poisson(rng, 1.3 * r)):
        start = rng.randrange(n)
        for j in range(rng.choice((1, 1, 1, 2, 2, 3))):
            put(start + j, "day", "illness", ONE)
    for _ in range(_poisson(rng, 0.3)):
        start = rng.randrange(n)
        for j in range(rng.randint(1, 5)):
            put(start + j, "day", "authorized", ONE)
    for _ in range(_poisson(rng, 1.2 * r)):
        category = rng.choice(("illness", "illness", "authorized", "unauthorized"))
        put(rng.randrange(n), rng.choice(("am", "pm")), category, HALF)
    for _ in range(_poisson(rng, 4.6 * r)):
        i, lesson = rng.randrange(n), rng.randint(1, 7)
        category = rng.choice(("unauthorized", "unauthorized", "illness"))
        for j in range(rng.choice((1, 1, 2))):
            put(i, str(lesson + j), category, LESSON)
    for _ in range(_poisson(rng, 0.04 * r**3)):
        start = rng.randrange(n)
        for j in range(rng.choice((1, 1, 1, 1, 2, 2, 3, 5))):
            put(start + j, "day", "unauthorized", ONE)
    if not cells:
        # The worker learns of a pupil from a registration: none would mean no such pupil.
        put(rng.randrange(n), "1", "unauthorized", LESSON)
    return cells


def school_rows(
    rng: random.Random,
    school: int,
    pupils: int,
    days: Sequence[date],
    movers: Container[int] = (),
    next_school: str = "",
) -> Iterator[Row]:
    """The registrations of a school's pupils; a mover's from MOVE_DAY on name the next school."""
    sid = school_id(school)
    # Recorded the morning of the day (UTC), as a school system would send them.
    recorded = [datetime.combine(d, clock_time(7, 30), UTC) for d in days]
    for n in range(pupils):
        pid = pupil_id(school, n)
        cells = pupil_absences(rng, days)
        moves = n in movers
        for k, ((i, slot), (category, extent)) in enumerate(sorted(cells.items())):
            at = next_school if moves and days[i] >= MOVE_DAY else sid
            yield (pid, days[i], slot, at, category, extent, recorded[i], f"{pid}-{k}", False)


def movers_of(seed_value: int, school: int, pupils: int, share: float) -> set[int]:
    """Which of a school's pupils move; drawn apart from the absences, which stay the same."""
    rng = random.Random(f"{seed_value}-movers-{school}")
    return {n for n in range(pupils) if rng.random() < share}


def enrolment_rows(
    school: int, pupils: int, first_day: date, movers: Container[int], next_school: str
) -> list[tuple[str, str, date, date | None, datetime, str]]:
    """One open enrolment per pupil from the year's first day; a mover's ends before MOVE_DAY
    and a second one at the next school starts on it."""
    sid = school_id(school)
    recorded = datetime.combine(first_day, clock_time(6), UTC)
    rows: list[tuple[str, str, date, date | None, datetime, str]] = []
    for n in range(pupils):
        pid = pupil_id(school, n)
        if n in movers:
            rows.append((pid, sid, first_day, MOVE_DAY - timedelta(days=1), recorded, f"{pid}-e0"))
            rows.append((pid, next_school, MOVE_DAY, None, recorded, f"{pid}-e1"))
        else:
            rows.append((pid, sid, first_day, None, recorded, f"{pid}-e0"))
    return rows


@dataclass
class Seeded:
    database_url: str
    schools: int
    pupils: int
    registrations: int
    enrolments: int
    movers: int
    seconds: float
    horizon: date
    now: datetime
    # Noon on the school day before `horizon`: the first two ticks run on that day, the
    # day-change tick then on the last day.
    day_before: datetime


def spread(total: int, parts: int) -> list[int]:
    """`total` split into `parts` sizes that differ by at most one."""
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


async def seed(
    url: str,
    pupils: int,
    schools: int,
    seed_value: int,
    log: Any,
    *,
    enrolments: bool = False,
    movers: float = 0.0,
) -> Seeded:
    began = time.perf_counter()
    cal = calendar()
    days = list(cal.days)
    last = days[-1]
    engine = make_engine(url.replace("postgresql://", "postgresql+asyncpg://", 1))
    try:
        async with engine.begin() as conn:
            await conn.execute(
                insert(Municipality).values(
                    id=MUNICIPALITY,
                    name="Aalborg Kommune (bench)",
                    country="DK",
                    language="da",
                    rule_packs=list(RULE_PACKS),
                    ppr_mailbox="ppr@sikkerpost.aalborg.dk",
                    unit_mailbox="boern@sikkerpost.aalborg.dk",
                )
            )
            await conn.execute(
                insert(School),
                [
                    {
                        "id": school_id(s),
                        "municipality_id": MUNICIPALITY,
                        "name": f"Skole {s}",
                        "timezone": TIMEZONE,
                        "language": None,
                        "rule_packs": None,
                        "mailbox": f"{school_id(s)}@sikkerpost.aalborg.dk",
                    }
                    for s in range(schools)
                ],
            )
            await conn.execute(
                insert(SchoolYearRow),
                [
                    {
                        "school_id": school_id(s),
                        "label": SCHOOL_YEAR,
                        "first_day": date.fromisoformat(YEAR_BODY["first_day"]),
                        "last_day": date.fromisoformat(YEAR_BODY["last_day"]),
                        "closures": YEAR_BODY["closures"],
                        "extra_days": YEAR_BODY["extra_days"],
                    }
                    for s in range(schools)
                ],
            )
    finally:
        await engine.dispose()

    rng = random.Random(seed_value)
    conn = await asyncpg.connect(url)
    registrations = enrolment_count = moved = 0
    try:
        for s, size in enumerate(spread(pupils, schools)):
            nxt = school_id((s + 1) % schools)
            moving = movers_of(seed_value, s, size, movers) if movers else set()
            moved += len(moving)
            rows = list(school_rows(rng, s, size, days, moving, nxt))
            registrations += len(rows)
            await conn.copy_records_to_table(
                "worker_registrations", records=rows, columns=REGISTRATION_COLUMNS
            )
            await conn.copy_records_to_table(
                "worker_pupils",
                records=[
                    (pupil_id(s, n), nxt if n in moving else school_id(s), None)
                    for n in range(size)
                ],
                columns=("pupil_id", "school_id", "evaluated_horizon"),
            )
            if enrolments or movers:
                enrolled = enrolment_rows(s, size, days[0], moving, nxt)
                enrolment_count += len(enrolled)
                await conn.copy_records_to_table(
                    "worker_enrolments", records=enrolled, columns=ENROLMENT_COLUMNS
                )
            if (s + 1) % 20 == 0:
                log(f"seeded {s + 1}/{schools} schools, {registrations:,} registrations")
        # As autovacuum would have done long before a year's registrations were complete.
        await conn.execute(
            "vacuum (analyze) worker_registrations, worker_pupils, worker_enrolments"
        )
    finally:
        await conn.close()
    now = datetime.combine(last, clock_time(12), ZoneInfo(TIMEZONE)).astimezone(UTC)
    day_before = datetime.combine(days[-2], clock_time(12), ZoneInfo(TIMEZONE)).astimezone(UTC)
    return Seeded(
        database_url=url,
        schools=schools,
        pupils=pupils,
        registrations=registrations,
        enrolments=enrolment_count,
        movers=moved,
        seconds=round(time.perf_counter() - began, 1),
        horizon=last,
        now=now,
        day_before=day_before,
    )


async def run_tick(
    seeded: Seeded,
    label: str,
    chunk: int,
    profiler: Profiler | None,
    log: Any,
    now: datetime,
    processes: int = 1,
    engine: str = "",
) -> dict[str, Any]:
    """One tick in fresh worker processes (`processes` of them split the partitions, as two
    workers of one consumer group do); CPU of the workers while it ran, and the wall time from
    the start signal to the last one's figures."""
    shares = [
        ",".join(str(p) for p in range(PARTITIONS) if p % processes == n) if processes > 1 else ""
        for n in range(processes)
    ]
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.bench.reeval_worker",
            "--database-url",
            seeded.database_url,
            "--now",
            now.isoformat(),
            "--chunk",
            str(chunk),
            "--partitions",
            share,
            "--engine",
            engine,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        for share in shares
    ]
    try:
        ready = [
            json.loads(await asyncio.wait_for(_out(proc).readline(), timeout=60)) for proc in procs
        ]
        meter = CpuMeter({"threshold-worker": [proc.pid for proc in procs]})
        if profiler is not None:
            profiler.pids = {"threshold-worker": procs[0].pid}
            profiler.start(label)
        meter.start()
        began = time.perf_counter()
        for proc in procs:
            _in(proc).write(b"go\n")
            await _in(proc).drain()
        lines = await asyncio.gather(
            *(asyncio.wait_for(_out(proc).readline(), timeout=1800) for proc in procs)
        )
        wall = time.perf_counter() - began
        cpu = meter.stop()
        if profiler is not None:
            profiler.stop()
        if not all(lines):
            raise RuntimeError(f"{label}: a worker process ended without figures")
        each: list[dict[str, Any]] = [json.loads(line) for line in lines]
    finally:
        for proc in procs:
            if proc.returncode is None:
                with contextlib.suppress(OSError):
                    _in(proc).write(b"done\n")
                    _in(proc).close()
                try:
                    await asyncio.wait_for(proc.wait(), timeout=30)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()
    figures: dict[str, Any] = {
        "processes": processes,
        "seconds": round(wall if processes > 1 else each[0]["seconds"], 3),
        "worker_cpu_seconds": round(sum(f["worker_cpu_seconds"] for f in each), 3),
        "concern_changes": sum(f["concern_changes"] for f in each),
        "pupils_evaluated": sum(f["pupils_evaluated"] for f in each),
        "pupils_evaluated_per_process": [f["pupils_evaluated"] for f in each],
        "chunk_pupils": each[0]["chunk_pupils"],
        "rss_mib_at_end": max(f["rss_mib_at_end"] for f in each),
        "peak_rss_mib": max(f["peak_rss_mib"] for f in each),
        "rss_mib_when_ready": max(r["rss_mib"] for r in ready),
        "cpu_cores": cpu,
    }
    seconds = figures["seconds"]
    figures["pupils_per_second"] = round(seeded.pupils / seconds) if seconds else None
    figures["registrations_per_second"] = round(seeded.registrations / seconds) if seconds else None
    log(
        f"{label}: {seconds:.1f} s in {processes} process(es), {figures['concern_changes']:,}"
        f" concern changes, peak RSS {figures['peak_rss_mib']:.0f} MiB"
    )
    return figures


# The worker's partition count (its default, as the seeded database has no other): how the
# tick's work is split between processes.
PARTITIONS: int = ServiceSettings.model_fields["topic_partitions"].default


def _out(proc: asyncio.subprocess.Process) -> asyncio.StreamReader:
    assert proc.stdout is not None
    return proc.stdout


def _in(proc: asyncio.subprocess.Process) -> asyncio.StreamWriter:
    assert proc.stdin is not None
    return proc.stdin


async def state(url: str) -> dict[str, int]:
    conn = await asyncpg.connect(url)
    try:
        row = await conn.fetchrow(
            """
            select
              (select count(*) from concerns where status = 'active') as active,
              (select count(distinct pupil_id) from concerns where status = 'active') as pupils,
              (select coalesce(sum(cardinality(partition_keys)), 0) from worker_outbox) as outbox,
              (select count(distinct school_id) from worker_school_horizons) as schools_done
            """
        )
        levels = await conn.fetch(
            "select level, count(*) as n from concerns where status = 'active' group by level"
        )
    finally:
        await conn.close()
    out = {
        "active_concerns": row["active"],
        "pupils_with_active_concerns": row["pupils"],
        "outbox_events": row["outbox"],
        "schools_marked_done": row["schools_done"],
    }
    out |= {f"active_{r['level']}": r["n"] for r in sorted(levels, key=lambda r: r["level"])}
    return out


async def forget_horizons(url: str) -> None:
    """As after a lost worker_school_horizons table: every school is due again."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("delete from worker_school_horizons")
    finally:
        await conn.close()


async def only_pack(url: str, pack: str) -> None:
    """Every school keeps only `pack`, and the worker starts again from no concerns: its next
    tick does the SQL job's work, on the same registrations, for the same pack."""
    conn = await asyncpg.connect(url)
    try:
        async with conn.transaction():
            await conn.execute("update schools set rule_packs = array[$1]::text[]", pack)
            await conn.execute("delete from concerns")
            await conn.execute("delete from worker_outbox")
            await conn.execute("delete from worker_school_horizons")
    finally:
        await conn.close()


async def without_engine(
    seeded: Seeded, url: str, chunk: int, log: Any, var_dir: Path, pairs: int = 2
) -> dict[str, Any]:
    """What the job's-pack first tick costs without the engine's work: alternately with the
    real engine (recording each pupil's result) and with those results replayed (see
    tests/bench/reeval_worker.py, --engine); both sides build the same look-up key."""
    results = var_dir / "reeval-engine-results.pickle"
    results.parent.mkdir(parents=True, exist_ok=True)
    runs: list[dict[str, Any]] = []
    try:
        for n in range(pairs):
            for mode in ("record", "replay"):
                await only_pack(url, sql_job.PACK)
                ran = await run_tick(
                    seeded,
                    f"reeval-engine-{mode}-{n}",
                    chunk,
                    None,
                    log,
                    seeded.day_before,
                    engine=f"{mode}:{results}",
                )
                if mode == "record" and not results.exists():
                    raise RuntimeError(f"recording run {n} kept no results in {results}")
                runs.append({"mode": mode} | {k: ran[k] for k in TICK_FIGURES})
    finally:
        results.unlink(missing_ok=True)
    real = [r for r in runs if r["mode"] == "record"]
    free = [r for r in runs if r["mode"] == "replay"]
    if any(f["concern_changes"] != r["concern_changes"] for f, r in zip(free, real, strict=True)):
        raise RuntimeError(f"replayed ticks changed other concerns than the engine's: {runs}")
    return {"pairs": [[r, f] for r, f in zip(real, free, strict=True)]}


# What the engine-floor runs keep of each tick's figures.
TICK_FIGURES = ("seconds", "worker_cpu_seconds", "concern_changes", "cpu_cores")


async def reeval_phase(
    *,
    database: str,
    var_dir: Path,
    pupils: int,
    schools: int,
    seed_value: int,
    chunk: int,
    py_spy: Path | None,
    keep_database: bool,
    log: Any,
    enrolments: bool = False,
    movers: float = 0.0,
    engine_floor: bool = False,
) -> dict[str, Any]:
    admin = admin_url(var_dir)
    url = await create_database(admin, database, recreate=True)
    try:
        await upgrade_async(url.replace("postgresql://", "postgresql+asyncpg://", 1))
        log(f"re-evaluation: seeding {pupils:,} pupils in {schools} schools ({database})")
        seeded = await seed(
            url, pupils, schools, seed_value, log, enrolments=enrolments, movers=movers
        )
        log(f"seeded {seeded.registrations:,} registrations in {seeded.seconds:.1f} s")
        profiler = Profiler(py_spy, var_dir / "profiles", {}) if py_spy is not None else None
        first = await run_tick(seeded, "reeval-first", chunk, profiler, log, seeded.day_before)
        after_first = await state(url)
        # The BI team's job on the same registrations, compared with the worker's concerns.
        prepared = await sql_job.prepare(
            url, {school_id(s): calendar() for s in range(seeded.schools)}
        )
        job = await sql_job.run_job(url, seeded.day_before.date()) | prepared
        job["worker_over_sql_time"] = (
            round(job["seconds"] / first["seconds"], 2) if first["seconds"] else None
        )
        log(
            f"SQL job ({sql_job.PACK}): {job['seconds']:.1f} s over {job['grid_rows']:,} grid"
            f" rows, {job['crossings']:,} crossings, agree with the worker: {job['agree']}"
        )
        await forget_horizons(url)
        second = await run_tick(seeded, "reeval-again", chunk, profiler, log, seeded.day_before)
        after_second = await state(url)
        # The same re-evaluation in two processes, each holding half of the partitions.
        await forget_horizons(url)
        split = await run_tick(
            seeded, "reeval-again-2", chunk, None, log, seeded.day_before, processes=2
        )
        after_split = await state(url)
        # The next school day comes: only pupils whose next change has come are evaluated.
        day = await run_tick(seeded, "reeval-day-change", chunk, profiler, log, seeded.now)
        after_day = await state(url)
        # The comparison the SQL job stands for: the same pack, every concern new.
        await only_pack(url, sql_job.PACK)
        same = await run_tick(
            seeded, "reeval-first-same-pack", chunk, profiler, log, seeded.day_before
        )
        after_same = await state(url)
        job["worker_same_pack_over_sql_time"] = (
            round(job["seconds"] / same["seconds"], 2) if same["seconds"] else None
        )
        job["same_pack"] = await sql_job.compare(url)
        if engine_floor:
            job["engine_floor"] = await without_engine(seeded, url, chunk, log, var_dir)
    finally:
        if not keep_database:
            await drop_database(admin, database)
    first["events_written"] = after_first["outbox_events"]
    second["events_written"] = after_second["outbox_events"] - after_first["outbox_events"]
    split["events_written"] = after_split["outbox_events"] - after_second["outbox_events"]
    day["events_written"] = after_day["outbox_events"] - after_split["outbox_events"]
    same["events_written"] = after_same["outbox_events"]
    return {
        "database": database,
        "rule_packs": list(RULE_PACKS),
        "schools": seeded.schools,
        "pupils": seeded.pupils,
        "registrations": seeded.registrations,
        "registrations_per_pupil": round(seeded.registrations / max(seeded.pupils, 1), 2),
        "enrolments": seeded.enrolments,
        "movers": seeded.movers,
        "seed": seed_value,
        "seed_seconds": seeded.seconds,
        "horizon": seeded.day_before.date().isoformat(),
        "day_change_horizon": seeded.horizon.isoformat(),
        "worker_clock": seeded.now.isoformat(),
        "first": first,
        "sql_job": job,
        "state_after_first": after_first,
        "again": second,
        "state_after_again": after_second,
        "again_two_processes": split,
        "day_change": day,
        "first_same_pack": same,
        "state_after_first_same_pack": after_same,
    }
