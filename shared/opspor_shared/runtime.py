"""Long-running loops that survive broker outages: each (re)connects with bounded backoff.

A service keeps doing its database work while Kafka is down; these loops catch up afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
from collections.abc import Awaitable, Callable, Sequence

from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from opspor_shared.kafka import (
    Assignment,
    BatchHandler,
    LoggingRebalanceListener,
    LostDataWatch,
    LostDataWatches,
    TopicChanged,
    consume_forever,
    dlq_topic,
    ensure_topics,
    make_consumer,
    make_producer,
)
from opspor_shared.kafka_security import client_kwargs
from opspor_shared.lag import watch_lag
from opspor_shared.logging import get_logger
from opspor_shared.outage import Outage
from opspor_shared.outbox import OutboxRelay, TopicLostHandler, peek_oldest
from opspor_shared.purge import PurgeReport
from opspor_shared.settings import ServiceSettings
from opspor_shared.stopping import sleep_or_stop

log = get_logger(__name__)


async def run_relay(
    settings: ServiceSettings,
    sessionmaker: async_sessionmaker[AsyncSession],
    table: Table,
    topics: Sequence[str],
    stop: asyncio.Event,
    client_id: str,
    on_topic_lost: TopicLostHandler | None = None,
) -> None:
    """Publishes the outbox. `on_topic_lost` is called when a topic is found to have lost
    events this relay published (see OutboxRelay); the services pass a replay of their tables."""
    backoff = 0.5
    outage = Outage("kafka", f"relay:{table.name}")
    relay = OutboxRelay(
        sessionmaker,
        table,
        None,
        on_topic_lost=on_topic_lost,
        ensure=lambda: ensure_topics(settings, topics),
        ensure_every_seconds=settings.topic_check_seconds,
    )
    while not stop.is_set():
        producer = make_producer(settings, client_id)
        try:
            await producer.start()
            await ensure_topics(settings, topics)
            log.info("relay_started", table=table.name)
            relay.producer = producer
            # Returns when a round fails, so the next connect ensures the topics again.
            if await relay.run(stop, outage=outage):
                backoff = 0.5
            # The relay cannot publish: keep the age of the oldest waiting row current.
            with contextlib.suppress(Exception):
                await peek_oldest(sessionmaker, table)
            await sleep_or_stop(stop, backoff)
            backoff = min(10.0, backoff * 2)
        except Exception as exc:
            outage.failed(type(exc).__name__)
            with contextlib.suppress(Exception):
                await peek_oldest(sessionmaker, table)
            await sleep_or_stop(stop, backoff)
            backoff = min(10.0, backoff * 2)
        finally:
            with contextlib.suppress(Exception):
                await producer.stop()


async def run_consumer(
    settings: ServiceSettings,
    group_id: str,
    topic: str | Sequence[str],
    handle: BatchHandler,
    stop: asyncio.Event,
    assignment: Assignment | None = None,
) -> None:
    """Consume `topic` (or several topics in one group; a batch never mixes partitions).
    `assignment` follows the partitions of its topic this consumer holds."""
    topics = [topic] if isinstance(topic, str) else list(topic)
    backoff = 0.5
    outage = Outage("kafka", f"consumer:{group_id}")
    while not stop.is_set():
        consumer = make_consumer(settings, group_id)
        producer = make_producer(settings, f"{group_id}-dlq")
        watch: LostDataWatches | None = None
        try:
            await ensure_topics(settings, [*topics, *map(dlq_topic, topics)])
            await producer.start()
            consumer.subscribe(
                topics, listener=LoggingRebalanceListener(group_id, assignment, consumer)
            )
            await consumer.start()
            log.info("consumer_started", group=group_id, topics=topics)
            backoff = 0.5
            connect = client_kwargs(settings)
            watch = LostDataWatches([LostDataWatch(consumer, group_id, t, connect) for t in topics])
            lag = asyncio.create_task(
                watch_lag(
                    consumer,
                    group_id,
                    [dlq_topic(t) for t in topics],
                    stop,
                    settings.kafka_lag_interval_seconds,
                )
            )
            try:
                await consume_forever(
                    consumer,
                    producer,
                    group_id,
                    handle,
                    stop,
                    watch=watch,
                    outage=outage,
                    check_seconds=settings.topic_check_seconds,
                )
            finally:
                lag.cancel()
                await asyncio.gather(lag, return_exceptions=True)
        except TopicChanged:
            backoff = 0.5
        except Exception as exc:
            outage.failed(type(exc).__name__)
            await sleep_or_stop(stop, backoff)
            backoff = min(10.0, backoff * 2)
        finally:
            if assignment is not None:
                assignment.release()
            if watch is not None:
                await watch.close()
            with contextlib.suppress(Exception):
                await consumer.stop()
            with contextlib.suppress(Exception):
                await producer.stop()


async def run_purge(
    service: str,
    run_once: Callable[[asyncio.Event], Awaitable[PurgeReport]],
    interval_seconds: float,
    stop: asyncio.Event,
) -> None:
    """The service's retention purge: once at start, then every `interval_seconds`.

    `run_once` gets `stop` and checks it between chunks, so shutdown never waits for a backlog.
    """
    while not stop.is_set():
        wait = interval_seconds
        try:
            await run_once(stop)
        except Exception as exc:
            log.exception("purge_failed", service=service, error=type(exc).__name__)
            wait = min(interval_seconds, 300.0)
        await sleep_or_stop(stop, wait)


async def shutdown(tasks: Sequence[asyncio.Task[None]], grace_seconds: float = 2.0) -> None:
    """Gives loops a moment to finish their round, then cancels them.

    Cancelling is safe by design: an interrupted transaction rolls back and an uncommitted
    Kafka batch is delivered again.
    """
    if not tasks:
        return
    _, pending = await asyncio.wait(tasks, timeout=grace_seconds)
    for task in pending:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


def tune_gc() -> None:
    """Raise the young-generation threshold of the garbage collector.

    Measured with `make bench`: with CPython's default (700, 10, 10), pydantic and SQLAlchemy
    allocations during batch ingest trigger full collections of ~100 ms each, a third of the
    api's CPU and a stall of its event loop; at 50,000 the share falls to a few percent, for
    about 4 MiB more memory.
    """
    gc.set_threshold(50_000, 20, 20)
