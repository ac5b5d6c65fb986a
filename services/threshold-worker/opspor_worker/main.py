"""The threshold-worker process: consumer + day-change tick + outbox relay + retention purge +
ops endpoints."""

from __future__ import annotations

import asyncio
import contextlib

from opspor_shared.access import token_verifier
from opspor_shared.db import make_engine, make_sessionmaker, unit_of_work
from opspor_shared.events import CloudEvent
from opspor_shared.kafka import Assignment, Delivered
from opspor_shared.logging import configure_logging, get_logger
from opspor_shared.ops import OpsServer, ops_app, readiness_checks
from opspor_shared.outage import Outage
from opspor_shared.reference import CalendarCache
from opspor_shared.runtime import (
    run_consumer,
    run_purge,
    run_relay,
    shutdown,
    stop_on_signals,
    tune_gc,
)
from opspor_shared.settings import load_settings
from opspor_shared.stopping import sleep_or_stop
from opspor_worker.metrics import TICK_SECONDS
from opspor_worker.models import worker_outbox
from opspor_worker.purge import SERVICE, purge_once
from opspor_worker.replay import replay_concerns
from opspor_worker.repository import WorkerRepository
from opspor_worker.service import Context, decode_registrations, store_and_evaluate, tick
from opspor_worker.settings import WorkerSettings

log = get_logger(__name__)


async def run(settings: WorkerSettings, stop: asyncio.Event) -> None:
    engine = make_engine(settings.database_url)
    sessionmaker = make_sessionmaker(engine)
    # The tick evaluates the pupils of the partitions this process's consumer holds.
    assignment = Assignment(settings.registrations_topic)
    ctx = Context(settings=settings, calendars=CalendarCache(), assignment=assignment)

    async def handle(batch: list[Delivered]) -> list[CloudEvent]:
        items, refused = decode_registrations(batch)
        async with unit_of_work(sessionmaker) as session:
            await store_and_evaluate(WorkerRepository(session), ctx, items)
        return refused

    async def ticker() -> None:
        outage = Outage("database", "tick")
        while not stop.is_set():
            try:
                with TICK_SECONDS.time():
                    await tick(sessionmaker, ctx)
                outage.succeeded()
            except Exception as exc:
                # Once per outage, with the traceback of its first failure (it may be a bug).
                if outage.failed(type(exc).__name__):
                    log.exception("tick_failed", error=type(exc).__name__)
            await sleep_or_stop(stop, settings.tick_seconds)

    checks = readiness_checks(engine, settings)
    ops = OpsServer(
        ops_app("threshold-worker", lambda: checks, token_verifier(settings)),
        settings.ops_host,
        settings.ops_port,
    )
    await ops.start()
    log.info("ops_listening", port=ops.port)
    tasks = [
        asyncio.create_task(
            run_consumer(
                settings,
                settings.consumer_group,
                settings.registrations_topic,
                handle,
                stop,
                assignment,
            )
        ),
        asyncio.create_task(
            run_relay(
                settings,
                sessionmaker,
                worker_outbox,
                [settings.concerns_topic],
                stop,
                "worker-relay",
                # The topic lost concern events this relay published: queue every concern's
                # current revision again (readers are idempotent), see opspor_worker.replay.
                on_topic_lost=lambda topic: replay_concerns(sessionmaker, topic),
            )
        ),
        asyncio.create_task(ticker()),
        asyncio.create_task(
            run_purge(
                SERVICE,
                lambda stop: purge_once(engine, sessionmaker, settings, ctx.clock, stop=stop),
                settings.purge_interval_seconds,
                stop,
            )
        ),
    ]
    try:
        await stop.wait()
    finally:
        stop.set()
        await shutdown(tasks)
        with contextlib.suppress(Exception):
            await ops.stop()
        await engine.dispose()


def main() -> None:
    settings = load_settings(WorkerSettings, "opspor-worker")
    configure_logging("threshold-worker", settings.log_level)
    tune_gc()

    async def _main() -> None:
        stop = asyncio.Event()
        stop_on_signals(stop)
        await run(settings, stop)

    asyncio.run(_main())
