"""The database goes away while the api is serving: 503 with Retry-After, logged once per
outage without a traceback, nothing stored half-way, and normal answers once it is back."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import date

import httpx
import pytest
import structlog
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from opspor_api.app import create_app
from opspor_api.models import RegistrationEvent, api_outbox
from opspor_api.settings import ApiSettings
from tests.api.conftest import api_settings
from tests.auth import RouteAuth
from tests.faults.proxy import CuttableProxy
from tests.support import configure, registration

MONDAY = date(2026, 9, 7)


@pytest.fixture
async def cut_db(
    settings: ApiSettings,
) -> AsyncIterator[tuple[CuttableProxy, httpx.AsyncClient]]:
    proxy, via = CuttableProxy.for_database(settings.database_url)
    app = create_app(
        api_settings(
            via,
            settings.kafka_bootstrap_servers,
            settings.registrations_topic.rsplit(".", 1)[1],
        )
    )
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://api", auth=RouteAuth()
            ) as client:
                yield proxy, client
    finally:
        proxy.stop()


async def stored(sessionmaker: async_sessionmaker[AsyncSession]) -> tuple[int, int]:
    async with sessionmaker() as s:
        events = await s.scalar(select(func.count()).select_from(RegistrationEvent))
        outbox = await s.scalar(select(func.count()).select_from(api_outbox))
        return int(events or 0), int(outbox or 0)


async def test_database_outage_answers_503_logged_once_and_recovers(
    cut_db: tuple[CuttableProxy, httpx.AsyncClient],
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    proxy, client = cut_db
    await configure(client)
    batch = {"items": [registration(f"p{i}", MONDAY) for i in range(5)]}
    before = await stored(sessionmaker)

    proxy.down()
    with structlog.testing.capture_logs() as logs:
        answers = [await client.post("/v1/registrations/batch", json=batch) for _ in range(3)]
        reads = await client.get("/v1/schools/vestbjerg")
    for r in [*answers, reads]:
        assert r.status_code == 503, r.text
        assert r.headers["content-type"] == "application/problem+json"
        assert int(r.headers["retry-after"]) > 0
        assert r.json()["type"] == "urn:opspor:problem:unavailable"
        assert "database" in r.json()["detail"]
    api_logs = [e for e in logs if e.get("part") == "api"]
    assert [e["event"] for e in api_logs] == ["outage_started"]
    assert not [e for e in logs if e["event"] == "unhandled_error"]
    assert not [e for e in logs if "exc_info" in e and e.get("part") == "api"]
    assert await stored(sessionmaker) == before

    proxy.up()
    with structlog.testing.capture_logs() as logs:
        again = await client.post("/v1/registrations/batch", json=batch)
    assert again.status_code == 200, again.text
    assert again.json()["inserted"] == 5
    ended = [e for e in logs if e["event"] == "outage_ended" and e.get("part") == "api"]
    assert len(ended) == 1 and ended[0]["duration_seconds"] >= 0
    events, _ = await stored(sessionmaker)
    assert events == before[0] + 5
