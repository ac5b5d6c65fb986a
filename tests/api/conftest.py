from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from opspor_api.app import create_app
from opspor_api.settings import ApiSettings
from tests.auth import RouteAuth, issuers_setting

# Webhook secrets are sealed in every api test, as in a deployment (deploy/compose.yaml).
WEBHOOK_SECRET_KEYS = "Q2zBXQ7i4Qm6ZL3xQm4W8r2tV9sYk1nP0aHcEdFgJjU="


def api_settings(
    database_url: str, bootstrap: str, suffix: str, **overrides: object
) -> ApiSettings:
    defaults = {
        "auth_issuers": issuers_setting(),
        "webhook_secret_keys": WEBHOOK_SECRET_KEYS,
        # A group of its own per test, as its topics are (and as the alerter's tests do): a
        # member an earlier test's app left in a shared group can hold up the next join.
        "concern_consumer_group": f"opspor-api-concerns-{suffix}",
    }
    return ApiSettings(
        database_url=database_url,
        kafka_bootstrap_servers=bootstrap,
        kafka_enable_idempotence=False,
        kafka_session_timeout_ms=2000,
        registrations_topic=f"absence.registrations.v1.{suffix}",
        concerns_topic=f"absence.concerns.v1.{suffix}",
        topic_partitions=2,
        **(defaults | overrides),  # type: ignore[arg-type]
    )


@pytest.fixture
async def settings(
    clean_db: AsyncEngine, database_url: str, kafka_bootstrap: str, topic_suffix: str
) -> ApiSettings:
    return api_settings(database_url, kafka_bootstrap, topic_suffix)


@pytest.fixture
async def client(settings: ApiSettings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://api", auth=RouteAuth()
        ) as c:
            yield c
