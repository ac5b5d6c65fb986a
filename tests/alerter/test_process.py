"""End to end through the real broker: the alerter process consumes a concern event from Kafka,
the mail arrives in the STARTTLS mailbox and a signed webhook at the HTTPS receiver; ops
endpoints answer meanwhile."""

from __future__ import annotations

import asyncio
import json
import uuid

import httpx
import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client import REGISTRY
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from standardwebhooks import Webhook

from opspor_alerter.main import run
from opspor_alerter.settings import AlerterSettings
from opspor_shared.devstack.certs import CertPaths
from opspor_shared.devstack.mailbox import Mailbox
from opspor_shared.events import CONCERN_RAISED, CloudEvent, utcnow
from opspor_shared.kafka import dlq_topic, make_producer
from tests.alerter.conftest import (
    SCHOOL_MAILBOX,
    WEBHOOK_SECRET,
    all_notices,
    concern_event,
    make_settings,
    seed_school,
    seed_webhook,
    wait_for,
)
from tests.alerter.webhook_receiver import WebhookReceiver


def _events(result: str) -> float:
    sample = REGISTRY.get_sample_value("opspor_alerter_concern_events_total", {"result": result})
    return sample or 0.0


async def test_concern_event_through_kafka_reaches_the_mailbox_and_the_webhook(
    clean_db: AsyncEngine,
    sessionmaker: async_sessionmaker[AsyncSession],
    database_url: str,
    kafka_bootstrap: str,
    topic_suffix: str,
    mailbox: Mailbox,
    receiver: WebhookReceiver,
    certs: CertPaths,
) -> None:
    topic = f"absence.concerns.v1.{topic_suffix}"
    settings = make_settings(
        database_url,
        mailbox.port,
        certs.ca_file,
        kafka_bootstrap_servers=kafka_bootstrap,
        concerns_topic=topic,
        consumer_group=f"opspor-alerter-{topic_suffix}",
        topic_partitions=2,
    )
    await seed_school(clean_db)
    await seed_webhook(clean_db, receiver.url())
    good = concern_event()
    bad = CloudEvent(
        id=str(uuid.uuid4()),
        source="/test",
        type=CONCERN_RAISED,
        time=utcnow(),
        subject="pupil-4711",
        data={"concern_id": "not even a concern"},
    )
    stale_before, rejected_before = _events("stale"), _events("rejected")
    ops_ports: list[int] = []
    stop = asyncio.Event()

    with structlog.testing.capture_logs() as logs:
        alerter = asyncio.create_task(run(settings, stop, on_started=ops_ports.append))
        try:
            await wait_for(lambda: _started(ops_ports, alerter), seconds=60)
            assert not alerter.done(), alerter.exception()
            producer = make_producer(settings, "test-publisher")
            await producer.start()
            try:
                for event in (bad, good, good):  # the second copy is a redelivery
                    await producer.send_and_wait(topic, event.to_bytes(), key=b"pupil-4711")
            finally:
                await producer.stop()

            async def mailed_and_deduplicated() -> bool:
                return (
                    bool(mailbox.messages())
                    and bool(receiver.requests)
                    and _events("stale") >= stale_before + 1
                )

            await wait_for(mailed_and_deduplicated, seconds=60)

            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{ops_ports[0]}") as client:
                assert (await client.get("/healthz")).status_code == 200
                ready = await client.get("/readyz")
                assert ready.status_code == 200, ready.text
                assert ready.json()["checks"] == {"database": True, "kafka": True}
                text_ = (await client.get("/metrics")).text
                assert "opspor_alerter_notices_sent_total" in text_
        finally:
            stop.set()
            await asyncio.wait_for(alerter, timeout=60)

    [mail] = mailbox.messages()
    assert mail.envelope_to == (SCHOOL_MAILBOX,) and mail.tls is not None
    assert good.data["concern_id"] in mail.message.get_content()
    [request] = receiver.requests
    Webhook(WEBHOOK_SECRET).verify(request.body, request.headers)
    assert json.loads(request.body)["data"]["concern_id"] == good.data["concern_id"]
    notices = await all_notices(sessionmaker)
    assert sorted((n.channel, n.status) for n in notices) == [("smtp", "sent"), ("webhook", "sent")]
    assert _events("rejected") == rejected_before + 1
    listening = [e for e in logs if e["event"] == "ops_listening"]
    assert listening and listening[0]["port"] == ops_ports[0]
    assert await _dead_letters(settings, topic) == [bad.id]


async def _started(ports: list[int], task: asyncio.Task[None]) -> bool:
    return bool(ports) or task.done()


async def _dead_letters(settings: AlerterSettings, topic: str) -> list[str]:
    # A plain assignment, no group: reading the one DLQ partition needs no rebalance.
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers, auto_offset_reset="earliest"
    )
    await consumer.start()
    ids: list[str] = []
    try:
        partition = TopicPartition(dlq_topic(topic), 0)
        consumer.assign([partition])
        await consumer.seek_to_beginning(partition)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while not ids and loop.time() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                ids += [CloudEvent.from_bytes(r.value or b"").id for r in records]
    finally:
        await consumer.stop()
    return ids
