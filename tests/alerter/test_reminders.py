"""Case reminders (issue 14): an overdue case event from the api reminds the responsible party's
mailbox once per case, reason and day, through the same notification log and delivery loop as
concern notices. Real PostgreSQL, the STARTTLS mailbox and (first test) the real broker."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

import structlog
from prometheus_client import REGISTRY
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from opspor_alerter.main import run
from opspor_alerter.settings import AlerterSettings
from opspor_shared.devstack.certs import CertPaths
from opspor_shared.devstack.mailbox import Mailbox
from opspor_shared.events import CloudEvent, utcnow
from opspor_shared.kafka import make_producer
from tests.alerter.conftest import (
    PPR_MAILBOX,
    SCHOOL_MAILBOX,
    UNIT_MAILBOX,
    ScriptedHandler,
    all_attempts,
    all_notices,
    concern_event,
    deliver_until,
    make_settings,
    record,
    seed_school,
    settled,
    wait_for,
)

SessionMaker = async_sessionmaker[AsyncSession]


def case_event(
    *,
    case_id: str | None = None,
    event_type: str = "dk.absence.case.overdue",
    party: str = "school",
    reason: str = "evaluation-overdue",
    day: str = "2026-04-20",
    school_id: str = "school-vestbjerg",
    **changes: Any,
) -> CloudEvent:
    """A case event as the api publishes it (issue 14's contract, deploy/asyncapi.yaml)."""
    case_id = case_id or str(uuid.uuid4())
    data: dict[str, Any] = {
        "case_id": case_id,
        "pupil_id": "elev-4711",
        "school_id": school_id,
        "municipality_id": "851",
        "model_id": "baerum",
        "phase": "mapping",
        "responsible_role": "school_leader",
        "responsible_party": party,
        "reason": reason,
        "day": day,
        "due_date": "2026-04-17",
        "opened_on": "2026-03-23",
    }
    data.update(changes)
    kind = event_type.rsplit(".", 1)[-1]
    event_id = f"{case_id}:overdue:{reason}:{day}" if kind == "overdue" else f"{case_id}:{kind}:1"
    return CloudEvent(
        id=event_id,
        source="/opspor/api",
        type=event_type,
        time=utcnow(),
        subject=case_id,
        data=data,
    )


def _events(result: str) -> float:
    sample = REGISTRY.get_sample_value("opspor_alerter_concern_events_total", {"result": result})
    return sample or 0.0


def _unroutable(role: str, reason: str) -> float:
    sample = REGISTRY.get_sample_value(
        "opspor_alerter_unroutable_total", {"role": role, "reason": reason}
    )
    return sample or 0.0


def _body(box: Mailbox, index: int) -> str:
    content = box.messages()[index].message.get_content()
    assert isinstance(content, str)
    return content


async def test_overdue_case_through_kafka_mails_once_per_case_reason_and_day(
    clean_db: AsyncEngine,
    sessionmaker: SessionMaker,
    database_url: str,
    kafka_bootstrap: str,
    topic_suffix: str,
    mailbox: Mailbox,
    certs: CertPaths,
) -> None:
    cases_topic = f"absence.cases.v1.{topic_suffix}"
    settings = make_settings(
        database_url,
        mailbox.port,
        certs.ca_file,
        kafka_bootstrap_servers=kafka_bootstrap,
        concerns_topic=f"absence.concerns.v1.{topic_suffix}",
        cases_topic=cases_topic,
        consumer_group=f"opspor-alerter-{topic_suffix}",
        topic_partitions=2,
    )
    await seed_school(clean_db)
    case_id = str(uuid.uuid4())
    opened = case_event(case_id=case_id, event_type="dk.absence.case.opened")
    first = case_event(case_id=case_id, day="2026-04-20")
    next_day = case_event(case_id=case_id, day="2026-04-21")
    ignored_before, rejected_before = _events("ignored"), _events("rejected")
    stale_before = _events("stale")
    ports: list[int] = []
    stop = asyncio.Event()
    alerter = asyncio.create_task(run(settings, stop, on_started=ports.append))
    try:
        await wait_for(lambda: _started(ports, alerter), seconds=60)
        assert not alerter.done(), alerter.exception()
        producer = make_producer(settings, "test-api")
        await producer.start()
        try:
            for event in (opened, first, first):  # the second copy: a redelivery or replay
                await producer.send_and_wait(cases_topic, event.to_bytes(), key=case_id.encode())

            async def one_mail_and_the_repeat_seen() -> bool:
                return len(mailbox.messages()) == 1 and _events("stale") >= stale_before + 1

            await wait_for(one_mail_and_the_repeat_seen, seconds=60)
            await producer.send_and_wait(cases_topic, next_day.to_bytes(), key=case_id.encode())
            await wait_for(lambda: _mails(mailbox, 2), seconds=60)
        finally:
            await producer.stop()
    finally:
        stop.set()
        await asyncio.wait_for(alerter, timeout=60)

    mails = mailbox.messages()
    assert len(mails) == 2
    assert all(m.envelope_to == (SCHOOL_MAILBOX,) and m.tls is not None for m in mails)
    assert mails[0].message["Message-ID"] != mails[1].message["Message-ID"]
    assert mails[0].message["Subject"] == (
        "Påmindelse: sag for elev elev-4711 på Vestbjerg Skole - "
        "evalueringen er ikke gennemført til tiden"
    )
    bodies = [_body(mailbox, 0), _body(mailbox, 1)]
    for expected in ("Vestbjerg Skole", "elev-4711", "17. april 2026", case_id, "skolens sager"):
        assert expected in bodies[0], expected
    assert "20. april 2026" in bodies[0] and "21. april 2026" in bodies[1]
    notices = await all_notices(sessionmaker)
    assert sorted((n.kind, n.status, str(n.case_id), str(n.reminder_day)) for n in notices) == [
        ("reminder", "sent", case_id, "2026-04-20"),
        ("reminder", "sent", case_id, "2026-04-21"),
    ]
    assert _events("ignored") == ignored_before + 1  # the opened event: consumed, not mailed
    assert _events("rejected") == rejected_before  # and not dead-lettered


async def _started(ports: list[int], task: asyncio.Task[None]) -> bool:
    return bool(ports) or task.done()


async def _mails(box: Mailbox, count: int) -> bool:
    return len(box.messages()) >= count


async def test_reminder_goes_to_the_responsible_partys_mailbox_in_the_schools_language(
    clean_db: AsyncEngine,
    sessionmaker: SessionMaker,
    mailbox: Mailbox,
    settings_for: Callable[..., AlerterSettings],
) -> None:
    settings = settings_for(mailbox)
    await seed_school(clean_db, language="nb", name="Bekkestua skole")
    ppr = case_event(party="ppr", reason="ppr-referral-missing", due_date=None)
    unit = case_event(party="municipality", reason="planned-end-passed")

    await record(sessionmaker, settings, ppr, unit)
    notices = await deliver_until(sessionmaker, settings, settled)

    assert sorted((n.recipient_role, n.recipient, n.status) for n in notices) == [
        ("municipality", UNIT_MAILBOX, "sent"),
        ("ppr", PPR_MAILBOX, "sent"),
    ]
    by_rcpt = {m.envelope_to[0]: m for m in mailbox.messages()}
    ppr_mail = by_rcpt[PPR_MAILBOX]
    assert ppr_mail.message["Subject"] == (
        "Påminnelse: sak for elev elev-4711 ved Bekkestua skole - "
        "PPT er ikke involvert, selv om fraværet krever det"
    )
    assert ppr_mail.message["Content-Language"] == "nb"
    body = " ".join(ppr_mail.message.get_content().split())  # unwrapped
    assert "Frist:" in body and "Saks-id:" in body and ppr.data["case_id"] in body
    assert "handling fra PPT" in body
    assert "sakens planlagte sluttdato er passert" in by_rcpt[UNIT_MAILBOX].message["Subject"]


async def test_english_reminder_links_the_case_page_when_the_web_page_is_configured(
    clean_db: AsyncEngine,
    sessionmaker: SessionMaker,
    mailbox: Mailbox,
    settings_for: Callable[..., AlerterSettings],
) -> None:
    settings = settings_for(mailbox, web_base_url="https://opspor.example.org/")
    await seed_school(clean_db, language="en", name="Hill School")
    event = case_event()

    await record(sessionmaker, settings, event)
    await deliver_until(sessionmaker, settings, settled)

    [mail] = mailbox.messages()
    assert mail.message["Subject"] == (
        "Reminder: case of pupil elev-4711 at Hill School - the evaluation was not done on time"
    )
    body = mail.message.get_content()
    assert f"https://opspor.example.org/ui/cases/{event.data['case_id']}" in body
    assert "Due date:" in body and "17 April 2026" in body


async def test_missing_mailbox_records_nothing_and_counts_it_like_a_concern(
    clean_db: AsyncEngine,
    sessionmaker: SessionMaker,
    mailbox: Mailbox,
    settings_for: Callable[..., AlerterSettings],
) -> None:
    settings = settings_for(mailbox)
    await seed_school(clean_db, ppr_mailbox=None)
    before = _unroutable("ppr", "no_mailbox")
    unknown_before = _unroutable("school", "unknown_school")

    with structlog.testing.capture_logs() as logs:
        await record(
            sessionmaker,
            settings,
            case_event(party="ppr"),
            case_event(school_id="school-nowhere"),
            # a concern of the same level is handled the same way
            concern_event(level="ppr-must"),
        )

    assert await all_notices(sessionmaker) == []
    assert _unroutable("ppr", "no_mailbox") == before + 2
    assert _unroutable("school", "unknown_school") == unknown_before + 1
    assert [e["reason"] for e in logs if e["event"] == "reminder_unroutable"] == [
        "no_mailbox",
        "unknown_school",
    ]


async def test_bad_overdue_events_are_refused_and_nothing_is_stored(
    clean_db: AsyncEngine,
    sessionmaker: SessionMaker,
    mailbox: Mailbox,
    settings_for: Callable[..., AlerterSettings],
) -> None:
    settings = settings_for(mailbox)
    await seed_school(clean_db)
    good = case_event()
    bad_reason = case_event(reason="too-slow")
    bad_party = case_event(party="parents")
    wrong_id = good.model_copy(update={"id": str(uuid.uuid4())})
    rejected_before = _events("rejected")

    await record(sessionmaker, settings, bad_reason, bad_party, wrong_id)

    assert await all_notices(sessionmaker) == []
    assert _events("rejected") == rejected_before + 3


async def test_a_refused_reminder_is_retried_with_the_same_message_id(
    clean_db: AsyncEngine,
    sessionmaker: SessionMaker,
    scripted_mailbox: Callable[..., tuple[Mailbox, ScriptedHandler]],
    settings_for: Callable[..., AlerterSettings],
) -> None:
    box, handler = scripted_mailbox(["451 4.3.0 try later"])
    settings = settings_for(box)
    await seed_school(clean_db)

    await record(sessionmaker, settings, case_event())
    [notice] = await deliver_until(sessionmaker, settings, settled)

    assert (notice.kind, notice.status, notice.attempts) == ("reminder", "sent", 2)
    assert [(a.outcome, a.smtp_code) for a in await all_attempts(sessionmaker)] == [
        ("transient", 451),
        ("sent", 250),
    ]
    [mail] = box.messages()
    assert mail.message["Message-ID"] == notice.message_id
    assert handler.rcpt_calls == 2
