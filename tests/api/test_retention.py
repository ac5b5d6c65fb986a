"""Retention in the api, on real PostgreSQL: too-old registrations are refused, the purge
deletes exactly what is due and logs it, and replays of purged concerns are not stored."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from opspor_api.app import create_app
from opspor_api.concerns import service as concerns_service
from opspor_api.concerns.repository import ConcernRepository
from opspor_api.models import ConcernView, Registration, RegistrationEvent, api_outbox, api_purges
from opspor_api.purge import purge_once
from opspor_api.settings import ApiSettings
from opspor_shared.events import CloudEvent
from opspor_shared.kafka import Delivered
from opspor_shared.retention import retention_window
from tests.api.conftest import api_settings
from tests.api.test_concerns import concern_event
from tests.api.test_registrations import count, fields
from tests.auth import RouteAuth, issuers_setting
from tests.support import configure, registration

SessionMaker = async_sessionmaker[AsyncSession]

# RETENTION_REGISTRATION_DAYS=400 on Monday 20 September 2027: cutoff C = 2026-08-16, settle
# date S = 2027-08-17. RETENTION_CLOSED_CONCERN_DAYS=30: active final concerns that crossed
# before 2027-07-18 and concerns withdrawn before 2027-08-21 11:00 are purged.
LATER = datetime(2027, 9, 20, 11, 0, tzinfo=UTC)
EARLY = datetime(2026, 9, 14, 11, 0, tzinfo=UTC)
TOO_OLD = date(2026, 8, 14)  # a Friday, a school day, before the cutoff
KEPT = date(2026, 8, 17)  # the Monday after the cutoff


@pytest.fixture
async def settings(
    clean_db: AsyncEngine, database_url: str, kafka_bootstrap: str, topic_suffix: str
) -> ApiSettings:
    return api_settings(
        database_url,
        kafka_bootstrap,
        topic_suffix,
        retention_registration_days=400,
        retention_closed_concern_days=30,
    )


@contextlib.asynccontextmanager
async def client_at(settings: ApiSettings, now: datetime) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, clock=lambda: now)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://api", auth=RouteAuth()
        ) as client:
            yield client


async def stored(sessionmaker: SessionMaker) -> tuple[int, int, int]:
    return (
        await count(sessionmaker, RegistrationEvent),
        await count(sessionmaker, Registration),
        await count(sessionmaker, api_outbox),
    )


async def test_registrations_older_than_the_retention_period_are_refused(
    settings: ApiSettings, sessionmaker: SessionMaker
) -> None:
    async with client_at(settings, LATER) as client:
        await configure(client)
        r = await client.post("/v1/registrations", json=registration("p1", TOO_OLD))
        assert r.status_code == 422
        assert fields(r) == {"date"}
        [error] = r.json()["errors"]
        assert error["detail"] == (
            "2026-08-14 is older than the retention period of 400 days "
            "(the earliest accepted date is 2026-08-16)"
        )

        batch = [registration("p1", KEPT), registration("p2", TOO_OLD)]
        r = await client.post("/v1/registrations/batch", json={"items": batch})
        assert (r.status_code, fields(r)) == (422, {"items[1].date"})

        retraction = registration("p1", TOO_OLD)
        del retraction["category"], retraction["extent"]
        r = await client.post("/v1/registrations/retractions", json=retraction)
        assert (r.status_code, fields(r)) == (422, {"date"})
        assert await stored(sessionmaker) == (0, 0, 0)

        r = await client.post("/v1/registrations", json=registration("p1", KEPT))
        assert r.status_code == 201, r.text


def at(event: CloudEvent, when: datetime) -> Delivered:
    return Delivered(event.model_copy(update={"time": when}), None)


async def project(sessionmaker: SessionMaker, now: datetime, *delivered: Delivered) -> None:
    window = retention_window(
        ApiSettings(
            database_url="postgresql://unused/x",
            kafka_bootstrap_servers="unused:9092",
            auth_issuers=issuers_setting(),
            retention_registration_days=400,
            retention_closed_concern_days=30,
        ),
        now,
    )
    async with sessionmaker() as session, session.begin():
        await concerns_service.project(ConcernRepository(session), list(delivered), window)


async def seed(settings: ApiSettings, sessionmaker: SessionMaker) -> dict[str, uuid.UUID]:
    """Registrations through the api a year earlier; concern events as the consumer gets them."""
    async with client_at(settings, EARLY) as client:
        await configure(client)
        items = [registration("p-old", d) for d in (date(2026, 8, 12), date(2026, 8, 13))]
        items.append(registration("p-new", KEPT))
        r = await client.post("/v1/registrations/batch", json={"items": items})
        assert r.status_code == 200, r.text
        retraction = registration("p-old", date(2026, 8, 14))
        del retraction["category"], retraction["extent"]
        r = await client.post("/v1/registrations/retractions", json=retraction)
        assert r.status_code == 201, r.text
    events = {
        "active-old": (concern_event("p1", date(2027, 6, 1)), datetime(2027, 6, 2, tzinfo=UTC)),
        "active-recently-final": (
            concern_event("p1", date(2027, 8, 2)),
            datetime(2027, 8, 3, tzinfo=UTC),
        ),
        "withdrawn-old": (
            concern_event("p2", date(2027, 5, 3), revision=2),
            datetime(2027, 6, 10, tzinfo=UTC),
        ),
        "withdrawn-lately": (
            concern_event("p2", date(2027, 8, 5), revision=2),
            datetime(2027, 9, 1, tzinfo=UTC),
        ),
    }
    for event, when in events.values():
        await project(sessionmaker, when, at(event, when))
    return {name: uuid.UUID(e.data["concern_id"]) for name, (e, _) in events.items()}


async def test_purge_deletes_what_is_past_retention_and_logs_it(
    settings: ApiSettings, sessionmaker: SessionMaker, engine: AsyncEngine
) -> None:
    ids = await seed(settings, sessionmaker)
    async with sessionmaker() as session:
        withdrawn = await session.get(ConcernView, ids["withdrawn-old"])
    assert withdrawn is not None
    assert withdrawn.withdrawn_at == datetime(2027, 6, 10, tzinfo=UTC)

    dry = await purge_once(engine, sessionmaker, settings, lambda: LATER, dry_run=True)
    expected = {"registration_events": 3, "registrations": 3, "api_concerns": 2, "cases": 0}
    assert dry.deleted == expected
    report = await purge_once(engine, sessionmaker, settings, lambda: LATER)
    assert report.deleted == expected

    async with sessionmaker() as session:
        events = list(await session.scalars(select(RegistrationEvent.pupil_id)))
        current = list(await session.scalars(select(Registration.date)))
        concerns = set(await session.scalars(select(ConcernView.concern_id)))
        logged = (await session.execute(select(api_purges).order_by(api_purges.c.id))).all()
    assert (events, current) == (["p-new"], [KEPT])
    assert concerns == {ids["active-recently-final"], ids["withdrawn-lately"]}
    assert [(r.table_name, r.rows_deleted, r.criteria) for r in logged] == [
        ("registration_events", 3, "date < 2026-08-16"),
        ("registrations", 3, "date < 2026-08-16"),
        (
            "api_concerns",
            2,
            "crossing_date < 2027-08-17 and (withdrawn before 2027-08-21T11:00:00+00:00 "
            "or active with crossing_date < 2027-07-18)",
        ),
    ]
    assert {(r.run_id, r.at, r.cutoff, r.settle) for r in logged} == {
        (report.run_id, LATER, date(2026, 8, 16), date(2027, 8, 17))
    }

    again = await purge_once(engine, sessionmaker, settings, lambda: LATER)
    assert sum(again.deleted.values()) == 0
    assert await count(sessionmaker, api_purges) == 3


async def test_a_replayed_event_does_not_bring_a_purged_concern_back(
    settings: ApiSettings, sessionmaker: SessionMaker, engine: AsyncEngine
) -> None:
    ids = await seed(settings, sessionmaker)
    await purge_once(engine, sessionmaker, settings, lambda: LATER)
    # The topic is read again from the start: the raise of the purged concern comes back.
    old = concern_event("p1", date(2027, 6, 1))
    await project(sessionmaker, LATER, at(old, datetime(2027, 6, 2, tzinfo=UTC)))
    # An event sent lately about a concern that is final by now is still applied.
    fresh = concern_event("p3", date(2027, 6, 1))
    await project(sessionmaker, LATER, at(fresh, datetime(2027, 9, 20, 10, 0, tzinfo=UTC)))
    async with sessionmaker() as session:
        held = set(await session.scalars(select(ConcernView.concern_id)))
    assert ids["active-old"] not in held
    assert uuid.UUID(fresh.data["concern_id"]) in held


async def test_the_api_purges_on_its_own_while_it_runs(
    settings: ApiSettings, sessionmaker: SessionMaker
) -> None:
    await seed(settings, sessionmaker)
    async with client_at(settings, LATER):
        deadline = time.monotonic() + 20
        for _ in range(400):
            if await count(sessionmaker, api_purges) == 3 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
    # The outbox is the relay's business, not the purge's.
    assert (await stored(sessionmaker))[:2] == (1, 1)
    async with sessionmaker() as session:
        tables = await session.scalars(select(func.distinct(api_purges.c.table_name)))
        assert set(tables) == {"registration_events", "registrations", "api_concerns"}
