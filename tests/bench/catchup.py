"""Phase (f): catching up after a backlog, with one worker process and with two (issue 11).

The threshold-worker is stopped while `registrations` registrations of a school of their own
are posted: the api stores them and its relay puts them on Kafka, where they wait. Then the
clock starts, `processes` worker processes start in the same consumer group (the stack's own
worker and, for two, one more with its own ops port), and the clock stops when the worker
holds every registration and both outboxes are empty. Each round has its own school and
pupils, so both rounds evaluate the same amount of fresh work. The time includes the
processes' start and their joining the group, printed apart: the rate while consuming counts
from the first registration evaluated.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from typing import Any

from opspor_shared.devstack.net import free_port
from opspor_shared.devstack.stack import Service, Stack
from tests.bench.ingest import run_ingest
from tests.bench.progress import Progress
from tests.bench.system import CpuMeter
from tests.bench.workload import evaluated_school_days, ingest_bodies

WORKER = "threshold-worker"


def school_of(processes: int) -> str:
    return f"bench-catchup-{processes}"


SCHOOLS = (school_of(1), school_of(2))


def extra_workers(stack: Stack, count: int) -> list[Service]:
    """Workers beside the stack's own: same environment and group, an ops port each."""
    own = stack.services[WORKER]
    return [
        replace(
            own,
            name=f"{WORKER}-{n + 2}",
            port=(port := free_port()),
            env=own.env | {"OPS_PORT": str(port)},
            log_file=own.log_file.with_name(f"{WORKER}-{n + 2}.log"),
            process=None,
        )
        for n in range(count)
    ]


async def first_evaluated(progress: Progress, school: str, timeout: float) -> float:
    """Seconds (monotonic) at which the worker first held a registration of `school`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (await progress.backlog(school)).worker_registrations:
            break
        await asyncio.sleep(0.05)
    return time.monotonic()


async def catch_up_round(
    stack: Stack,
    progress: Progress,
    writer: dict[str, str],
    processes: int,
    *,
    registrations: int,
    connections: int,
    timeout: float,
    pids: dict[str, list[int]],
    log: Any,
) -> dict[str, Any]:
    school = school_of(processes)
    bodies = ingest_bodies(f"cu{processes}", school, evaluated_school_days(), registrations, 1000)
    own = stack.services[WORKER]
    own.stop()
    run = await run_ingest(stack.api_url, bodies, 1000, connections, timeout, headers=writer)
    run.require_all_accepted("catch-up")
    # Every registration on Kafka before the clock starts: the backlog is the broker's.
    published, _, state = await progress.wait_caught_up(school, 0, timeout)
    if not published:
        raise RuntimeError(f"catch-up: the api outbox did not empty: {state}")
    extra = extra_workers(stack, processes - 1)
    workers = [own, *extra]
    began = time.monotonic()
    for worker in workers:
        worker.start()
    others = {name: ids for name, ids in pids.items() if name != WORKER}
    meter = CpuMeter(others | {"workers": [w.process.pid for w in workers if w.process]})
    meter.start()
    try:
        for worker in workers:
            worker.wait_ready(timeout=60)
        ready = time.monotonic() - began
        first = await first_evaluated(progress, school, timeout) - began
        caught_up, seen, state = await progress.wait_caught_up(
            school, run.accepted_registrations, timeout
        )
        cpu = meter.stop()
    finally:
        for worker in extra:
            worker.stop()
    seconds = seen - began
    consuming = seen - began - first
    log(
        f"catch-up with {processes} worker process(es): {run.accepted_registrations:,}"
        f" registrations in {seconds:.1f} s (ready after {ready:.1f} s), caught up: {caught_up}"
    )
    return {
        "processes": processes,
        "registrations": run.accepted_registrations,
        "caught_up": caught_up,
        "seconds": round(seconds, 2),
        "seconds_until_ready": round(ready, 2),
        "seconds_until_first_evaluated": round(first, 2),
        "registrations_per_second": round(run.accepted_registrations / seconds)
        if seconds
        else None,
        # From the first registration evaluated: the group has formed, the processes work.
        "registrations_per_second_consuming": round(run.accepted_registrations / consuming)
        if consuming > 0
        else None,
        "cpu_cores": cpu,
        "worker_registrations_at_end": state.worker_registrations,
    }


async def catchup_phase(
    stack: Stack,
    progress: Progress,
    writer: dict[str, str],
    pids: dict[str, list[int]],
    *,
    registrations: int,
    connections: int,
    timeout: float,
    log: Any,
) -> dict[str, Any]:
    rounds = [
        await catch_up_round(
            stack,
            progress,
            writer,
            processes,
            registrations=registrations,
            connections=connections,
            timeout=timeout,
            pids=pids,
            log=log,
        )
        for processes in (1, 2)
    ]
    one, two = rounds
    return {
        "rounds": rounds,
        "speedup": round(one["seconds"] / two["seconds"], 2) if two["seconds"] else None,
        "speedup_consuming": round(
            two["registrations_per_second_consuming"] / one["registrations_per_second_consuming"],
            2,
        )
        if one["registrations_per_second_consuming"] and two["registrations_per_second_consuming"]
        else None,
    }
