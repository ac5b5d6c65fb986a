"""Daily digests (issue 9): a recipient whose routing says `"digest": "08:00"` gets one mail a
day, at 08:00 in the school's time zone, listing every concern raised and withdrawn since the
last digest, grouped by school and level. A concern withdrawn before its digest went out is in
none; one withdrawn after is listed as withdrawn in the next. Recorded once per concern, one
deterministic Message-ID per digest. Real PostgreSQL and the STARTTLS mailbox, the alerter's
clock controlled."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, time
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from opspor_alerter.service import deliver_due
from opspor_alerter.settings import AlerterSettings
from opspor_alerter.smtp import SmtpNotifier
from opspor_shared.devstack.mailbox import Mailbox
from opspor_shared.events import CloudEvent
from opspor_shared.routing import Window, next_digest, parse_routing
from tests.alerter.conftest import (
    all_attempts,
    all_notices,
    concern_event,
    deliver_until,
    record,
    seed_school,
    settled,
    store_routing,
    withdrawn,
)

SessionMaker = async_sessionmaker[AsyncSession]
CHIEF = "skolechef@sikkerpost.aalborg.dk"
CPH = "Europe/Copenhagen"


def at(value: str) -> datetime:
    return datetime.fromisoformat(value)


def clock_at(value: str) -> Callable[[], datetime]:
    return lambda: at(value)


# --- when a digest goes --------------------------------------------------------------------


def test_the_digest_goes_at_its_local_time_on_the_windows_days_across_a_dst_change() -> None:
    eight = time(8)
    # Monday 07:45 local (CET, UTC+1): today's 08:00. Monday 08:05: Tuesday's.
    assert next_digest(eight, None, at("2026-11-30T06:45:00+00:00"), CPH) == at(
        "2026-11-30T07:00:00+00:00"
    )
    assert next_digest(eight, None, at("2026-11-30T07:05:00+00:00"), CPH) == at(
        "2026-12-01T07:00:00+00:00"
    )
    # Exactly at 08:00 the digest of that moment still takes it.
    assert next_digest(eight, None, at("2026-11-30T07:00:00+00:00"), CPH) == at(
        "2026-11-30T07:00:00+00:00"
    )
    # With a weekday window, Friday after 08:00 waits for Monday; without one, Saturday.
    weekdays = Window((1, 2, 3, 4, 5), time(7), time(17))
    friday = at("2026-11-27T09:00:00+00:00")
    assert next_digest(eight, weekdays, friday, CPH) == at("2026-11-30T07:00:00+00:00")
    assert next_digest(eight, None, friday, CPH) == at("2026-11-28T07:00:00+00:00")
    # The end of summer time (Sunday 25 October 2026): Saturday's digest at 06:00 UTC (CEST),
    # Monday's at 07:00 UTC (CET), both 08:00 on the reader's clock.
    assert next_digest(eight, None, at("2026-10-24T05:00:00+00:00"), CPH) == at(
        "2026-10-24T06:00:00+00:00"
    )
    assert next_digest(eight, weekdays, at("2026-10-24T05:00:00+00:00"), CPH) == at(
        "2026-10-26T07:00:00+00:00"
    )
    # Oslo, in its own zone.
    assert next_digest(time(7, 30), None, at("2026-12-01T07:00:00+00:00"), "Europe/Oslo") == at(
        "2026-12-02T06:30:00+00:00"
    )


def test_a_digest_is_validated_by_its_place() -> None:
    window = {"days": [1, 2, 3, 4, 5], "from": "07:00", "to": "17:00"}
    _, problems = parse_routing(
        {
            "levels": {
                "concern": [
                    {"to": "school", "digest": "8:00"},
                    {"to": "mailbox", "address": CHIEF, "digest": "18:00", "window": window},
                    {"to": "webhook", "id": "bi", "digest": "08:00"},
                ],
                "ppr-must": [{"to": "ppr", "digest": "07:30", "window": window}],
            }
        }
    )
    assert problems == [
        ("levels.concern[0].digest", "must be a local time HH:MM"),
        ("levels.concern[1].digest", "lies outside the recipient's send window"),
        ("levels.concern[2].digest", "is not a field of a `webhook` recipient"),
    ]
    routing, problems = parse_routing({"levels": {"*": [{"to": "school", "digest": "08:00"}]}})
    assert problems == [] and routing["*"][0].digest == time(8)
    assert routing["*"][0].document() == {"to": "school", "digest": "08:00"}


# --- a digest's life, under a controlled clock ----------------------------------------------


def body(mail: Any) -> str:
    return str(mail.message.get_content())


async def test_a_days_concerns_reach_the_chief_in_one_digest_by_school_and_level(
    clean_db: AsyncEngine,
    sessionmaker: SessionMaker,
    mailbox: Mailbox,
    settings_for: Callable[..., AlerterSettings],
) -> None:
    settings = settings_for(mailbox, notice_settle_seconds=900.0)
    await seed_school(clean_db)
    await seed_school(
        clean_db, school_id="school-hals", name="Hals Skole", mailbox="hals@sikker.example"
    )
    # The school chief takes both levels of both schools as one digest at 08:00.
    chief = [{"to": "mailbox", "address": CHIEF, "digest": "08:00"}]
    await store_routing(clean_db, {"levels": {"concern": chief, "ppr-must": chief}})
    a = concern_event(pupil_id="pupil-a", level="concern")
    b = concern_event(pupil_id="pupil-b", level="ppr-must", school_id="school-hals")
    gone = concern_event(pupil_id="pupil-gone", level="concern")
    # Monday 30 November 07:30 local: the settle period ends 07:45, before Monday's digest.
    await record(sessionmaker, settings, a, b, gone, clock=clock_at("2026-11-30T06:30:00+00:00"))
    # 07:40: corrected registrations withdraw one inside the settle period.
    await record(
        sessionmaker, settings, withdrawn(gone, 2), clock=clock_at("2026-11-30T06:40:00+00:00")
    )

    notices = await all_notices(sessionmaker)
    assert {(n.concern_id.hex[:8], n.status) for n in notices} == {
        (uuid_of(a), "pending"),
        (uuid_of(b), "pending"),
        (uuid_of(gone), "cancelled"),
    }
    monday = [n for n in notices if n.status == "pending"]
    assert {n.next_attempt_at for n in monday} == {at("2026-11-30T07:00:00+00:00")}
    assert len({n.message_id for n in monday}) == 1  # one mail, recorded per concern

    notices = await deliver_until(sessionmaker, settings, settled)
    mails = mailbox.messages()
    assert len(mails) == 1 and mails[0].envelope_to == (CHIEF,)
    mail = mails[0].message
    assert mail["Message-ID"] == monday[0].message_id
    assert mail["Subject"] == (
        "Opspor-oversigt 30. november 2026: 2 nye og 0 tilbagekaldte bekymringer for skolefravær"
    )
    assert mail["Date"] == "Mon, 30 Nov 2026 08:00:00 +0100"
    text_ = body(mails[0])
    # Grouped by school (by name), the most serious level first within a school.
    hals, vestbjerg = text_.index("Hals Skole (school-hals)"), text_.index("Vestbjerg Skole")
    assert hals < vestbjerg
    assert text_.index("pupil-b") < vestbjerg < text_.index("pupil-a")
    assert "Niveau: PPR skal inddrages" in text_ and "Niveau: Bekymring" in text_
    assert a.data["concern_id"] in text_ and b.data["concern_id"] in text_
    assert "pupil-gone" not in text_ and gone.data["concern_id"] not in text_
    attempts = await all_attempts(sessionmaker)
    assert sorted(x.notice_id for x in attempts) == sorted(n.id for n in monday)

    # Monday 09:00: a new concern and the withdrawal of one already in Monday's digest both wait
    # for Tuesday's.
    c = concern_event(pupil_id="pupil-c", level="concern")
    await record(
        sessionmaker, settings, c, withdrawn(a, 2), clock=clock_at("2026-11-30T08:00:00+00:00")
    )
    tuesday = [n for n in await all_notices(sessionmaker) if n.status == "pending"]
    assert {(n.kind, n.next_attempt_at) for n in tuesday} == {
        ("raised", at("2026-12-01T07:00:00+00:00")),
        ("withdrawn", at("2026-12-01T07:00:00+00:00")),
    }
    assert len({n.message_id for n in tuesday}) == 1
    await deliver_until(sessionmaker, settings, settled)
    mails = mailbox.messages()
    assert len(mails) == 2
    second = mails[1]
    assert second.message["Message-ID"] == tuesday[0].message_id
    assert "1 nye og 1 tilbagekaldte" in second.message["Subject"]
    text_ = body(second)
    assert text_.index("Nye bekymringer") < text_.index("pupil-c")
    assert text_.index("Tilbagekaldt:") < text_.index("pupil-a")

    # A replay of every event changes nothing and sends nothing.
    before = [(n.id, n.status) for n in await all_notices(sessionmaker)]
    again = (a, b, gone, withdrawn(gone, 2), c, withdrawn(a, 2))
    await record(sessionmaker, settings, *again, clock=clock_at("2026-11-30T10:00:00+00:00"))
    assert [(n.id, n.status) for n in await all_notices(sessionmaker)] == before
    assert len(mailbox.messages()) == 2


async def test_nothing_goes_before_the_digest_time(
    clean_db: AsyncEngine,
    sessionmaker: SessionMaker,
    mailbox: Mailbox,
    settings_for: Callable[..., AlerterSettings],
) -> None:
    settings = settings_for(mailbox)
    await seed_school(clean_db)
    await store_routing(clean_db, {"levels": {"*": [{"to": "school", "digest": "08:00"}]}})
    # The real clock: the next 08:00 in Copenhagen is in the future, so no round takes it.
    await record(sessionmaker, settings, concern_event())
    [notice] = await all_notices(sessionmaker)
    assert notice.next_attempt_at > datetime.now(UTC)
    assert notice.next_attempt_at.astimezone(ZoneInfo(CPH)).time() == time(8)
    assert await deliver_due(sessionmaker, SmtpNotifier(settings), settings) == 0
    assert mailbox.messages() == []


@pytest.mark.parametrize("count", [3 * 8 + 1])
async def test_a_digest_larger_than_one_round_still_goes_as_one_mail(
    clean_db: AsyncEngine,
    sessionmaker: SessionMaker,
    mailbox: Mailbox,
    settings_for: Callable[..., AlerterSettings],
    count: int,
) -> None:
    """A round claims at most DELIVERY_CONCURRENCY notices; a digest's other notices come along
    with the first, so the digest is never split into mails sharing one Message-ID."""
    settings = settings_for(mailbox, delivery_concurrency=8)
    await seed_school(clean_db)
    await store_routing(clean_db, {"levels": {"*": [{"to": "school", "digest": "08:00"}]}})
    events = [concern_event(pupil_id=f"pupil-{i:02d}") for i in range(count)]
    await record(sessionmaker, settings, *events, clock=clock_at("2026-11-30T06:30:00+00:00"))
    notices = await deliver_until(sessionmaker, settings, settled)
    assert {n.status for n in notices} == {"sent"} and len(notices) == count
    [mail] = mailbox.messages()
    assert all(e.data["concern_id"] in body(mail) for e in events)


def uuid_of(event: CloudEvent) -> str:
    return str(event.data["concern_id"]).replace("-", "")[:8]
