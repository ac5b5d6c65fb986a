"""Webhook endpoint configuration: validation names the field, the secret is never returned, and
neither the secret nor the URL's query string shows up in a problem document."""

from __future__ import annotations

import base64
import subprocess
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from opspor_api.app import create_app
from opspor_api.settings import ApiSettings
from opspor_api.webhooks import service
from opspor_api.webhooks.repository import WebhookRepository
from opspor_shared.reference import ReferenceRepository
from opspor_shared.secretbox import SecretBox
from tests.api.conftest import WEBHOOK_SECRET_KEYS, api_settings
from tests.auth import RouteAuth
from tests.support import configure, run_module, seed_reference

SECRET = "whsec_" + base64.b64encode(b"s" * 32).decode()  # ends in "="
TOKEN = "q-token-83bd1f"
URL = f"https://integration.aalborg.example/opspor/hooks?token={TOKEN}"
HOOK = "/v1/municipalities/aalborg/webhooks/sager"
BODY: dict[str, Any] = {"url": URL, "secret": SECRET, "levels": ["concern"], "enabled": True}


def problem_fields(response: httpx.Response) -> set[str]:
    assert response.headers["content-type"] == "application/problem+json"
    return {e["field"] for e in response.json()["errors"]}


def assert_no_secret(response: httpx.Response, *secrets: str) -> None:
    for secret in (SECRET, SECRET.removeprefix("whsec_"), TOKEN, *secrets):
        assert secret not in response.text, secret


async def test_webhook_is_created_read_listed_and_deleted_without_its_secret(
    client: httpx.AsyncClient,
) -> None:
    await configure(client)

    created = await client.put(HOOK, json=BODY)
    assert created.status_code == 201, created.text
    again = await client.put(HOOK, json=BODY | {"levels": ["ppr-must", "concern", "concern"]})
    assert again.status_code == 200

    one = await client.get(HOOK)
    listed = await client.get("/v1/municipalities/aalborg/webhooks")
    for response in (created, again, one, listed):
        assert response.status_code in (200, 201)
        assert "secret" not in (response.json()[0] if response is listed else response.json())
        assert_no_secret(response)
    body = one.json()
    assert body == {
        "id": "sager",
        "municipality_id": "aalborg",
        "url": "https://integration.aalborg.example/opspor/hooks",
        "url_query_redacted": True,
        "secret_set": True,
        "secret_fingerprint": body["secret_fingerprint"],
        "secret_encrypted": True,
        "levels": ["concern", "ppr-must"],
        "school_ids": [],
        "enabled": True,
    }
    assert body["secret_fingerprint"].startswith("sha256:")
    assert len(body["secret_fingerprint"]) == len("sha256:") + 8
    assert [w["id"] for w in listed.json()] == ["sager"]

    assert (await client.delete(HOOK)).status_code == 204
    assert (await client.get(HOOK)).status_code == 404
    assert (await client.delete(HOOK)).status_code == 404
    assert (await client.get("/v1/municipalities/aalborg/webhooks")).json() == []


async def test_fingerprint_tells_secrets_apart(client: httpx.AsyncClient) -> None:
    await configure(client)
    first = (await client.put(HOOK, json=BODY)).json()["secret_fingerprint"]
    same = (await client.put(HOOK, json=BODY)).json()["secret_fingerprint"]
    unpadded = (await client.put(HOOK, json=BODY | {"secret": SECRET.rstrip("=")})).json()
    other_secret = "whsec_" + base64.b64encode(b"t" * 32).decode()
    other = (await client.put(HOOK, json=BODY | {"secret": other_secret})).json()
    assert first == same == unpadded["secret_fingerprint"] != other["secret_fingerprint"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"url": f"http://integration.aalborg.example/hooks?token={TOKEN}"}, "url"),
        ({"url": f"https://user:{TOKEN}@integration.aalborg.example/hooks"}, "url"),
        ({"url": f"ftp://integration.aalborg.example/hooks?token={TOKEN}"}, "url"),
        ({"url": f"https:///hooks?token={TOKEN}"}, "url"),
        ({"url": f"https://integration.aalborg.example:99999/?token={TOKEN}"}, "url"),
        ({"secret": SECRET.removeprefix("whsec_")}, "secret"),  # no prefix
        ({"secret": SECRET[:-4] + "!!!!"}, "secret"),  # not base64
        ({"secret": "whsec_" + base64.b64encode(b"s" * 16).decode()}, "secret"),  # too short
        ({"secret": "whsec_" + base64.b64encode(b"s" * 65).decode()}, "secret"),  # too long
        ({"levels": ["not a level"]}, "levels[0]"),
        ({"enabled": "sometimes"}, "enabled"),
        ({"extra": 1}, "extra"),
    ],
)
async def test_invalid_webhook_names_the_field_stores_nothing_and_echoes_no_secret(
    client: httpx.AsyncClient, change: dict[str, Any], field: str
) -> None:
    await configure(client)
    response = await client.put(HOOK, json=BODY | change)
    assert response.status_code == 422, response.text
    assert problem_fields(response) == {field}
    assert_no_secret(response, *(str(v) for v in change.values() if isinstance(v, str)))
    assert (await client.get(HOOK)).status_code == 404


# Tried from outside before the guard existed: every one of these was stored (201).
INTERNAL_URLS = [
    "https://127.0.0.1/x",
    "https://localhost:5432/",
    "https://169.254.169.254/latest/meta-data",
    "https://[::1]/",
    "https://10.0.0.1/",
    "https://0x7f000001/",
    "https://127.1/",
    "https://2130706433/hooks",
    "https://[::ffff:127.0.0.1]/",
    "https://100.64.0.1/",
    "https://[fd00:ec2::254]/",
    "https://db.localhost/",
]


@pytest.mark.parametrize("url", INTERNAL_URLS)
async def test_a_url_pointing_inside_is_refused_and_nothing_is_stored(
    client: httpx.AsyncClient, url: str
) -> None:
    await configure(client)
    response = await client.put(HOOK, json=BODY | {"url": url})
    assert response.status_code == 422, response.text
    assert problem_fields(response) == {"url"}
    [error] = response.json()["errors"]
    assert "public address" in error["detail"]
    assert url.split("://")[1].split("/")[0].strip("[]") not in response.text
    assert (await client.get(HOOK)).status_code == 404


async def test_an_internal_url_and_an_unknown_school_are_named_together(
    client: httpx.AsyncClient,
) -> None:
    await configure(client)
    response = await client.put(
        HOOK, json=BODY | {"url": "https://127.0.0.1/x", "school_ids": ["nowhere"]}
    )
    assert response.status_code == 422
    assert problem_fields(response) == {"url", "school_ids[0]"}


async def test_schema_and_domain_errors_are_named_in_one_answer(
    client: httpx.AsyncClient,
) -> None:
    await configure(client)
    bad_secret = "whsec_short"
    response = await client.put(
        HOOK,
        json=BODY | {"url": "https://127.0.0.1/x", "secret": bad_secret, "school_ids": ["nowhere"]},
    )
    assert response.status_code == 422
    assert problem_fields(response) == {"url", "secret", "school_ids[0]"}
    assert_no_secret(response, bad_secret)
    assert (await client.get(HOOK)).status_code == 404


async def test_an_operator_allow_list_admits_a_private_network(
    database_url: str, kafka_bootstrap: str, topic_suffix: str, clean_db: object
) -> None:
    settings = api_settings(
        database_url, kafka_bootstrap, topic_suffix, webhook_allowed_networks="10.20.0.0/16"
    )
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://api", auth=RouteAuth()
        ) as client,
    ):
        await configure(client)
        inside = await client.put(HOOK, json=BODY | {"url": "https://10.20.3.4/hooks"})
        assert inside.status_code == 201, inside.text
        outside = await client.put(HOOK, json=BODY | {"url": "https://10.21.3.4/hooks"})
        assert outside.status_code == 422
        assert problem_fields(outside) == {"url"}


async def test_missing_url_and_secret_are_both_named(client: httpx.AsyncClient) -> None:
    await configure(client)
    response = await client.put(HOOK, json={"levels": []})
    assert response.status_code == 422
    assert problem_fields(response) == {"url", "secret"}


async def test_schools_must_belong_to_the_municipality(
    client: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    await configure(client)
    await seed_reference(sessionmaker, municipality="hals", school="hals-skole")
    response = await client.put(HOOK, json=BODY | {"school_ids": ["vestbjerg", "hals-skole"]})
    assert response.status_code == 422
    assert problem_fields(response) == {"school_ids[1]"}
    assert_no_secret(response)
    ok = await client.put(HOOK, json=BODY | {"school_ids": ["vestbjerg"]})
    assert ok.status_code == 201 and ok.json()["school_ids"] == ["vestbjerg"]


async def test_unknown_municipality_is_404(client: httpx.AsyncClient) -> None:
    response = await client.put(HOOK, json=BODY)
    assert response.status_code == 404
    assert_no_secret(response)
    assert (await client.get("/v1/municipalities/aalborg/webhooks")).status_code == 404


async def test_the_alerter_reads_what_the_api_stored(
    client: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    """The api's row is what opspor_shared.reference hands the alerter, secret and URL intact."""
    await configure(client)
    await client.put(HOOK, json=BODY | {"levels": ["concern"], "school_ids": ["vestbjerg"]})
    async with sessionmaker() as session:
        [ref] = await ReferenceRepository(session).webhook_endpoints("aalborg")
    assert ref.url == URL
    assert SecretBox.of(WEBHOOK_SECRET_KEYS).open(ref.stored_secret) == SECRET
    assert ref.matches("concern", "vestbjerg") and not ref.matches("ppr-must", "vestbjerg")
    assert not ref.matches("concern", "another-school")
    assert URL not in repr(ref) and SECRET not in repr(ref)


async def stored_secrets(sessionmaker: async_sessionmaker[AsyncSession]) -> dict[str, str]:
    async with sessionmaker() as session:
        rows = await session.execute(text("select id, secret from webhook_endpoints"))
        return {webhook_id: secret for webhook_id, secret in rows}


async def reseal_command(settings: ApiSettings, keys: str) -> subprocess.CompletedProcess[str]:
    env = {"DATABASE_URL": settings.database_url, "WEBHOOK_SECRET_KEYS": keys}
    return await run_module("opspor_api.reseal", env=env)


async def test_secrets_are_sealed_at_rest_and_a_new_key_reseals_them(
    client: httpx.AsyncClient,
    settings: ApiSettings,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    """WEBHOOK_SECRET_KEYS: the table holds no usable secret, one stored before the keys were
    set stays readable, and the reseal command moves every secret to a new first key."""
    await configure(client)
    sealed = (await client.put(HOOK, json=BODY)).json()
    assert sealed["secret_encrypted"] is True
    async with sessionmaker() as session, session.begin():
        repo = WebhookRepository(session)  # as an api without WEBHOOK_SECRET_KEYS stores it
        legacy, _ = await service.put_webhook(repo, "aalborg", "legacy", BODY, SecretBox())
    assert legacy.secret_encrypted is False
    stored = await stored_secrets(sessionmaker)
    assert stored["legacy"] == SECRET
    assert stored["sager"].startswith("fernet:")
    assert SECRET.removeprefix("whsec_").rstrip("=") not in stored["sager"]
    listed = (await client.get("/v1/municipalities/aalborg/webhooks")).json()
    assert {w["id"]: (w["secret_fingerprint"], w["secret_encrypted"]) for w in listed} == {
        "legacy": (sealed["secret_fingerprint"], False),
        "sager": (sealed["secret_fingerprint"], True),
    }

    new = Fernet.generate_key().decode()
    done = await reseal_command(settings, f"{new},{WEBHOOK_SECRET_KEYS}")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[:2] == ["resealed", "2"]
    resealed = await stored_secrets(sessionmaker)
    async with sessionmaker() as session:
        repo = WebhookRepository(session)
        fresh = await service.list_webhooks(repo, "aalborg", SecretBox([new]))
        stale = await service.list_webhooks(repo, "aalborg", SecretBox.of(WEBHOOK_SECRET_KEYS))
    # The new key alone opens both; the old one alone opens neither any more.
    assert [(w.secret_fingerprint, w.secret_encrypted) for w in fresh] == [
        (sealed["secret_fingerprint"], True)
    ] * 2
    assert {w.secret_fingerprint for w in stale} == {service.UNREADABLE}

    # A key that opens nothing: the command names the endpoints and changes nothing.
    lost = await reseal_command(settings, Fernet.generate_key().decode())
    assert lost.returncode == 1
    assert "aalborg/legacy" in lost.stderr and "aalborg/sager" in lost.stderr
    assert await stored_secrets(sessionmaker) == resealed
    for output in (done.stdout + done.stderr, lost.stdout + lost.stderr):
        assert SECRET.removeprefix("whsec_").rstrip("=") not in output
