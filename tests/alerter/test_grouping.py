"""Issue 13 item 3: the concerns of one pupil raised by one evaluation reach each recipient as
ONE notice that lists each concern with its pack and rule; withdrawals likewise. Dedup, the
delivery log and Message-IDs still hold. Real PostgreSQL and the STARTTLS mailbox."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from opspor_alerter.settings import AlerterSettings
from opspor_shared.devstack.mailbox import Mailbox
from opspor_shared.events import CONCERN_WITHDRAWN, CloudEvent, utcnow
from tests.alerter.conftest import (
    PPR_MAILBOX,
    SCHOOL_MAILBOX,
    all_attempts,
    all_notices,
    concern_event,
    deliver_until,
    record,
    seed_school,
    settled,
)

SessionMaker = async_sessionmaker[AsyncSession]

RULES = [
    ("dk-aalborg-2018", "consecutive-5", "5 consecutive absence days (unauthorized)", "concern"),
    ("dk-national", "share-10-quarter", "absence share at least 10% (quarter)", "warn-parents"),
    ("dk-national", "share-15-quarter", "absence share at least 15% (quarter)", "concern"),
]


def evaluation(at: datetime, rules: list[tuple[str, str, str, str]] = RULES) -> list[CloudEvent]:
    """The events one worker evaluation publishes: one pupil, one `time`."""
    events = []
    for pack, rule, text, level in rules:
        event = concern_event(level=level)
        data: dict[str, Any] = {
            **event.data,
            "explanation": {
                **event.data["explanation"],
                "pack_id": pack,
                "rule_id": rule,
                "rule": text,
                "summary": f"finding of {rule}",
            },
        }
        events.append(event.model_copy(update={"time": at, "data": data}))
    return events


def withdrawals(raised: list[CloudEvent], at: datetime) -> list[CloudEvent]:
    out = []
    for e in raised:
        data = {**e.data, "status": "withdrawn", "revision": 2}
        out.append(
            e.model_copy(
                update={
                    "id": f"{data['concern_id']}:2",
                    "type": CONCERN_WITHDRAWN,
                    "time": at,
                    "data": data,
                }
            )
        )
    return out


def _text(mail: Any) -> str:
    return " ".join(mail.message.get_content().split())


async def test_three_rules_at_once_make_one_mail_per_recipient_and_a_replay_sends_nothing(
    clean_db: AsyncEngine,
    sessionmaker: SessionMaker,
    mailbox: Mailbox,
    settings_for: Callable[..., AlerterSettings],
) -> None:
    settings = settings_for(mailbox)
    await seed_school(clean_db)
    at = utcnow()
    rules = [
        *RULES,
        ("dk-aalborg-2018", "count-10-school-year", "10 absence days this school year", "ppr-may"),
    ]
    events = evaluation(at, rules)

    # The evaluation arrives split over two consumed batches, and then again (a replay).
    await record(sessionmaker, settings, *events[:2])
    await record(sessionmaker, settings, *events[2:])
    notices = await deliver_until(sessionmaker, settings, settled)
    await record(sessionmaker, settings, *events)
    again = await all_notices(sessionmaker)
    assert [(n.id, n.status) for n in again] == [(n.id, n.status) for n in notices]

    school = [n for n in notices if n.recipient == SCHOOL_MAILBOX]
    assert len(school) == 3 and {n.status for n in school} == {"sent"}
    assert len({n.message_id for n in school}) == 1  # one mail, recorded once per concern
    by_rcpt = {m.envelope_to[0]: m for m in mailbox.messages()}
    assert len(mailbox.messages()) == 2 and set(by_rcpt) == {SCHOOL_MAILBOX, PPR_MAILBOX}
    mail = by_rcpt[SCHOOL_MAILBOX]
    assert mail.message["Message-ID"] == school[0].message_id
    assert mail.message["Subject"] == (
        "Bekymrende fravær: pupil-4711, Vestbjerg Skole \u2013 3 regler: "
        "dk-aalborg-2018/consecutive-5, dk-national/share-10-quarter, "
        "dk-national/share-15-quarter"
    )
    body = _text(mail)
    for event, rule in zip(
        events[:3],
        (
            "5 fraværsdage i træk",
            "10 % fravær dette kvartal, når perioden har 20 skoledage",
            "15 % fravær dette kvartal, når perioden har 20 skoledage",
        ),
        strict=True,
    ):
        assert event.data["concern_id"] in body
        assert f"Regel: {rule}" in body
    assert "dk-national (share-15-quarter v1)" in body
    # PPR hears only of its own level, in a mail of its own.
    ppr = _text(by_rcpt[PPR_MAILBOX])
    assert events[3].data["concern_id"] in ppr and events[0].data["concern_id"] not in ppr
    assert (
        "10 fraværsdage dette skoleår (dk-aalborg-2018)" in by_rcpt[PPR_MAILBOX].message["Subject"]
    )
    # One attempt recorded per notice of the mail, all with the same outcome.
    attempts = await all_attempts(sessionmaker)
    assert sorted(a.notice_id for a in attempts) == sorted(n.id for n in notices)


async def test_withdrawals_of_one_evaluation_make_one_withdrawal_mail(
    clean_db: AsyncEngine,
    sessionmaker: SessionMaker,
    mailbox: Mailbox,
    settings_for: Callable[..., AlerterSettings],
) -> None:
    settings = settings_for(mailbox)
    await seed_school(clean_db)
    at = utcnow()
    raised = evaluation(at)
    await record(sessionmaker, settings, *raised)
    await deliver_until(sessionmaker, settings, settled)
    [first] = mailbox.messages()

    # A correction removes two of the three crossings in one evaluation.
    await record(sessionmaker, settings, *withdrawals(raised[1:], at + timedelta(days=2)))
    notices = await deliver_until(sessionmaker, settings, settled)

    assert len(mailbox.messages()) == 2
    second = mailbox.messages()[1]
    assert second.message["Subject"].startswith("Tilbagekaldt: bekymrende fravær for pupil-4711")
    assert "2 regler" in second.message["Subject"]
    assert second.message["In-Reply-To"] == first.message["Message-ID"]
    body = _text(second)
    assert raised[1].data["concern_id"] in body and raised[2].data["concern_id"] in body
    assert raised[0].data["concern_id"] not in body
    withdrawn = [n for n in notices if n.kind == "withdrawn"]
    assert len(withdrawn) == 2 and {n.message_id for n in withdrawn} == {
        second.message["Message-ID"]
    }


async def test_a_concern_withdrawn_before_the_mail_leaves_drops_out_of_it(
    clean_db: AsyncEngine,
    sessionmaker: SessionMaker,
    mailbox: Mailbox,
    settings_for: Callable[..., AlerterSettings],
) -> None:
    settings = settings_for(mailbox)
    await seed_school(clean_db)
    at = utcnow()
    raised = evaluation(at)
    await record(sessionmaker, settings, *raised)
    await record(sessionmaker, settings, *withdrawals(raised[:1], at + timedelta(minutes=1)))

    notices = await deliver_until(sessionmaker, settings, settled)

    assert sorted(n.status for n in notices) == ["cancelled", "sent", "sent"]
    [mail] = mailbox.messages()
    body = _text(mail)
    assert raised[0].data["concern_id"] not in body
    assert raised[1].data["concern_id"] in body and raised[2].data["concern_id"] in body
    assert "2 regler" in mail.message["Subject"]


async def test_a_late_member_of_a_group_already_mailed_gets_its_own_message_id(
    clean_db: AsyncEngine,
    sessionmaker: SessionMaker,
    mailbox: Mailbox,
    settings_for: Callable[..., AlerterSettings],
) -> None:
    settings = settings_for(mailbox)
    await seed_school(clean_db)
    events = evaluation(utcnow())
    await record(sessionmaker, settings, *events[:2])
    await deliver_until(sessionmaker, settings, settled)
    await record(sessionmaker, settings, events[2])
    await deliver_until(sessionmaker, settings, settled)

    first, second = mailbox.messages()
    assert first.message["Message-ID"] != second.message["Message-ID"]
    assert "2 regler" in first.message["Subject"]
    assert "(dk-national)" in second.message["Subject"]
