"""The worker side of phase (c): one day-change tick of the threshold-worker, in its own process.

    python -m tests.bench.reeval_worker --database-url URL --now 2027-06-25T10:00:00+00:00

Runs in a process of its own so that its peak memory (VmHWM) is the worker's, not the load
generator's. It imports what the worker process imports, tunes the garbage collector as the
worker's main() does, and then waits: it prints one JSON line ({"ready": ...}) and starts only
when a line arrives on stdin, so that the parent can start its CPU meter and profiler first.
It then runs the worker's real `tick()` with a fixed clock, prints one JSON line of figures and
waits for another line before it closes its database connection (whose backend's CPU time the
parent reads).

`--engine record:PATH` and `--engine replay:PATH` measure what the tick costs without the engine
(`--reeval-engine-floor`): record runs the real engine and keeps each pupil's result (written to
PATH after the figures); replay answers every evaluation from PATH instead of evaluating. Both
wrap the same calls and build the same look-up key, so only the engine's own work differs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pickle
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any, TextIO

from aiokafka import TopicPartition
from prometheus_client import REGISTRY

from opspor_shared.db import make_engine, make_sessionmaker
from opspor_shared.engine import timeline
from opspor_shared.engine.model import RegistrationColumns
from opspor_shared.kafka import Assignment
from opspor_shared.logging import configure_logging
from opspor_shared.reference import CalendarCache
from opspor_shared.runtime import tune_gc
from opspor_worker import service
from opspor_worker.repository import PupilRegistrations, WorkerRepository
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


class EngineStandIn:
    """Record or replay the engine's results (`--engine`); see the module's docstring.

    A result is kept under the pupil's id, the stays' schools and bounds, and the other
    arguments. The engine is not told the pupil, so the worker's registrations read is wrapped
    to note which pupil each registrations object belongs to (by identity: the object lives
    until its pupil is evaluated, and each read notes its own objects afresh).
    """

    def __init__(self, spec: str) -> None:
        self.mode, _, path = spec.partition(":")
        if self.mode not in ("record", "replay") or not path:
            raise SystemExit(f"--engine must be record:PATH or replay:PATH, not {spec!r}")
        self.path = path
        self.real = timeline.evaluate_stays
        self.results: dict[Any, Any] = {}
        self.pupil_of: dict[int, str] = {}
        if self.mode == "replay":
            with open(path, "rb") as f:
                self.results = pickle.load(f)  # noqa: S301 (written by this bench's record run)
        read = WorkerRepository.registrations
        pupil_of = self.pupil_of

        async def registrations(
            repo: WorkerRepository, pupil_ids: Sequence[str]
        ) -> dict[str, PupilRegistrations]:
            out = await read(repo, pupil_ids)
            for pupil_id, regs in out.items():
                # A fresh object per pupil: pupils without registrations share one.
                live = RegistrationColumns(*regs.live)
                pupil_of[id(live)] = pupil_id
                out[pupil_id] = regs._replace(live=live)
            return out

        WorkerRepository.registrations = registrations  # type: ignore[method-assign,assignment]
        # The worker's service module calls evaluate_stays by its own global name.
        vars(service)["evaluate_stays"] = self

    def __call__(self, stays: Any, registrations: Any, *args: Any, **kwargs: Any) -> Any:
        key = (
            self.pupil_of[id(registrations)],
            tuple((s.school_id, s.start, s.end) for s in stays),
            args,
            tuple(sorted(kwargs.items())),
        )
        if self.mode == "replay":
            return self.results[key]
        result = self.real(stays, registrations, *args, **kwargs)
        self.results[key] = result
        return result

    def save(self) -> None:
        if self.mode == "record":
            with open(self.path, "wb") as f:
                pickle.dump(self.results, f, protocol=pickle.HIGHEST_PROTOCOL)


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
    stand_in = EngineStandIn(args.engine) if args.engine else None
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
        if stand_in is not None:
            stand_in.save()
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
    p.add_argument("--engine", default="", help="record:PATH or replay:PATH; empty = the engine")
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
