"""Dead letters an operator can act on (issue 9), end to end on the broker: the api's concern
consumer dead-letters what it cannot take, with why and from where; the operations role lists
them (ids, never the payload) and re-drives one or all after a fix, each once; the backlog
metric follows."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from prometheus_client import REGISTRY

from opspor_api.settings import ApiSettings
from opspor_shared.auth import Role
from tests.api.test_concerns import FIRST, concern_event, eventually, publish
from tests.auth import bearer
from tests.support import configure

OPS = bearer(Role.OPERATIONS)


async def dead_letters(client: httpx.AsyncClient, topic: str, count: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 30
    items: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        r = await client.get(f"/v1/operations/dead-letters/{topic}", headers=OPS)
        assert r.status_code == 200, r.text
        items = r.json()["items"]
        if len(items) >= count:
            return items
        await asyncio.sleep(0.2)
    raise AssertionError(f"{len(items)} dead letters, expected {count}")


async def redriven_copies(settings: ApiSettings) -> list[bytes]:
    """Messages on the concerns topic marked as re-driven."""
    consumer = AIOKafkaConsumer(
        settings.concerns_topic,
        bootstrap_servers=settings.kafka_bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    found: list[bytes] = []
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                found += [
                    r.value or b""
                    for r in records
                    if any(k == "opspor-redriven-by" for k, _ in r.headers or ())
                ]
    finally:
        await consumer.stop()
    return found


async def test_an_operator_lists_dead_letters_and_re_drives_them_once_after_a_fix(
    client: httpx.AsyncClient, settings: ApiSettings
) -> None:
    await configure(client)
    topic = settings.concerns_topic
    # Refused by the consumer (its data breaks the contract), and not a CloudEvent at all.
    refused = concern_event("p9", FIRST).model_copy(update={"data": {"concern_id": "nope"}})
    await publish(settings, [refused])
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"{not json", key=b"p8")
        # A valid concern event an older consumer dead-lettered (the bug since fixed): what a
        # re-drive is for.
        fixed = concern_event("p7", FIRST)
        await producer.send_and_wait(
            f"{topic}.dlq",
            fixed.to_bytes(),
            key=b"p7",
            headers=[("opspor-dlq-reason", b"refused"), ("opspor-dlq-topic", topic.encode())],
        )
    finally:
        await producer.stop()

    letters = await dead_letters(client, topic, 3)
    by_key = {d["key"]: d for d in letters}
    assert {k: by_key[k]["reason"] for k in ("p7", "p8", "p9")} == {
        "p7": "refused",
        "p8": "undecodable",
        "p9": "refused",
    }
    assert by_key["p9"]["event_id"] == refused.id and by_key["p9"]["group"]
    assert by_key["p8"]["source_offset"] is not None and by_key["p8"]["at"]
    assert all("data" not in d and "value" not in d for d in letters)  # never the payload
    [summary] = [
        s
        for s in (await client.get("/v1/operations/dead-letters", headers=OPS)).json()
        if s["topic"] == topic
    ]
    assert (summary["messages"], summary["backlog"]) == (3, 3)
    gauge = {"topic": f"{topic}.dlq"}
    assert REGISTRY.get_sample_value("opspor_dead_letter_backlog", gauge) == 3

    # Re-drive the fixed one: it reaches the consumer and the concern appears.
    p7 = by_key["p7"]["offset"]
    r = await client.post(
        f"/v1/operations/dead-letters/{topic}/redrive", json={"offsets": [p7]}, headers=OPS
    )
    assert r.status_code == 200, r.text
    assert r.json() == {"redriven": [p7], "already": [], "missing": []}
    await eventually(client, "/v1/pupils/p7/concerns", lambda b: len(b) == 1)
    # Asked again (twice at once, even): sent once.
    again = await asyncio.gather(
        *[
            client.post(
                f"/v1/operations/dead-letters/{topic}/redrive",
                json={"offsets": [p7, 9999]},
                headers=OPS,
            )
            for _ in range(2)
        ]
    )
    assert [a.json() for a in again] == [{"redriven": [], "already": [p7], "missing": [9999]}] * 2
    assert len(await redriven_copies(settings)) == 1
    listed = {d["key"]: d for d in await dead_letters(client, topic, 3)}
    assert listed["p7"]["redriven_at"] and listed["p7"]["redriven_by"]

    # All the rest: the two still broken ones go back and are dead-lettered again.
    r = await client.post(
        f"/v1/operations/dead-letters/{topic}/redrive", json={"all": True}, headers=OPS
    )
    assert sorted(r.json()["redriven"]) == sorted(by_key[k]["offset"] for k in ("p8", "p9"))
    assert r.json()["already"] == [p7]
    await dead_letters(client, topic, 5)
    [summary] = [
        s
        for s in (await client.get("/v1/operations/dead-letters", headers=OPS)).json()
        if s["topic"] == topic
    ]
    assert (summary["messages"], summary["backlog"]) == (5, 2)
    assert REGISTRY.get_sample_value("opspor_dead_letter_backlog", gauge) == 2


async def test_dead_letters_are_for_operations_and_bad_requests_are_named(
    client: httpx.AsyncClient, settings: ApiSettings
) -> None:
    await configure(client)
    topic = settings.concerns_topic
    for role in (Role.MUNICIPALITY_ADMIN, Role.SCHOOL_STAFF, Role.PPR):
        r = await client.get("/v1/operations/dead-letters", headers=bearer(role))
        assert r.status_code == 403, role
    r = await client.get("/v1/operations/dead-letters/secrets.v1", headers=OPS)
    assert r.status_code == 404
    url = f"/v1/operations/dead-letters/{topic}/redrive"
    r = await client.post(url, json={"offsets": [-1, "x"], "extra": 1}, headers=OPS)
    assert r.status_code == 422
    assert {e["field"] for e in r.json()["errors"]} == {"offsets[0]", "offsets[1]", "extra"}
    r = await client.post(url, json={"offsets": [1], "all": True}, headers=OPS)
    assert r.status_code == 422
