"""Entry point of `make bench`: start the stack, measure, print a table, write JSON.

    .venv/bin/python -m tests.bench.run [--ingest-total 100000] [--latency-seconds 60] ...
    .venv/bin/python -m tests.bench.run --only reeval [--reeval-pupils 100000]
    .venv/bin/python -m tests.bench.run --only reports [--reports-pupils 100000]

The load generator runs in this process (asyncio + httpx), as does the TLS mailbox thread of
the stack; they share the machine's cores with PostgreSQL, the broker and the three services.
Phase (c), the full-year re-evaluation, and phase (d), the reports, run after the stack has
stopped, without it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from opspor_shared.auth import Role
from opspor_shared.devstack.net import free_port
from opspor_shared.devstack.stack import Service, Stack
from opspor_shared.settings import ServiceSettings
from tests.bench import store_floor
from tests.bench.catchup import SCHOOLS as CATCHUP_SCHOOLS
from tests.bench.catchup import catchup_phase
from tests.bench.ingest import HEADERS, run_ingest
from tests.bench.latency import (
    ConcernWatch,
    build_plan,
    collect_mail,
    send_plan,
    stage_breakdown,
)
from tests.bench.morning import morning_phase, school_of
from tests.bench.profile import Profiler
from tests.bench.progress import Progress
from tests.bench.reevaluate import reeval_phase
from tests.bench.report import format_report
from tests.bench.reports import reports_phase
from tests.bench.system import CpuMeter, describe_machine
from tests.bench.workload import (
    MUNICIPALITY,
    configure,
    evaluated_school_days,
    ingest_bodies,
    single_bodies,
)

ROOT = Path(__file__).resolve().parents[2]
PHASES = ("ingest", "latency", "reeval", "reports", "morning", "catchup")
INGEST_SCHOOL = "bench-ingest"
LATENCY_SCHOOL = "bench-latency"
# Configured when the stack is up; the school system's token covers them.
BENCH_SCHOOLS = (INGEST_SCHOOL, LATENCY_SCHOOL, *CATCHUP_SCHOOLS)
# The stack runs with the default topic names.
CONCERNS_TOPIC = ServiceSettings.model_fields["concerns_topic"].default
# Grown by the ingest; vacuumed between settings so autovacuum does not start mid-measurement.
INGESTED_TABLES = (
    "registration_events",
    "registrations",
    "worker_registrations",
    "worker_pupils",
    "api_outbox",
    "worker_outbox",
)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--ingest-total", type=int, default=100_000, help="registrations per setting")
    p.add_argument("--batch-size", type=int, default=1000)
    p.add_argument("--connections", default="1,2,4", help="comma-separated settings")
    p.add_argument("--single-total", type=int, default=3000, help="single POSTs, 0 = skip")
    p.add_argument("--single-connections", type=int, default=4)
    p.add_argument("--warmup-batches", type=int, default=3, help="untimed batches before (a)")
    p.add_argument("--latency-rate", type=float, default=2000.0, help="registrations per second")
    p.add_argument("--latency-seconds", type=float, default=60.0)
    p.add_argument(
        "--latency-batch", type=int, default=50, help="registrations per POST in (b); 1 = single"
    )
    p.add_argument("--crossings-per-second", type=float, default=2.0)
    p.add_argument("--latency-connections", type=int, default=64, help="client pool cap in (b)")
    p.add_argument("--catch-up-timeout", type=float, default=120.0, help="per ingest setting")
    p.add_argument("--mail-timeout", type=float, default=30.0, help="after the last POST in (b)")
    p.add_argument("--tick-seconds", type=float, default=5.0, help="worker day-change tick")
    p.add_argument(
        "--quiet-timeout", type=float, default=10.0, help="max wait for outside load to settle"
    )
    p.add_argument(
        "--service-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for the services (experiments), repeatable",
    )
    p.add_argument("--py-spy", type=Path, default=None, help="profile services with this py-spy")
    p.add_argument("--skip-ingest", action="store_true")
    p.add_argument("--skip-latency", action="store_true")
    p.add_argument("--skip-reeval", action="store_true")
    p.add_argument("--skip-reports", action="store_true")
    p.add_argument("--skip-catchup", action="store_true")
    p.add_argument(
        "--catchup-registrations", type=int, default=100_000, help="backlog per round in (f)"
    )
    p.add_argument("--catchup-connections", type=int, default=4)
    p.add_argument(
        "--skip-morning",
        action="store_true",
        help="phase (e) runs only with --only morning (make bench runs it on its own)",
    )
    p.add_argument("--morning-pupils", type=int, default=700_000, help="pupils in phase (e)")
    p.add_argument("--morning-schools", type=int, default=100)
    p.add_argument("--morning-crossing-share", type=float, default=0.02)
    p.add_argument("--morning-connections", type=int, default=4)
    p.add_argument("--morning-timeout", type=float, default=3600.0)
    p.add_argument("--reports-pupils", type=int, default=100_000, help="pupils in phase (d)")
    p.add_argument("--reports-schools", type=int, default=100)
    p.add_argument("--reports-repeats", type=int, default=3, help="warm runs per report in (d)")
    p.add_argument(
        "--only", choices=PHASES, default=None, help="run this phase alone (reeval needs no stack)"
    )
    p.add_argument("--reeval-pupils", type=int, default=100_000, help="pupils in phase (c)")
    p.add_argument("--reeval-schools", type=int, default=100)
    p.add_argument(
        "--reeval-sizes",
        default="10000,30000",
        help="smaller pupil counts run before --reeval-pupils (schools in proportion)",
    )
    p.add_argument("--reeval-seed", type=int, default=20261122, help="random seed of the data")
    p.add_argument(
        "--reeval-chunk", type=int, default=0, help="worker TICK_CHUNK_PUPILS in (c); 0 = default"
    )
    p.add_argument(
        "--reeval-keep-database", action="store_true", help="keep <database>_reeval afterwards"
    )
    p.add_argument(
        "--reeval-engine-floor",
        action="store_true",
        help="at --reeval-pupils, also time the job's-pack tick with the engine's results"
        " replayed (no engine work) against the real engine, two alternating pairs",
    )
    p.add_argument(
        "--reeval-enrolments",
        action="store_true",
        help="give every pupil an enrolment (else the school of the latest registration)",
    )
    p.add_argument(
        "--reeval-movers",
        type=float,
        default=0.0,
        help="share of pupils who change school after Christmas (implies enrolments)",
    )
    p.add_argument(
        "--lock-wait", type=float, default=600.0, help="max wait for another run on the database"
    )
    p.add_argument("--var-dir", type=Path, default=ROOT / "var" / "bench")
    p.add_argument("--database", default="opspor_bench")
    args = p.parse_args(argv)
    if args.only is not None:
        for phase in PHASES:
            setattr(args, f"skip_{phase}", phase != args.only)
    else:
        args.skip_morning = True  # a phase of its own, with the default settle period
    return args


def component_pids(stack: Stack) -> dict[str, list[int]]:
    pids = {
        name: [service.process.pid]
        for name, service in stack.services.items()
        if service.process is not None
    }
    broker = getattr(stack.broker, "_process", None)
    if broker is not None:
        pids["tansu"] = [broker.pid]
    pids["bench client + mailbox"] = [os.getpid()]
    return pids


QUIET_OUTSIDE = 0.25  # cores used outside the benchmark under which a measurement may start
QUIET_MACHINE = 0.6  # cores used by the whole machine (idle stack: ~0.2-0.3)


async def wait_for_quiet(meter: CpuMeter, timeout: float, log: Any) -> dict[str, float]:
    """Waits (at most `timeout` s, in 1 s windows) until the machine is nearly idle: no other
    work outside the benchmark, and no leftover work inside it (autovacuum, a lagging relay).
    Returns the last window's readings and how long it waited."""
    began = time.monotonic()
    while True:
        meter.start()
        await asyncio.sleep(1.0)
        cpu = meter.stop()
        quiet = cpu["outside_bench"] < QUIET_OUTSIDE and cpu["machine_busy"] < QUIET_MACHINE
        waited = time.monotonic() - began
        if quiet or waited >= timeout:
            if not quiet:
                log(f"machine not quiet after {waited:.0f} s ({cpu}); measuring anyway")
            return {
                "outside_bench": cpu["outside_bench"],
                "machine_busy": cpu["machine_busy"],
                "waited_seconds": round(waited, 1),
            }


def cpu_per_registration(
    registrations: int, ingest: dict[str, float], drain: dict[str, float]
) -> dict[str, float | None]:
    """CPU microseconds per accepted registration, per component, over ingest + drain."""
    if not registrations:
        return {}
    out: dict[str, float | None] = {}
    for name in ("api", "threshold-worker", "postgres", "tansu", "bench client + mailbox"):
        seconds = ingest.get(name, 0.0) * ingest["wall_seconds"]
        seconds += drain.get(name, 0.0) * drain["wall_seconds"]
        out[name] = round(seconds / registrations * 1e6)
    return out


def profiler(stack: Stack, args: argparse.Namespace) -> Profiler:
    pids = {n: s.process.pid for n, s in stack.services.items() if s.process is not None}
    return Profiler(args.py_spy, args.var_dir / "profiles", pids)


async def ingest_phase(
    stack: Stack, progress: Progress, args: argparse.Namespace, log: Any
) -> dict[str, Any]:
    days = evaluated_school_days()
    settings = [int(c) for c in args.connections.split(",") if c.strip()]
    began = time.perf_counter()
    warmup = ingest_bodies("ingw", INGEST_SCHOOL, days, args.warmup_batches * args.batch_size, 1000)
    # Each setting is measured in ROUNDS rounds, alternating with the parse-only reference on
    # the same bodies (A B A B), so both see the same machine state.
    per_round = args.ingest_total // ROUNDS
    bodies = [
        [
            ingest_bodies(f"ing{n}x{c}r{r}", INGEST_SCHOOL, days, per_round, args.batch_size)
            for r in range(ROUNDS)
        ]
        for n, c in enumerate(settings)
    ]
    singles = single_bodies("ings", INGEST_SCHOOL, days, args.single_total)
    encode_seconds = time.perf_counter() - began
    encoded = sum(len(b) for rounds in bodies for b in rounds) + len(singles)
    log(f"encoded {encoded} bodies in {encode_seconds:.1f} s")

    expected = 0
    if warmup:
        run = await run_ingest(
            stack.api_url, warmup, 1000, 1, timeout=120, headers=writer_headers(stack)
        )
        expected += run.accepted_registrations
        await progress.wait_caught_up(INGEST_SCHOOL, expected, args.catch_up_timeout)

    async def measure(
        label: str, payload: list[bytes], size: int, connections: int, single: bool
    ) -> dict[str, Any]:
        nonlocal expected
        meter = CpuMeter(component_pids(stack))
        quiet = await wait_for_quiet(meter, args.quiet_timeout, log)
        spy = profiler(stack, args)
        spy.start(label)
        meter.start()
        started = time.monotonic()
        run = await run_ingest(
            stack.api_url,
            payload,
            size,
            connections,
            120,
            single=single,
            headers=writer_headers(stack),
        )
        ended = time.monotonic()
        cpu_ingest = meter.stop()
        spy.stop()
        before = expected
        expected += run.accepted_registrations
        at_end = await progress.backlog(INGEST_SCHOOL)
        log(
            f"{label}: {run.accepted_registrations} in {run.wall_seconds:.1f} s;"
            f" worker holds {at_end.worker_registrations}/{expected}, waiting for it"
        )
        spy.start(f"{label}-drain")
        meter.start()
        caught_up, when, state = await progress.wait_caught_up(
            INGEST_SCHOOL, expected, args.catch_up_timeout
        )
        cpu_drain = meter.stop()
        spy.stop()
        vacuum_seconds = await progress.vacuum(INGESTED_TABLES)
        figures = run.figures()
        absorbed = state.worker_registrations - before
        figures["worker"] = {
            "caught_up": caught_up,
            "registrations_held_when_ingest_ended": at_end.worker_registrations - before,
            "api_outbox_events_when_ingest_ended": at_end.api_outbox,
            "drain_seconds_after_ingest": round(when - ended, 2),
            "seconds_from_ingest_start_to_caught_up": round(when - started, 2),
            "registrations_evaluated_per_second": round(absorbed / (when - started))
            if when > started
            else None,
            "state_at_end": vars(state),
        }
        figures["cpu_cores_during_ingest"] = cpu_ingest
        figures["cpu_cores_during_drain"] = cpu_drain
        figures["rss_mib_after_drain"] = meter.rss_mib
        figures["outside_load_before_cores"] = quiet
        figures["vacuum_analyze_seconds_after"] = vacuum_seconds
        figures["cpu_us_per_registration"] = cpu_per_registration(
            run.accepted_registrations, cpu_ingest, cpu_drain
        )
        log(f"worker caught up={caught_up} {when - ended:.1f} s after the ingest ended")
        return figures

    async def parse_only(payload: list[bytes], connections: int) -> dict[str, Any]:
        assert reference.process is not None
        meter = CpuMeter({"parse-only": [reference.process.pid]})
        await wait_for_quiet(CpuMeter(component_pids(stack)), args.quiet_timeout, log)
        meter.start()
        run = await run_ingest(reference.url, payload, args.batch_size, connections, 120)
        cpu = meter.stop()
        figures = run.figures()
        figures["cpu_us_per_registration"] = cpu_us(run.accepted_registrations, cpu, "parse-only")
        return figures

    out: dict[str, Any] = {"encode_seconds": round(encode_seconds, 2), "settings": []}
    with parse_only_reference(args.var_dir) as reference:
        for n, connections in enumerate(settings):
            rounds = []
            for r, payload in enumerate(bodies[n]):
                label = f"ingest-{n}-x{connections}-r{r}"
                a = await measure(label, payload, args.batch_size, connections, False)
                b = await parse_only(payload, connections)
                a["api_cpu_us_per_registration_during_ingest"] = cpu_us(
                    a["registrations_accepted"], a["cpu_cores_during_ingest"], "api"
                )
                log(
                    f"{label}: opspor {a['registrations_per_second']:,} reg/s,"
                    f" parse-only {b['registrations_per_second']:,} reg/s"
                )
                rounds.append({"opspor": a, "parse_only": b})
            out["settings"].append(ab_summary(connections, rounds))
    # The floor under the ratio: storing the first setting's rows alone, at one connection.
    await wait_for_quiet(CpuMeter(component_pids(stack)), args.quiet_timeout, log)
    floor = await store_floor.measure(stack.database_url, bodies[0][0])
    for setting in out["settings"]:
        if setting["connections"] == 1:
            reference = setting["parse_only_registrations_per_second"]
            floor["parse_only_registrations_per_second"] = reference
            floor["ceilings_at_one_connection"] = store_floor.ceilings(floor, reference)
    out["store_floor"] = floor
    log(f"store floor: {floor}")
    runs = [r["opspor"] for s in out["settings"] for r in s["rounds"]]
    absorbed = sum(s["registrations_accepted"] for s in runs)
    busy = sum(s["worker"]["seconds_from_ingest_start_to_caught_up"] for s in runs)
    out["worker_overall"] = {
        "registrations": absorbed,
        "seconds_ingest_start_to_caught_up_summed": round(busy, 1),
        "registrations_evaluated_per_second": round(absorbed / busy) if busy else None,
    }
    if singles:
        out["single_posts"] = await measure(
            f"single-x{args.single_connections}", singles, 1, args.single_connections, True
        )
    return out


ROUNDS = 2


@contextlib.contextmanager
def parse_only_reference(var_dir: Path) -> Iterator[Service]:
    """The parse-only reference (tests/bench/parse_only.py), run like the stack's services."""
    port = free_port()
    reference = Service(
        "parse-only",
        "tests.bench.parse_only",
        port,
        dict(os.environ) | {"PORT": str(port)},
        var_dir / "parse-only.log",
    )
    reference.start()
    try:
        reference.wait_ready(timeout=30)
        yield reference
    finally:
        reference.stop()


def cpu_us(accepted: int, cpu: dict[str, float], name: str) -> float | None:
    """CPU microseconds of one component per accepted registration during a run."""
    if not accepted:
        return None
    return round(cpu.get(name, 0.0) * cpu["wall_seconds"] / accepted * 1e6, 1)


def ab_summary(connections: int, rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Both sides over all rounds: registrations over summed wall time, and their ratio."""

    def rate(side: str) -> float:
        accepted = sum(r[side]["registrations_accepted"] for r in rounds)
        wall = sum(r[side]["wall_seconds"] for r in rounds)
        return accepted / wall if wall else 0.0

    opspor, reference = rate("opspor"), rate("parse_only")
    api_us = [r["opspor"]["api_cpu_us_per_registration_during_ingest"] for r in rounds]
    ref_us = [r["parse_only"]["cpu_us_per_registration"] for r in rounds]
    return {
        "connections": connections,
        "batch_size": rounds[0]["opspor"]["batch_size"],
        "opspor_registrations_per_second": round(opspor),
        "parse_only_registrations_per_second": round(reference),
        "ratio": round(opspor / reference, 3) if reference else None,
        "api_cpu_us_per_registration": api_us,
        "parse_only_cpu_us_per_registration": ref_us,
        "failed_batches": sum(r[s]["failed_batches"] for r in rounds for s in r),
        "rounds": rounds,
    }


async def latency_phase(
    stack: Stack, progress: Progress, args: argparse.Namespace, log: Any
) -> dict[str, Any]:
    assert stack.mailbox is not None
    directory = stack.mailbox.directory
    directory.mkdir(parents=True, exist_ok=True)
    before = set(os.listdir(directory))
    days = evaluated_school_days()
    items, posts = build_plan(
        LATENCY_SCHOOL,
        days,
        args.latency_rate,
        args.latency_seconds,
        args.crossings_per_second,
        args.latency_batch,
    )
    meter = CpuMeter(component_pids(stack))
    quiet = await wait_for_quiet(meter, args.quiet_timeout, log)
    spy = profiler(stack, args)
    spy.start("latency")
    on_kafka: dict[str, float] = {}
    async with ConcernWatch(stack.bootstrap_servers, CONCERNS_TOPIC, on_kafka):
        meter.start()
        run = await send_plan(
            stack.api_url,
            items,
            posts,
            args.latency_rate,
            args.latency_batch,
            args.latency_connections,
            timeout=60,
            headers=writer_headers(stack),
        )
        cpu = meter.stop()
        spy.stop()
        log(f"latency: sent {len(posts)} POSTs ({len(items)} registrations); collecting mail")
        # A concern's mail comes after its event: once the mail is in, so is the event.
        await collect_mail(run, directory, before, args.mail_timeout)
    run.on_kafka = on_kafka
    await stage_breakdown(progress.conn, run)
    figures = run.figures()
    figures["cpu_cores_during_sending"] = cpu
    figures["rss_mib_after_sending"] = meter.rss_mib
    figures["outside_load_before_cores"] = quiet
    figures["days_of_crossing_run"] = [d.isoformat() for d in days[-5:]]
    return figures


def writer_headers(stack: Stack, schools: Sequence[str] = BENCH_SCHOOLS) -> dict[str, str]:
    """The school admin system's token, as a real one would send it on every request."""
    return HEADERS | stack.headers(
        Role.SCHOOL_SYSTEM, MUNICIPALITY, tuple(schools), ttl_seconds=6 * 3600
    )


async def bench(stack: Stack, args: argparse.Namespace, log: Any) -> dict[str, Any]:
    results: dict[str, Any] = {}
    admin = stack.headers(Role.MUNICIPALITY_ADMIN, MUNICIPALITY)
    async with httpx.AsyncClient(base_url=stack.api_url, timeout=30, headers=admin) as client:
        for school in BENCH_SCHOOLS:
            await configure(client, school)
    async with Progress(stack.database_url) as progress:
        ok = await progress.wait_for_horizons(BENCH_SCHOOLS, timeout=3 * args.tick_seconds + 15)
        log(f"worker tick has seen the schools: {ok}")
        if not args.skip_ingest:
            results["ingest"] = await ingest_phase(stack, progress, args, log)
        if not args.skip_latency:
            results["latency"] = await latency_phase(stack, progress, args, log)
        if not args.skip_catchup:
            results["catchup"] = await catchup_phase(
                stack,
                progress,
                writer_headers(stack),
                component_pids(stack),
                registrations=args.catchup_registrations,
                connections=args.catchup_connections,
                timeout=args.catch_up_timeout,
                log=log,
            )
        if not args.skip_morning:
            results["morning"] = await morning_phase(
                stack.api_url,
                admin,
                writer_headers(stack, [school_of(n) for n in range(args.morning_schools)]),
                progress,
                pupils=args.morning_pupils,
                schools=args.morning_schools,
                crossing_share=args.morning_crossing_share,
                connections=args.morning_connections,
                batch_size=args.batch_size,
                timeout=args.morning_timeout,
                log=log,
            )
    return results


def code_version() -> dict[str, Any]:
    """The commit measured, and service files that differ from it (read-only git calls)."""

    def git(*args: str) -> str:
        try:
            done = subprocess.run(
                ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=False
            )
        except (OSError, subprocess.SubprocessError):
            return ""
        return done.stdout.strip()

    changed = git("diff", "--name-only", "HEAD", "--", "services", "shared", "migrations")
    return {"commit": git("rev-parse", "HEAD") or None, "uncommitted": changed.splitlines()}


@contextlib.contextmanager
def exclusive(database: str, wait_seconds: float, log: Any) -> Iterator[None]:
    """One benchmark per database name on this machine: a second run would recreate (drop)
    the database under the first one's services and both would measure nonsense."""
    path = Path(tempfile.gettempdir()) / f"opspor-bench-{database}.lock"
    with open(path, "w") as handle:
        deadline = time.monotonic() + wait_seconds
        told = False
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise SystemExit(
                        f"another benchmark holds {path} (database {database!r}); gave up after"
                        f" {wait_seconds:.0f} s"
                    ) from None
                if not told:
                    log(f"another benchmark is using database {database!r}; waiting for it")
                    told = True
                time.sleep(1.0)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    t0 = time.monotonic()

    def log(line: str) -> None:
        print(f"[{time.monotonic() - t0:6.1f}s] {line}", file=sys.stderr, flush=True)

    with exclusive(args.database, args.lock_wait, log):
        t0 = time.monotonic()
        results: dict[str, Any] = {
            "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "code": code_version(),
            "machine": describe_machine(),
            "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        }
        if not (args.skip_ingest and args.skip_latency and args.skip_morning and args.skip_catchup):
            log("starting the stack")
            with Stack(
                var_dir=args.var_dir,
                database_name=args.database,
                recreate_database=True,
                # The limiter is per client and the bench is one client: measure throughput.
                extra_env={
                    "TICK_SECONDS": str(args.tick_seconds),
                    "RATE_LIMIT_PER_SECOND": "1000000",
                    "RATE_LIMIT_BURST": "1000000",
                    # The latency phase measures the pipeline, not the settle period.
                    "NOTICE_SETTLE_SECONDS": "0",
                }
                | dict(kv.split("=", 1) for kv in args.service_env),
            ) as stack:
                log(f"stack up: api {stack.api_url}, broker {stack.bootstrap_servers}")
                results |= asyncio.run(bench(stack, args, log))
                log("stopping the stack")
        if not args.skip_reeval:
            # After the stack has stopped, so the worker process has the cores to itself
            # (with PostgreSQL, which it needs).
            # Smaller sizes first (to show how cost grows), then --reeval-pupils in full.
            sizes = [int(n) for n in args.reeval_sizes.split(",") if n.strip()]
            runs = []
            for pupils in [*(n for n in sizes if n < args.reeval_pupils), args.reeval_pupils]:
                runs.append(
                    asyncio.run(
                        reeval_phase(
                            database=f"{args.database}_reeval",
                            var_dir=args.var_dir,
                            pupils=pupils,
                            schools=max(
                                1, round(args.reeval_schools * pupils / args.reeval_pupils)
                            ),
                            seed_value=args.reeval_seed,
                            chunk=args.reeval_chunk,
                            py_spy=args.py_spy,
                            keep_database=args.reeval_keep_database,
                            log=log,
                            enrolments=args.reeval_enrolments,
                            movers=args.reeval_movers,
                            engine_floor=args.reeval_engine_floor and pupils == args.reeval_pupils,
                        )
                    )
                )
            results["reeval"] = runs[-1]
            results["reeval_sizes"] = runs
        if not args.skip_reports:
            results["reports"] = asyncio.run(
                reports_phase(
                    database=f"{args.database}_reports",
                    var_dir=args.var_dir,
                    pupils=args.reports_pupils,
                    schools=args.reports_schools,
                    seed_value=args.reeval_seed,
                    repeats=args.reports_repeats,
                    keep_database=False,
                    log=log,
                )
            )
        results["total_seconds"] = round(time.monotonic() - t0, 1)
        out = args.var_dir / ("results.json" if args.only is None else f"results-{args.only}.json")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2) + "\n")
    print(format_report(results))
    print(f"\nJSON: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
