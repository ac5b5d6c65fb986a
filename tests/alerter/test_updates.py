"""concern.updated (issue 13 item 4): a revised explanation of an active concern updates the
alerter's state and never mails anyone again."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from opspor_alerter.settings import AlerterSettings
from opspor_shared.devstack.mailbox import Mailbox
from opspor_shared.events import CONCERN_UPDATED, CloudEvent
from tests.alerter.conftest import (
    all_notices,
    concern_event,
    deliver_until,
    record,
    seed_school,
    settled,
    withdrawn,
)

SessionMaker = async_sessionmaker[AsyncSession]


def updated(event: CloudEvent, revision: int, summary: str, value: str = "7") -> CloudEvent:
    """A revised explanation: one contributing day fewer, so the measured value drops."""
    explanation: dict[str, Any] = {
        **event.data["explanation"],
        "summary": summary,
        "value": value,
        "contributing": event.data["explanation"]["contributing"][:-1],
    }
    data = {**event.data, "revision": revision, "explanation": explanation}
    return event.model_copy(
        update={"id": f"{data['concern_id']}:{revision}", "type": CONCERN_UPDATED, "data": data}
    )


async def test_an_update_after_the_mail_sends_nothing_and_a_withdrawal_still_follows(
    clean_db: AsyncEngine,
    sessionmaker: SessionMaker,
    mailbox: Mailbox,
    settings_for: Callable[..., AlerterSettings],
) -> None:
    settings = settings_for(mailbox)
    await seed_school(clean_db)
    raised = concern_event()
    await record(sessionmaker, settings, raised)
    await deliver_until(sessionmaker, settings, settled)
    assert len(mailbox.messages()) == 1

    revision_2 = updated(raised, 2, "7 absence days of the last 20 school days, limit 7")
    await record(sessionmaker, settings, revision_2, revision_2)
    notices = await deliver_until(sessionmaker, settings, settled)

    assert [(n.kind, n.status) for n in notices] == [("raised", "sent")]
    assert len(mailbox.messages()) == 1
    # The alerter holds revision 2: a withdrawal must be revision 3 to count.
    await record(sessionmaker, settings, withdrawn(raised, 2))
    assert len(await all_notices(sessionmaker)) == 1
    await record(sessionmaker, settings, withdrawn(raised, 3))
    notices = await deliver_until(sessionmaker, settings, settled)
    assert [(n.kind, n.status) for n in notices] == [("raised", "sent"), ("withdrawn", "sent")]
    # The withdrawal names the rule and its finding, in Danish.
    withdrawal = " ".join(mailbox.messages()[1].message.get_content().split())
    assert "fraværsdage af de seneste 20 skoledage, grænse 7" in withdrawal


async def test_a_pending_notice_goes_out_with_the_current_explanation(
    clean_db: AsyncEngine,
    sessionmaker: SessionMaker,
    mailbox: Mailbox,
    settings_for: Callable[..., AlerterSettings],
) -> None:
    settings = settings_for(mailbox)
    await seed_school(clean_db)
    raised = concern_event()
    revised = "7 absence days of the last 20 school days, limit 7 (revised)"

    await record(sessionmaker, settings, raised, updated(raised, 2, revised))
    notices = await deliver_until(sessionmaker, settings, settled)

    assert [(n.kind, n.revision, n.status) for n in notices] == [("raised", 1, "sent")]
    [mail] = mailbox.messages()
    body = " ".join(mail.message.get_content().split())
    assert "Opgørelse: 7 fraværsdage af de seneste 20 skoledage, grænse 7" in body
    assert "12.03.2026" not in body.split("Fraværsdage:")[1].split("Bekymrings-id")[0]


async def test_an_update_without_its_raise_still_reaches_the_recipient_once(
    clean_db: AsyncEngine,
    sessionmaker: SessionMaker,
    mailbox: Mailbox,
    settings_for: Callable[..., AlerterSettings],
) -> None:
    settings = settings_for(mailbox)
    await seed_school(clean_db)
    raised = concern_event()
    revision_2 = updated(raised, 2, "revised summary")

    await record(sessionmaker, settings, revision_2)
    await record(sessionmaker, settings, raised)  # late and stale
    notices = await deliver_until(sessionmaker, settings, settled)

    assert [(n.kind, n.revision, n.status) for n in notices] == [("raised", 2, "sent")]
    assert len(mailbox.messages()) == 1
