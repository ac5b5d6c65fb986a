"""The reference of phase (c): the nightly SQL job a municipality's BI team would write (issue 11).

The same registrations as the worker's (phase (c)'s seeded `worker_registrations`, retractions
left out) are copied into a plain absence table, and a school-day dimension is built from the
schools' calendars, as a BI team would have both. Neither is timed. The job itself, timed, is
one SQL statement for dk-aalborg-2018: a dense grid of every pupil's school days up to the
horizon, each day's absence (c(d), capped at one day) in the rule's categories, absence days at
the pack's day threshold of 0.5, windows with `rows between N preceding` (consecutive 5, 7 of
20, 15 of 60) or the running school-year count (10 and 40), and `lag` for the day a rule starts
to be met: a crossing. Its crossings are compared with the worker's concerns of the same pack
(they must agree, pupil by pupil and day by day).
"""

from __future__ import annotations

import time
from datetime import date
from typing import Any

import asyncpg

from opspor_shared.calendar import SchoolCalendar

PACK = "dk-aalborg-2018"

# Two steps, as a BI team's nightly job would run them: each pupil's absence per day (c(d) in
# the rule's categories, capped at one day), then the dense grid of school days with windows.
JOB = (
    """
create unlogged table bi_daily as
select pupil_id, day,
    least(coalesce(sum(extent) filter (where category = 'unauthorized'), 0), 1) as unauth,
    least(sum(extent), 1) as any_category
from bi_absence
group by pupil_id, day
""",
    "analyze bi_daily",
    """
create unlogged table bi_crossings as
with daily as (
    select p.pupil_id, d.day, d.school_year,
        coalesce(a.unauth, 0) as unauth, coalesce(a.any_category, 0) as any_category
    from worker_pupils p
    join bi_school_days d on d.school_id = p.school_id and d.day <= $1
    left join bi_daily a on a.pupil_id = p.pupil_id and a.day = d.day
),
counts as (
    select pupil_id, day,
        sum((unauth >= 0.5)::int) over (partition by pupil_id order by day
            rows between 4 preceding and current row) as run5,
        sum((unauth >= 0.5)::int) over (partition by pupil_id order by day
            rows between 19 preceding and current row) as of20,
        sum((unauth >= 0.5)::int) over (partition by pupil_id order by day
            rows between 59 preceding and current row) as of60,
        sum((any_category >= 0.5)::int) over (partition by pupil_id, school_year order by day
            rows unbounded preceding) as year_days
    from daily
),
met as (
    select pupil_id, day,
        run5 >= 5 as consecutive_5, of20 >= 7 as count_7_of_20, of60 >= 15 as count_15_of_60,
        year_days >= 10 as count_10_school_year, year_days >= 40 as count_40_school_year
    from counts
),
crossed as (
    select pupil_id, day,
        consecutive_5 and not coalesce(lag(consecutive_5) over w, false) as c1,
        count_7_of_20 and not coalesce(lag(count_7_of_20) over w, false) as c2,
        count_15_of_60 and not coalesce(lag(count_15_of_60) over w, false) as c3,
        count_10_school_year and not coalesce(lag(count_10_school_year) over w, false) as c4,
        count_40_school_year and not coalesce(lag(count_40_school_year) over w, false) as c5
    from met
    window w as (partition by pupil_id order by day)
)
select pupil_id, 'consecutive-5' as rule_id, day from crossed where c1
union all select pupil_id, 'count-7-of-20', day from crossed where c2
union all select pupil_id, 'count-15-of-60', day from crossed where c3
union all select pupil_id, 'count-10-school-year', day from crossed where c4
union all select pupil_id, 'count-40-school-year', day from crossed where c5
""",
)


async def prepare(url: str, calendars: dict[str, SchoolCalendar]) -> dict[str, Any]:
    """The plain absence table and the school-day dimension (not timed)."""
    began = time.perf_counter()
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            """
            drop table if exists bi_absence, bi_school_days, bi_daily, bi_crossings;
            create unlogged table bi_absence as
                select pupil_id, date as day, category, extent
                from worker_registrations where not retracted;
            create index on bi_absence (pupil_id, day);
            create unlogged table bi_school_days (school_id text, day date, school_year date);
            """
        )
        rows = [
            (school, d, year.first_day)
            for school, cal in calendars.items()
            for d in cal.days
            if (year := cal.school_year_of(d)) is not None
        ]
        await conn.copy_records_to_table(
            "bi_school_days", records=rows, columns=("school_id", "day", "school_year")
        )
        await conn.execute(
            "create index on bi_school_days (school_id, day); analyze bi_absence, bi_school_days"
        )
        absences = await conn.fetchval("select count(*) from bi_absence")
    finally:
        await conn.close()
    return {"absence_rows": absences, "prepare_seconds": round(time.perf_counter() - began, 1)}


async def run_job(url: str, horizon: date) -> dict[str, Any]:
    """The job, timed, with the crossings it found; and PostgreSQL's own execution time."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("drop table if exists bi_daily, bi_crossings")
        # The planner's default work_mem sorts the grid on disk; a BI team would raise it.
        await conn.execute("set work_mem = '256MB'")
        began = time.perf_counter()
        for statement in JOB:
            await conn.execute(statement.replace("$1", f"'{horizon.isoformat()}'::date"))
        seconds = time.perf_counter() - began
        grid = await conn.fetchval(
            "select count(*) from worker_pupils p join bi_school_days d"
            " on d.school_id = p.school_id and d.day <= $1",
            horizon,
        )
    finally:
        await conn.close()
    return {"pack": PACK, "seconds": round(seconds, 2), "grid_rows": grid} | await compare(url)


async def compare(url: str) -> dict[str, Any]:
    """The job's crossings (kept in bi_crossings) against the worker's active concerns of the
    same pack, as they are now."""
    conn = await asyncpg.connect(url)
    try:
        crossings = {
            (r["pupil_id"], r["rule_id"], r["day"])
            for r in await conn.fetch("select pupil_id, rule_id, day from bi_crossings")
        }
        worker = {
            (r["pupil_id"], r["rule_id"], r["crossing_date"])
            for r in await conn.fetch(
                "select pupil_id, rule_id, crossing_date from concerns"
                " where pack_id = $1 and status = 'active'",
                PACK,
            )
        }
    finally:
        await conn.close()
    return {
        "crossings": len(crossings),
        "worker_crossings": len(worker),
        "only_sql": len(crossings - worker),
        "only_worker": len(worker - crossings),
        "sample_only_sql": sorted(map(str, crossings - worker))[:5],
        "sample_only_worker": sorted(map(str, worker - crossings))[:5],
        "agree": crossings == worker,
    }
