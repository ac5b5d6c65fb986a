"""Signed webhooks on real components: PostgreSQL, a real HTTPS receiver on 127.0.0.1 with a
certificate from the development CA, and the STARTTLS mailbox for the mail sent alongside."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from prometheus_client import REGISTRY
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from standardwebhooks import Webhook

from opspor_alerter.models import Notice
from opspor_alerter.notify import DeliveryResult
from opspor_alerter.service import next_delay
from opspor_alerter.settings import AlerterSettings
from opspor_alerter.webhook import classify_response, retry_after_seconds
from opspor_shared.devstack.certs import ensure_certs
from opspor_shared.devstack.mailbox import Mailbox
from opspor_shared.devstack.net import free_port
from opspor_shared.secretbox import SecretBox
from tests.alerter.conftest import (
    SCHOOL_MAILBOX,
    WEBHOOK_SECRET,
    all_attempts,
    all_notices,
    concern_event,
    deliver_until,
    record,
    seed_school,
    seed_webhook,
    settled,
    withdrawn,
)
from tests.alerter.webhook_receiver import Received, Reply, WebhookReceiver

SessionMaker = async_sessionmaker[AsyncSession]
RECIPIENT = "webhook:851/hook-1"


def verify_signature(request: Received, secret: str = WEBHOOK_SECRET) -> None:
    """Our own HMAC computation, independent of the library the alerter signs with."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    webhook_id = request.headers["webhook-id"]
    timestamp = request.headers["webhook-timestamp"]
    signed = f"{webhook_id}.{timestamp}.".encode() + request.body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    assert f"v1,{expected}" in request.headers["webhook-signature"].split(" ")


def _webhook_notices(notices: list[Notice]) -> list[Notice]:
    return [n for n in notices if n.channel == "webhook"]


async def test_raised_concern_posts_one_signed_webhook_and_mails_the_school(
    clean_db: AsyncEngine,
    sessionmaker: SessionMaker,
    mailbox: Mailbox,
    receiver: WebhookReceiver,
    settings_for: Callable[..., AlerterSettings],
) -> None:
    settings = settings_for(mailbox, notice_link_base="https://opspor.aalborg.example")
    await seed_school(clean_db)
    await seed_webhook(clean_db, receiver.url("/opspor/hooks"))
    event = concern_event()

    await record(sessionmaker, settings, event)
    notices = await deliver_until(sessionmaker, settings, settled)

    assert sorted((n.channel, n.recipient, n.recipient_role, n.status) for n in notices) == [
        ("smtp", SCHOOL_MAILBOX, "school", "sent"),
        ("webhook", RECIPIENT, "integration", "sent"),
    ]
    assert len(mailbox.messages()) == 1
    [request] = receiver.requests
    assert request.target == "/opspor/hooks"
    assert request.headers["content-type"] == "application/json"
    verify_signature(request)
    # The library the receivers are told to use accepts it too.
    Webhook(WEBHOOK_SECRET).verify(request.body, request.headers)
    [hook] = [n for n in notices if n.channel == "webhook"]
    assert request.headers["webhook-id"] == hook.message_id
    assert request.headers["webhook-id"].startswith("msg_")
    document = json.loads(request.body)
    concern_id = event.data["concern_id"]
    assert document["type"] == "concern.raised"
    assert datetime.fromisoformat(document["timestamp"]) == hook.created_at
    assert document["data"] == {
        "concern_id": concern_id,
        "revision": 1,
        "pupil_id": "pupil-4711",
        "school_id": "school-vestbjerg",
        "level": "concern",
        "pack_id": "dk-aalborg-2018",
        "rule_id": "count-7-of-20",
        "rule_version": "1",
        "rule": "7 absence days within 20 school days",
        "crossing_date": "2026-03-12",
        "window_first": "2026-02-12",
        "window_last": "2026-03-12",
        "link": f"https://opspor.aalborg.example/v1/concerns/{concern_id}",
    }
    body = request.body.decode().lower()
    for forbidden in ("illness", "unauthorized", "extent", "category", "slot"):
        assert forbidden not in body, forbidden
    [_, webhook_attempt] = sorted(await all_attempts(sessionmaker), key=lambda a: a.notice_id)
    assert (webhook_attempt.outcome, webhook_attempt.http_status) == ("sent", 200)


async def test_repeated_concern_event_posts_nothing_more(
    clean_db: AsyncEngine,
    sessionmaker: SessionMaker,
    mailbox: Mailbox,
    receiver: WebhookReceiver,
    settings_for: Callable[..., AlerterSettings],
) -> None:
    settings = settings_for(mailbox)
    await seed_school(clean_db)
    await seed_webhook(clean_db, receiver.url())
    event = concern_event()

    await record(sessionmaker, settings, event, event)
    await deliver_until(sessionmaker, settings, settled)
    await record(sessionmaker, settings, event)  # a redelivery after the notice went out
    notices = await deliver_until(sessionmaker, settings, settled)

    assert len(_webhook_notices(notices)) == 1
    assert len(receiver.requests) == 1


async def test_503_then_200_is_retried_with_the_same_webhook_id(
    clean_db: AsyncEngine,
    sessionmaker: SessionMaker,
    mailbox: Mailbox,
    receiver: WebhookReceiver,
    settings_for: Callable[..., AlerterSettings],
) -> None:
    settings = settings_for(mailbox)
    await seed_school(clean_db, mailbox="")  # webhook only: the attempts are all the webhook's
    await seed_webhook(clean_db, receiver.url())
    receiver.script = [Reply(503)]

    await record(sessionmaker, settings, concern_event())
    [notice] = await deliver_until(sessionmaker, settings, settled)

    assert (notice.channel, notice.status, notice.attempts) == ("webhook", "sent", 2)
    attempts = await all_attempts(sessionmaker)
    assert [(a.outcome, a.http_status, a.detail) for a in attempts] == [
        ("transient", 503, "HTTP 503"),
        ("sent", 200, "accepted: HTTP 200"),
    ]
    first, second = receiver.requests
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == notice.message_id
    assert first.body == second.body
    verify_signature(first)
    verify_signature(second)


@pytest.mark.parametrize(
    ("reply", "detail"),
    [
        (Reply(400), "refused: HTTP 400"),
        (Reply(410), "refused: HTTP 410"),
        (Reply(301, {"location": "/elsewhere"}), "redirect not followed: HTTP 301"),
    ],
)
async def test_4xx_and_redirects_fail_at_once_without_retry(
    clean_db: AsyncEngine,
    sessionmaker: SessionMaker,
    mailbox: Mailbox,
    receiver: WebhookReceiver,
    settings_for: Callable[..., AlerterSettings],
    reply: Reply,
    detail: str,
) -> None:
    settings = settings_for(mailbox, max_attempts=5)
    await seed_school(clean_db, mailbox="")
    await seed_webhook(clean_db, receiver.url("/hooks"))
    receiver.script = [reply]

    await record(sessionmaker, settings, concern_event())
    [notice] = await deliver_until(sessionmaker, settings, settled)

    assert (notice.status, notice.attempts, notice.last_error) == ("failed", 1, detail)
    [attempt] = await all_attempts(sessionmaker)
    assert (attempt.outcome, attempt.http_status) == ("permanent", reply.status)
    assert [r.target for r in receiver.requests] == ["/hooks"]  # the redirect was not followed


async def test_certificate_from_a_foreign_ca_is_not_trusted_and_retried(
    clean_db: AsyncEngine,
    sessionmaker: SessionMaker,
    mailbox: Mailbox,
    settings_for: Callable[..., AlerterSettings],
    tmp_path: Path,
) -> None:
    settings = settings_for(mailbox, max_attempts=2)
    await seed_school(clean_db, mailbox="")
    with WebhookReceiver(ensure_certs(tmp_path / "foreign-ca")) as impostor:
        await seed_webhook(clean_db, impostor.url())
        await record(sessionmaker, settings, concern_event())
        [notice] = await deliver_until(sessionmaker, settings, settled)
        assert impostor.requests == []

    assert (notice.status, notice.attempts) == ("failed", 2)
    attempts = await all_attempts(sessionmaker)
    assert [a.outcome for a in attempts] == ["transient", "transient"]
    assert all(a.detail.startswith("TLS certificate not trusted") for a in attempts)


async def test_withdrawal_reaches_the_endpoint_that_got_the_concern(
    clean_db: AsyncEngine,
    sessionmaker: SessionMaker,
    mailbox: Mailbox,
    receiver: WebhookReceiver,
    settings_for: Callable[..., AlerterSettings],
) -> None:
    settings = settings_for(mailbox)
    await seed_school(clean_db)
    await seed_webhook(clean_db, receiver.url())
    event = concern_event()
    await record(sessionmaker, settings, event)
    await deliver_until(sessionmaker, settings, settled)

    await record(sessionmaker, settings, withdrawn(event, revision=2))
    notices = await deliver_until(sessionmaker, settings, settled)

    hooks = sorted(_webhook_notices(notices), key=lambda n: n.revision)
    assert [(n.kind, n.status, n.recipient) for n in hooks] == [
        ("raised", "sent", RECIPIENT),
        ("withdrawn", "sent", RECIPIENT),
    ]
    raised, withdrawal = receiver.requests
    verify_signature(withdrawal)
    document = json.loads(withdrawal.body)
    assert document["type"] == "concern.withdrawn"
    assert document["data"]["concern_id"] == event.data["concern_id"]
    assert document["data"]["revision"] == 2
    assert document["data"]["withdraws"] == raised.headers["webhook-id"]
    assert withdrawal.headers["webhook-id"] != raised.headers["webhook-id"]
    assert len(mailbox.messages()) == 2  # the mailbox got its withdrawal too


async def test_level_school_and_enabled_filters_pick_the_endpoints(
    clean_db: AsyncEngine,
    sessionmaker: SessionMaker,
    mailbox: Mailbox,
    receiver: WebhookReceiver,
    settings_for: Callable[..., AlerterSettings],
) -> None:
    settings = settings_for(mailbox)
    await seed_school(clean_db)
    await seed_school(clean_db, school_id="school-hals", name="Hals Skole", mailbox="h@x.example")
    await seed_webhook(clean_db, receiver.url("/ppr"), webhook_id="ppr", levels=["ppr-must"])
    await seed_webhook(clean_db, receiver.url("/all"), webhook_id="all")
    await seed_webhook(
        clean_db, receiver.url("/hals"), webhook_id="hals", school_ids=["school-hals"]
    )
    await seed_webhook(clean_db, receiver.url("/off"), webhook_id="off", enabled=False)

    await record(
        sessionmaker,
        settings,
        concern_event(level="concern"),
        concern_event(level="ppr-must"),
        concern_event(level="concern", school_id="school-hals"),
    )
    await deliver_until(sessionmaker, settings, settled)

    got = sorted(
        (r.target, json.loads(r.body)["data"]["level"], json.loads(r.body)["data"]["school_id"])
        for r in receiver.requests
    )
    assert got == [
        ("/all", "concern", "school-hals"),
        ("/all", "concern", "school-vestbjerg"),
        ("/all", "ppr-must", "school-vestbjerg"),
        ("/hals", "concern", "school-hals"),
        ("/ppr", "ppr-must", "school-vestbjerg"),
    ]


async def test_endpoint_deleted_before_delivery_fails_the_notice(
    clean_db: AsyncEngine,
    sessionmaker: SessionMaker,
    mailbox: Mailbox,
    receiver: WebhookReceiver,
    settings_for: Callable[..., AlerterSettings],
) -> None:
    settings = settings_for(mailbox)
    await seed_school(clean_db, mailbox="")
    await seed_webhook(clean_db, receiver.url())
    await record(sessionmaker, settings, concern_event())
    async with clean_db.begin() as conn:
        await conn.execute(text("delete from webhook_endpoints"))

    [notice] = await deliver_until(sessionmaker, settings, settled)

    assert (notice.status, notice.last_error) == (
        "failed",
        "webhook endpoint no longer configured",
    )
    assert receiver.requests == []


async def test_secret_rotated_after_recording_signs_with_the_new_secret(
    clean_db: AsyncEngine,
    sessionmaker: SessionMaker,
    mailbox: Mailbox,
    receiver: WebhookReceiver,
    settings_for: Callable[..., AlerterSettings],
) -> None:
    settings = settings_for(mailbox)
    rotated = "whsec_" + base64.b64encode(b"r" * 32).decode()
    await seed_school(clean_db, mailbox="")
    await seed_webhook(clean_db, receiver.url())
    await record(sessionmaker, settings, concern_event())
    await seed_webhook(clean_db, receiver.url(), secret=rotated)

    await deliver_until(sessionmaker, settings, settled)

    [request] = receiver.requests
    verify_signature(request, rotated)
    with pytest.raises(AssertionError):
        verify_signature(request, WEBHOOK_SECRET)


async def test_a_sealed_secret_signs_and_one_no_key_opens_waits_for_its_key(
    clean_db: AsyncEngine,
    sessionmaker: SessionMaker,
    mailbox: Mailbox,
    receiver: WebhookReceiver,
    settings_for: Callable[..., AlerterSettings],
) -> None:
    """WEBHOOK_SECRET_KEYS: the alerter opens the secret the api sealed, with any of its keys;
    a secret sealed with a key it lacks is not guessed at: the notice waits, retried."""
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    await seed_school(clean_db, mailbox="")
    await seed_webhook(clean_db, receiver.url(), secret=SecretBox([old]).seal(WEBHOOK_SECRET))
    without_old = settings_for(mailbox, webhook_secret_keys=new)
    await record(sessionmaker, without_old, concern_event())

    await deliver_until(
        sessionmaker, without_old, lambda notices: bool(notices) and notices[0].attempts >= 2
    )
    [notice] = await all_notices(sessionmaker)
    assert notice.status == "pending" and receiver.requests == []
    assert notice.last_error is not None and "WEBHOOK_SECRET_KEYS" in notice.last_error
    assert WEBHOOK_SECRET not in notice.last_error

    # The old key back, after the new one (a rotation under way): it opens and signs.
    rotating = settings_for(mailbox, webhook_secret_keys=f"{new},{old}")
    [notice] = await deliver_until(sessionmaker, rotating, settled)
    assert notice.status == "sent"
    [request] = receiver.requests
    verify_signature(request)


async def test_metrics_are_labelled_by_channel(
    clean_db: AsyncEngine,
    sessionmaker: SessionMaker,
    mailbox: Mailbox,
    receiver: WebhookReceiver,
    settings_for: Callable[..., AlerterSettings],
) -> None:
    def sent(channel: str) -> float:
        labels = {"channel": channel, "kind": "raised"}
        return REGISTRY.get_sample_value("opspor_alerter_notices_sent_total", labels) or 0.0

    settings = settings_for(mailbox)
    await seed_school(clean_db)
    await seed_webhook(clean_db, receiver.url())
    before = sent("smtp"), sent("webhook")

    await record(sessionmaker, settings, concern_event())
    await deliver_until(sessionmaker, settings, settled)

    assert (sent("smtp"), sent("webhook")) == (before[0] + 1, before[1] + 1)


def test_retry_after_is_read_as_seconds_or_date_and_capped(
    settings_for: Callable[..., AlerterSettings], mailbox: Mailbox
) -> None:
    now = datetime(2026, 3, 12, 8, 0, tzinfo=UTC)
    assert retry_after_seconds("120", now) == 120.0
    assert retry_after_seconds(format_datetime(now + timedelta(minutes=5), usegmt=True), now) == 300
    assert retry_after_seconds(format_datetime(now - timedelta(minutes=5), usegmt=True), now) == 0
    assert retry_after_seconds("soon", now) is None
    assert retry_after_seconds(None, now) is None

    settings = settings_for(mailbox, retry_base_seconds=0.01, retry_max_seconds=30.0)
    busy = classify_response(429, {"retry-after": "3600"}, now)
    assert (busy.outcome, busy.retry_after) == ("transient", 3600.0)
    assert next_delay(1, busy, settings) == 30.0  # honoured up to RETRY_MAX_SECONDS
    short = DeliveryResult("transient", None, "HTTP 503", http_status=503, retry_after=2.0)
    assert next_delay(1, short, settings) == 2.0
    assert next_delay(1, DeliveryResult("transient", None, "HTTP 503"), settings) < 1.0
    assert classify_response(408, {}, now).outcome == "transient"
    assert classify_response(500, {}, now).outcome == "transient"
    assert classify_response(404, {}, now).outcome == "permanent"
    assert classify_response(204, {}, now).outcome == "sent"


async def test_retry_after_postpones_the_next_attempt(
    clean_db: AsyncEngine,
    sessionmaker: SessionMaker,
    mailbox: Mailbox,
    receiver: WebhookReceiver,
    settings_for: Callable[..., AlerterSettings],
) -> None:
    settings = settings_for(mailbox, retry_base_seconds=0.01, retry_max_seconds=30.0)
    await seed_school(clean_db, mailbox="")
    await seed_webhook(clean_db, receiver.url())
    receiver.script = [Reply(429, {"retry-after": "3600"})]
    await record(sessionmaker, settings, concern_event())

    def tried_once(notices: list[Notice]) -> bool:
        return bool(notices) and all(n.attempts >= 1 for n in notices)

    [notice] = await deliver_until(sessionmaker, settings, tried_once)

    [attempt] = await all_attempts(sessionmaker)
    assert (notice.status, attempt.http_status) == ("pending", 429)
    # Recorded in one transaction, so both timestamps are the same now().
    assert notice.next_attempt_at - attempt.attempted_at == timedelta(seconds=30)
    assert len(receiver.requests) == 1


async def test_connection_refused_is_retried_and_the_detail_names_no_url(
    clean_db: AsyncEngine,
    sessionmaker: SessionMaker,
    mailbox: Mailbox,
    settings_for: Callable[..., AlerterSettings],
) -> None:
    settings = settings_for(mailbox, max_attempts=2)
    await seed_school(clean_db, mailbox="")
    url = f"https://127.0.0.1:{free_port()}/hooks/p4th-s3cret?token=t0ken-value"
    await seed_webhook(clean_db, url)

    await record(sessionmaker, settings, concern_event())
    [notice] = await deliver_until(sessionmaker, settings, settled)

    assert (notice.status, notice.attempts) == ("failed", 2)
    attempts = await all_attempts(sessionmaker)
    assert [a.outcome for a in attempts] == ["transient", "transient"]
    for attempt in attempts:
        assert attempt.detail.startswith("connection failed: ConnectError")
        for part in ("p4th-s3cret", "t0ken-value", url.split("://")[1]):
            assert part not in attempt.detail


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_an_internal_address_is_refused_when_connecting_unless_allowed(
    clean_db: AsyncEngine,
    sessionmaker: SessionMaker,
    mailbox: Mailbox,
    receiver: WebhookReceiver,
    settings_for: Callable[..., AlerterSettings],
    host: str,
) -> None:
    # A URL stored before the guard existed, or a name whose DNS later points inside: the
    # alerter checks the address it is about to connect to, and the receiver hears nothing.
    settings = settings_for(mailbox, webhook_allowed_networks="")
    await seed_school(clean_db, mailbox="")
    url = f"https://{host}:{receiver.port}/hooks/p4th-s3cret"
    await seed_webhook(clean_db, url)

    await record(sessionmaker, settings, concern_event())
    [notice] = await deliver_until(sessionmaker, settings, settled)

    assert (notice.status, notice.attempts) == ("failed", 1)
    [attempt] = await all_attempts(sessionmaker)
    assert attempt.outcome == "permanent"
    assert attempt.detail == "refused: the endpoint resolves to a non-public address"
    assert receiver.requests == []

    # The operator allows the network: the same kind of notice now goes through.
    allowed = settings_for(mailbox, webhook_allowed_networks="127.0.0.0/8")
    await record(sessionmaker, allowed, concern_event())
    notices = await deliver_until(sessionmaker, allowed, settled)
    assert sorted(n.status for n in notices) == ["failed", "sent"]
    assert len(receiver.requests) == 1
