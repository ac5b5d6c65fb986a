"""Test helpers: a configured municipality, school and school year, and event builders."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, ConsumerRecord
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from opspor_api.models import Municipality, School, SchoolYearRow
from opspor_shared.events import CloudEvent, utcnow
from opspor_shared.settings import ServiceSettings
from opspor_worker.settings import WorkerSettings
from tests.auth import issuers_setting

SCHOOL_YEAR = "2026-2027"
# A Danish school year with an autumn break (week 42) and a Christmas break.
YEAR_BODY: dict[str, Any] = {
    "first_day": "2026-08-10",
    "last_day": "2027-06-25",
    "closures": [
        {"first_day": "2026-10-12", "last_day": "2026-10-16", "reason": "efterårsferie"},
        {"first_day": "2026-12-21", "last_day": "2027-01-01", "reason": "juleferie"},
    ],
    "extra_days": [],
}


async def configure(
    client: httpx.AsyncClient,
    *,
    municipality: str = "aalborg",
    school: str = "vestbjerg",
    language: str = "da",
    rule_packs: tuple[str, ...] = ("dk-aalborg-2018",),
    mailbox: str = "vestbjerg.skole@sikkerpost.aalborg.dk",
    school_rule_packs: tuple[str, ...] | None = None,
) -> None:
    r = await client.put(
        f"/v1/municipalities/{municipality}",
        json={
            "name": "Aalborg Kommune",
            "country": "DK",
            "language": language,
            "rule_packs": list(rule_packs),
            "ppr_mailbox": "ppr@sikkerpost.aalborg.dk",
        },
    )
    assert r.status_code in (200, 201), r.text
    r = await client.put(
        f"/v1/schools/{school}",
        json={
            "municipality_id": municipality,
            "name": "Vestbjerg Skole",
            "timezone": "Europe/Copenhagen",
            "mailbox": mailbox,
        }
        # The school's own packs instead of the municipality's.
        | ({"rule_packs": list(school_rule_packs)} if school_rule_packs is not None else {}),
    )
    assert r.status_code in (200, 201), r.text
    r = await client.put(f"/v1/schools/{school}/school-years/{SCHOOL_YEAR}", json=YEAR_BODY)
    assert r.status_code in (200, 201), r.text


def school_days(first: date, count: int) -> list[date]:
    """`count` weekdays from `first` on (test dates avoid holidays and closures)."""
    days: list[date] = []
    d = first
    while len(days) < count:
        if d.weekday() < 5:
            days.append(d)
        d += timedelta(days=1)
    return days


def registration(
    pupil: str,
    day: date,
    *,
    category: str = "unauthorized",
    extent: str = "1",
    slot: str = "day",
    school: str = "vestbjerg",
    recorded_at: datetime | None = None,
    event_id: str | None = None,
) -> dict[str, Any]:
    return {
        "event_id": event_id or uuid.uuid4().hex,
        "pupil_id": pupil,
        "school_id": school,
        "date": day.isoformat(),
        "slot": slot,
        "category": category,
        "extent": extent,
        "recorded_at": (
            recorded_at or datetime.combine(day, datetime.min.time(), UTC) + timedelta(hours=8)
        ).isoformat(),
    }


async def seed_reference(
    sessionmaker: async_sessionmaker[AsyncSession],
    *,
    school: str = "vestbjerg",
    municipality: str = "aalborg",
    rule_packs: tuple[str, ...] = ("dk-aalborg-2018",),
    language: str = "da",
    timezone: str = "Europe/Copenhagen",
) -> None:
    """Reference rows as the api writes them, for tests of the other services."""
    async with sessionmaker() as session, session.begin():
        await session.execute(
            insert(Municipality)
            .values(
                id=municipality,
                name="Aalborg Kommune",
                country="DK",
                language=language,
                rule_packs=list(rule_packs),
                ppr_mailbox="ppr@sikkerpost.aalborg.dk",
                unit_mailbox="boern@sikkerpost.aalborg.dk",
            )
            .on_conflict_do_nothing()
        )
        await session.execute(
            insert(School).values(
                id=school,
                municipality_id=municipality,
                name="Vestbjerg Skole",
                timezone=timezone,
                language=None,
                rule_packs=None,
                mailbox=f"{school}@sikkerpost.aalborg.dk",
            )
        )
        await session.execute(
            insert(SchoolYearRow).values(
                school_id=school,
                label=SCHOOL_YEAR,
                first_day=date.fromisoformat(YEAR_BODY["first_day"]),
                last_day=date.fromisoformat(YEAR_BODY["last_day"]),
                closures=YEAR_BODY["closures"],
                extra_days=[],
            )
        )


async def read_records(
    bootstrap_servers: str, topic: str, expect: int, timeout: float = 30.0
) -> list[ConsumerRecord[bytes, bytes]]:
    """The topic's records from the start, in offset order per partition, until `expect` of
    them came or `timeout` passed."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    out: list[ConsumerRecord[bytes, bytes]] = []
    deadline = time.monotonic() + timeout
    try:
        while len(out) < expect and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                out.extend(records)
    finally:
        await consumer.stop()
    return out


async def read_topic(
    settings: ServiceSettings, topic: str, expect: int, timeout: float = 30.0
) -> list[tuple[str, bytes]]:
    records = await read_records(settings.kafka_bootstrap_servers, topic, expect, timeout)
    return [((r.key or b"").decode(), r.value or b"") for r in records]


def plain_event(kind: str, subject: str, data: dict[str, Any]) -> CloudEvent:
    """A CloudEvent of type `test.<kind>` with a fresh id, for tests of the event plumbing."""
    return CloudEvent(
        id=f"{kind}-{uuid.uuid4().hex}",
        source="/test",
        type=f"test.{kind}",
        time=utcnow(),
        subject=subject,
        data=data,
    )


def broker_settings(bootstrap_servers: str, **fields: Any) -> WorkerSettings:
    """Settings for a test of the broker alone: no database, and no idempotent producer (the
    Tansu broker has none)."""
    return WorkerSettings(
        database_url="postgresql://unused/x",
        kafka_bootstrap_servers=bootstrap_servers,
        kafka_enable_idempotence=False,
        auth_issuers=issuers_setting(),
        **fields,
    )


async def run_module(
    module: str, *args: str, env: Mapping[str, str]
) -> subprocess.CompletedProcess[str]:
    """`python -m module args` as an operator runs it, with `env` added to this process's
    environment; off the event loop (the services under test keep running) and bounded at
    60 s."""
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", module, *args],
        env=os.environ | dict(env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
