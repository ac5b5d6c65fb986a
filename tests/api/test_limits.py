"""Limits and data minimisation: per-client rate limit, bounded strings, and no national ID
numbers (Danish CPR, Norwegian fødselsnummer / D-number / H-number) anywhere we store text."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import date
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from opspor_api.app import create_app
from opspor_api.models import AuditEntry, RegistrationEvent
from opspor_api.ratelimit import RateLimiter
from opspor_api.settings import ApiSettings
from opspor_api.validation import national_id_kind
from opspor_shared.auth import Role
from tests.api.conftest import api_settings
from tests.auth import RouteAuth, bearer
from tests.support import SCHOOL_YEAR, YEAR_BODY, configure, registration

MONDAY = date(2026, 9, 21)
_K1 = (3, 7, 6, 1, 8, 9, 4, 5, 2)
_K2 = (5, 4, 3, 2, 7, 6, 5, 4, 3, 2)


def fnr(first_nine: str) -> str:
    """Appends both mod-11 control digits (the published algorithm, written out separately)."""
    digits = [int(c) for c in first_nine]
    k1 = (11 - sum(d * w for d, w in zip(digits, _K1, strict=True)) % 11) % 11
    digits.append(k1)
    k2 = (11 - sum(d * w for d, w in zip(digits, _K2, strict=True)) % 11) % 11
    assert k1 < 10 and k2 < 10, "no valid number starts with these digits"
    return first_nine + str(k1) + str(k2)


def wrong_control(number: str) -> str:
    return number[:-1] + str((int(number[-1]) + 1) % 10)


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("0101901234", "Danish CPR"),
        ("010190-1234", "Danish CPR"),
        ("290200-4321", "Danish CPR"),  # 29 February: the century is unknown, so it counts
        ("elev 311299-1234 i 3.b", "Danish CPR"),
        ("pupil-3112991234", "Danish CPR"),
        ("15076500565", "fødselsnummer"),  # a published synthetic number
        (fnr("150765005"), "fødselsnummer"),
        (fnr("550765005"), "fødselsnummer"),  # D-number: day + 40
        (fnr("154765005"), "fødselsnummer"),  # H-number: month + 40
        ("ring om " + fnr("150765005")[:6] + " " + fnr("150765005")[6:], "fødselsnummer"),
    ],
)
def test_national_id_numbers_are_recognised(text: str, kind: str) -> None:
    found = national_id_kind(text)
    assert found is not None and kind in found


@pytest.mark.parametrize(
    "text",
    [
        "elev-4711",
        "3202991234",  # day 32
        "3102991234",  # 31 February
        "0113991234",  # month 13
        "01019012345",  # 11 digits that are no valid fødselsnummer
        wrong_control("15076500565"),
        wrong_control(fnr("550765005")),
        "12345678901234",  # longer digit runs are account or order numbers, not IDs
        "sis-2026-000123",
        "2026-2027",
    ],
)
def test_other_text_passes(text: str) -> None:
    assert national_id_kind(text) is None


async def count_events(sessionmaker: async_sessionmaker[AsyncSession]) -> int:
    async with sessionmaker() as session:
        return int(await session.scalar(select(func.count()).select_from(RegistrationEvent)) or 0)


async def test_national_ids_are_refused_everywhere_without_echoing_them(
    client: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    await configure(client)
    cpr, norwegian = "010190-1234", fnr("550765005")
    cases: list[tuple[str, str, Any, str]] = [
        ("POST", "/v1/registrations", registration(cpr, MONDAY), "pupil_id"),
        (
            "POST",
            "/v1/registrations/batch",
            {"items": [registration("ok-1", MONDAY), registration(f"elev{norwegian}", MONDAY)]},
            "items[1].pupil_id",
        ),
        ("GET", f"/v1/pupils/{norwegian}/concerns", None, "path.pupil_id"),
        ("GET", f"/v1/pupils/{cpr}/registrations", None, "path.pupil_id"),
        (
            "PUT",
            "/v1/schools/vestbjerg",
            {
                "municipality_id": "aalborg",
                "name": f"Skole for {cpr}",
                "timezone": "Europe/Copenhagen",
                "mailbox": "v@sikkerpost.aalborg.dk",
            },
            "name",
        ),
        (
            "PUT",
            f"/v1/schools/vestbjerg/school-years/{SCHOOL_YEAR}",
            YEAR_BODY
            | {
                "closures": [
                    {"first_day": "2026-10-12", "last_day": "2026-10-16", "reason": norwegian}
                ]
            },
            "closures[0].reason",
        ),
    ]
    for method, url, body, field in cases:
        r = await client.request(method, url, json=body)
        assert r.status_code == 422, (url, r.text)
        [error] = r.json()["errors"]
        assert error["field"] == field
        assert "send the school system's pupil id" in error["detail"]
        assert ("CPR" in error["detail"]) == (cpr in url or cpr in json.dumps(body))
        body_text = r.text.replace(url, "")  # `instance` echoes the path the caller sent
        for number in (cpr, cpr.replace("-", ""), norwegian):
            assert number not in body_text
    assert await count_events(sessionmaker) == 0
    school = (await client.get("/v1/schools/vestbjerg")).json()
    assert school["name"] == "Vestbjerg Skole"


def _walk(
    schema: dict[str, Any], components: dict[str, Any], seen: set[str]
) -> list[dict[str, Any]]:
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        if name in seen:
            return []
        seen.add(name)
        return _walk(components[name], components, seen)
    found = [schema]
    for key in ("anyOf", "oneOf", "allOf"):
        for sub in schema.get(key, []):
            found += _walk(sub, components, seen)
    for sub in schema.get("properties", {}).values():
        found += _walk(sub, components, seen)
    if "items" in schema:
        found += _walk(schema["items"], components, seen)
    return found


def test_every_string_a_client_can_send_is_bounded(settings: ApiSettings) -> None:
    spec = create_app(settings).openapi()
    components = spec["components"]["schemas"]
    unbounded: list[str] = []
    for path, operations in spec["paths"].items():
        for method, op in operations.items():
            schemas = [p["schema"] for p in op.get("parameters", [])]
            for media in op.get("requestBody", {}).get("content", {}).values():
                schemas.append(media["schema"])
            for schema in schemas:
                for s in _walk(schema, components, set()):
                    if s.get("type") != "string" or "enum" in s or "const" in s:
                        continue
                    if s.get("format") in ("date", "date-time", "uuid"):
                        continue
                    if "maxLength" not in s:
                        unbounded.append(f"{method.upper()} {path}: {s}")
    assert not unbounded, "\n".join(unbounded)


def test_a_token_bucket_refills_at_its_rate() -> None:
    now = [0.0]
    limiter = RateLimiter(rate=2.0, burst=3, clock=lambda: now[0])
    assert [limiter.acquire("a") for _ in range(3)] == [0, 0, 0]
    assert limiter.acquire("a") == 1  # empty: half a second to the next token, rounded up
    assert limiter.acquire("b") == 0  # buckets are per client
    now[0] = 0.5
    assert limiter.acquire("a") == 0
    assert limiter.acquire("a") == 1


@pytest.fixture
async def limited(
    settings: ApiSettings, database_url: str, kafka_bootstrap: str, topic_suffix: str
) -> AsyncIterator[httpx.AsyncClient]:
    # One token per 4 s: the five requests below never earn a token back however slowly a
    # loaded machine runs them (at 2 per second they did, and the fifth got through).
    slow = api_settings(
        database_url, kafka_bootstrap, topic_suffix, rate_limit_per_second=0.25, rate_limit_burst=4
    )
    app = create_app(slow)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://api", auth=RouteAuth()
        ) as c:
            yield c


async def test_a_client_over_its_rate_gets_429_with_retry_after_and_loses_nothing(
    limited: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    await configure(limited)  # three requests of the admin's bucket
    system = bearer(Role.SCHOOL_SYSTEM, subject="sis-1")
    accepted = [registration(f"p{i}", MONDAY) for i in range(4)]
    for item in accepted:
        assert (await limited.post("/v1/registrations", json=item, headers=system)).is_success
    refused = registration("p-late", MONDAY)
    r = await limited.post("/v1/registrations", json=refused, headers=system)
    assert r.status_code == 429
    assert r.headers["content-type"] == "application/problem+json"
    wait = int(r.headers["retry-after"])
    assert wait >= 1
    assert await count_events(sessionmaker) == 4
    async with sessionmaker() as session:
        audited = await session.scalar(select(func.count()).where(AuditEntry.pupil_id == "p-late"))
    assert audited == 0
    # Another client is not held up, and health checks are never limited.
    other = bearer(Role.SCHOOL_SYSTEM, subject="sis-2")
    assert (await limited.get("/v1/pupils/p1/registrations", headers=other)).is_success
    for _ in range(10):
        assert (await limited.get("/healthz")).status_code == 200
    await asyncio.sleep(wait)
    r = await limited.post("/v1/registrations", json=refused, headers=system)
    assert r.status_code == 201
    assert await count_events(sessionmaker) == 5
