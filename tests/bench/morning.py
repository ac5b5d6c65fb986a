"""Phase (e): a national morning (issue 11). Every pupil of the country gets one registration for
today, posted in batches the way school systems send a morning's registers, and the clock runs
until the last concern event has been published to Kafka.

`pupils` pupils in `schools` schools. A share of them (`crossing_share`, 2 % by default: about
the share of pupils who start a run of absence on a given day) already have four unauthorized
absence days in a row before today, posted through the API and evaluated before the clock
starts; today's unauthorized day is their fifth, which crosses dk-aalborg-2018's
`consecutive-5`. Everyone else's single registration (illness or authorized) crosses nothing.
Measured: from the first POST to the last one accepted, and to the moment the worker holds
every registration, the expected concerns exist and the worker's outbox is empty (every
concern event acknowledged by the broker). Notices wait out the default settle period (run
with NOTICE_SETTLE_SECONDS=900), as on a real morning, so the mailbox does not share the cores.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import date
from typing import Any

import httpx

from tests.bench.ingest import run_ingest
from tests.bench.progress import Progress
from tests.bench.workload import (
    MUNICIPALITY,
    configure,
    encode_batches,
    evaluated_school_days,
    registration,
)

HEADERS = {"content-type": "application/json"}


def school_of(n: int) -> str:
    return f"morning-{n:03d}"


def batches(items: list[dict[str, Any]], size: int) -> tuple[list[bytes], list[int]]:
    """The batch bodies, and how many registrations each holds."""
    return encode_batches(items, size), [
        min(size, len(items) - i) for i in range(0, len(items), size)
    ]


def plan(
    pupils: int, schools: int, days: Sequence[date], crossing_share: float
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], int]:
    """(the crossing pupils' four earlier days, the morning's registrations, crossing pupils)"""
    today, before = days[-1], days[-5:-1]
    every = max(1, round(1 / crossing_share)) if crossing_share > 0 else 0
    history: list[dict[str, Any]] = []
    morning: list[dict[str, Any]] = []
    crossing = 0
    for n in range(pupils):
        school = school_of(n % schools)
        pupil = f"elev-m-{n:07d}"
        crosses = bool(every) and n % every == 0
        if crosses:
            crossing += 1
            history += [
                registration(f"m-{n:07d}-h{k}", pupil, school, d, "unauthorized")
                for k, d in enumerate(before)
            ]
        category = "unauthorized" if crosses else ("illness", "authorized")[n % 2]
        morning.append(registration(f"m-{n:07d}-t", pupil, school, today, category))
    return history, morning, crossing


async def morning_phase(
    api_url: str,
    admin: dict[str, str],
    writer: dict[str, str],
    progress: Progress,
    *,
    pupils: int,
    schools: int,
    crossing_share: float,
    connections: int,
    batch_size: int,
    timeout: float,
    log: Any,
) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=api_url, timeout=60, headers=admin) as client:
        for n in range(schools):
            await configure(client, school_of(n))
    ids = [school_of(n) for n in range(schools)]
    ok = await progress.wait_for_horizons(ids, timeout=120)
    log(f"morning: {schools} schools configured, seen by the worker's tick: {ok}")
    days = evaluated_school_days()
    began = time.perf_counter()
    history, morning, crossing = plan(pupils, schools, days, crossing_share)
    (history_bodies, history_sizes), (morning_bodies, morning_sizes) = (
        batches(history, batch_size),
        batches(morning, batch_size),
    )
    log(f"morning: {len(morning):,} registrations encoded in {time.perf_counter() - began:.1f} s")

    before = await run_ingest(
        api_url, history_bodies, batch_size, connections, 120, headers=writer, sizes=history_sizes
    )
    before.require_all_accepted("the earlier days")
    done, _, state = await progress.wait_caught_up(ids, len(history), timeout)
    log(f"morning: {before.accepted_registrations:,} earlier days stored and evaluated: {done}")

    started = time.monotonic()
    run = await run_ingest(
        api_url, morning_bodies, batch_size, connections, 120, headers=writer, sizes=morning_sizes
    )
    posted = time.monotonic()
    run.require_all_accepted("the morning")
    done, ended, state = await progress.wait_caught_up(
        ids, len(history) + len(morning), timeout, concerns=crossing
    )
    log(
        f"morning: {run.accepted_registrations:,} accepted in {posted - started:.1f} s; last"
        f" concern event published {ended - started:.1f} s after the first POST ({done})"
    )
    return {
        "pupils": pupils,
        "schools": schools,
        "day": days[-1].isoformat(),
        "crossing_pupils": crossing,
        "earlier_days_posted": before.accepted_registrations,
        "registrations_posted": len(morning),
        "registrations_accepted": run.accepted_registrations,
        "failed_batches": len(run.failures),
        "batch_size": batch_size,
        "connections": connections,
        "seconds_to_all_accepted": round(posted - started, 1),
        "accepted_per_second": round(run.accepted_registrations / (posted - started)),
        "seconds_to_last_concern_event": round(ended - started, 1),
        "caught_up": done,
        "state_at_end": vars(state),
        "mailbox_note": "notices wait out the settle period (NOTICE_SETTLE_SECONDS=900)",
        "municipality": MUNICIPALITY,
    }
