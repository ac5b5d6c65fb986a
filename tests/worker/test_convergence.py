"""The convergence rule (DOMAIN.md section 5) on the real worker and database.

Random registrations, corrections, retractions and duplicates, delivered in random order and
random batches, must leave exactly the concerns that a from-scratch evaluation of the final
registrations gives, each with the explanation a from-scratch evaluation gives (a correction
that keeps a crossing but changes its facts revises the explanation: issue 13 item 4), and the
last event published for each active concern carries that explanation.
"""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from opspor_shared.calendar import Closure, SchoolCalendar, SchoolYear
from opspor_shared.engine import Registration, builtin_packs, concern_id, evaluate
from opspor_shared.events import ConcernData
from opspor_worker.models import Concern
from opspor_worker.service import Context, explanation_of
from tests.support import YEAR_BODY, school_days
from tests.worker.test_worker import FIRST, NOW, feed, outbox, reg

# Few days and slots, so that keys collide (corrections) and crossings are common.
DAYS = school_days(FIRST, 8)
PUPILS = ["p1", "p2"]
BASE = datetime(2026, 9, 1, tzinfo=UTC)

fact = st.tuples(
    st.sampled_from(["p1", "p1", "p1", "p2"]),
    st.integers(0, len(DAYS) - 1),
    st.sampled_from(["day", "day", "am"]),
    st.sampled_from(["unauthorized"] * 6 + ["illness", "authorized", "retract"]),
    st.sampled_from(["1", "1", "0.5", "0.25"]),
    st.integers(0, 50),  # recorded_at offset (hours); ties are broken by event id
)


def calendar() -> SchoolCalendar:
    closures = tuple(
        Closure(
            datetime.fromisoformat(c["first_day"]).date(),
            datetime.fromisoformat(c["last_day"]).date(),
            c["reason"],
        )
        for c in YEAR_BODY["closures"]
    )
    first = datetime.fromisoformat(YEAR_BODY["first_day"]).date()
    last = datetime.fromisoformat(YEAR_BODY["last_day"]).date()
    return SchoolCalendar("DK", [SchoolYear(first, last, closures)])


def expected(
    events: list[tuple[str, int, str, str, str, int, str]],
) -> dict[uuid.UUID, dict[str, Any]]:
    """Last writer wins per key, by (recorded_at, event id), computed independently."""
    final: dict[tuple[str, int, str], tuple[int, str, str, str]] = {}
    for pupil, day, slot, category, extent, hours, event_id in events:
        key = (pupil, day, slot)
        if key not in final or final[key][:2] < (hours, event_id):
            final[key] = (hours, event_id, category, extent)
    pack = builtin_packs()["dk-aalborg-2018"]
    cal = calendar()
    horizon = cal.last_school_day_on_or_before(NOW.date())
    assert horizon is not None
    out: dict[uuid.UUID, dict[str, Any]] = {}
    for pupil in PUPILS:
        regs = [
            Registration(DAYS[day], slot, category, Decimal(extent))  # type: ignore[arg-type]
            for (p, day, slot), (_, _, category, extent) in final.items()
            if p == pupil and category != "retract"
        ]
        for c in evaluate(cal, regs, pack, horizon):
            cid = concern_id(pupil, c.pack_id, c.rule_id, c.rule_version, c.date)
            out[cid] = comparable(explanation_of(c, pack))
    return out


def comparable(explanation: dict[str, Any]) -> dict[str, Any]:
    """Numbers as Decimals: stored extents read back as '1.0000' where the reference has '1'."""
    out = dict(explanation)
    for key in ("value", "threshold"):
        out[key] = Decimal(out[key])
    out["contributing"] = [
        {**c, "extent": Decimal(c["extent"])} for c in explanation["contributing"]
    ]
    return out


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(facts=st.lists(fact, min_size=20, max_size=80), seed=st.integers(0, 2**32 - 1))
async def test_any_order_any_duplicates_converges_to_from_scratch(
    ctx: Context,
    sessionmaker: async_sessionmaker[AsyncSession],
    facts: list[tuple[str, int, str, str, str, int]],
    seed: int,
) -> None:
    async with sessionmaker() as session, session.begin():
        await session.execute(
            text("truncate worker_registrations, worker_pupils, concerns, worker_outbox")
        )
    rnd = random.Random(seed)
    events = [(*f, f"e{i:03d}") for i, f in enumerate(facts)]
    deliveries = [
        reg(
            pupil,
            DAYS[day],
            slot=slot,
            category="unauthorized" if category == "retract" else category,
            extent=extent,
            recorded_at=BASE + timedelta(hours=hours),
            retracted=category == "retract",
            event_id=event_id,
        )
        for pupil, day, slot, category, extent, hours, event_id in events
    ]
    # Duplicates and any order, in random batch sizes.
    stream = deliveries + rnd.sample(deliveries, k=len(deliveries) // 3)
    rnd.shuffle(stream)
    i = 0
    while i < len(stream):
        size = rnd.randint(1, 10)
        await feed(sessionmaker, ctx, stream[i : i + size])
        i += size

    async with sessionmaker() as session:
        active = {
            c.concern_id: comparable(c.explanation)
            for c in await session.scalars(select(Concern).where(Concern.status == "active"))
        }
    wanted = expected(events)
    assert active == wanted
    published: dict[uuid.UUID, tuple[int, str, dict[str, Any]]] = {}
    for e in await outbox(sessionmaker):
        data = ConcernData.model_validate(e.data)
        cid = uuid.UUID(data.concern_id)
        if cid not in published or published[cid][0] < data.revision:
            explanation = comparable(data.explanation.model_dump(mode="json"))
            published[cid] = (data.revision, data.status, explanation)
    assert {c: x for c, (_, status, x) in published.items() if status == "active"} == wanted
    event("concerns expected: " + ("some" if wanted else "none"))
