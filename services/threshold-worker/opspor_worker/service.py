"""The threshold-worker's logic: keep registrations, evaluate pupils, emit concern changes.

Each pupil is re-evaluated from scratch (the pure engine over that pupil's current
registrations), and the result is diffed against the stored concerns. So the incremental
result equals a from-scratch computation by construction, and the cost per registration
depends on one pupil's year, never on how many pupils exist.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from opspor_shared.calendar import horizon_for
from opspor_shared.clock import Clock, system_clock
from opspor_shared.db import unit_of_work
from opspor_shared.engine import Crossing, RulePack, concern_id
from opspor_shared.engine.timeline import enrolled_stays, evaluate_stays
from opspor_shared.events import (
    CONCERN_RAISED,
    CONCERN_UPDATED,
    CONCERN_WITHDRAWN,
    ENROLMENT_RECORDED,
    CloudEvent,
    EnrolmentData,
    RegistrationData,
)
from opspor_shared.kafka import Assignment, Delivered, partition_of
from opspor_shared.logging import correlation_id, get_logger
from opspor_shared.outbox import OutboxMessage
from opspor_shared.reference import (
    CalendarCache,
    PackCache,
    ReferenceRepository,
    SchoolRef,
)
from opspor_shared.retention import retention_window
from opspor_worker.metrics import CONCERNS_CHANGED, PUPILS_EVALUATED, TICK_PUPILS
from opspor_worker.models import Concern
from opspor_worker.repository import WorkerRepository
from opspor_worker.settings import WorkerSettings

log = get_logger(__name__)


@dataclass
class Context:
    settings: WorkerSettings
    calendars: CalendarCache
    packs: PackCache = field(default_factory=PackCache)
    clock: Clock = system_clock
    # The registrations topic's partitions this process consumes; None: all of them (a worker
    # without a consumer, as in tests and the benchmark's tick).
    assignment: Assignment | None = None

    def owned_partitions(self) -> tuple[frozenset[int], int]:
        """The partitions whose pupils this process evaluates in the tick, of how many."""
        if self.assignment is None:
            total = self.settings.topic_partitions
            return frozenset(range(total)), total
        return self.assignment.partitions, self.assignment.total


def explanation_of(crossing: Crossing, pack: RulePack) -> dict[str, Any]:
    """The crossing's ExplanationData in its JSON form, as ``model_dump(mode="json")`` gives it
    (tests/worker/test_explanation.py holds the two equal), assembled directly: a tick after a
    pack change builds one for each of tens of thousands of concerns, and constructing and
    dumping the model cost 36 µs for a crossing of 15 days against 10 µs this way."""
    version = next(v for v in pack.versions if v.version == crossing.rule_version)
    rule = version.rule(crossing.rule_id)
    return {
        "pack_id": crossing.pack_id,
        "rule_id": crossing.rule_id,
        "rule_version": crossing.rule_version,
        "rule": rule.describe() if rule else crossing.rule_id,
        "kind": crossing.kind,
        "level": crossing.level,
        "window_first": crossing.window_first.isoformat(),
        "window_last": crossing.window_last.isoformat(),
        "window_days": crossing.window_days,
        "value": str(crossing.value),
        "threshold": str(crossing.threshold),
        "summary": crossing.summary,
        "contributing": [
            {
                "date": c.date.isoformat(),
                "slot": c.slot,
                "category": c.category,
                "extent": str(c.extent),
            }
            for c in crossing.contributing
        ],
    }


def _event(
    concern: Concern, settings: WorkerSettings, now: datetime, *, updated: bool = False
) -> OutboxMessage:
    return concern_message(concern, settings.concerns_topic, now, updated=updated)


def concern_message(
    concern: Concern, topic: str, now: datetime, *, updated: bool = False
) -> OutboxMessage:
    """The concern event of the concern's current revision (also used by opspor-replay, which
    sends an active concern's current revision as `raised`: a consumer that holds that
    revision ignores it, one that lost it learns of the concern)."""
    # ConcernData in its JSON form, assembled directly: the explanation is stored as
    # ExplanationData's JSON already, and validating it again for each of the thousands of
    # events of a pack change cost more than building the event (consumers validate it).
    data = {
        "concern_id": str(concern.concern_id),
        "status": concern.status,
        "revision": concern.revision,
        "pupil_id": concern.pupil_id,
        "school_id": concern.school_id,
        "municipality_id": concern.municipality_id,
        "level": concern.level,
        "crossing_date": concern.crossing_date.isoformat(),
        "explanation": concern.explanation,
    }
    return OutboxMessage(
        topic=topic,
        key=concern.pupil_id,
        event=CloudEvent(
            # Deterministic: replaying the same facts yields the same event id.
            id=f"{concern.concern_id}:{concern.revision}",
            source="/opspor/threshold-worker",
            type=(
                CONCERN_UPDATED
                if updated
                else CONCERN_RAISED
                if concern.status == "active"
                else CONCERN_WITHDRAWN
            ),
            # The withdrawn_at every service records: the same instant everywhere.
            time=now,
            subject=concern.pupil_id,
            data=data,
        ),
        correlation_id=correlation_id.get(),
    )


# Evaluation runs to the last school day the calendars know, past the horizon: a crossing on a
# day depends only on that day and the days before it, so the crossings up to the horizon are
# the same, and the first one after it is the day this pupil's concerns next change unless a
# registration comes (DOMAIN.md s.5: a share rule reaching min_days, a registration dated ahead).
UNTIL_KNOWN_DAYS_END = date.max
NO_CHANGE_AHEAD = date.max


def split_at_horizon(
    crossings: Sequence[tuple[str, Crossing]], horizon: date | None
) -> tuple[list[tuple[str, Crossing]], date]:
    """The crossings up to the horizon, and the date of the first one after it (or date.max)."""
    if horizon is None:
        return [], min((c.date for _, c in crossings), default=NO_CHANGE_AHEAD)
    upto = [(s, c) for s, c in crossings if c.date <= horizon]
    after = min((c.date for _, c in crossings if c.date > horizon), default=NO_CHANGE_AHEAD)
    return upto, after


async def evaluate_pupils(repo: WorkerRepository, ctx: Context, pupil_ids: Sequence[str]) -> int:
    """Re-evaluates pupils from scratch and records + publishes the concern diff.

    Returns the number of concern changes (raised + withdrawn + updated).

    Retention: only school days from the cutoff C on are evaluated, and concerns crossing
    before the settle date S are final (opspor_shared.retention): never raised, withdrawn or
    raised again here, whatever the registrations now say. Crossings on or after S have their
    whole window on or after C, so they are exactly those of an evaluation from the pupil's
    first registration.
    """
    if not pupil_ids:
        return 0
    await repo.lock_pupils(pupil_ids)
    regs = await repo.registrations(pupil_ids)
    enrolments = await repo.enrolments(pupil_ids)
    needed = {r.latest_school for r in regs.values() if r.latest_school is not None}
    needed.update(school for rows in enrolments.values() for school, _, _ in rows)
    reference = ReferenceRepository(repo.session)
    refs = await reference.schools(sorted(needed))
    judged = await reference.judged(refs, ctx.calendars, ctx.packs)
    held = await repo.concerns(pupil_ids)
    now = ctx.clock()
    window = retention_window(ctx.settings, now)
    messages: list[OutboxMessage] = []
    raised: list[Concern] = []
    pupils: list[dict[str, object]] = []
    for pupil_id in pupil_ids:
        stays, left_out = enrolled_stays(enrolments[pupil_id], regs[pupil_id].latest_school, judged)
        for school_id in left_out:
            log.warning("stay_not_evaluated", reason="unknown school or pack", school=school_id)
        if not stays:
            continue
        current = refs[stays[-1].school_id]
        horizon = horizon_for(stays[-1].calendar, current.timezone, now)
        crossings, next_change = split_at_horizon(
            evaluate_stays(
                stays, regs[pupil_id].live, UNTIL_KNOWN_DAYS_END, not_before=window.cutoff
            ),
            horizon,
        )
        wanted = {
            concern_id(pupil_id, c.pack_id, c.rule_id, c.rule_version, c.date): (school, c)
            for school, c in crossings
            if not window.is_final(c.date)
        }
        mine = held[pupil_id]
        for cid, (school_id, crossing) in wanted.items():
            concern = mine.get(cid)
            if concern is None:
                stay = next(s for s in stays if s.school_id == school_id)
                pack = next(p for p in stay.packs if p.id == crossing.pack_id)
                concern = Concern(
                    concern_id=cid,
                    pupil_id=pupil_id,
                    school_id=school_id,
                    municipality_id=refs[school_id].municipality_id,
                    pack_id=crossing.pack_id,
                    rule_id=crossing.rule_id,
                    rule_version=crossing.rule_version,
                    level=crossing.level,
                    crossing_date=crossing.date,
                    status="active",
                    revision=1,
                    explanation=explanation_of(crossing, pack),
                )
                raised.append(concern)
            else:
                stay = next(s for s in stays if s.school_id == school_id)
                pack = next(p for p in stay.packs if p.id == crossing.pack_id)
                explanation = explanation_of(crossing, pack)
                if concern.status == "withdrawn":
                    # Raised again: with the explanation of today's registrations.
                    await repo.set_status(concern, "active", now, explanation)
                elif concern.explanation != explanation:
                    # Same crossing, changed facts (window, contributing dates, value): a new
                    # revision of the same concern, published as concern.updated, no new notice.
                    await repo.revise(concern, explanation)
                    messages.append(_event(concern, ctx.settings, now, updated=True))
                    continue
                else:
                    continue
            messages.append(_event(concern, ctx.settings, now))
        for cid, concern in mine.items():
            if (
                cid not in wanted
                and concern.status == "active"
                and not window.is_final(concern.crossing_date)
            ):
                await repo.set_status(concern, "withdrawn", now)
                messages.append(_event(concern, ctx.settings, now))
        pupils.append(
            {
                "pupil_id": pupil_id,
                "school_id": current.id,
                "evaluated_horizon": horizon,
                "next_change_on": next_change,
            }
        )
    await repo.insert_concerns(raised)
    if pupils:
        await repo.upsert_pupils(pupils)
    await repo.publish(messages)
    PUPILS_EVALUATED.inc(len(pupil_ids))
    for m in messages:
        CONCERNS_CHANGED.labels(m.event.type).inc()
    return len(messages)


Fact = RegistrationData | EnrolmentData


def decode_registrations(batch: Sequence[Delivered]) -> tuple[list[Fact], list[CloudEvent]]:
    """Registrations and enrolments, and the events whose data is neither (dead letters)."""
    items: list[Fact] = []
    refused: list[CloudEvent] = []
    for delivered in batch:
        try:
            if delivered.event.type == ENROLMENT_RECORDED:
                items.append(EnrolmentData.model_validate(delivered.event.data))
            else:
                items.append(RegistrationData.model_validate(delivered.event.data))
        except ValidationError:
            log.warning("registration_event_invalid", event_id=delivered.event.id)
            refused.append(delivered.event)
    return items, refused


async def store_and_evaluate(repo: WorkerRepository, ctx: Context, items: Sequence[Fact]) -> int:
    """Thin consumer body: store the batch (last writer wins), then evaluate touched pupils.

    Registrations dated before the retention cutoff are dropped (the api refuses them; a replay
    of the topic can still bring them): evaluation would ignore them and the purge delete them.
    """
    cutoff = retention_window(ctx.settings, ctx.clock()).cutoff
    # Enrolments are kept: a pupil enrolled long ago still has days after the cutoff.
    kept = [i for i in items if isinstance(i, EnrolmentData) or i.date >= cutoff]
    if len(kept) < len(items):
        log.info("registrations_past_retention_dropped", count=len(items) - len(kept))
    items = kept
    if not items:
        return 0
    await repo.apply_registrations([i for i in items if isinstance(i, RegistrationData)])
    await repo.apply_enrolments([i for i in items if isinstance(i, EnrolmentData)])
    return await evaluate_pupils(repo, ctx, sorted({i.pupil_id for i in items}))


async def handle_registrations(
    repo: WorkerRepository, ctx: Context, batch: Sequence[Delivered]
) -> int:
    return await store_and_evaluate(repo, ctx, decode_registrations(batch)[0])


def school_basis(ref: SchoolRef, calendar_key: str, pack_digests: Sequence[str]) -> str:
    """Everything about a school that decides its pupils' concerns, except the day."""
    packs = ",".join(pack_digests)
    raw = f"{ref.rule_packs}|{packs}|{ref.country}|{ref.timezone}|{calendar_key}"
    return hashlib.sha256(raw.encode()).hexdigest()


def school_fingerprint(basis: str, horizon: date | None) -> str:
    return hashlib.sha256(f"{horizon}|{basis}".encode()).hexdigest()


@dataclass(frozen=True)
class DueSchool:
    school_id: str
    horizon: date | None
    fingerprint: str
    basis: str
    # Only the day moved on: evaluate the pupils whose next change has come, not everyone.
    day_only: bool
    # The partitions (of this process's) whose pupils of the school are due.
    partitions: frozenset[int]


async def tick(sessionmaker: async_sessionmaker[AsyncSession], ctx: Context) -> int:
    """Re-evaluates the pupils of each school whose day (horizon), calendar or packs changed
    (a pack changes when it is switched or a stored pack gets a new version).

    Crossings that need no new registration (a share rule reaching min_days, a count window
    sliding) appear here. When only the day moved on, only the pupils whose `next_change_on`
    has come are evaluated: a crossing depends on its day and the days before it, so nobody
    else's concerns can change. A changed calendar or pack re-evaluates every pupil of the
    school. A school is marked done only after all its pupils committed, so a crash mid-school
    repeats that school on the next tick; evaluation is idempotent.

    Work is split like the registrations: a process evaluates only the pupils of the partitions
    its consumer holds (a pupil's partition is that of its registrations, keyed by pupil id) and
    marks each (school, partition) it finished, so two worker processes of one group never
    evaluate the same pupil in a tick, and a partition that moves to another process is
    finished by that one.
    """
    owned, total = ctx.owned_partitions()
    if not owned:
        log.info("tick_skipped", reason="no partition of the registrations topic held yet")
        return 0
    due: list[DueSchool] = []
    async with unit_of_work(sessionmaker) as session:
        reference = ReferenceRepository(session)
        held = await WorkerRepository(session).horizons()
        refs = await reference.schools()
        rows = await reference.calendar_rows(list(refs))
        packs = await reference.packs(
            {(r.municipality_id, p) for r in refs.values() for p in r.rule_packs}, ctx.packs
        )
        now = ctx.clock()
        for school_id, ref in refs.items():
            calendar = ctx.calendars.get(ref.country, rows[school_id])
            horizon = horizon_for(calendar, ref.timezone, now)
            digests = [
                packs[key].digest if (key := (ref.municipality_id, p)) in packs else "missing"
                for p in ref.rule_packs
            ]
            basis = school_basis(
                ref, CalendarCache.fingerprint(ref.country, rows[school_id]), digests
            )
            fingerprint = school_fingerprint(basis, horizon)
            marks = {p: held.get((school_id, p)) for p in owned}
            stale = {p: m for p, m in marks.items() if m is None or m.fingerprint != fingerprint}
            if not stale:
                continue
            day_only = all(
                m is not None
                and m.basis == basis
                and m.horizon is not None
                and horizon is not None
                and horizon > m.horizon
                for m in stale.values()
            )
            due.append(
                DueSchool(school_id, horizon, fingerprint, basis, day_only, frozenset(stale))
            )
    return await at_most(
        SCHOOLS_IN_FLIGHT, [_reevaluate_school(sessionmaker, ctx, school, total) for school in due]
    )


# Schools the tick re-evaluates at the same time. A chunk waits for PostgreSQL (its read, its
# writes, the commit) for a fifth to a quarter of its time (PostgreSQL gathers each pupil's
# registrations into arrays); the other schools' chunks fill that wait with Python work.
# Measured at 100,000 pupils (README, *Benchmark*): 3 took 5 % less time than 2, 4 no less
# than 3.
SCHOOLS_IN_FLIGHT = 3


async def at_most(limit: int, jobs: Sequence[Coroutine[Any, Any, int]]) -> int:
    """Runs ``jobs`` with at most ``limit`` running at once; the sum of their results. If one
    fails, the ones running are cancelled (a cancelled chunk rolls back) and the error raised;
    the jobs not started are closed unstarted."""
    total = 0
    running: set[asyncio.Task[int]] = set()
    waiting = list(reversed(jobs))
    try:
        while waiting or running:
            while waiting and len(running) < limit:
                running.add(asyncio.create_task(waiting.pop()))
            done, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            total += sum(task.result() for task in done)
    finally:
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        for job in waiting:
            job.close()
    return total


async def _reevaluate_school(
    sessionmaker: async_sessionmaker[AsyncSession], ctx: Context, school: DueSchool, total: int
) -> int:
    """One school's due pupils, chunk by chunk, each chunk in a transaction of its own; the
    school is marked done after the last one committed."""
    changes = 0
    after: str | None = None
    looked_at = 0
    while True:
        async with unit_of_work(sessionmaker) as session:
            repo = WorkerRepository(session)
            limit = ctx.settings.tick_chunk_pupils
            if school.day_only and school.horizon is not None:
                page = await repo.pupils_due(school.school_id, school.horizon, after, limit)
            else:
                page = await repo.pupils_of_school(school.school_id, after, limit)
            if not page:
                break
            after = page[-1]
            pupils = (
                page
                if len(school.partitions) == total
                else [p for p in page if partition_of(p, total) in school.partitions]
            )
            changes += await evaluate_pupils(repo, ctx, pupils)
            looked_at += len(pupils)
    async with unit_of_work(sessionmaker) as session:
        await WorkerRepository(session).set_horizon(
            school.school_id,
            school.partitions,
            school.horizon,
            school.fingerprint,
            school.basis,
        )
    TICK_PUPILS.labels("day" if school.day_only else "all").inc(looked_at)
    log.info(
        "school_reevaluated",
        school=school.school_id,
        horizon=str(school.horizon),
        scope="pupils whose day has come" if school.day_only else "every pupil",
        partitions=len(school.partitions),
        pupils=looked_at,
    )
    return changes
