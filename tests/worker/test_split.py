"""Two worker processes split the day-change tick by partition ownership (issue 11): each
evaluates only the pupils of the registrations topic's partitions its consumer holds, no pupil
is evaluated by both, a partition that moves is finished by its new holder, and the concerns
are those a lone worker finds. The partition of a pupil is the one the producers' default
partitioner gives its registrations, checked against the real broker."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import pytest
from aiokafka import TopicPartition
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from opspor_shared.kafka import Assignment, make_producer, partition_of
from opspor_shared.runtime import run_consumer
from opspor_worker import service
from opspor_worker.models import Concern
from opspor_worker.repository import WorkerRepository
from opspor_worker.service import Context, tick
from tests.support import broker_settings
from tests.worker.test_tick import QUARTER, noon
from tests.worker.test_worker import feed, reg

PUPILS = [f"elev-{n:03d}" for n in range(24)]
TOTAL = 6


def holding(partitions: set[int]) -> Assignment:
    assignment = Assignment("absence.registrations.v1")
    assignment.update([TopicPartition(assignment.topic, p) for p in partitions], TOTAL)
    return assignment


def context_like(ctx: Context, assignment: Assignment | None) -> Context:
    return Context(
        settings=ctx.settings, calendars=ctx.calendars, clock=ctx.clock, assignment=assignment
    )


async def concern_set(sessionmaker: async_sessionmaker[AsyncSession]) -> set[tuple[str, ...]]:
    async with sessionmaker() as session:
        rows = await session.scalars(select(Concern))
        return {(c.pupil_id, c.rule_id, c.crossing_date.isoformat(), c.status) for c in rows}


async def test_two_workers_split_the_tick_and_a_moved_partition_is_finished_by_its_new_holder(
    ctx: Context, sessionmaker: async_sessionmaker[AsyncSession], monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx.settings = ctx.settings.model_copy(update={"topic_partitions": TOTAL})
    # Half the pupils have five unauthorized days in a row ending on the 11th school day,
    # registered ahead of time: their concern comes with that day. The others never cross.
    ctx.clock = lambda: noon(QUARTER[0])
    for n, pupil in enumerate(PUPILS):
        days = QUARTER[6:11] if n % 2 else QUARTER[:2]
        await feed(sessionmaker, ctx, [reg(pupil, d) for d in days])
    crossing = {p for n, p in enumerate(PUPILS) if n % 2}

    evaluated: dict[str, list[str]] = {}
    original = service.evaluate_pupils

    async def recording(repo: WorkerRepository, c: Context, pupils: Sequence[str]) -> int:
        who = (
            "lone" if c.assignment is None else ",".join(map(str, sorted(c.assignment.partitions)))
        )
        evaluated.setdefault(who, []).extend(pupils)
        return await original(repo, c, pupils)

    monkeypatch.setattr(service, "evaluate_pupils", recording)
    day = QUARTER[9]
    first, second = context_like(ctx, holding({0, 1, 2})), context_like(ctx, holding({3, 4, 5}))
    for c in (first, second):
        c.clock = lambda: noon(day)

    # Two processes tick at once: disjoint pupils, together everyone, each by its partition.
    await asyncio.gather(tick(sessionmaker, first), tick(sessionmaker, second))
    a, b = set(evaluated.pop("0,1,2")), set(evaluated.pop("3,4,5"))
    assert not a & b and a | b == set(PUPILS)
    assert all(partition_of(p, TOTAL) in {0, 1, 2} for p in a)
    assert all(partition_of(p, TOTAL) in {3, 4, 5} for p in b)
    assert a and b  # 24 pupils land in both halves
    split = await concern_set(sessionmaker)

    # Nothing changed: neither evaluates anyone again.
    await asyncio.gather(tick(sessionmaker, first), tick(sessionmaker, second))
    assert evaluated == {}

    assert split == set()  # nobody has crossed by the 10th school day

    # The second process goes away before the next day's tick; the first takes over all
    # partitions and evaluates the pupils of both halves whose day has come, each once.
    nxt = QUARTER[10]
    first.clock = lambda: noon(nxt)
    assert first.assignment is not None
    first.assignment.update([TopicPartition(first.assignment.topic, p) for p in range(6)], TOTAL)
    await tick(sessionmaker, first)
    taken_over = evaluated.pop("0,1,2,3,4,5", [])
    assert sorted(taken_over) == sorted(crossing)
    assert {partition_of(p, TOTAL) for p in taken_over} & {3, 4, 5}  # the second's half too
    await tick(sessionmaker, first)
    assert evaluated == {}
    after_move = await concern_set(sessionmaker)
    assert {pupil for pupil, *_ in after_move} == crossing

    # A lone worker from scratch finds the same concerns on both days.
    async with sessionmaker() as session, session.begin():
        await session.execute(
            text("truncate concerns, worker_school_horizons, worker_outbox restart identity")
        )
    lone = context_like(ctx, None)
    lone.clock = lambda: noon(day)
    await tick(sessionmaker, lone)
    assert set(evaluated.pop("lone")) == set(PUPILS)
    assert await concern_set(sessionmaker) == split
    lone.clock = lambda: noon(nxt)
    await tick(sessionmaker, lone)
    assert await concern_set(sessionmaker) == after_move


async def test_a_process_holding_no_partition_ticks_nobody(
    ctx: Context, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    ctx.clock = lambda: noon(QUARTER[2])
    await feed(sessionmaker, ctx, [reg("elev-x", d) for d in QUARTER[:5]])
    waiting = context_like(ctx, Assignment("absence.registrations.v1"))  # not joined yet
    assert await tick(sessionmaker, waiting) == 0
    async with sessionmaker() as session:
        assert await session.scalar(text("select count(*) from worker_school_horizons")) == 0


async def test_two_consumers_of_a_group_hold_disjoint_partitions_where_the_producer_put_keys(
    kafka_bootstrap: str, topic_suffix: str
) -> None:
    topic = f"absence.registrations.v1.{topic_suffix}"
    settings = broker_settings(
        kafka_bootstrap,
        kafka_session_timeout_ms=6000,
        registrations_topic=topic,
        topic_partitions=TOTAL,
    )
    group = f"worker-{topic_suffix}"
    stop = asyncio.Event()

    async def nothing(batch: object) -> list[object]:
        return []

    holders = [Assignment(topic), Assignment(topic)]
    tasks = [
        asyncio.create_task(run_consumer(settings, group, topic, nothing, stop, h))  # type: ignore[arg-type]
        for h in holders
    ]
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            held = [h.partitions for h in holders]
            if all(held) and not held[0] & held[1] and held[0] | held[1] == set(range(TOTAL)):
                break
            await asyncio.sleep(0.2)
        else:
            raise AssertionError(f"no split of the partitions: {[h.partitions for h in holders]}")
        assert {h.total for h in holders} == {TOTAL}
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
    # A process that stopped consuming holds nothing.
    assert [h.partitions for h in holders] == [frozenset(), frozenset()]

    # The producers' partitioner puts a pupil's registrations where partition_of says.
    producer = make_producer(settings, "split-test")
    await producer.start()
    try:
        sent = {
            pupil: (await producer.send_and_wait(topic, b"{}", key=pupil.encode())).partition
            for pupil in PUPILS
        }
    finally:
        await producer.stop()
    assert sent == {pupil: partition_of(pupil, TOTAL) for pupil in PUPILS}
