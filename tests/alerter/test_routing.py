"""The alerter follows the routing the municipality stored (issue 9), on PostgreSQL and the TLS
mailbox: a level to PPR and a named mailbox, a school's override, a webhook named by the
routing whatever its own filter, and a recipient gone since the routing was stored."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, time

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import REGISTRY
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from opspor_alerter.service import record_concern_events
from opspor_alerter.settings import AlerterSettings
from opspor_shared.db import unit_of_work
from opspor_shared.devstack.mailbox import Mailbox
from opspor_shared.routing import KINDS, Recipient, Window, levels_reaching, recipients
from tests.alerter.conftest import (
    PPR_MAILBOX,
    SCHOOL_MAILBOX,
    concern_event,
    deliver_until,
    record,
    seed_school,
    seed_webhook,
    settled,
    store_routing,
)
from tests.alerter.webhook_receiver import WebhookReceiver

SessionMaker = async_sessionmaker[AsyncSession]
CHIEF = "skolechef@sikkerpost.aalborg.dk"
LEADER = "leder@vestbjerg.dk"


async def test_a_level_goes_to_every_recipient_its_routing_names(
    clean_db: AsyncEngine,
    sessionmaker: SessionMaker,
    mailbox: Mailbox,
    settings_for: Callable[..., AlerterSettings],
) -> None:
    settings = settings_for(mailbox)
    await seed_school(clean_db)
    await seed_school(clean_db, school_id="school-hals", name="Hals Skole", mailbox="hals@x.dk")
    await store_routing(
        clean_db,
        {"levels": {"ppr-must": [{"to": "ppr"}, {"to": "mailbox", "address": CHIEF}]}},
    )
    await store_routing(
        clean_db, {"levels": {"concern": [{"to": "mailbox", "address": LEADER}]}}, "school-hals"
    )

    await record(
        sessionmaker,
        settings,
        concern_event(level="ppr-must"),
        concern_event(level="concern"),
        concern_event(level="concern", school_id="school-hals", pupil_id="pupil-9"),
    )
    notices = await deliver_until(sessionmaker, settings, settled)

    assert sorted((n.recipient, n.recipient_role, n.status) for n in notices) == sorted(
        [
            (PPR_MAILBOX, "ppr", "sent"),
            (CHIEF, "mailbox", "sent"),
            (SCHOOL_MAILBOX, "school", "sent"),  # not named: the default table
            (LEADER, "mailbox", "sent"),  # Hals's override, instead of its own mailbox
        ]
    )
    assert sorted(m.envelope_to[0] for m in mailbox.messages()) == sorted(
        [PPR_MAILBOX, CHIEF, SCHOOL_MAILBOX, LEADER]
    )


async def test_a_webhook_the_routing_names_gets_the_level_and_a_gone_one_is_counted(
    clean_db: AsyncEngine,
    sessionmaker: SessionMaker,
    mailbox: Mailbox,
    receiver: WebhookReceiver,
    settings_for: Callable[..., AlerterSettings],
) -> None:
    settings = settings_for(mailbox)
    await seed_school(clean_db)
    # The endpoint's own filter takes only `ppr-must`; the routing sends it `concern` too.
    await seed_webhook(clean_db, receiver.url(), levels=["ppr-must"])
    await store_routing(
        clean_db,
        {"levels": {"concern": [{"to": "school"}, {"to": "webhook", "id": "hook-1"}]}},
    )
    await record(sessionmaker, settings, concern_event(level="concern"))
    notices = await deliver_until(sessionmaker, settings, settled)
    assert sorted((n.channel, n.status) for n in notices) == [
        ("smtp", "sent"),
        ("webhook", "sent"),
    ]
    assert len(receiver.requests) == 1

    # The endpoint is disabled after the routing was stored: the mail still goes, the webhook
    # is counted as unroutable rather than silently dropped.
    await seed_webhook(clean_db, receiver.url(), levels=["ppr-must"], enabled=False)
    labels = {"role": "integration", "reason": "no_endpoint"}
    before = REGISTRY.get_sample_value("opspor_alerter_unroutable_total", labels) or 0.0
    await record(sessionmaker, settings, concern_event(level="concern", pupil_id="pupil-2"))
    assert REGISTRY.get_sample_value("opspor_alerter_unroutable_total", labels) == before + 1
    notices = await deliver_until(sessionmaker, settings, settled)
    assert sorted((n.channel, n.status) for n in notices) == [
        ("smtp", "sent"),
        ("smtp", "sent"),
        ("webhook", "sent"),
    ]


# --- send windows ------------------------------------------------------------------------

WEEKDAYS_7_17 = Window((1, 2, 3, 4, 5), time(7), time(17))
CPH = "Europe/Copenhagen"


def test_a_window_opens_on_the_next_weekday_morning_in_the_schools_time() -> None:
    def at(text: str) -> datetime:
        return datetime.fromisoformat(text)

    # Friday 16:59 local: open. Friday 17:00: Monday 07:00 (a weekend in between).
    friday = at("2026-11-27T15:59:00+00:00")  # 16:59 in Copenhagen (CET)
    assert WEEKDAYS_7_17.next_open(friday, CPH) == friday
    assert WEEKDAYS_7_17.next_open(at("2026-11-27T16:00:00+00:00"), CPH) == at(
        "2026-11-30T06:00:00+00:00"
    )
    # Saturday night, Oslo: Monday 07:00 Oslo time.
    assert WEEKDAYS_7_17.next_open(at("2026-11-28T23:00:00+00:00"), "Europe/Oslo") == at(
        "2026-11-30T06:00:00+00:00"
    )
    # Across the end of summer time (Sunday 25 October 2026): Friday evening's mail goes at
    # 07:00 local on Monday, which is 06:00 UTC, an hour later in UTC terms than on Friday.
    assert WEEKDAYS_7_17.next_open(at("2026-10-23T18:00:00+00:00"), CPH) == at(
        "2026-10-26T06:00:00+00:00"
    )
    assert WEEKDAYS_7_17.next_open(at("2026-10-23T04:00:00+00:00"), CPH) == at(
        "2026-10-23T05:00:00+00:00"
    )
    # And into summer time (Sunday 28 March 2027).
    assert WEEKDAYS_7_17.next_open(at("2027-03-26T20:00:00+00:00"), CPH) == at(
        "2027-03-29T05:00:00+00:00"
    )
    # Early morning on a weekday: the same day's opening.
    assert WEEKDAYS_7_17.next_open(at("2026-11-24T03:00:00+00:00"), CPH) == at(
        "2026-11-24T06:00:00+00:00"
    )


async def test_a_mail_due_outside_its_window_waits_for_it_and_webhooks_do_not(
    clean_db: AsyncEngine,
    sessionmaker: SessionMaker,
    mailbox: Mailbox,
    receiver: WebhookReceiver,
    settings_for: Callable[..., AlerterSettings],
) -> None:
    settings = settings_for(mailbox, notice_settle_seconds=900.0)
    await seed_school(clean_db)
    await seed_webhook(clean_db, receiver.url())
    window = {"days": [1, 2, 3, 4, 5], "from": "07:00", "to": "17:00"}
    await store_routing(clean_db, {"levels": {"concern": [{"to": "school", "window": window}]}})
    # Friday 16:50 in Copenhagen: the settle period ends 17:05, after the window closed.
    friday = datetime(2026, 11, 27, 15, 50, tzinfo=UTC)
    async with unit_of_work(sessionmaker) as session:
        await record_concern_events(
            session, [concern_event(level="concern")], settings, clock=lambda: friday
        )
    async with sessionmaker() as session:
        rows = (
            await session.execute(
                text("select channel, next_attempt_at from notices order by channel")
            )
        ).all()
    due = {channel: at for channel, at in rows}
    assert due["smtp"] == datetime(2026, 11, 30, 6, 0, tzinfo=UTC)  # Monday 07:00 local
    # Webhooks are immediate: due at once (the database's now, not the test's Friday).
    async with sessionmaker() as session:
        webhook_due_now = await session.scalar(
            text("select next_attempt_at <= now() from notices where channel = 'webhook'")
        )
    assert webhook_due_now is True


_LEVELS = st.sampled_from(["concern", "ppr-may", "ppr-must", "notify-municipality", "watch", "*"])
_KINDS = st.sampled_from([k for k in KINDS if k in ("school", "ppr", "unit")])
_DOCUMENTS = st.none() | st.dictionaries(
    _LEVELS,
    st.lists(_KINDS, min_size=1, max_size=2).map(lambda ks: tuple(Recipient(k) for k in ks)),
)


@given(_DOCUMENTS, _DOCUMENTS, st.sampled_from(["concern", "ppr-may", "watch", "never-named"]))
def test_the_levels_reaching_a_kind_are_those_recipients_sends_there(
    school: dict[str, tuple[Recipient, ...]] | None,
    municipality: dict[str, tuple[Recipient, ...]] | None,
    level: str,
) -> None:
    """What PPR may read (levels_reaching) and where mail goes (recipients) are one definition:
    for any level, named or invented, the two agree."""
    reaching = levels_reaching("ppr", school, municipality)
    listed = level in reaching.levels if level in reaching.named else reaching.others
    assert listed == any(r.to == "ppr" for r in recipients(level, school, municipality))
