"""Retention in the alerter, on real PostgreSQL and the STARTTLS mailbox: closed concerns go
with their notices and attempts, a notice still pending or in flight keeps its concern, and a
replayed event does not mail a purged concern again."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from opspor_alerter.models import AlerterConcern, DeliveryAttempt, Notice, alerter_purges
from opspor_alerter.purge import purge_once
from opspor_alerter.service import claim_due, record_concern_events
from opspor_alerter.settings import AlerterSettings
from opspor_shared.db import unit_of_work
from opspor_shared.devstack.mailbox import Mailbox
from opspor_shared.events import CloudEvent
from tests.alerter.conftest import all_notices, concern_event, deliver_until, seed_school, withdrawn
from tests.alerter.test_reminders import case_event

SessionMaker = async_sessionmaker[AsyncSession]

# RETENTION_REGISTRATION_DAYS=400 on 1 June 2027: cutoff 2026-04-27, settle date 2027-04-28.
# RETENTION_CLOSED_CONCERN_DAYS=30: active final concerns that crossed before 2027-03-29 and
# concerns withdrawn before 2027-05-02 12:00 are purged.
PURGE_AT = datetime(2027, 6, 1, 12, 0, tzinfo=UTC)


def event(crossing: date, sent: datetime, base: CloudEvent | None = None) -> CloudEvent:
    """A raised event (or, with `base`, the withdrawal of base) as the worker sent it then."""
    e = withdrawn(base, 2) if base is not None else concern_event()
    return e.model_copy(
        update={"time": sent, "data": {**e.data, "crossing_date": crossing.isoformat()}}
    )


async def record_at(
    sessionmaker: SessionMaker, settings: AlerterSettings, now: datetime, *events: CloudEvent
) -> int:
    async with unit_of_work(sessionmaker) as session:
        outcome = await record_concern_events(session, list(events), settings, clock=lambda: now)
    outcome.count()
    return outcome.past_retention


def day(y: int, m: int, d: int) -> datetime:
    return datetime(y, m, d, 9, 0, tzinfo=UTC)


async def held(sessionmaker: SessionMaker) -> tuple[set[str], set[str], int]:
    async with sessionmaker() as session:
        concerns = {str(c) for c in await session.scalars(select(AlerterConcern.concern_id))}
        notices = {str(c) for c in await session.scalars(select(Notice.concern_id))}
        attempts = len(list(await session.scalars(select(DeliveryAttempt.id))))
    return concerns, notices, attempts


async def test_purge_takes_closed_concerns_with_their_notices_and_spares_pending_ones(
    clean_db: AsyncEngine,
    sessionmaker: SessionMaker,
    engine: AsyncEngine,
    mailbox: Mailbox,
    settings_for: Callable[..., AlerterSettings],
) -> None:
    settings = settings_for(
        mailbox, retention_registration_days=400, retention_closed_concern_days=30
    )
    await seed_school(clean_db)
    everyone = lambda notices: all(n.status != "pending" for n in notices)  # noqa: E731

    active_old = event(date(2027, 3, 1), day(2027, 3, 2))
    recently_final = event(date(2027, 4, 10), day(2027, 4, 11))
    gone = event(date(2027, 2, 1), day(2027, 2, 2))
    await record_at(sessionmaker, settings, day(2027, 3, 2), active_old)
    await record_at(sessionmaker, settings, day(2027, 4, 11), recently_final)
    await record_at(sessionmaker, settings, day(2027, 2, 2), gone)
    await deliver_until(sessionmaker, settings, everyone)
    # Withdrawn (and told) on 1 April: closed for two months by the purge.
    await record_at(
        sessionmaker, settings, day(2027, 4, 1), event(date(2027, 2, 1), day(2027, 4, 1), gone)
    )
    await deliver_until(sessionmaker, settings, everyone)
    assert len(mailbox.messages()) == 4

    # Final and closed long enough, but its notice has not gone out yet.
    pending = event(date(2027, 3, 1), day(2027, 3, 2))
    await record_at(sessionmaker, settings, day(2027, 3, 2), pending)
    # Cancelled by its withdrawal while a delivery loop was sending it.
    in_flight = event(date(2027, 2, 1), day(2027, 2, 2))
    await record_at(sessionmaker, settings, day(2027, 2, 2), in_flight)
    async with unit_of_work(sessionmaker) as session:
        claimed = await claim_due(session, settings)
    assert {str(n.concern_id) for n in claimed} == {
        pending.data["concern_id"],
        in_flight.data["concern_id"],
    }
    await record_at(
        sessionmaker, settings, day(2027, 4, 1), event(date(2027, 2, 1), day(2027, 4, 1), in_flight)
    )
    async with unit_of_work(sessionmaker) as session:  # the pending one's lease ran out
        await session.execute(
            text("update notices set lease_until = null where status = 'pending'")
        )

    report = await purge_once(engine, sessionmaker, settings, lambda: PURGE_AT)
    assert report.deleted == {"alerter_concerns": 2, "notices": 3, "delivery_attempts": 3}
    concerns, notices, attempts = await held(sessionmaker)
    kept = {e.data["concern_id"] for e in (recently_final, pending, in_flight)}
    assert concerns == notices == kept
    assert attempts == 1  # recently_final's

    async with sessionmaker() as session:
        logged = (await session.execute(select(alerter_purges))).all()
    assert sorted((r.table_name, r.rows_deleted) for r in logged) == [
        ("alerter_concerns", 2),
        ("delivery_attempts", 3),
        ("notices", 3),
    ]
    assert {r.run_id for r in logged} == {report.run_id}

    again = await purge_once(engine, sessionmaker, settings, lambda: PURGE_AT)
    assert sum(again.deleted.values()) == 0

    # Once the in-flight send is over (its lease ended), its concern goes too.
    async with unit_of_work(sessionmaker) as session:
        await session.execute(text("update notices set lease_until = now() - interval '1 second'"))
    third = await purge_once(engine, sessionmaker, settings, lambda: PURGE_AT)
    assert third.deleted["alerter_concerns"] == 1
    assert in_flight.data["concern_id"] not in (await held(sessionmaker))[0]


async def test_a_replayed_event_of_a_purged_concern_sends_nothing(
    clean_db: AsyncEngine,
    sessionmaker: SessionMaker,
    engine: AsyncEngine,
    mailbox: Mailbox,
    settings_for: Callable[..., AlerterSettings],
) -> None:
    settings = settings_for(
        mailbox, retention_registration_days=400, retention_closed_concern_days=30
    )
    await seed_school(clean_db)
    raised = event(date(2027, 3, 1), day(2027, 3, 2))
    await record_at(sessionmaker, settings, day(2027, 3, 2), raised)
    await deliver_until(sessionmaker, settings, lambda ns: all(n.status == "sent" for n in ns))
    report = await purge_once(engine, sessionmaker, settings, lambda: PURGE_AT)
    assert report.deleted["alerter_concerns"] == 1

    # The consumer group is reset and the topic read from the start.
    assert await record_at(sessionmaker, settings, PURGE_AT, raised) == 1
    # A concern that is final by now, but whose event was sent lately, is still mailed.
    late = event(date(2027, 3, 1), day(2027, 5, 31))
    assert await record_at(sessionmaker, settings, PURGE_AT, late) == 0

    notices = await all_notices(sessionmaker)
    assert [str(n.concern_id) for n in notices] == [late.data["concern_id"]]
    await deliver_until(sessionmaker, settings, lambda ns: all(n.status == "sent" for n in ns))
    assert len(mailbox.messages()) == 2


async def test_old_case_reminders_are_purged_and_a_replay_of_them_sends_nothing(
    clean_db: AsyncEngine,
    sessionmaker: SessionMaker,
    engine: AsyncEngine,
    mailbox: Mailbox,
    settings_for: Callable[..., AlerterSettings],
) -> None:
    settings = settings_for(
        mailbox, retention_registration_days=400, retention_closed_concern_days=30
    )
    await seed_school(clean_db)
    # Reminders before 2 May 2027 (PURGE_AT - 30 days) are past retention.
    old = case_event(day="2027-04-20")
    recent = case_event(day="2027-05-20")
    await record_at(sessionmaker, settings, day(2027, 4, 20), old)
    await record_at(sessionmaker, settings, day(2027, 5, 20), recent)
    await deliver_until(sessionmaker, settings, lambda ns: all(n.status == "sent" for n in ns))
    assert len(mailbox.messages()) == 2

    report = await purge_once(engine, sessionmaker, settings, lambda: PURGE_AT)

    assert (report.deleted["notices"], report.deleted["delivery_attempts"]) == (1, 1)
    assert [str(n.case_id) for n in await all_notices(sessionmaker)] == [recent.data["case_id"]]
    async with sessionmaker() as session:
        logged = (await session.execute(select(alerter_purges))).all()
    assert sorted((r.table_name, r.rows_deleted) for r in logged if r.rows_deleted) == [
        ("delivery_attempts", 1),
        ("notices", 1),
    ]
    # A replay of the cases topic from the start: the purged reminder is not sent again.
    assert await record_at(sessionmaker, settings, PURGE_AT, old, recent) == 1
    assert len(await all_notices(sessionmaker)) == 1
    await deliver_until(sessionmaker, settings, lambda ns: all(n.status == "sent" for n in ns))
    assert len(mailbox.messages()) == 2
