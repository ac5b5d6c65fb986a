"""The settle period (DOMAIN.md s.6): a mail notice waits before its first attempt; a concern
withdrawn inside it mails nobody, not even a withdrawal; raised, withdrawn and raised again it
mails once. Webhooks stay immediate. The period is an hour here; the tests end it by moving the
waiting notices' due time to now, as its passing would."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from opspor_alerter.service import deliver_due
from opspor_alerter.settings import AlerterSettings
from opspor_shared.devstack.mailbox import Mailbox
from tests.alerter.conftest import (
    all_notices,
    channel_notifier,
    concern_event,
    deliver_until,
    record,
    seed_school,
    seed_webhook,
    settled,
    withdrawn,
)

SessionMaker = async_sessionmaker[AsyncSession]
HOUR = 3600.0


async def due_seconds(engine: AsyncEngine) -> list[tuple[str, str, float]]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "select kind, status, extract(epoch from next_attempt_at - now()) "
                "from notices order by id"
            )
        )
        return [(k, s, float(d)) for k, s, d in rows.all()]


async def end_settle_period(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            text("update notices set next_attempt_at = now() where status = 'pending'")
        )


async def nothing_due(sessionmaker: SessionMaker, settings: AlerterSettings) -> bool:
    async with channel_notifier(sessionmaker, settings) as notifier:
        return not await deliver_due(sessionmaker, notifier, settings)


async def test_a_mail_waits_out_the_settle_period_then_goes_once(
    clean_db: AsyncEngine,
    sessionmaker: SessionMaker,
    mailbox: Mailbox,
    settings_for: Callable[..., AlerterSettings],
) -> None:
    settings = settings_for(mailbox, notice_settle_seconds=HOUR)
    await seed_school(clean_db)
    await record(sessionmaker, settings, concern_event())
    [(kind, status, wait)] = await due_seconds(clean_db)
    assert (kind, status) == ("raised", "pending") and round(wait / 60) == 60
    assert await nothing_due(sessionmaker, settings)
    assert mailbox.messages() == []

    await end_settle_period(clean_db)
    notices = await deliver_until(sessionmaker, settings, settled)
    assert [(n.kind, n.status) for n in notices] == [("raised", "sent")]
    assert len(mailbox.messages()) == 1


async def test_withdrawn_inside_the_settle_period_mails_nobody(
    clean_db: AsyncEngine,
    sessionmaker: SessionMaker,
    mailbox: Mailbox,
    settings_for: Callable[..., AlerterSettings],
) -> None:
    settings = settings_for(mailbox, notice_settle_seconds=HOUR)
    await seed_school(clean_db)
    raised = concern_event()
    await record(sessionmaker, settings, raised)
    await record(sessionmaker, settings, withdrawn(raised, 2))
    await end_settle_period(clean_db)
    assert await nothing_due(sessionmaker, settings)
    assert [(n.kind, n.status) for n in await all_notices(sessionmaker)] == [
        ("raised", "cancelled")
    ]
    assert mailbox.messages() == []


async def test_raised_withdrawn_and_raised_again_mails_the_final_state_once(
    clean_db: AsyncEngine,
    sessionmaker: SessionMaker,
    mailbox: Mailbox,
    settings_for: Callable[..., AlerterSettings],
) -> None:
    settings = settings_for(mailbox, notice_settle_seconds=HOUR)
    await seed_school(clean_db)
    first = concern_event()
    again = concern_event(concern_id=first.data["concern_id"], revision=3)
    await record(sessionmaker, settings, first, withdrawn(first, 2), again)
    await end_settle_period(clean_db)
    notices = await deliver_until(sessionmaker, settings, settled)
    assert [(n.kind, n.revision, n.status) for n in notices] == [
        ("raised", 1, "cancelled"),
        ("raised", 3, "sent"),
    ]
    [mail] = mailbox.messages()
    assert mail.message["Message-ID"] == notices[1].message_id


async def test_a_withdrawal_also_settles_and_a_quick_re_raise_cancels_it(
    clean_db: AsyncEngine,
    sessionmaker: SessionMaker,
    mailbox: Mailbox,
    settings_for: Callable[..., AlerterSettings],
) -> None:
    settings = settings_for(mailbox, notice_settle_seconds=HOUR)
    await seed_school(clean_db)
    raised = concern_event()
    await record(sessionmaker, settings, raised)
    await end_settle_period(clean_db)
    await deliver_until(sessionmaker, settings, settled)
    # The mail went out; then a correction withdraws the concern and the next one restores it,
    # minutes apart: the school hears nothing more (its mail holds again).
    await record(sessionmaker, settings, withdrawn(raised, 2))
    await record(
        sessionmaker, settings, concern_event(concern_id=raised.data["concern_id"], revision=3)
    )
    await end_settle_period(clean_db)
    assert await nothing_due(sessionmaker, settings)
    assert [(n.kind, n.status) for n in await all_notices(sessionmaker)] == [
        ("raised", "sent"),
        ("withdrawn", "cancelled"),
    ]
    assert len(mailbox.messages()) == 1


async def test_the_settle_period_holds_mail_only(
    clean_db: AsyncEngine,
    sessionmaker: SessionMaker,
    mailbox: Mailbox,
    settings_for: Callable[..., AlerterSettings],
) -> None:
    settings = settings_for(mailbox, notice_settle_seconds=HOUR)
    await seed_school(clean_db)
    await seed_webhook(clean_db, "https://127.0.0.1:9/hook")
    await record(sessionmaker, settings, concern_event())
    # The webhook's notice is due now (or just past); the mail's in an hour.
    waits = sorted(round(wait / 60) for _, _, wait in await due_seconds(clean_db))
    assert waits == [0, 60]
