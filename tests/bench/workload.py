"""Reference data and registration payloads for the benchmark.

Ingest pupils get at most 4 registrations each, on dates a week apart, so no rule of
dk-aalborg-2018 (5 consecutive, 7 of 20, 15 of 60, 10/40 in the school year) can fire for them:
the ingest phase measures storing and evaluating, not mail. Latency-phase "filler" pupils
follow the same limit; only the designated crossing pupils get 5 consecutive unauthorized days.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx

from opspor_shared.calendar import SchoolCalendar
from opspor_shared.reference import school_year_from_row
from tests.support import SCHOOL_YEAR, YEAR_BODY

MUNICIPALITY = "bench-aalborg"
TIMEZONE = "Europe/Copenhagen"
CATEGORIES = ("unauthorized", "illness", "authorized")
MAX_DAYS_PER_PUPIL = 4
DAY_STRIDE = 7  # school days between one pupil's registrations


def calendar() -> SchoolCalendar:
    row = {
        "first_day": date.fromisoformat(YEAR_BODY["first_day"]),
        "last_day": date.fromisoformat(YEAR_BODY["last_day"]),
        "closures": YEAR_BODY["closures"],
        "extra_days": YEAR_BODY["extra_days"],
    }
    return SchoolCalendar("DK", [school_year_from_row(row)])


def evaluated_school_days(now: datetime | None = None) -> list[date]:
    """School days the worker evaluates today: first day of the year up to its horizon."""
    cal = calendar()
    today = (now or datetime.now(UTC)).astimezone(ZoneInfo(TIMEZONE)).date()
    horizon = cal.last_school_day_on_or_before(today)
    if horizon is None:
        raise RuntimeError(f"no school day on or before {today}; the bench needs a past school day")
    days = list(cal.school_days(None, horizon))
    if len(days) < MAX_DAYS_PER_PUPIL * DAY_STRIDE:
        raise RuntimeError(f"only {len(days)} school days before {today}; too few for the bench")
    return days


async def configure(client: httpx.AsyncClient, school_id: str) -> str:
    """Municipality (idempotent PUT), school and school year; returns the school's mailbox."""
    mailbox = f"{school_id}@sikkerpost.aalborg.dk"
    puts: list[tuple[str, dict[str, Any]]] = [
        (
            f"/v1/municipalities/{MUNICIPALITY}",
            {
                "name": "Aalborg Kommune (bench)",
                "country": "DK",
                "language": "da",
                "rule_packs": ["dk-aalborg-2018"],
                "ppr_mailbox": "ppr@sikkerpost.aalborg.dk",
            },
        ),
        (
            f"/v1/schools/{school_id}",
            {
                "municipality_id": MUNICIPALITY,
                "name": f"Skole {school_id}",
                "timezone": TIMEZONE,
                "mailbox": mailbox,
            },
        ),
        (f"/v1/schools/{school_id}/school-years/{SCHOOL_YEAR}", YEAR_BODY),
    ]
    for path, body in puts:
        r = await client.put(path, json=body)
        if r.status_code not in (200, 201):
            raise RuntimeError(f"PUT {path}: {r.status_code} {r.text}")
    return mailbox


def registration(
    event_id: str, pupil: str, school: str, day: date, category: str
) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "pupil_id": pupil,
        "school_id": school,
        "date": day.isoformat(),
        "slot": "day",
        "category": category,
        "extent": "1",
        "recorded_at": (datetime.combine(day, datetime.min.time(), UTC) + timedelta(hours=8))
        .isoformat()
        .replace("+00:00", "Z"),
    }


def quiet_pupil_items(
    prefix: str, school: str, pupil_index: int, days: Sequence[date], count: int
) -> list[dict[str, Any]]:
    """`count` (<= 4) registrations of one pupil, a week of school days apart: never a concern."""
    if not 1 <= count <= MAX_DAYS_PER_PUPIL:
        raise ValueError(f"count must be 1..{MAX_DAYS_PER_PUPIL}")
    pupil = f"elev-{prefix}-{pupil_index:07d}"
    first = pupil_index % (len(days) - DAY_STRIDE * (MAX_DAYS_PER_PUPIL - 1))
    return [
        registration(
            f"{prefix}-{pupil_index:07d}-{k}",
            pupil,
            school,
            days[first + DAY_STRIDE * k],
            CATEGORIES[(pupil_index + k) % len(CATEGORIES)],
        )
        for k in range(count)
    ]


def ingest_bodies(
    prefix: str, school: str, days: Sequence[date], total: int, batch_size: int
) -> list[bytes]:
    """JSON bodies of POST /v1/registrations/batch, encoded up front (not timed).

    Distinct pupils with 4 registrations each: distinct (pupil, date) keys, unique event ids.
    """
    items: list[dict[str, Any]] = []
    pupil = 0
    while len(items) < total:
        items.extend(
            quiet_pupil_items(
                prefix, school, pupil, days, min(MAX_DAYS_PER_PUPIL, total - len(items))
            )
        )
        pupil += 1
    return encode_batches(items, batch_size)


def encode_batches(items: Sequence[dict[str, Any]], batch_size: int) -> list[bytes]:
    """Batch bodies of `batch_size` items (the last may hold fewer), JSON-encoded."""
    return [
        json.dumps({"items": items[i : i + batch_size]}, separators=(",", ":")).encode()
        for i in range(0, len(items), batch_size)
    ]


def single_bodies(prefix: str, school: str, days: Sequence[date], total: int) -> list[bytes]:
    """Bodies of POST /v1/registrations: one registration of a fresh pupil each."""
    return [
        json.dumps(quiet_pupil_items(prefix, school, n, days, 1)[0], separators=(",", ":")).encode()
        for n in range(total)
    ]
