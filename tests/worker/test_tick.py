"""The day-change tick evaluates only the pupils whose concerns can change on the new days."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY
from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from opspor_api.models import Municipality
from opspor_shared.engine import Registration, builtin_packs, concern_id, evaluate_packs
from opspor_worker.models import Concern, WorkerPupil
from opspor_worker.service import NO_CHANGE_AHEAD, Context, at_most, tick
from tests.support import school_days
from tests.worker.test_convergence import calendar
from tests.worker.test_worker import feed, reg

# 4 Jan 2027 is the first school day of the quarter; with no holiday until February, the
# 20th (dk-national's min_days) is Friday 29 January.
QUARTER = school_days(date(2027, 1, 4), 20)


def noon(day: date) -> datetime:
    return datetime.combine(day, datetime.min.time(), UTC) + timedelta(hours=11)


def clock_at(day: date) -> Callable[[], datetime]:
    return lambda: noon(day)


def looked_at(scope: str) -> float:
    value = REGISTRY.get_sample_value("opspor_worker_tick_pupils_evaluated_total", {"scope": scope})
    return value or 0.0


async def next_changes(sessionmaker: async_sessionmaker[AsyncSession]) -> dict[str, date | None]:
    async with sessionmaker() as session:
        rows = await session.execute(select(WorkerPupil.pupil_id, WorkerPupil.next_change_on))
        return {r.pupil_id: r.next_change_on for r in rows}


async def test_a_day_change_evaluates_only_pupils_whose_day_has_come(
    ctx: Context, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    async with sessionmaker() as session, session.begin():
        await session.execute(update(Municipality).values(rule_packs=["dk-national"]))
    ctx.clock = lambda: noon(QUARTER[2])
    # 3 days of 20 is 15 %: both quarter rules are met once the quarter has 20 school days.
    await feed(sessionmaker, ctx, [reg("over", d) for d in QUARTER[:3]])
    # 1 day of 20 is 5 %: without more absence this pupil never crosses.
    await feed(sessionmaker, ctx, [reg("under", QUARTER[0])])
    assert await next_changes(sessionmaker) == {"over": QUARTER[19], "under": NO_CHANGE_AHEAD}

    assert await tick(sessionmaker, ctx) == 0  # the school's first tick: everyone, once
    before = looked_at("day")
    for day in QUARTER[3:19]:
        ctx.clock = clock_at(day)
        assert await tick(sessionmaker, ctx) == 0
    assert looked_at("day") == before  # 16 day changes, nobody evaluated

    ctx.clock = lambda: noon(QUARTER[19])
    assert await tick(sessionmaker, ctx) == 2
    assert looked_at("day") == before + 1  # only "over"
    async with sessionmaker() as session:
        raised = {
            (c.pupil_id, c.level, c.crossing_date) for c in await session.scalars(select(Concern))
        }
    assert raised == {
        ("over", "warn-parents", QUARTER[19]),
        ("over", "notify-municipality", QUARTER[19]),
    }
    # Its concerns are in place; nothing ahead changes them without a new registration.
    assert (await next_changes(sessionmaker))["over"] == NO_CHANGE_AHEAD


async def test_a_pack_change_still_evaluates_every_pupil(
    ctx: Context, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    ctx.clock = lambda: noon(QUARTER[2])
    await feed(sessionmaker, ctx, [reg("over", d) for d in QUARTER[:3]])
    await feed(sessionmaker, ctx, [reg("under", QUARTER[0])])
    assert await tick(sessionmaker, ctx) == 0
    before = looked_at("all")

    # The municipality switches packs and the day moves on at once: a full re-evaluation,
    # which finds the share crossings dk-aalborg-2018 did not have.
    async with sessionmaker() as session, session.begin():
        await session.execute(update(Municipality).values(rule_packs=["dk-national"]))
    ctx.clock = lambda: noon(QUARTER[19])
    assert await tick(sessionmaker, ctx) == 2
    assert looked_at("all") == before + 2


# Random absence over the first 30 school days of the quarter, registered up front (so some
# lie ahead of the clock), then the clock steps through the quarter a few days at a time.
absences = st.lists(
    st.tuples(
        st.sampled_from(["p1", "p2", "p3"]),
        st.integers(0, 29),
        st.sampled_from(["unauthorized", "unauthorized", "illness", "authorized"]),
    ),
    max_size=40,
)


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(facts=absences, steps=st.lists(st.integers(1, 6), min_size=3, max_size=8))
async def test_day_change_ticks_equal_a_from_scratch_evaluation_every_day(
    ctx: Context,
    sessionmaker: async_sessionmaker[AsyncSession],
    facts: list[tuple[str, int, str]],
    steps: list[int],
) -> None:
    async with sessionmaker() as session, session.begin():
        await session.execute(
            text(
                "truncate worker_registrations, worker_pupils, worker_school_horizons, "
                "concerns, worker_outbox"
            )
        )
        await session.execute(
            update(Municipality).values(rule_packs=["dk-aalborg-2018", "dk-national"])
        )
    days = school_days(date(2027, 1, 4), 40)
    packs = [builtin_packs()[p] for p in ("dk-aalborg-2018", "dk-national")]
    cal = calendar()
    final = {(pupil, day): category for pupil, day, category in facts}
    at = 0
    ctx.clock = clock_at(days[at])
    await feed(sessionmaker, ctx, [reg(p, days[d], category=c) for (p, d), c in final.items()])
    for step in steps:
        at = min(at + step, len(days) - 1)
        ctx.clock = clock_at(days[at])
        await tick(sessionmaker, ctx)
        wanted: set[uuid.UUID] = set()
        for pupil in {p for p, _ in final}:
            regs = [
                Registration(days[d], "day", c, Decimal(1))  # type: ignore[arg-type]
                for (p, d), c in final.items()
                if p == pupil
            ]
            for crossings in evaluate_packs(cal, regs, packs, days[at]):
                wanted |= {
                    concern_id(pupil, c.pack_id, c.rule_id, c.rule_version, c.date)
                    for c in crossings
                }
        async with sessionmaker() as session:
            active = set(
                await session.scalars(select(Concern.concern_id).where(Concern.status == "active"))
            )
        assert active == wanted, days[at]


async def test_schools_in_flight_are_bounded_and_one_failure_stops_the_rest() -> None:
    """The tick's schools run at most two at a time; when one fails, the one running beside
    it is cancelled (its chunk rolls back), none not yet started runs, and the error is the
    tick's."""
    running = 0
    most = 0
    ran: list[str] = []

    async def school(name: str, fail: bool = False) -> int:
        nonlocal running, most
        running += 1
        most = max(most, running)
        try:
            await asyncio.sleep(0.01)
            if fail:
                raise RuntimeError(name)
            await asyncio.sleep(0.05)
            ran.append(name)
            return 1
        finally:
            running -= 1

    assert await at_most(2, [school(f"s{i}") for i in range(5)]) == 5
    assert most == 2 and sorted(ran) == ["s0", "s1", "s2", "s3", "s4"]

    ran.clear()
    with pytest.raises(RuntimeError, match="bad"):
        await at_most(2, [school("ok"), school("bad", fail=True), school("later")])
    assert ran == [] and running == 0  # "ok" cancelled while running, "later" never started
