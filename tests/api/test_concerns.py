"""The api's concern read model, fed by real concern events on the broker."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
from aiokafka import AIOKafkaProducer

from opspor_api.settings import ApiSettings
from opspor_shared.auth import Role
from opspor_shared.events import CONCERN_RAISED, CONCERN_UPDATED, CONCERN_WITHDRAWN, CloudEvent
from tests.auth import bearer
from tests.support import configure, read_topic

FIRST = date(2026, 9, 7)


def concern_event(
    pupil: str,
    crossing: date,
    *,
    revision: int = 1,
    level: str = "concern",
    school: str = "vestbjerg",
    concern: uuid.UUID | None = None,
) -> CloudEvent:
    cid = concern or uuid.uuid5(uuid.NAMESPACE_URL, f"{pupil}|{crossing}|{level}")
    status = "active" if revision % 2 else "withdrawn"
    data: dict[str, Any] = {
        "concern_id": str(cid),
        "status": status,
        "revision": revision,
        "pupil_id": pupil,
        "school_id": school,
        "municipality_id": "aalborg",
        "level": level,
        "crossing_date": crossing.isoformat(),
        "explanation": {
            "pack_id": "dk-aalborg-2018",
            "rule_id": "consecutive-5",
            "rule_version": "1",
            "rule": "5 consecutive absence days (unauthorized)",
            "kind": "consecutive",
            "level": level,
            "window_first": (crossing - timedelta(days=4)).isoformat(),
            "window_last": crossing.isoformat(),
            "window_days": 5,
            "value": "5",
            "threshold": "5",
            "summary": "5 consecutive absence days, limit 5",
            "contributing": [],
        },
    }
    return CloudEvent(
        id=f"{cid}:{revision}",
        source="/tests",
        subject=pupil,
        data=data,
        type=CONCERN_RAISED if status == "active" else CONCERN_WITHDRAWN,
        time=datetime.now(UTC),
    )


async def publish(settings: ApiSettings, events: list[CloudEvent]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await producer.start()
    try:
        for e in events:
            await producer.send_and_wait(
                settings.concerns_topic, e.to_bytes(), key=e.subject.encode()
            )
    finally:
        await producer.stop()


async def eventually(
    client: httpx.AsyncClient,
    path: str,
    check: Any,
    wait: float = 30.0,
    headers: dict[str, str] | None = None,
) -> Any:
    deadline = time.monotonic() + wait
    body = None
    while time.monotonic() < deadline:
        body = (await client.get(path, headers=headers)).json()
        if check(body):
            return body
        await asyncio.sleep(0.1)
    raise AssertionError(f"{path} never satisfied the check; last: {body}")


async def test_concern_events_reach_the_pupil_view_and_stale_ones_change_nothing(
    client: httpx.AsyncClient, settings: ApiSettings
) -> None:
    await configure(client)
    raised = concern_event("p1", FIRST, revision=1)
    cid = uuid.UUID(raised.data["concern_id"])
    withdrawn = concern_event("p1", FIRST, revision=2, concern=cid)
    # Out of order and twice: the withdrawal (revision 2) must win.
    await publish(settings, [withdrawn, raised, raised])
    body = await eventually(
        client, "/v1/pupils/p1/concerns", lambda b: len(b) == 1 and b[0]["revision"] == 2
    )
    assert body[0]["status"] == "withdrawn"
    assert body[0]["explanation"]["summary"] == "5 consecutive absence days, limit 5"
    one = (await client.get(f"/v1/concerns/{cid}")).json()
    assert one["concern_id"] == str(cid)
    assert (await client.get(f"/v1/concerns/{uuid.uuid4()}")).status_code == 404


async def test_school_concerns_are_paginated_and_filtered(
    client: httpx.AsyncClient, settings: ApiSettings
) -> None:
    await configure(client)
    await configure(client, school="elsewhere")
    events = [concern_event(f"p{i}", FIRST + timedelta(days=i)) for i in range(7)]
    events += [concern_event("ppr1", FIRST, level="ppr-may")]
    events += [concern_event("other", FIRST, school="elsewhere")]
    await publish(settings, events)
    elsewhere = bearer(Role.SCHOOL_STAFF, schools=["elsewhere"])
    await eventually(client, "/v1/pupils/other/concerns", lambda b: len(b) == 1, headers=elsewhere)
    await eventually(
        client,
        "/v1/schools/vestbjerg/concerns?limit=500",
        lambda b: len(b["items"]) == 8,
    )
    seen: list[str] = []
    cursor: str | None = None
    for _ in range(10):
        query = "/v1/schools/vestbjerg/concerns?level=concern&status=active&limit=3"
        page = (await client.get(query + (f"&cursor={cursor}" if cursor else ""))).json()
        seen += [c["pupil_id"] for c in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [f"p{i}" for i in reversed(range(7))]
    r = await client.get("/v1/schools/vestbjerg/concerns?cursor=nonsense")
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == "query.cursor"
    r = await client.get("/v1/schools/vestbjerg/concerns?status=open&limit=0")
    assert r.status_code == 422
    assert {e["field"] for e in r.json()["errors"]} == {"query.status", "query.limit"}


async def test_a_concern_event_with_invalid_data_goes_to_the_dead_letter_topic(
    client: httpx.AsyncClient, settings: ApiSettings
) -> None:
    await configure(client)
    bad = concern_event("p9", FIRST).model_copy(update={"data": {"concern_id": "nope"}})
    good = concern_event("p10", FIRST)
    await publish(settings, [bad, good])
    await eventually(client, "/v1/pupils/p10/concerns", lambda b: len(b) == 1)
    [(key, value)] = await read_topic(settings, settings.concerns_topic + ".dlq", expect=1)
    assert (key, CloudEvent.from_bytes(value).id) == ("p9", bad.id)


async def test_an_updated_event_revises_the_explanation_the_api_serves(
    client: httpx.AsyncClient, settings: ApiSettings
) -> None:
    await configure(client)
    raised = concern_event("p11", FIRST, revision=1)
    cid = raised.data["concern_id"]
    revised_data = {
        **raised.data,
        "revision": 2,
        "explanation": {
            **raised.data["explanation"],
            "value": "0.2",
            "summary": "20.0% absence in the quarter, limit 15%",
        },
    }
    updated = raised.model_copy(
        update={"id": f"{cid}:2", "type": CONCERN_UPDATED, "data": revised_data}
    )
    # The update first, then a late copy of the raise: revision 2 must stay.
    await publish(settings, [updated, raised])
    body = await eventually(
        client, f"/v1/concerns/{cid}", lambda b: b.get("revision") == 2, wait=30.0
    )
    assert body["status"] == "active"
    assert body["explanation"]["summary"] == "20.0% absence in the quarter, limit 15%"
    await publish(settings, [raised])
    await eventually(client, "/v1/pupils/p11/concerns", lambda b: len(b) == 1)
    again = (await client.get(f"/v1/concerns/{cid}")).json()
    assert (again["revision"], again["explanation"]["value"]) == (2, "0.2")
