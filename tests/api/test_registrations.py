from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, date, datetime
from pathlib import Path

import httpx
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from opspor_api.app import create_app
from opspor_api.models import Registration, RegistrationEvent, api_outbox
from opspor_api.settings import ApiSettings
from opspor_shared.devstack.kafka import EmbeddedBroker
from opspor_shared.devstack.net import free_port
from opspor_shared.events import CloudEvent, RegistrationData
from opspor_shared.outbox import waiting_events
from tests.api.conftest import api_settings
from tests.auth import RouteAuth
from tests.support import configure, read_topic, registration

MONDAY = date(2026, 9, 7)


def fields(response: httpx.Response) -> set[str]:
    assert response.headers["content-type"] == "application/problem+json", response.text
    return {e["field"] for e in response.json()["errors"]}


async def count(sessionmaker: async_sessionmaker[AsyncSession], what: object) -> int:
    async with sessionmaker() as s:
        return int(await s.scalar(select(func.count()).select_from(what)) or 0)  # type: ignore[arg-type]


async def test_posting_the_same_event_twice_stores_it_once(
    client: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    await configure(client)
    body = registration("p1", MONDAY)
    first = await client.post("/v1/registrations", json=body)
    again = await client.post("/v1/registrations", json=body)
    assert (first.status_code, first.json()["inserted"], first.json()["duplicates"]) == (201, 1, 0)
    assert (again.status_code, again.json()["inserted"], again.json()["duplicates"]) == (200, 0, 1)
    assert await count(sessionmaker, RegistrationEvent) == 1
    assert await count(sessionmaker, Registration) == 1


async def test_batch_reports_inserted_and_duplicates(client: httpx.AsyncClient) -> None:
    await configure(client)
    items = [registration(f"p{i}", MONDAY) for i in range(5)]
    r = await client.post("/v1/registrations/batch", json={"items": items[:3]})
    assert r.json() == {"inserted": 3, "duplicates": 0, "duplicate_event_ids": []}
    r = await client.post("/v1/registrations/batch", json={"items": [*items, items[4]]})
    body = r.json()
    assert (body["inserted"], body["duplicates"]) == (2, 4)


async def test_bad_batch_names_every_bad_item_and_stores_nothing(
    client: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    await configure(client)
    items = [
        registration("p1", MONDAY),
        registration("p2", MONDAY, extent="1.5"),
        registration("p3", MONDAY, category="holiday"),
        registration("p 4", MONDAY),
        registration("p5", MONDAY, extent="0"),
        registration("p6", MONDAY) | {"recorded_at": "2026-09-07T08:00:00"},
    ]
    r = await client.post("/v1/registrations/batch", json={"items": items})
    assert r.status_code == 422
    assert fields(r) == {
        "items[1].extent",
        "items[2].category",
        "items[3].pupil_id",
        "items[4].extent",
        "items[5].recorded_at",
    }
    assert await count(sessionmaker, RegistrationEvent) == 0
    assert await count(sessionmaker, api_outbox) == 0


async def test_unknown_school_and_non_school_days_are_refused_with_the_reason(
    client: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    await configure(client)
    items = [
        registration("p1", MONDAY),
        registration("p2", MONDAY, school="nowhere"),
        registration("p3", date(2026, 9, 5)),  # Saturday
        registration("p4", date(2026, 10, 13)),  # autumn break
        registration("p5", date(2027, 5, 6)),  # Kristi himmelfartsdag
        registration("p6", date(2027, 7, 1)),  # summer holiday, outside the school year
    ]
    r = await client.post("/v1/registrations/batch", json={"items": items})
    assert r.status_code == 422
    errors = {e["field"]: e["detail"] for e in r.json()["errors"]}
    assert set(errors) == {
        "items[1].school_id",
        "items[2].date",
        "items[3].date",
        "items[4].date",
        "items[5].date",
    }
    assert "weekend" in errors["items[2].date"]
    assert "efterårsferie" in errors["items[3].date"]
    assert "public holiday" in errors["items[4].date"]
    assert "outside" in errors["items[5].date"]
    assert await count(sessionmaker, RegistrationEvent) == 0


async def test_schema_and_domain_errors_come_back_together_in_request_order(
    client: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    await configure(client)
    saturday = date(2026, 9, 5)
    items = [
        registration("p0", MONDAY),
        registration("p1", saturday),
        registration("p2", MONDAY, extent="1.5"),
        registration("p3", saturday, extent="2"),  # both kinds in one item
        registration("0101901234", MONDAY, school="nowhere"),  # CPR number, unknown school
        registration("p5", date(2020, 1, 6)),  # before the retention cutoff
    ]
    r = await client.post("/v1/registrations/batch", json={"items": items})
    assert r.status_code == 422
    errors = [(e["field"], e["detail"]) for e in r.json()["errors"]]
    assert [f for f, _ in errors] == [
        "items[1].date",
        "items[2].extent",
        "items[3].date",
        "items[3].extent",
        "items[4].pupil_id",
        "items[4].school_id",
        "items[5].date",
    ]
    detail = dict(errors)
    assert "weekend" in detail["items[1].date"] and "weekend" in detail["items[3].date"]
    assert "CPR" in detail["items[4].pupil_id"] and "unknown school" in detail["items[4].school_id"]
    assert "retention" in detail["items[5].date"]
    assert "0101901234" not in r.text
    # One item alone, and a retraction: the same in one answer.
    r = await client.post("/v1/registrations", json=registration("p3", saturday, extent="2"))
    assert r.status_code == 422 and fields(r) == {"date", "extent"}
    retraction = registration("p3", MONDAY, school="nowhere", slot="lunch")
    del retraction["category"], retraction["extent"]
    r = await client.post("/v1/registrations/retractions", json=retraction)
    assert r.status_code == 422 and fields(r) == {"school_id", "slot"}
    assert await count(sessionmaker, RegistrationEvent) == 0
    # Fixing every named field is enough: nothing new turns up on the second try.
    fixed = [registration(f"q{i}", MONDAY) for i in range(len(items))]
    r = await client.post("/v1/registrations/batch", json={"items": fixed})
    assert r.status_code == 200 and r.json()["inserted"] == len(items)


async def test_oversize_batch_and_body_are_refused(client: httpx.AsyncClient) -> None:
    await configure(client)
    items = [registration(f"p{i}", MONDAY) for i in range(5001)]
    r = await client.post("/v1/registrations/batch", json={"items": items})
    assert r.status_code == 422
    assert fields(r) == {"items"}
    r = await client.post(
        "/v1/registrations/batch",
        content=b'{"items": [' + b" " * (5 * 1024 * 1024) + b"]}",
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 413
    assert r.headers["content-type"] == "application/problem+json"


async def test_malformed_json_is_a_422_not_a_500(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/v1/registrations", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert r.status_code == 422
    assert r.headers["content-type"] == "application/problem+json"


async def test_event_id_reused_with_other_content_is_a_conflict(
    client: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    await configure(client)
    first = registration("p1", MONDAY, event_id="e-1")
    assert (await client.post("/v1/registrations", json=first)).status_code == 201
    other = first | {"category": "illness"}
    batch = [registration("p2", MONDAY), other]
    r = await client.post("/v1/registrations/batch", json={"items": batch})
    assert r.status_code == 409
    assert fields(r) == {"items[1].event_id"}
    assert await count(sessionmaker, RegistrationEvent) == 1


async def test_corrections_follow_recorded_at_not_arrival_order(
    client: httpx.AsyncClient,
) -> None:
    await configure(client)
    newer = registration(
        "p1", MONDAY, category="illness", recorded_at=datetime(2026, 9, 7, 12, tzinfo=UTC)
    )
    older = registration(
        "p1", MONDAY, category="unauthorized", recorded_at=datetime(2026, 9, 7, 8, tzinfo=UTC)
    )
    await client.post("/v1/registrations", json=newer)
    await client.post("/v1/registrations", json=older)
    current = (await client.get("/v1/pupils/p1/registrations")).json()
    assert [(r["category"], r["event_id"]) for r in current] == [("illness", newer["event_id"])]

    retraction = {
        "event_id": uuid.uuid4().hex,
        "pupil_id": "p1",
        "school_id": "vestbjerg",
        "date": MONDAY.isoformat(),
        "slot": "day",
        "recorded_at": datetime(2026, 9, 8, 9, tzinfo=UTC).isoformat(),
    }
    assert (await client.post("/v1/registrations/retractions", json=retraction)).status_code == 201
    # A copy of an older registration arriving after the retraction does not bring it back.
    late = registration(
        "p1", MONDAY, category="unauthorized", recorded_at=datetime(2026, 9, 8, 8, tzinfo=UTC)
    )
    await client.post("/v1/registrations", json=late)
    assert (await client.get("/v1/pupils/p1/registrations")).json() == []


async def test_accepted_events_reach_kafka_keyed_by_pupil(
    client: httpx.AsyncClient, settings: ApiSettings
) -> None:
    await configure(client)
    items = [registration(f"p{i}", MONDAY) for i in range(20)]
    assert (await client.post("/v1/registrations/batch", json={"items": items})).status_code == 200
    received = await read_topic(settings, settings.registrations_topic, expect=20)
    assert {key for key, _ in received} == {f"p{i}" for i in range(20)}
    events = [CloudEvent.from_bytes(value) for _, value in received]
    assert {e.id for e in events} == {i["event_id"] for i in items}
    data = RegistrationData.model_validate(events[0].data)
    assert data.school_id == "vestbjerg"


async def wait_until_empty(
    sessionmaker: async_sessionmaker[AsyncSession], table: object, timeout: float = 30.0
) -> int:
    deadline = time.monotonic() + timeout
    left = await count(sessionmaker, table)
    while left and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        left = await count(sessionmaker, table)
    return left


async def test_api_keeps_accepting_while_kafka_is_down_and_the_relay_catches_up(
    clean_db: object,
    database_url: str,
    sessionmaker: async_sessionmaker[AsyncSession],
    topic_suffix: str,
    var_dir: Path,
) -> None:
    port = free_port()
    settings = api_settings(database_url, f"127.0.0.1:{port}", topic_suffix)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://api", auth=RouteAuth()
        ) as client:
            await configure(client)
            items = [registration(f"p{i}", MONDAY) for i in range(10)]
            r = await client.post("/v1/registrations/batch", json={"items": items})
            assert r.status_code == 200
            assert (await client.get("/readyz")).status_code == 503
            await asyncio.sleep(1.0)  # give the relay rounds to fail
            async with sessionmaker() as s:
                assert await s.scalar(waiting_events(api_outbox)) == 10
            with EmbeddedBroker(port=port, log_file=var_dir / "late-broker.log"):
                assert await wait_until_empty(sessionmaker, api_outbox) == 0
                received = await read_topic(settings, settings.registrations_topic, expect=10)
                assert {CloudEvent.from_bytes(v).id for _, v in received} == {
                    i["event_id"] for i in items
                }


async def test_enrolments_are_stored_published_and_validated(
    client: httpx.AsyncClient, settings: ApiSettings
) -> None:
    await configure(client)
    body = {
        "event_id": "enr-1",
        "enrolled_from": "2026-09-01",
        "recorded_at": "2026-09-01T08:00:00+02:00",
    }
    r = await client.put("/v1/schools/vestbjerg/enrolments/elev-1", json=body)
    assert r.status_code == 200, r.text
    assert (r.json()["enrolled_from"], r.json()["enrolled_until"]) == ("2026-09-01", None)
    older = body | {
        "event_id": "enr-0",
        "enrolled_from": "2026-08-10",
        "recorded_at": "2026-08-01T08:00:00+02:00",
    }
    r = await client.put("/v1/schools/vestbjerg/enrolments/elev-1", json=older)
    assert r.json()["event_id"] == "enr-1"  # the newest report stays in force
    [held] = (await client.get("/v1/pupils/elev-1/enrolments")).json()
    assert held["enrolled_from"] == "2026-09-01"
    received = await read_topic(settings, settings.registrations_topic, expect=2)
    assert {key for key, _ in received} == {"elev-1"}
    types = {CloudEvent.from_bytes(v).type for _, v in received}
    assert types == {"dk.absence.enrolment.recorded"}
    # Grade and class are optional; absent they are null in the answer and the event.
    assert {CloudEvent.from_bytes(v).data["grade"] for _, v in received} == {None}
    r = await client.put(
        "/v1/schools/vestbjerg/enrolments/elev-1",
        json=body
        | {"event_id": "enr-2", "recorded_at": "2026-09-02T08:00:00+02:00"}
        | {"grade": 4, "class_name": " 4B "},
    )
    assert (r.json()["grade"], r.json()["class_name"]) == (4, "4B")
    received = await read_topic(settings, settings.registrations_topic, expect=3)
    assert (4, "4B") in {
        (e.data["grade"], e.data["class_name"])
        for e in (CloudEvent.from_bytes(v) for _, v in received)
    }

    r = await client.put(
        "/v1/schools/vestbjerg/enrolments/elev-1",
        json=body | {"enrolled_until": "2026-08-01"},
    )
    assert r.status_code == 422 and "enrolled_until" in r.text
    r = await client.put("/v1/schools/nowhere/enrolments/elev-1", json=body)
    assert r.status_code == 404
    assert (await client.get("/v1/pupils/elev-2/enrolments")).status_code == 404
    # Path, body and school are judged together: every error in one answer, nothing stored.
    r = await client.put(
        "/v1/schools/nowhere/enrolments/0101901234", json=body | {"event_id": "not an id"}
    )
    assert r.status_code == 422
    assert fields(r) == {"event_id", "path.pupil_id", "path.school_id"}
    assert "0101901234" not in r.json()["detail"]
    r = await client.put("/v1/schools/vestbjerg/enrolments/elev-9", json=body | {"event_id": "e 9"})
    assert r.status_code == 422 and fields(r) == {"event_id"}
    assert (await client.get("/v1/pupils/elev-9/enrolments")).status_code == 404


async def test_an_undecodable_body_is_a_documented_400_problem(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/v1/registrations", content=b"\xff\xfe{", headers={"content-type": "application/json"}
    )
    assert r.status_code == 400
    assert r.headers["content-type"] == "application/problem+json"
    documented = (await client.get("/openapi.json")).json()["paths"]["/v1/registrations"]["post"]
    assert "400" in documented["responses"]
