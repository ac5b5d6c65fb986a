"""Fixtures for the alerter: a real STARTTLS mailbox (aiosmtpd), seeded reference data and
builders for concern events. Every wait is bounded in rounds and in time."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session
from sqlalchemy import bindparam, select, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from opspor_alerter.models import DeliveryAttempt, Notice
from opspor_alerter.notify import ByChannel, Notifier
from opspor_alerter.service import deliver_due, record_concern_events
from opspor_alerter.settings import AlerterSettings
from opspor_alerter.smtp import SmtpNotifier
from opspor_alerter.webhook import WebhookNotifier, make_http_client
from opspor_shared.clock import Clock, system_clock
from opspor_shared.db import unit_of_work
from opspor_shared.devstack.certs import CertPaths, ensure_certs
from opspor_shared.devstack.mailbox import Mailbox, MailboxHandler
from opspor_shared.events import CONCERN_RAISED, CONCERN_WITHDRAWN, CloudEvent, utcnow
from tests.alerter.webhook_receiver import WebhookReceiver
from tests.auth import issuers_setting

SCHOOL_MAILBOX = "vestbjerg.skole@sikker.aalborg.example"
PPR_MAILBOX = "ppr@sikker.aalborg.example"
UNIT_MAILBOX = "boern-unge@sikker.aalborg.example"
SENDER = "opspor@aalborg.example"
PASSWORD = "Hemmelig-Kode-9f3a"
USERNAME = "opspor-relay-user"
WEBHOOK_SECRET = "whsec_" + base64.b64encode(hashlib.sha256(b"opspor test hook").digest()).decode()


@pytest.fixture(scope="session")
def certs(var_dir: Path) -> CertPaths:
    return ensure_certs(var_dir / "certs")


@pytest.fixture
def mail_dir(tmp_path: Path) -> Path:
    return tmp_path / "mailbox"


@pytest.fixture
def mailbox(mail_dir: Path, certs: CertPaths) -> Iterator[Mailbox]:
    with Mailbox(mail_dir, certs) as box:
        yield box


@pytest.fixture
def receiver(certs: CertPaths) -> Iterator[WebhookReceiver]:
    """An HTTPS webhook receiver with a certificate from the development CA."""
    with WebhookReceiver(certs) as r:
        yield r


class ScriptedHandler(MailboxHandler):
    """Stores mail like the real mailbox, but answers RCPT from a script first.

    A script entry is a reply such as "451 4.3.0 try later"; "{address}" in it is replaced by
    the recipient, as real relays do. An empty script accepts.
    """

    def __init__(self, directory: Path, rcpt_script: list[str] | None = None) -> None:
        super().__init__(directory)
        self.rcpt_script = list(rcpt_script or [])
        self.rcpt_calls = 0
        self.data_calls = 0

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        self.rcpt_calls += 1
        if self.rcpt_script:
            return self.rcpt_script.pop(0).format(address=address)
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.data_calls += 1
        return await super().handle_DATA(server, session, envelope)


@pytest.fixture
def scripted_mailbox(
    mail_dir: Path, certs: CertPaths
) -> Iterator[Callable[..., tuple[Mailbox, ScriptedHandler]]]:
    started: list[Mailbox] = []

    def start(
        rcpt_script: list[str] | None = None, **options: Any
    ) -> tuple[Mailbox, ScriptedHandler]:
        handler = ScriptedHandler(mail_dir, rcpt_script)
        box = Mailbox(mail_dir, certs, handler=handler, **options).start()
        started.append(box)
        return box, handler

    yield start
    for box in started:
        box.stop()


def make_settings(
    database_url: str, port: int, ca_file: Path | None, **overrides: Any
) -> AlerterSettings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "kafka_bootstrap_servers": "127.0.0.1:9",  # not used by tests without a broker
        "kafka_enable_idempotence": False,
        "smtp_host": "127.0.0.1",
        "smtp_port": port,
        "smtp_from": SENDER,
        "smtp_ca_file": ca_file,
        "webhook_ca_file": ca_file,
        "smtp_timeout_seconds": 5.0,
        "webhook_timeout_seconds": 5.0,
        "retry_base_seconds": 0.01,
        "retry_max_seconds": 0.05,
        "lease_seconds": 30.0,
        "delivery_poll_seconds": 0.01,
        # Most tests watch a mail go out; test_settle.py checks the settle period itself.
        "notice_settle_seconds": 0.0,
        "message_id_domain": "opspor.test",
        "auth_issuers": issuers_setting(),
        # The test receiver listens on loopback, which webhooks may only reach when allowed.
        "webhook_allowed_networks": "127.0.0.1/32",
    }
    values.update(overrides)
    return AlerterSettings(**values)


@pytest.fixture
def settings_for(database_url: str, certs: CertPaths) -> Callable[..., AlerterSettings]:
    def build(box: Mailbox, **overrides: Any) -> AlerterSettings:
        return make_settings(database_url, box.port, certs.ca_file, **overrides)

    return build


async def seed_school(
    engine: AsyncEngine,
    *,
    school_id: str = "school-vestbjerg",
    name: str = "Vestbjerg Skole",
    language: str = "da",
    mailbox: str = SCHOOL_MAILBOX,
    ppr_mailbox: str | None = PPR_MAILBOX,
    unit_mailbox: str | None = UNIT_MAILBOX,
    municipality_id: str = "851",
) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "insert into municipalities (id, name, country, language, rule_packs, "
                "ppr_mailbox, unit_mailbox) values (:id, 'Aalborg', 'DK', :language, "
                "'{dk-aalborg-2018}', :ppr, :unit) on conflict (id) do update set "
                "ppr_mailbox = excluded.ppr_mailbox, unit_mailbox = excluded.unit_mailbox"
            ),
            {"id": municipality_id, "language": language, "ppr": ppr_mailbox, "unit": unit_mailbox},
        )
        await conn.execute(
            text(
                "insert into schools (id, municipality_id, name, timezone, language, "
                "rule_packs, mailbox) values (:id, :municipality_id, :name, "
                "'Europe/Copenhagen', :language, null, :mailbox)"
            ),
            {
                "id": school_id,
                "municipality_id": municipality_id,
                "name": name,
                "language": language,
                "mailbox": mailbox,
            },
        )


async def seed_webhook(
    engine: AsyncEngine,
    url: str,
    *,
    webhook_id: str = "hook-1",
    secret: str = WEBHOOK_SECRET,
    levels: Sequence[str] = (),
    school_ids: Sequence[str] = (),
    enabled: bool = True,
    municipality_id: str = "851",
) -> None:
    """An endpoint row as the api writes it (see opspor_api.webhooks)."""
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "insert into webhook_endpoints (municipality_id, id, url, secret, levels, "
                "school_ids, enabled) values (:m, :id, :url, :secret, :levels, :schools, "
                ":enabled) on conflict (municipality_id, id) do update set url = excluded.url, "
                "secret = excluded.secret, levels = excluded.levels, "
                "school_ids = excluded.school_ids, enabled = excluded.enabled"
            ).bindparams(bindparam("levels", type_=JSONB), bindparam("schools", type_=JSONB)),
            {
                "m": municipality_id,
                "id": webhook_id,
                "url": url,
                "secret": secret,
                "levels": list(levels),
                "schools": list(school_ids),
                "enabled": enabled,
            },
        )


@contextlib.asynccontextmanager
async def channel_notifier(
    sessionmaker: async_sessionmaker[AsyncSession], settings: AlerterSettings
) -> AsyncIterator[Notifier]:
    """Both channels, wired as the alerter's main() wires them."""
    async with make_http_client(settings) as http:
        yield ByChannel(
            {
                "smtp": SmtpNotifier(settings),
                "webhook": WebhookNotifier(settings, sessionmaker, http),
            }
        )


def concern_event(
    *,
    concern_id: str | None = None,
    revision: int = 1,
    status: str = "active",
    level: str = "concern",
    school_id: str = "school-vestbjerg",
    pupil_id: str = "pupil-4711",
    event_type: str | None = None,
) -> CloudEvent:
    concern_id = concern_id or str(uuid.uuid4())
    data = {
        "concern_id": concern_id,
        "status": status,
        "revision": revision,
        "pupil_id": pupil_id,
        "school_id": school_id,
        "municipality_id": "851",
        "level": level,
        "crossing_date": "2026-03-12",
        "explanation": {
            "pack_id": "dk-aalborg-2018",
            "rule_id": "count-7-of-20",
            "rule_version": "1",
            "rule": "7 absence days within 20 school days",
            "kind": "count",
            "level": level,
            "window_first": "2026-02-12",
            "window_last": "2026-03-12",
            "window_days": 20,
            "value": "8",
            "threshold": "7",
            "summary": "8 absence days of the last 20 school days, limit 7",
            "contributing": [
                {"date": "2026-02-16", "slot": "day", "category": "illness", "extent": "1"},
                {"date": "2026-02-17", "slot": "am", "category": "illness", "extent": "0.5"},
                {"date": "2026-02-17", "slot": "pm", "category": "unauthorized", "extent": "0.5"},
                {"date": "2026-02-24", "slot": "day", "category": "unauthorized", "extent": "1"},
                {"date": "2026-03-02", "slot": "day", "category": "unauthorized", "extent": "1"},
                {"date": "2026-03-05", "slot": "day", "category": "illness", "extent": "1"},
                {"date": "2026-03-09", "slot": "day", "category": "unauthorized", "extent": "1"},
                {"date": "2026-03-10", "slot": "day", "category": "unauthorized", "extent": "1"},
                {"date": "2026-03-12", "slot": "day", "category": "unauthorized", "extent": "1"},
            ],
        },
    }
    if event_type is None:
        event_type = CONCERN_RAISED if status == "active" else CONCERN_WITHDRAWN
    return CloudEvent(
        id=str(uuid.uuid4()),
        source="/opspor/threshold-worker",
        type=event_type,
        time=utcnow(),
        subject=pupil_id,
        data=data,
    )


def withdrawn(event: CloudEvent, revision: int) -> CloudEvent:
    return concern_event(
        concern_id=event.data["concern_id"],
        revision=revision,
        status="withdrawn",
        level=event.data["level"],
        school_id=event.data["school_id"],
        pupil_id=event.data["pupil_id"],
    )


async def record(
    sessionmaker: async_sessionmaker[AsyncSession],
    settings: AlerterSettings,
    *events: CloudEvent,
    clock: Clock = system_clock,
) -> None:
    async with unit_of_work(sessionmaker) as session:
        outcome = await record_concern_events(session, list(events), settings, clock=clock)
    outcome.count()


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


async def all_notices(sessionmaker: async_sessionmaker[AsyncSession]) -> list[Notice]:
    async with sessionmaker() as session:
        return list(await session.scalars(select(Notice).order_by(Notice.id)))


async def all_attempts(sessionmaker: async_sessionmaker[AsyncSession]) -> list[DeliveryAttempt]:
    async with sessionmaker() as session:
        return list(await session.scalars(select(DeliveryAttempt).order_by(DeliveryAttempt.id)))


async def deliver_until(
    sessionmaker: async_sessionmaker[AsyncSession],
    settings: AlerterSettings,
    done: Callable[[list[Notice]], bool],
    *,
    notifier: Notifier | None = None,
    max_rounds: int = 200,
    seconds: float = 20.0,
) -> list[Notice]:
    """Run delivery rounds until `done(notices)`; fails after max_rounds or the deadline.

    Without a notifier, both channels are used as in the alerter process."""
    if notifier is None:
        async with channel_notifier(sessionmaker, settings) as both:
            return await deliver_until(
                sessionmaker, settings, done, notifier=both, max_rounds=max_rounds, seconds=seconds
            )
    deadline = time.monotonic() + seconds
    for _ in range(max_rounds):
        notices = await all_notices(sessionmaker)
        if done(notices):
            return notices
        if time.monotonic() > deadline:
            break
        if not await deliver_due(sessionmaker, notifier, settings):
            await asyncio.sleep(0.01)  # a retry is due within retry_max_seconds
    raise AssertionError(f"delivery did not settle: {[(n.kind, n.status) for n in notices]}")


def settled(notices: list[Notice]) -> bool:
    return bool(notices) and all(n.status != "pending" for n in notices)


async def wait_for(
    condition: Callable[[], Awaitable[bool]], *, seconds: float = 30.0, interval: float = 0.05
) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if await condition():
            return
        await asyncio.sleep(interval)
    raise AssertionError("condition not met in time")
