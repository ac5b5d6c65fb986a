"""opspor-replay publishes the api's stored registration events again, all or filtered, in the
form the api first published them."""

from __future__ import annotations

import asyncio
import subprocess
from datetime import date

import httpx
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from opspor_api.models import api_outbox
from opspor_api.settings import ApiSettings
from opspor_shared.events import CloudEvent, RegistrationData
from tests.auth import RouteAuth
from tests.support import configure, read_topic, registration, run_module

MONDAY = date(2026, 9, 7)


async def outbox_rows(sessionmaker: async_sessionmaker[AsyncSession]) -> int:
    async with sessionmaker() as s:
        return int(await s.scalar(select(func.count()).select_from(api_outbox)) or 0)


async def drained(sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    for _ in range(300):
        if await outbox_rows(sessionmaker) == 0:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the relay did not publish the outbox")


async def replay(settings: ApiSettings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        "DATABASE_URL": settings.database_url,
        "REGISTRATIONS_TOPIC": settings.registrations_topic,
    }
    return await run_module("opspor_shared.replay", "registrations", *args, env=env)


async def test_replay_publishes_the_stored_events_again_filtered_by_school_and_time(
    client: httpx.AsyncClient,
    settings: ApiSettings,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    await configure(client)
    await configure(client, school="hals", mailbox="hals@sikkerpost.aalborg.dk")
    ours = [registration(f"p{i}", MONDAY) for i in range(3)]
    theirs = [registration(f"h{i}", MONDAY, school="hals") for i in range(2)]
    both = RouteAuth(schools=("vestbjerg", "hals"))
    r = await client.post("/v1/registrations/batch", json={"items": ours + theirs}, auth=both)
    assert r.json()["inserted"] == 5, r.text
    await drained(sessionmaker)

    future = await replay(settings, "--since", "2999-01-01T00:00:00+00:00")
    assert (future.returncode, future.stdout.split()[:2]) == (0, ["queued", "0"]), future.stderr
    naive = await replay(settings, "--since", "2026-01-01T00:00:00")
    assert naive.returncode == 2 and "time zone" in naive.stderr
    done = await replay(settings, "--school", "vestbjerg")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[:2] == ["queued", "3"]
    await drained(sessionmaker)

    published = await read_topic(settings, settings.registrations_topic, expect=8)
    events = [CloudEvent.from_bytes(value) for _, value in published]
    assert len(events) == 8
    counts: dict[str, int] = {}
    for e in events:
        counts[e.id] = counts.get(e.id, 0) + 1
    assert {i["event_id"] for i in ours} == {k for k, n in counts.items() if n == 2}
    assert {i["event_id"] for i in theirs} == {k for k, n in counts.items() if n == 1}
    # The replayed copy is the event the api first published (values equal; a decimal may
    # come back from the database as 1.0000 where the client wrote 1).
    by_id: dict[str, list[CloudEvent]] = {}
    for e in events:
        by_id.setdefault(e.id, []).append(e)
    for first, *again in by_id.values():
        for copy in again:
            assert (copy.type, copy.source, copy.subject, copy.time) == (
                first.type,
                first.source,
                first.subject,
                first.time,
            )
            data = RegistrationData.model_validate(copy.data)
            assert data == RegistrationData.model_validate(first.data)
