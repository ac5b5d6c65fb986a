"""Phase (a)'s floor: what storing the rows alone costs, without HTTP, parsing or the api.

At one connection a client waits for each answer, so a durable ingest takes at least the
parse-only reference's time plus the time to store the rows; its ratio to the reference can be
at most t_ref / (t_ref + t_store). This module measures t_store for the same batch bodies with
hand-written set-based SQL (one statement per table, one transaction per batch, committed as
the api commits) into scratch copies of the api's tables, with their keys and indexes, in three
steps: the events alone (one row per registration under a unique event id, the least an ingest
that answers "inserted" and "duplicates" must write), then also the current state (the upsert
per pupil, date and slot that the api's reads use), then also the audit rows (one per pupil).
Nothing else is done: no event payloads, no outbox, no auth, no tenancy checks. The scratch
tables are dropped afterwards.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

import asyncpg

from opspor_shared.events import RegistrationData

COLUMNS = ("event_id", "pupil_id", "school_id", "date", "slot", "category", "extent", "recorded_at")
INSERT_EVENTS = """
insert into bench_floor_events
    (event_id, pupil_id, school_id, date, slot, category, extent, recorded_at, retracted)
select *, false from unnest($1::text[], $2::text[], $3::text[], $4::date[], $5::text[],
    $6::text[], $7::numeric[], $8::timestamptz[])
on conflict (event_id) do nothing
"""
# The statements below are made of this module's constants only.
EVENTS = INSERT_EVENTS + "returning event_id"
WITH_STATE = f"""
with new as (
    {INSERT_EVENTS}
    returning event_id, pupil_id, school_id, date, slot, category, extent, recorded_at
),
applied as (
    insert into bench_floor_current
        (pupil_id, date, slot, school_id, category, extent, recorded_at, event_id, retracted)
    select distinct on (pupil_id, date, slot)
        pupil_id, date, slot, school_id, category, extent, recorded_at, event_id, false
    from new order by pupil_id, date, slot, recorded_at desc, event_id collate "C" desc
    on conflict (pupil_id, date, slot) do update set
        school_id = excluded.school_id, category = excluded.category,
        extent = excluded.extent, recorded_at = excluded.recorded_at,
        event_id = excluded.event_id, retracted = excluded.retracted
    where (bench_floor_current.recorded_at, bench_floor_current.event_id collate "C")
        < (excluded.recorded_at, excluded.event_id collate "C")
)
select event_id from new
"""  # noqa: S608
AUDIT = """
insert into bench_floor_audit
    (subject, role, municipality, client, pupil_id, school_id, method, endpoint, purpose, status)
select 'bench', 'school_system', null, 'bench', p, s, 'POST', '/v1/registrations/batch',
    'registration', 200
from unnest($1::text[], $2::text[]) as t(p, s)
"""
SCRATCH = """
drop table if exists bench_floor_events, bench_floor_current, bench_floor_audit;
create table bench_floor_events (like registration_events including all);
create table bench_floor_current (like registrations including all);
create table bench_floor_audit (like audit_log including indexes excluding defaults);
alter table bench_floor_audit alter column id add generated always as identity;
alter table bench_floor_audit alter column at set default now();
"""
STEPS = ("events", "events_and_state", "events_state_and_audit")


def batch_columns(body: bytes) -> list[list[Any]]:
    """A batch body's items as one list per column, parsed as the api parses them (not timed)."""
    items = [RegistrationData.model_validate(i) for i in json.loads(body)["items"]]
    return [[getattr(i, c) for i in items] for c in COLUMNS]


async def measure(url: str, bodies: Sequence[bytes]) -> dict[str, Any]:
    """Microseconds of wall time per registration for each step, at one connection."""
    batches = [batch_columns(b) for b in bodies]
    registrations = sum(len(b[0]) for b in batches)
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://", 1))
    out: dict[str, Any] = {"registrations": registrations, "batches": len(batches)}
    try:
        for step in STEPS:
            await conn.execute(SCRATCH)
            statement = EVENTS if step == "events" else WITH_STATE
            began = time.perf_counter()
            for columns in batches:
                async with conn.transaction():
                    stored = await conn.fetch(statement, *columns)
                    if len(stored) != len(columns[0]):
                        raise RuntimeError(f"floor {step}: {len(stored)} of {len(columns[0])}")
                    if step == "events_state_and_audit":
                        pairs = sorted(set(zip(columns[1], columns[2], strict=True)))
                        await conn.execute(AUDIT, [p for p, _ in pairs], [s for _, s in pairs])
            seconds = time.perf_counter() - began
            out[f"{step}_us_per_registration"] = round(seconds / registrations * 1e6, 1)
    finally:
        await conn.execute("drop table if exists bench_floor_events, bench_floor_current")
        await conn.execute("drop table if exists bench_floor_audit")
        await conn.close()
    return out


def ceilings(floor: dict[str, Any], parse_only_per_second: float) -> dict[str, float]:
    """The highest ratio to the reference an ingest that stores as each step could reach at
    one connection: t_ref / (t_ref + t_store)."""
    reference_us = 1e6 / parse_only_per_second
    return {
        step: round(reference_us / (reference_us + floor[f"{step}_us_per_registration"]), 3)
        for step in STEPS
    }
