"""The alerter process: concern consumer, delivery loop and ops endpoints in one event loop.

    SMTP_HOST=... SMTP_PORT=... SMTP_FROM=... DATABASE_URL=... KAFKA_BOOTSTRAP_SERVERS=... \
        python -m opspor_alerter
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Awaitable, Callable

from pydantic import ValidationError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from opspor_alerter.service import deliver_forever, record_concern_events
from opspor_alerter.settings import AlerterSettings
from opspor_alerter.smtp import SmtpNotifier
from opspor_shared.db import make_engine, make_sessionmaker, unit_of_work
from opspor_shared.kafka import (
    BatchHandler,
    Delivered,
    LoggingRebalanceListener,
    consume_forever,
    dlq_topic,
    ensure_topics,
    kafka_ready,
    make_consumer,
    make_producer,
)
from opspor_shared.logging import configure_logging, get_logger
from opspor_shared.ops import OpsServer, ops_app

log = get_logger(__name__)

SHUTDOWN_GRACE_SECONDS = 10.0


class BatchFailed(Exception):
    """Raised instead of the original error, whose text can quote SQL parameters (addresses)."""


def make_handler(
    sessionmaker: async_sessionmaker[AsyncSession],
    settings: AlerterSettings,
    publish_dead_letter: Callable[[bytes, bytes | None], Awaitable[None]],
    wake: asyncio.Event,
) -> BatchHandler:
    """Thin consumer: one unit of work per batch around the pure inner function."""

    async def handle(batch: list[Delivered]) -> None:
        try:
            async with unit_of_work(sessionmaker) as session:
                outcome = await record_concern_events(session, [d.event for d in batch], settings)
        except Exception as exc:
            raise BatchFailed(type(exc).__name__) from None
        for event in outcome.rejected:
            await publish_dead_letter(event.to_bytes(), event.subject.encode())
        outcome.count()
        if outcome.recorded:
            wake.set()

    return handle


async def run(
    settings: AlerterSettings,
    stop: asyncio.Event,
    *,
    on_started: Callable[[int], None] | None = None,
) -> None:
    """Run until `stop` is set (or a loop dies); `on_started` gets the ops port."""
    notifier = SmtpNotifier(settings)  # fails fast on an unreadable CA file
    engine = make_engine(settings.database_url)
    sessionmaker = make_sessionmaker(engine)
    topic = settings.concerns_topic
    producer = make_producer(settings, "alerter")
    consumer = make_consumer(settings, settings.consumer_group)
    ops: OpsServer | None = None
    tasks: list[asyncio.Task[None]] = []
    started: list[str] = []
    try:

        async def database_ready() -> bool:
            try:
                async with asyncio.timeout(2.0), engine.connect() as conn:
                    await conn.execute(text("select 1"))
            except Exception:
                return False
            return True

        async def broker_ready() -> bool:
            return await kafka_ready(settings)

        async def consuming() -> bool:
            return "consumer" in started

        checks = {"database": database_ready, "kafka": broker_ready, "consumer": consuming}
        # Ops first: liveness answers while the consumer group is still being joined.
        ops = OpsServer(ops_app("alerter", lambda: checks), settings.ops_host, settings.ops_port)
        await ops.start()
        log.info("ops_listening", host=settings.ops_host, port=ops.port)

        wake = asyncio.Event()
        # Delivery needs only the database: notices already recorded go out even while the
        # broker is unreachable.
        tasks.append(
            asyncio.create_task(
                deliver_forever(sessionmaker, notifier, settings, stop, wake), name="delivery"
            )
        )
        await ensure_topics(settings, [topic, dlq_topic(topic)])
        await producer.start()
        started.append("producer")
        consumer.subscribe([topic], listener=LoggingRebalanceListener(settings.consumer_group))
        await consumer.start()
        started.append("consumer")

        async def dead_letter(value: bytes, key: bytes | None) -> None:
            await producer.send_and_wait(dlq_topic(topic), value=value, key=key)

        handler = make_handler(sessionmaker, settings, dead_letter, wake)
        tasks.append(
            asyncio.create_task(
                consume_forever(consumer, producer, settings.consumer_group, handler, stop),
                name="consumer",
            )
        )
        log.info("alerter_started", topic=topic, group=settings.consumer_group)
        if on_started is not None:
            on_started(ops.port)
        stopper = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait([*tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
        for task in tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                log.error("loop_died", loop=task.get_name(), error=type(task.exception()).__name__)
    finally:
        stop.set()
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=SHUTDOWN_GRACE_SECONDS)
            for task in pending:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if ops is not None:
            await ops.stop()
        if "consumer" in started:
            await consumer.stop()
        if "producer" in started:
            await producer.stop()
        await engine.dispose()
        log.info("alerter_stopped")
    for task in tasks:
        if not task.cancelled() and task.exception() is not None:
            raise RuntimeError(f"{task.get_name()} loop stopped unexpectedly")


def load_settings() -> AlerterSettings:
    try:
        return AlerterSettings()  # type: ignore[call-arg]
    except ValidationError as exc:
        # Without the input values: they can include the SMTP password.
        problems = [
            {"field": ".".join(map(str, e["loc"])) or "(settings)", "problem": e["msg"]}
            for e in exc.errors(include_input=False, include_url=False, include_context=False)
        ]
        log.error("invalid_settings", problems=problems)
        sys.exit(2)


async def _serve(settings: AlerterSettings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await run(settings, stop)


def main() -> None:
    configure_logging("alerter")
    settings = load_settings()
    configure_logging("alerter", settings.log_level)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(settings))


if __name__ == "__main__":
    main()
