"""The worker side of phase (c): one day-change tick of the threshold-worker, in its own process.

    python -m tests.bench.reeval_worker --database-url URL --now 2027-06-25T10:00:00+00:00

Runs in a process of its own so that its peak memory (VmHWM) is the worker's, not the load
generator's. It imports what the worker process imports, tunes the garbage collector as the
worker's main() does, and then waits: it prints one JSON line ({"ready": ...}) and starts only
when a line arrives on stdin, so that the parent can start its CPU meter and profiler first.
It then runs the worker's real `tick()` with a fixed clock, prints one JSON line of figures and
waits for another line before it closes its database connection (whose backend's CPU time the
parent reads).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from datetime import datetime
from typing import TextIO

from aiokafka import TopicPartition
from prometheus_client import REGISTRY

from opspor_shared.db import make_engine, make_sessionmaker
from opspor_shared.kafka import Assignment
from opspor_shared.logging import configure_logging
from opspor_shared.reference import CalendarCache
from opspor_shared.runtime import tune_gc
from opspor_worker.service import Context, tick
from opspor_worker.settings import WorkerSettings
from tests.auth import issuers_setting


def _status_mib(field: str) -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field):
                return int(line.split()[1]) / 1024
    return 0.0


def rss_mib() -> float:
    return _status_mib("VmRSS:")


def peak_rss_mib() -> float:
    """This process's peak resident memory (VmHWM). Not ru_maxrss: Linux carries that over
    from the parent through fork and exec, so a large benchmark process would show instead."""
    return _status_mib("VmHWM:")


def pupils_evaluated() -> float:
    return REGISTRY.get_sample_value("opspor_worker_pupils_evaluated_total") or 0.0


async def run(args: argparse.Namespace, out: TextIO) -> None:
    now = datetime.fromisoformat(args.now)
    settings = WorkerSettings(
        database_url=args.database_url,
        kafka_bootstrap_servers="unused:9092",  # tick() writes the outbox; the relay is not run
        auth_issuers=issuers_setting(),  # required by every service; unused by tick()
        tick_chunk_pupils=args.chunk or WorkerSettings.model_fields["tick_chunk_pupils"].default,
    )
    engine = make_engine(settings.database_url)
    sessionmaker = make_sessionmaker(engine)
    ctx = Context(settings=settings, calendars=CalendarCache(), clock=lambda: now)
    if args.partitions:
        # One of several worker processes: it evaluates the pupils of these partitions only.
        ctx.assignment = Assignment(settings.registrations_topic)
        owned = [int(p) for p in args.partitions.split(",")]
        ctx.assignment.update(
            [TopicPartition(settings.registrations_topic, p) for p in owned],
            settings.topic_partitions,
        )
    try:
        async with engine.connect():
            pass  # the pool's first connection, outside the measurement
        print(json.dumps({"ready": True, "rss_mib": round(rss_mib(), 1)}), file=out, flush=True)
        await asyncio.to_thread(sys.stdin.readline)
        evaluated_before = pupils_evaluated()
        cpu_began = time.process_time()
        began = time.perf_counter()
        changes = await tick(sessionmaker, ctx)
        seconds = time.perf_counter() - began
        cpu = time.process_time() - cpu_began
        figures = {
            "seconds": round(seconds, 3),
            "worker_cpu_seconds": round(cpu, 3),
            "concern_changes": changes,
            "pupils_evaluated": int(pupils_evaluated() - evaluated_before),
            "chunk_pupils": settings.tick_chunk_pupils,
            "rss_mib_at_end": round(rss_mib(), 1),
            "peak_rss_mib": round(peak_rss_mib(), 1),
        }
        print(json.dumps(figures), file=out, flush=True)
        # The database backend ends with the connection; the parent reads its CPU time first.
        await asyncio.to_thread(sys.stdin.readline)
    finally:
        await engine.dispose()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--database-url", required=True)
    p.add_argument("--now", required=True, help="the worker's clock, ISO 8601 with offset")
    p.add_argument("--chunk", type=int, default=0, help="TICK_CHUNK_PUPILS; 0 = the default")
    p.add_argument(
        "--partitions", default="", help="comma-separated partitions held; empty = all of them"
    )
    p.add_argument("--log-level", default="WARNING")
    args = p.parse_args()
    # The worker logs to stdout; the figures get stdout's pipe to themselves, logs go to stderr.
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    configure_logging("threshold-worker", args.log_level)
    tune_gc()
    asyncio.run(run(args, out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
