"""The alerter process: concern consumer, delivery loop and ops endpoints in one event loop.

    SMTP_HOST=... SMTP_PORT=... SMTP_FROM=... DATABASE_URL=... KAFKA_BOOTSTRAP_SERVERS=... \
        python -m opspor_alerter
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from opspor_alerter.notify import ByChannel
from opspor_alerter.purge import SERVICE as PURGE_SERVICE
from opspor_alerter.purge import purge_once
from opspor_alerter.service import deliver_forever, record_concern_events
from opspor_alerter.settings import AlerterSettings
from opspor_alerter.smtp import SmtpNotifier
from opspor_alerter.webhook import WebhookNotifier, make_http_client
from opspor_shared.access import token_verifier
from opspor_shared.clock import Clock, system_clock
from opspor_shared.db import make_engine, make_sessionmaker, unit_of_work
from opspor_shared.events import CloudEvent
from opspor_shared.kafka import BatchHandler, Delivered
from opspor_shared.logging import configure_logging, get_logger
from opspor_shared.ops import OpsServer, ops_app, readiness_checks
from opspor_shared.runtime import run_consumer, run_purge, shutdown, stop_on_signals, tune_gc
from opspor_shared.settings import load_settings

log = get_logger(__name__)

SHUTDOWN_GRACE_SECONDS = 10.0


class BatchFailed(Exception):
    """Raised instead of the original error, whose text can quote SQL parameters (addresses)."""


def make_handler(
    sessionmaker: async_sessionmaker[AsyncSession],
    settings: AlerterSettings,
    wake: asyncio.Event,
    clock: Clock = system_clock,
) -> BatchHandler:
    """Thin consumer: one unit of work per batch around the pure inner function."""

    async def handle(batch: list[Delivered]) -> Sequence[CloudEvent]:
        try:
            async with unit_of_work(sessionmaker) as session:
                outcome = await record_concern_events(
                    session, [d.event for d in batch], settings, clock=clock
                )
        except Exception as exc:
            raise BatchFailed(type(exc).__name__) from None
        outcome.count()
        if outcome.recorded:
            wake.set()
        return outcome.rejected

    return handle


async def run(
    settings: AlerterSettings,
    stop: asyncio.Event,
    *,
    on_started: Callable[[int], None] | None = None,
    clock: Clock = system_clock,
) -> None:
    """Run until `stop` is set; `on_started` gets the ops port.

    Delivery needs only the database, so recorded notices go out while the broker is down; the
    consumer loop reconnects on its own when the broker comes back.
    """
    smtp = SmtpNotifier(settings)  # fails fast on an unreadable CA file
    http = make_http_client(settings)  # likewise for webhook_ca_file
    engine = make_engine(settings.database_url)
    sessionmaker = make_sessionmaker(engine)
    notifier = ByChannel({"smtp": smtp, "webhook": WebhookNotifier(settings, sessionmaker, http)})

    checks = readiness_checks(engine, settings)
    ops = OpsServer(
        ops_app("alerter", lambda: checks, token_verifier(settings)),
        settings.ops_host,
        settings.ops_port,
    )
    await ops.start()
    log.info("ops_listening", host=settings.ops_host, port=ops.port)
    wake = asyncio.Event()
    tasks = [
        asyncio.create_task(deliver_forever(sessionmaker, notifier, settings, stop, wake)),
        asyncio.create_task(
            run_consumer(
                settings,
                settings.consumer_group,
                [settings.concerns_topic, settings.cases_topic],
                make_handler(sessionmaker, settings, wake, clock),
                stop,
            )
        ),
        asyncio.create_task(
            run_purge(
                PURGE_SERVICE,
                lambda stop: purge_once(engine, sessionmaker, settings, clock, stop=stop),
                settings.purge_interval_seconds,
                stop,
            )
        ),
    ]
    if on_started is not None:
        on_started(ops.port)
    try:
        await stop.wait()
    finally:
        stop.set()
        await shutdown(tasks, grace_seconds=SHUTDOWN_GRACE_SECONDS)
        await ops.stop()
        await http.aclose()
        await engine.dispose()
        log.info("alerter_stopped")


async def _serve(settings: AlerterSettings) -> None:
    stop = asyncio.Event()
    stop_on_signals(stop)
    await run(settings, stop)


def main() -> None:
    configure_logging("alerter")
    settings = load_settings(AlerterSettings, "opspor-alerter")
    configure_logging("alerter", settings.log_level)
    tune_gc()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(settings))


if __name__ == "__main__":
    main()
