"""The alerter pipeline on real components: PostgreSQL and a STARTTLS-only aiosmtpd mailbox."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import REGISTRY
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from opspor_alerter.service import claim_due, record_results, refresh_pending_gauge, send_notice
from opspor_alerter.settings import AlerterSettings
from opspor_alerter.smtp import SmtpNotifier
from opspor_shared.db import unit_of_work
from opspor_shared.devstack.mailbox import Mailbox, StoredMessage
from tests.alerter.conftest import (
    PPR_MAILBOX,
    SCHOOL_MAILBOX,
    UNIT_MAILBOX,
    ScriptedHandler,
    all_attempts,
    all_notices,
    concern_event,
    deliver_until,
    record,
    seed_school,
    settled,
    withdrawn,
)

SessionMaker = async_sessionmaker[AsyncSession]


def _body(box: Mailbox, index: int = 0) -> str:
    return _body_of(box.messages()[index])


async def test_raised_event_sends_one_danish_mail_over_starttls(
    clean_db: AsyncEngine,
    sessionmaker: SessionMaker,
    mailbox: Mailbox,
    settings_for: Callable[..., AlerterSettings],
) -> None:
    settings = settings_for(mailbox, web_base_url="https://opspor.aalborg.example/")
    await seed_school(clean_db, language="da")
    event = concern_event()

    await record(sessionmaker, settings, event)
    notices = await deliver_until(sessionmaker, settings, settled)

    assert [(n.kind, n.status, n.recipient_role, n.attempts) for n in notices] == [
        ("raised", "sent", "school", 1)
    ]
    [mail] = mailbox.messages()
    assert mail.envelope_to == (SCHOOL_MAILBOX,)
    assert mail.tls is not None and mail.tls.startswith("TLSv1.")
    assert mail.message["Message-ID"] == notices[0].message_id
    # Every word in Danish: the rule from its definition in the pack, dates as Danes write them.
    assert mail.message["Subject"] == (
        "Bekymrende fravær: pupil-4711, Vestbjerg Skole \u2013 "
        "7 fraværsdage af de seneste 20 skoledage (dk-aalborg-2018)"
    )
    assert mail.message["Content-Language"] == "da"
    body = _body(mailbox)
    concern_id = event.data["concern_id"]
    for expected in (
        "Vestbjerg Skole",
        "pupil-4711",
        "Elevreference",
        "Regel:               7 fraværsdage af de seneste 20 skoledage",
        "8 fraværsdage af de seneste 20 skoledage, grænse 7",
        "Niveau:              Bekymring",
        "12. marts 2026",
        "12. februar 2026 til 12. marts 2026",
        "16.02.2026, 17.02.2026, 24.02.2026",
        concern_id,
        "Regelsæt:",
        "dk-aalborg-2018 (count-7-of-20 v1)",
        f"https://opspor.aalborg.example/ui/concerns/{concern_id}",
    ):
        assert expected in body, expected
    [attempt] = await all_attempts(sessionmaker)
    assert (attempt.outcome, attempt.smtp_code) == ("sent", 250)


async def test_english_school_gets_english_text(
    clean_db: AsyncEngine,
    sessionmaker: SessionMaker,
    mailbox: Mailbox,
    settings_for: Callable[..., AlerterSettings],
) -> None:
    settings = settings_for(mailbox)
    await seed_school(clean_db, language="en", name="Riverside Primary")

    await record(sessionmaker, settings, concern_event())
    await deliver_until(sessionmaker, settings, settled)

    [mail] = mailbox.messages()
    assert mail.message["Subject"] == (
        "Concerning absence: pupil-4711, Riverside Primary \u2013 "
        "7 absence days of the last 20 school days (dk-aalborg-2018)"
    )
    body = _body(mailbox)
    assert "Pupil reference:" in body and "12 February 2026 to 12 March 2026" in body
    assert "Elevreference" not in body
    # No web page configured: no link (the API answers 401 in a browser), but where to look.
    assert "/v1/concerns/" not in body and "/ui/" not in body
    assert "Where to look:" in body
    assert "in Opspor among the school's concerns for the pupil" in " ".join(body.split())


async def test_mail_carries_no_category_extent_or_health_words(
    clean_db: AsyncEngine,
    sessionmaker: SessionMaker,
    mailbox: Mailbox,
    settings_for: Callable[..., AlerterSettings],
) -> None:
    settings = settings_for(mailbox)
    await seed_school(clean_db, language="da")
    await seed_school(clean_db, school_id="school-en", language="en", mailbox="en@school.example")

    await record(sessionmaker, settings, concern_event(), concern_event(school_id="school-en"))
    notices = await deliver_until(sessionmaker, settings, settled)

    assert len(mailbox.messages()) == 2
    for mail in mailbox.messages():
        raw = mail.path.read_text(encoding="utf-8", errors="replace").lower()
        text_ = (str(mail.message["Subject"]) + _body_of(mail)).lower()
        for word in (
            "illness",
            "sygdom",
            "syg",
            "unauthorized",
            "ulovlig",
            "authorized",
            "category",
            "kategori",
            "extent",
            "0.5",
            "helbred",
            "health",
        ):
            assert word not in text_, word
            assert word not in raw, word
    # Nor are categories stored in the alerter's own tables.
    for notice in notices:
        assert "illness" not in str(notice.payload) and "category" not in str(notice.payload)


def _body_of(mail: StoredMessage) -> str:
    content = mail.message.get_content()
    assert isinstance(content, str)
    return content


async def test_repeated_and_stale_events_send_one_notice(
    clean_db: AsyncEngine,
    sessionmaker: SessionMaker,
    mailbox: Mailbox,
    settings_for: Callable[..., AlerterSettings],
) -> None:
    settings = settings_for(mailbox)
    await seed_school(clean_db)
    first = concern_event(revision=2)
    again = concern_event(concern_id=first.data["concern_id"], revision=2)
    stale = concern_event(concern_id=first.data["concern_id"], revision=1)

    await record(sessionmaker, settings, first)
    await record(sessionmaker, settings, first, again)  # a redelivered batch
    await deliver_until(sessionmaker, settings, settled)
    await record(sessionmaker, settings, again, stale)  # after delivery, too
    notices = await deliver_until(sessionmaker, settings, settled)

    assert len(notices) == 1
    assert len(mailbox.messages()) == 1
    assert len(await all_attempts(sessionmaker)) == 1


async def test_withdrawal_after_delivery_notifies_the_same_recipient(
    clean_db: AsyncEngine,
    sessionmaker: SessionMaker,
    mailbox: Mailbox,
    settings_for: Callable[..., AlerterSettings],
) -> None:
    settings = settings_for(mailbox)
    await seed_school(clean_db)
    raised = concern_event(revision=1)
    await record(sessionmaker, settings, raised)
    await deliver_until(sessionmaker, settings, settled)
    # The school's mailbox changes afterwards: the withdrawal still goes where the notice went.
    async with clean_db.begin() as conn:
        await conn.execute(text("update schools set mailbox = 'new@school.example'"))

    await record(sessionmaker, settings, withdrawn(raised, 2), withdrawn(raised, 2))
    notices = await deliver_until(sessionmaker, settings, settled)

    assert [(n.kind, n.status, n.revision) for n in notices] == [
        ("raised", "sent", 1),
        ("withdrawn", "sent", 2),
    ]
    first, second = mailbox.messages()
    assert second.envelope_to == first.envelope_to == (SCHOOL_MAILBOX,)
    assert second.message["In-Reply-To"] == first.message["Message-ID"]
    assert second.message["Message-ID"] != first.message["Message-ID"]
    assert str(second.message["Subject"]).startswith("Tilbagekaldt")
    assert raised.data["concern_id"] in _body_of(second)


async def test_withdrawal_before_delivery_cancels_and_sends_nothing(
    clean_db: AsyncEngine,
    sessionmaker: SessionMaker,
    mailbox: Mailbox,
    settings_for: Callable[..., AlerterSettings],
) -> None:
    settings = settings_for(mailbox)
    await seed_school(clean_db)
    raised = concern_event(revision=1)
    cancelled_before = REGISTRY.get_sample_value("opspor_alerter_notices_cancelled_total") or 0

    await record(sessionmaker, settings, raised)
    await record(sessionmaker, settings, withdrawn(raised, 2))
    notices = await deliver_until(sessionmaker, settings, settled)

    assert [(n.kind, n.status) for n in notices] == [("raised", "cancelled")]
    assert mailbox.messages() == []
    assert await all_attempts(sessionmaker) == []
    after = REGISTRY.get_sample_value("opspor_alerter_notices_cancelled_total") or 0
    assert after == cancelled_before + 1


async def test_withdrawal_arriving_before_the_raise_sends_nothing(
    clean_db: AsyncEngine,
    sessionmaker: SessionMaker,
    mailbox: Mailbox,
    settings_for: Callable[..., AlerterSettings],
) -> None:
    settings = settings_for(mailbox)
    await seed_school(clean_db)
    raised = concern_event(revision=1)

    await record(sessionmaker, settings, withdrawn(raised, 2), raised)

    assert await all_notices(sessionmaker) == []


async def test_raise_again_after_withdrawal_sends_a_new_notice(
    clean_db: AsyncEngine,
    sessionmaker: SessionMaker,
    mailbox: Mailbox,
    settings_for: Callable[..., AlerterSettings],
) -> None:
    settings = settings_for(mailbox)
    await seed_school(clean_db)
    raised = concern_event(revision=1)
    again = concern_event(concern_id=raised.data["concern_id"], revision=3)

    await record(sessionmaker, settings, raised)
    await deliver_until(sessionmaker, settings, settled)
    await record(sessionmaker, settings, withdrawn(raised, 2))
    await deliver_until(sessionmaker, settings, settled)
    await record(sessionmaker, settings, again)
    notices = await deliver_until(sessionmaker, settings, settled)

    assert [(n.kind, n.revision, n.status) for n in notices] == [
        ("raised", 1, "sent"),
        ("withdrawn", 2, "sent"),
        ("raised", 3, "sent"),
    ]
    # The withdrawal is delivered before the newer notice to the same recipient.
    subjects = [str(m.message["Subject"]) for m in mailbox.messages()]
    assert subjects[1].startswith("Tilbagekaldt") and not subjects[2].startswith("Tilbagekaldt")


async def test_raised_again_before_the_withdrawal_went_out_sends_nothing_more(
    clean_db: AsyncEngine,
    sessionmaker: SessionMaker,
    mailbox: Mailbox,
    settings_for: Callable[..., AlerterSettings],
) -> None:
    """Withdrawn and raised again in one batch: the withdrawal never went out, so the
    recipient's mail holds again (like a revised explanation, DOMAIN.md s.5: no new notice)."""
    settings = settings_for(mailbox)
    await seed_school(clean_db)
    raised = concern_event(revision=1)
    again = concern_event(concern_id=raised.data["concern_id"], revision=3)

    await record(sessionmaker, settings, raised)
    await deliver_until(sessionmaker, settings, settled)
    await record(sessionmaker, settings, withdrawn(raised, 2), again)
    notices = await deliver_until(sessionmaker, settings, settled)

    assert [(n.kind, n.revision, n.status) for n in notices] == [
        ("raised", 1, "sent"),
        ("withdrawn", 2, "cancelled"),
    ]
    assert len(mailbox.messages()) == 1


async def test_levels_route_to_ppr_and_municipality_mailboxes(
    clean_db: AsyncEngine,
    sessionmaker: SessionMaker,
    mailbox: Mailbox,
    settings_for: Callable[..., AlerterSettings],
) -> None:
    settings = settings_for(mailbox)
    await seed_school(clean_db)

    await record(
        sessionmaker,
        settings,
        concern_event(level="ppr-may"),
        concern_event(level="ppr-must"),
        concern_event(level="notify-municipality"),
        concern_event(level="warn-parents"),  # not listed: goes to the school
    )
    notices = await deliver_until(sessionmaker, settings, settled)

    assert [(n.recipient_role, n.status) for n in notices] == [
        ("ppr", "sent"),
        ("ppr", "sent"),
        ("municipality", "sent"),
        ("school", "sent"),
    ]
    assert sorted(m.envelope_to[0] for m in mailbox.messages()) == sorted(
        [PPR_MAILBOX, PPR_MAILBOX, UNIT_MAILBOX, SCHOOL_MAILBOX]
    )


async def test_unroutable_concern_is_counted_not_an_error(
    clean_db: AsyncEngine,
    sessionmaker: SessionMaker,
    mailbox: Mailbox,
    settings_for: Callable[..., AlerterSettings],
) -> None:
    settings = settings_for(mailbox)
    await seed_school(clean_db, ppr_mailbox=None)

    def count(reason: str) -> float:
        sample = REGISTRY.get_sample_value(
            "opspor_alerter_unroutable_total", {"role": "ppr", "reason": reason}
        )
        return sample or 0.0

    def count_school(reason: str) -> float:
        sample = REGISTRY.get_sample_value(
            "opspor_alerter_unroutable_total", {"role": "school", "reason": reason}
        )
        return sample or 0.0

    no_mailbox, unknown = count("no_mailbox"), count_school("unknown_school")
    await record(
        sessionmaker,
        settings,
        concern_event(level="ppr-must"),
        concern_event(school_id="no-such-school"),
    )

    assert await all_notices(sessionmaker) == []
    assert count("no_mailbox") == no_mailbox + 1
    assert count_school("unknown_school") == unknown + 1


async def test_4xx_twice_then_accepted_gives_three_attempts(
    clean_db: AsyncEngine,
    sessionmaker: SessionMaker,
    scripted_mailbox: Callable[..., tuple[Mailbox, ScriptedHandler]],
    settings_for: Callable[..., AlerterSettings],
) -> None:
    box, _ = scripted_mailbox(["451 4.3.0 Try again later", "421 4.7.0 Busy, try later"])
    settings = settings_for(box)
    await seed_school(clean_db)

    await record(sessionmaker, settings, concern_event())
    [notice] = await deliver_until(sessionmaker, settings, settled)

    assert (notice.status, notice.attempts) == ("sent", 3)
    attempts = await all_attempts(sessionmaker)
    assert [(a.outcome, a.smtp_code) for a in attempts] == [
        ("transient", 451),
        ("transient", 421),
        ("sent", 250),
    ]
    assert len(box.messages()) == 1


async def test_5xx_fails_after_one_attempt_without_retry(
    clean_db: AsyncEngine,
    sessionmaker: SessionMaker,
    scripted_mailbox: Callable[..., tuple[Mailbox, ScriptedHandler]],
    settings_for: Callable[..., AlerterSettings],
) -> None:
    box, _ = scripted_mailbox(["550 5.1.1 <{address}>: Recipient address rejected"])
    settings = settings_for(box)
    await seed_school(clean_db)

    await record(sessionmaker, settings, concern_event())
    [notice] = await deliver_until(sessionmaker, settings, settled)

    assert (notice.status, notice.attempts) == ("failed", 1)
    [attempt] = await all_attempts(sessionmaker)
    assert (attempt.outcome, attempt.smtp_code) == ("permanent", 550)
    assert SCHOOL_MAILBOX not in attempt.detail and "@" not in attempt.detail
    assert notice.last_error is not None and SCHOOL_MAILBOX not in notice.last_error
    assert box.messages() == []


async def test_bad_recipient_address_is_permanent(
    clean_db: AsyncEngine,
    sessionmaker: SessionMaker,
    mailbox: Mailbox,
    settings_for: Callable[..., AlerterSettings],
) -> None:
    settings = settings_for(mailbox)
    await seed_school(clean_db, mailbox="skolen ved aaen")

    await record(sessionmaker, settings, concern_event())
    [notice] = await deliver_until(sessionmaker, settings, settled)

    assert (notice.status, notice.attempts) == ("failed", 1)
    [attempt] = await all_attempts(sessionmaker)
    assert attempt.outcome == "permanent" and "aaen" not in attempt.detail


async def test_gives_up_after_max_attempts(
    clean_db: AsyncEngine,
    sessionmaker: SessionMaker,
    scripted_mailbox: Callable[..., tuple[Mailbox, ScriptedHandler]],
    settings_for: Callable[..., AlerterSettings],
) -> None:
    box, handler = scripted_mailbox(["452 4.2.2 Mailbox full"] * 10)
    settings = settings_for(box, max_attempts=4)
    await seed_school(clean_db)

    await record(sessionmaker, settings, concern_event())
    [notice] = await deliver_until(sessionmaker, settings, settled)

    assert (notice.status, notice.attempts) == ("failed", 4)
    assert [a.outcome for a in await all_attempts(sessionmaker)] == ["transient"] * 4
    assert handler.rcpt_calls == 4
    assert box.messages() == []


async def test_crash_between_send_and_record_resends_with_same_message_id(
    clean_db: AsyncEngine,
    sessionmaker: SessionMaker,
    mailbox: Mailbox,
    settings_for: Callable[..., AlerterSettings],
) -> None:
    settings = settings_for(mailbox)
    await seed_school(clean_db)
    await record(sessionmaker, settings, concern_event())
    notifier = SmtpNotifier(settings)

    # Claim and send, then "crash": the result is never recorded.
    async with unit_of_work(sessionmaker) as session:
        [claimed] = await claim_due(session, settings)
    assert (await send_notice(claimed, notifier, settings)).outcome == "sent"
    async with unit_of_work(sessionmaker) as session:
        assert await claim_due(session, settings) == []  # leased: nobody else sends it
        await session.execute(text("update notices set lease_until = now() - interval '1 second'"))

    [notice] = await deliver_until(sessionmaker, settings, settled, notifier=notifier)

    assert notice.status == "sent"
    first, second = mailbox.messages()
    assert first.message["Message-ID"] == second.message["Message-ID"] == notice.message_id
    assert (
        first.path.read_bytes().split(b"\r\n", 3)[3]
        == second.path.read_bytes().split(b"\r\n", 3)[3]
    )


async def test_pending_gauge_and_metrics_are_exposed(
    clean_db: AsyncEngine,
    sessionmaker: SessionMaker,
    mailbox: Mailbox,
    settings_for: Callable[..., AlerterSettings],
) -> None:
    settings = settings_for(mailbox)
    await seed_school(clean_db)
    await record(sessionmaker, settings, concern_event(), concern_event())
    await refresh_pending_gauge(sessionmaker)
    assert REGISTRY.get_sample_value("opspor_alerter_notices_pending") == 2
    await deliver_until(sessionmaker, settings, settled)
    await refresh_pending_gauge(sessionmaker)
    assert REGISTRY.get_sample_value("opspor_alerter_notices_pending") == 0


async def test_withdrawal_while_the_notice_is_in_flight_still_reaches_the_recipient(
    clean_db: AsyncEngine,
    sessionmaker: SessionMaker,
    mailbox: Mailbox,
    settings_for: Callable[..., AlerterSettings],
) -> None:
    settings = settings_for(mailbox)
    await seed_school(clean_db)
    raised = concern_event(revision=1)
    await record(sessionmaker, settings, raised)
    notifier = SmtpNotifier(settings)

    async with unit_of_work(sessionmaker) as session:
        [claimed] = await claim_due(session, settings)
    result = await send_notice(claimed, notifier, settings)
    # The withdrawal is consumed while the mail is on its way: the notice looks pending.
    await record(sessionmaker, settings, withdrawn(raised, 2))
    assert [n.status for n in await all_notices(sessionmaker)] == ["cancelled"]
    async with unit_of_work(sessionmaker) as session:
        await record_results(session, [(claimed, result)], settings)

    notices = await deliver_until(sessionmaker, settings, settled, notifier=notifier)

    assert [(n.kind, n.status) for n in notices] == [("raised", "sent"), ("withdrawn", "sent")]
    assert [str(m.message["Subject"]).split(":")[0] for m in mailbox.messages()] == [
        "Bekymrende fravær",
        "Tilbagekaldt",
    ]
