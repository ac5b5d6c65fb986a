"""Fixtures of the web page tests: the local OpenID Connect provider (the same one `make run`
starts), the api with sign-in configured, and the two-municipality data of the API's
isolation matrix (tests/api/test_access.py)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterator
from html import unescape
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from opspor_api.app import create_app
from opspor_api.settings import ApiSettings
from opspor_shared.auth import Role
from opspor_shared.devstack.net import free_port
from opspor_shared.devstack.oidc import CLIENT_ID, CLIENT_SECRET, USERS, LocalOidcProvider, claims
from tests.api.conftest import api_settings
from tests.api.test_access import seed

# The matrix's municipalities: aalborg (schools a1, a2) and odense (o1, o2).
TEST_USERS: dict[str, dict[str, Any]] = {
    **USERS,
    "staff-a1": claims(Role.SCHOOL_STAFF, "aalborg", ["a1"]),
    "staff-a2": claims(Role.SCHOOL_STAFF, "aalborg", ["a2"]),
    "staff-o1": claims(Role.SCHOOL_STAFF, "odense", ["o1"]),
    "ppr-odense": claims(Role.PPR, "odense"),
    # A provider that forgets the tenancy claims: sign-in must be refused, not guessed.
    "staff-without-schools": {"role": "school_staff", "municipality": "aalborg"},
}


@pytest.fixture(scope="session")
def oidc_provider() -> Iterator[LocalOidcProvider]:
    with LocalOidcProvider(users=TEST_USERS) as provider:
        yield provider


@pytest.fixture
def web_port() -> int:
    return free_port()


@pytest.fixture
async def web_settings(
    clean_db: AsyncEngine,
    database_url: str,
    kafka_bootstrap: str,
    topic_suffix: str,
    oidc_provider: LocalOidcProvider,
    web_port: int,
) -> ApiSettings:
    return api_settings(
        database_url,
        kafka_bootstrap,
        topic_suffix,
        oidc_issuer=oidc_provider.issuer,
        oidc_client_id=CLIENT_ID,
        oidc_client_secret=CLIENT_SECRET,
        web_base_url=f"http://127.0.0.1:{web_port}",
    )


@pytest.fixture
async def web_app(web_settings: ApiSettings) -> AsyncIterator[FastAPI]:
    app = create_app(web_settings)
    async with app.router.lifespan_context(app):
        yield app


@pytest.fixture
async def web(web_app: FastAPI, web_settings: ApiSettings) -> AsyncIterator[httpx.AsyncClient]:
    """A browser-like client of the pages (cookies kept, redirects not followed)."""
    transport = httpx.ASGITransport(app=web_app, raise_app_exceptions=False)
    async with httpx.AsyncClient(
        transport=transport, base_url=web_settings.web_base_url or ""
    ) as c:
        yield c


@pytest.fixture
async def seeded(web: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    await seed(web, sessionmaker)


async def sign_in(web: httpx.AsyncClient, sub: str, start: str = "/ui/") -> httpx.Response:
    """Walks the whole authorization code flow as a browser does, choosing `sub` on the
    provider's page; returns the first answer after the callback."""
    r = await web.get(start)
    if r.status_code == 303 and r.headers["location"].startswith("/ui/login"):
        r = await web.get(r.headers["location"])
    assert r.status_code == 303, r.text
    authorize = r.headers["location"]
    async with httpx.AsyncClient(timeout=10) as browser:
        page = await browser.get(authorize)
        assert page.status_code == 200 and sub in page.text, page.text[:500]
        answer = await browser.post(authorize, data={"sub": sub})
    assert answer.status_code == 302, answer.text[:500]
    callback = httpx.URL(answer.headers["location"])
    return await web.get(callback.raw_path.decode())


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, "the page has no form with a CSRF token"
    return unescape(found.group(1))


@pytest.fixture
async def served(web_app: FastAPI, web_port: int) -> AsyncIterator[str]:
    """The api on a real loopback port (its lifespan already runs in web_app), for Chromium."""
    config = uvicorn.Config(
        web_app, host="127.0.0.1", port=web_port, lifespan="off", log_level="warning"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        for _ in range(200):  # at most 10 s
            if server.started or task.done():
                break
            await asyncio.sleep(0.05)
        assert server.started, "uvicorn did not start"
        yield f"http://127.0.0.1:{web_port}"
    finally:
        server.should_exit = True
        async with asyncio.timeout(10):
            await task
