"""The alerter follows the routing the municipality stored (issue 9), on PostgreSQL and the TLS
mailbox: a level to PPR and a named mailbox, a school's override, a webhook named by the
routing whatever its own filter, and a recipient gone since the routing was stored."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from prometheus_client import REGISTRY
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from opspor_alerter.settings import AlerterSettings
from opspor_shared.devstack.mailbox import Mailbox
from tests.alerter.conftest import (
    PPR_MAILBOX,
    SCHOOL_MAILBOX,
    concern_event,
    deliver_until,
    record,
    seed_school,
    seed_webhook,
    settled,
)
from tests.alerter.webhook_receiver import WebhookReceiver

SessionMaker = async_sessionmaker[AsyncSession]
CHIEF = "skolechef@sikkerpost.aalborg.dk"
LEADER = "leder@vestbjerg.dk"


async def store_routing(
    engine: AsyncEngine, document: dict[str, Any], school_id: str | None = None
) -> None:
    """A document as the api stores it after validating it (opspor_api.routing)."""
    statement = (
        "update schools set routing = cast(:doc as jsonb) where id = :id"
        if school_id
        else "update municipalities set routing = cast(:doc as jsonb) where id = :id"
    )
    async with engine.begin() as conn:
        await conn.execute(text(statement), {"doc": json.dumps(document), "id": school_id or "851"})


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
