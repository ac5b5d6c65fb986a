"""Send recording: "send starting" is committed before a send and the answer right after, so a
process that dies mid-send leaves exactly that notice to be sent again; the resend is recorded
(an "interrupted" attempt and a metric), and a restarted alerter takes its dead predecessor's
claims back at once instead of waiting out the lease."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import structlog
from prometheus_client import REGISTRY
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from opspor_alerter.claims import Instance
from opspor_alerter.notify import DeliveryResult
from opspor_alerter.repository import NoticeRepository
from opspor_alerter.service import deliver_due, reason_class, reclaim_dead_claims
from opspor_shared.db import unit_of_work
from opspor_shared.devstack.certs import CertPaths
from opspor_shared.devstack.mailbox import Mailbox
from opspor_shared.devstack.net import free_port
from tests.alerter.conftest import (
    SCHOOL_MAILBOX,
    all_attempts,
    all_notices,
    channel_notifier,
    concern_event,
    deliver_until,
    make_settings,
    record,
    seed_school,
    settled,
)


def _resends() -> float:
    return REGISTRY.get_sample_value("opspor_alerter_resends_total", {"channel": "smtp"}) or 0.0


def _gone_pid() -> int:
    """The pid of a process that has exited."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


async def _crash_mid_send(
    sessionmaker: async_sessionmaker[AsyncSession], owner: str, lease_seconds: float
) -> int:
    """What a process killed during a send leaves behind: a claim and "send starting"."""
    async with unit_of_work(sessionmaker) as session:
        repo = NoticeRepository(session)
        [notice] = await repo.claim_due(1, lease_seconds, owner)
        assert await repo.start_send(notice.id, owner) is not None
    return notice.id


async def test_a_send_interrupted_by_a_crash_is_resent_at_once_and_recorded_as_a_resend(
    clean_db: AsyncEngine,
    sessionmaker: async_sessionmaker[AsyncSession],
    database_url: str,
    mailbox: Mailbox,
    certs: CertPaths,
) -> None:
    settings = make_settings(database_url, mailbox.port, certs.ca_file, lease_seconds=120.0)
    await seed_school(clean_db)
    await record(sessionmaker, settings, concern_event())
    host = socket.gethostname()
    dead = Instance(host, _gone_pid(), "predecessor")
    notice_id = await _crash_mid_send(sessionmaker, dead.owner, settings.lease_seconds)
    me = Instance.this_process()
    before = _resends()

    async with channel_notifier(sessionmaker, settings) as notifier:
        # The lease still runs for two minutes: without reclaiming, nothing is due.
        assert await deliver_due(sessionmaker, notifier, settings, me) == 0
        with structlog.testing.capture_logs() as logs:
            assert await reclaim_dead_claims(sessionmaker, me) == 1
            assert await deliver_due(sessionmaker, notifier, settings, me) == 1

    [notice] = await all_notices(sessionmaker)
    assert (notice.id, notice.status, notice.attempts) == (notice_id, "sent", 2)
    assert (notice.send_started_at, notice.claimed_by, notice.lease_until) == (None, None, None)
    assert [a.outcome for a in await all_attempts(sessionmaker)] == ["interrupted", "sent"]
    assert _resends() == before + 1
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == [
        "claims_reclaimed",
        "notice_resend",
    ]
    [mail] = mailbox.messages()
    assert mail.envelope_to == (SCHOOL_MAILBOX,)


async def test_claims_of_a_live_process_or_another_host_wait_for_their_lease(
    clean_db: AsyncEngine,
    sessionmaker: async_sessionmaker[AsyncSession],
    database_url: str,
    mailbox: Mailbox,
    certs: CertPaths,
) -> None:
    settings = make_settings(database_url, mailbox.port, certs.ca_file, lease_seconds=120.0)
    await seed_school(clean_db)
    await record(sessionmaker, settings, concern_event())
    await record(sessionmaker, settings, concern_event())
    live = Instance(socket.gethostname(), os.getppid(), "sibling")  # our parent: running
    await _crash_mid_send(sessionmaker, live.owner, settings.lease_seconds)
    elsewhere = Instance("another-host", _gone_pid(), "x")
    await _crash_mid_send(sessionmaker, elsewhere.owner, settings.lease_seconds)

    assert await reclaim_dead_claims(sessionmaker, Instance.this_process()) == 0
    async with channel_notifier(sessionmaker, settings) as notifier:
        assert await deliver_due(sessionmaker, notifier, settings, Instance.this_process()) == 0
    assert mailbox.messages() == []


async def test_a_refused_connection_is_a_warning_naming_the_reason_not_the_address(
    clean_db: AsyncEngine,
    sessionmaker: async_sessionmaker[AsyncSession],
    database_url: str,
    certs: CertPaths,
) -> None:
    settings = make_settings(database_url, free_port(), certs.ca_file, max_attempts=3)
    await seed_school(clean_db)
    await record(sessionmaker, settings, concern_event())
    with structlog.testing.capture_logs() as logs:
        await deliver_until(sessionmaker, settings, settled)
    failed = [e for e in logs if e["event"] == "delivery_attempt"]
    assert len(failed) == 3
    assert {(e["log_level"], e["reason"]) for e in failed} == {("warning", "connection")}
    outages = [e for e in logs if e["event"] == "outage_started" and e["dependency"] == "smtp"]
    assert len(outages) <= 1  # once per outage, not per attempt (may be open from before)
    assert SCHOOL_MAILBOX not in repr(logs)


def test_reason_classes() -> None:
    assert reason_class(DeliveryResult("transient", 451, "try later")) == "4xx"
    assert reason_class(DeliveryResult("permanent", 550, "no such mailbox")) == "5xx"
    assert reason_class(DeliveryResult("transient", None, "TLS handshake failed: x")) == "tls"
    assert reason_class(DeliveryResult("transient", None, "timed out")) == "connection"
    assert reason_class(DeliveryResult("permanent", None, "notice cannot be rendered")) == "notice"
