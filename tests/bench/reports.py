"""Phase (d): the reports API on a municipality of real size, without the stack.

A database of its own is created and migrated, then seeded directly with COPY into the api's
tables (this phase measures the reports, not ingest): the re-evaluation phase's municipality
(`schools` schools, `pupils` pupils, the same random year of about 14 registrations per pupil,
tests/bench/reevaluate.py), with an enrolment per pupil carrying a grade (0-9) and a class, and
an active concern for about one pupil in ten. Each report is then computed by its service
function on a real session and serialised to JSON, as a request would (no HTTP, no token):
once cold, then `repeats` more times; the median and the slowest are printed.
"""

from __future__ import annotations

import json
import random
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime
from datetime import time as clock_time
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
from sqlalchemy import insert

from opspor_api.models import Municipality, School, SchoolYearRow
from opspor_api.reports import service
from opspor_api.reports.repository import ReportRepository
from opspor_api.reports.schemas import CsvReport
from opspor_shared.auth import Principal, Role
from opspor_shared.db import make_engine, make_sessionmaker
from opspor_shared.devstack.postgres import admin_url, create_database, drop_database
from opspor_shared.migrate import upgrade_async
from opspor_shared.reference import CalendarCache, PackCache
from tests.bench.reevaluate import (
    REGISTRATION_COLUMNS,
    RULE_PACKS,
    pupil_id,
    school_id,
    school_rows,
    spread,
)
from tests.bench.workload import MUNICIPALITY, TIMEZONE, calendar
from tests.support import SCHOOL_YEAR, YEAR_BODY

ENROLMENT_COLUMNS = (
    "pupil_id",
    "school_id",
    "enrolled_from",
    "enrolled_until",
    "recorded_at",
    "event_id",
    "grade",
    "class_name",
)
CONCERN_COLUMNS = (
    "concern_id",
    "revision",
    "status",
    "pupil_id",
    "school_id",
    "municipality_id",
    "level",
    "crossing_date",
    "pack_id",
    "rule_id",
    "rule_version",
    "explanation",
)
CASE_COLUMNS = (
    "id",
    "pupil_id",
    "school_id",
    "municipality_id",
    "model_id",
    "model_version",
    "phase",
    "status",
    "source",
    "coordinator",
    "opened_on",
    "opened_by",
    "next_evaluation_due",
    "overdue_reasons",
    "version",
)
ENTRY_COLUMNS = ("case_id", "kind", "data", "by")
PHASES = ("class-team", "resource-team", "plan", "external")
# A day with school days after it, so close-to-limit has two next days to simulate.
CLOSE_TO_LIMIT_DAY = date(2027, 3, 12)


async def _seed(url: str, pupils: int, schools: int, seed_value: int, log: Any) -> int:
    days = list(calendar().days)
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
    recorded = datetime.combine(days[0], clock_time(6), UTC)
    conn = await asyncpg.connect(url)
    registrations = 0
    try:
        for s, size in enumerate(spread(pupils, schools)):
            rows = list(school_rows(rng, s, size, days))
            registrations += len(rows)
            await conn.copy_records_to_table(
                "registrations", records=rows, columns=REGISTRATION_COLUMNS
            )
            enrolled = []
            concerns = []
            cases = []
            entries = []
            for n in range(size):
                grade = n % 10
                pid = pupil_id(s, n)
                enrolled.append(
                    (
                        pid,
                        school_id(s),
                        days[0],
                        None,
                        recorded,
                        f"{pid}-e0",
                        grade,
                        f"{grade}{'ABC'[(n // 10) % 3]}",
                    )
                )
                if n % 10 == 3:
                    concerns.append(
                        (
                            uuid.uuid5(uuid.NAMESPACE_URL, pid),
                            1,
                            "active",
                            pid,
                            school_id(s),
                            MUNICIPALITY,
                            "ppr-may" if n % 20 == 3 else "concern",
                            days[40 + n % 100],
                            RULE_PACKS[0],
                            "count-7-of-20",
                            "1",
                            "{}",
                        )
                    )
                    # Each concern opened a case (dk-ladder); one in four is overdue, one in
                    # three was consulted with or referred to PPR.
                    case_id = uuid.uuid5(uuid.NAMESPACE_URL, f"case|{pid}")
                    opened = days[40 + n % 100]
                    cases.append(
                        (
                            case_id,
                            pid,
                            school_id(s),
                            MUNICIPALITY,
                            "dk-ladder",
                            "1",
                            PHASES[n % 4],
                            "open",
                            "absence-data",
                            f"teacher-{n % 7}" if n % 5 else None,
                            opened,
                            "opspor",
                            days[min(len(days) - 1, 50 + n % 100)],
                            ["evaluation-overdue"] if n % 4 == 1 else [],
                            1,
                        )
                    )
                    if n % 3 == 0:
                        kind = "referred" if n % 2 else "consulted"
                        referral = {"to": "ppr", "type": kind, "on": opened.isoformat()}
                        entries.append((case_id, "referral", json.dumps(referral), "bench"))
            await conn.copy_records_to_table(
                "enrolments", records=enrolled, columns=ENROLMENT_COLUMNS
            )
            await conn.copy_records_to_table(
                "api_concerns", records=concerns, columns=CONCERN_COLUMNS
            )
            await conn.copy_records_to_table("cases", records=cases, columns=CASE_COLUMNS)
            await conn.copy_records_to_table("case_entries", records=entries, columns=ENTRY_COLUMNS)
            if (s + 1) % 20 == 0:
                log(f"seeded {s + 1}/{schools} schools, {registrations:,} registrations")
        await conn.execute(
            "vacuum (analyze) registrations, enrolments, api_concerns, cases, case_entries"
        )
    finally:
        await conn.close()
    return registrations


async def _time(run: Callable[[], Awaitable[CsvReport]], repeats: int) -> dict[str, Any]:
    seconds: list[float] = []
    size = 0
    for _ in range(repeats + 1):
        began = time.perf_counter()
        report = await run()
        size = len(report.model_dump_json())
        seconds.append(time.perf_counter() - began)
    warm = seconds[1:] or seconds
    return {
        "cold_s": round(seconds[0], 3),
        "median_s": round(statistics.median(warm), 3),
        "max_s": round(max(warm), 3),
        "json_bytes": size,
    }


async def reports_phase(
    *,
    database: str,
    var_dir: Any,
    pupils: int,
    schools: int,
    seed_value: int,
    repeats: int,
    keep_database: bool,
    log: Any,
) -> dict[str, Any]:
    admin = admin_url(var_dir)
    url = await create_database(admin, database, recreate=True)
    try:
        async_url = url.replace("postgresql://", "postgresql+asyncpg://", 1)
        await upgrade_async(async_url)
        log(f"reports: seeding {pupils:,} pupils in {schools} schools ({database})")
        began = time.perf_counter()
        registrations = await _seed(url, pupils, schools, seed_value, log)
        seed_seconds = round(time.perf_counter() - began, 1)
        log(f"seeded {registrations:,} registrations in {seed_seconds:.1f} s")
        engine = make_engine(async_url)
        sessionmaker = make_sessionmaker(engine)
        calendars, packs = CalendarCache(), PackCache()
        school = school_id(0)
        staff = Principal(
            "bench", Role.SCHOOL_STAFF, "bench", MUNICIPALITY, frozenset({school}), None
        )
        admin_p = Principal(
            "bench", Role.MUNICIPALITY_ADMIN, "bench", MUNICIPALITY, frozenset(), None
        )
        year = calendar()
        first, last = year.days[0], year.days[-1]
        now = datetime.combine(last, clock_time(12), ZoneInfo(TIMEZONE))

        def runner(
            make: Callable[[ReportRepository], Awaitable[CsvReport]],
        ) -> Callable[[], Awaitable[CsvReport]]:
            async def run() -> CsvReport:
                async with sessionmaker() as session:
                    return await make(ReportRepository(session))

            return run

        async def school_scope(repo: ReportRepository) -> service.Coverage:
            return await service.school_scope(repo, staff, school, calendars)

        async def all_scope(repo: ReportRepository) -> service.Coverage:
            return await service.municipality_scope(repo, MUNICIPALITY, calendars)

        async def absence_school(repo: ReportRepository) -> CsvReport:
            return await service.absence(repo, await school_scope(repo), first, last, False)

        async def patterns_school(repo: ReportRepository) -> CsvReport:
            return await service.patterns(repo, await school_scope(repo), first, last)

        async def concerns_school(repo: ReportRepository) -> CsvReport:
            return await service.open_concerns(repo, staff, await school_scope(repo))

        async def close_school(repo: ReportRepository) -> CsvReport:
            scope = await school_scope(repo)
            return await service.close_to_limit(
                repo, scope, CLOSE_TO_LIMIT_DAY, now, calendars, packs
            )

        async def baerum_school(repo: ReportRepository) -> CsvReport:
            return await service.baerum(repo, await school_scope(repo), last, now)

        async def absence_all(repo: ReportRepository) -> CsvReport:
            return await service.absence(repo, await all_scope(repo), first, last, True)

        async def concerns_all(repo: ReportRepository) -> CsvReport:
            scope = await all_scope(repo)
            return await service.open_concern_counts(repo, admin_p, MUNICIPALITY, scope)

        async def baerum_all(repo: ReportRepository) -> CsvReport:
            report = await service.baerum(repo, await all_scope(repo), last, now)
            return service.with_municipal_rows(report)

        async def cases_school(repo: ReportRepository) -> CsvReport:
            return await service.case_counts(repo, await school_scope(repo), roll_up=False)

        async def cases_all(repo: ReportRepository) -> CsvReport:
            return await service.case_counts(repo, await all_scope(repo), roll_up=True)

        timings: dict[str, Any] = {}
        try:
            for label, make in (
                ("school: absence shares (year)", absence_school),
                ("school: weekday/month patterns (year)", patterns_school),
                ("school: open concerns by level", concerns_school),
                ("school: close to a limit", close_school),
                ("school: Bærum table (with PPR columns)", baerum_school),
                ("school: cases by phase/coordinator/reason", cases_school),
                ("municipality: absence shares (year)", absence_all),
                ("municipality: open concerns by level", concerns_all),
                ("municipality: Bærum table (with PPR columns)", baerum_all),
                ("municipality: cases by phase/coord./reason", cases_all),
            ):
                timings[label] = await _time(runner(make), repeats)
                log(f"{label}: {timings[label]}")
        finally:
            await engine.dispose()
    finally:
        if not keep_database:
            await drop_database(admin, database)
    return {
        "database": database,
        "schools": schools,
        "pupils": pupils,
        "pupils_per_school": pupils // max(schools, 1),
        "registrations": registrations,
        "seed_seconds": seed_seconds,
        "period": f"{first.isoformat()}..{last.isoformat()}",
        "close_to_limit_day": CLOSE_TO_LIMIT_DAY.isoformat(),
        "repeats": repeats,
        "timings": timings,
    }


def reports_lines(r: dict[str, Any]) -> list[str]:
    lines = [
        "",
        f"(d) Reports: {r['pupils']:,} pupils in {r['schools']} schools"
        f" ({r['pupils_per_school']:,} per school), {r['registrations']:,} registrations,"
        f" period {r['period']}; service call + JSON, cold then median/max of {r['repeats']}",
        f"    {'report':<45} {'cold s':>8} {'median s':>9} {'max s':>8} {'JSON bytes':>11}",
    ]
    for label, t in r["timings"].items():
        lines.append(
            f"    {label:<45} {t['cold_s']:>8.3f} {t['median_s']:>9.3f} {t['max_s']:>8.3f}"
            f" {t['json_bytes']:>11,}"
        )
    return lines
