"""The SMTP notifier against real servers: TLS is required, failures are classified, and no
address, credential or webhook URL or secret leaks into a delivery detail or a log line."""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import structlog
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from opspor_alerter.notify import DeliveryResult, Scrubber
from opspor_alerter.settings import AlerterSettings
from opspor_alerter.smtp import SmtpNotifier, classify
from opspor_shared.devstack.certs import CertPaths, ensure_certs
from opspor_shared.devstack.mailbox import Mailbox
from opspor_shared.devstack.net import free_port
from opspor_shared.logging import LIBRARY_LEVELS, quiet_libraries
from tests.alerter.conftest import (
    PASSWORD,
    SCHOOL_MAILBOX,
    SENDER,
    USERNAME,
    WEBHOOK_SECRET,
    ScriptedHandler,
    all_attempts,
    concern_event,
    deliver_until,
    make_settings,
    record,
    seed_school,
    seed_webhook,
    settled,
)
from tests.alerter.webhook_receiver import Reply, WebhookReceiver


def _mail(recipient: str = SCHOOL_MAILBOX) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = SENDER
    msg["To"] = recipient
    msg["Subject"] = "test"
    msg["Message-ID"] = "<test@opspor.test>"
    msg.set_content("body")
    return msg


class PlaintextRecorder:
    """A server that never offers STARTTLS, and counts what it was asked to do."""

    def __init__(self) -> None:
        self.mail_calls = 0
        self.data_calls = 0

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        self.mail_calls += 1
        envelope.mail_from = address
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.data_calls += 1
        return "250 OK"


@pytest.fixture
def plaintext_server() -> Iterator[tuple[int, PlaintextRecorder]]:
    recorder = PlaintextRecorder()
    port = free_port()
    controller = Controller(recorder, hostname="127.0.0.1", port=port, server_hostname="localhost")
    controller.start()
    try:
        yield port, recorder
    finally:
        controller.stop()


async def test_server_without_starttls_gets_no_mail_and_attempt_is_transient(
    database_url: str, certs: CertPaths, plaintext_server: tuple[int, PlaintextRecorder]
) -> None:
    port, recorder = plaintext_server
    notifier = SmtpNotifier(make_settings(database_url, port, certs.ca_file))

    result = await notifier.send(SCHOOL_MAILBOX, _mail())

    assert result.outcome == "transient"
    assert result.detail == "relay does not offer STARTTLS"
    assert (recorder.mail_calls, recorder.data_calls) == (0, 0)


async def test_server_without_starttls_through_the_pipeline(
    clean_db: AsyncEngine,
    sessionmaker: async_sessionmaker[AsyncSession],
    database_url: str,
    certs: CertPaths,
    plaintext_server: tuple[int, PlaintextRecorder],
) -> None:
    port, recorder = plaintext_server
    settings = make_settings(
        database_url,
        port,
        certs.ca_file,
        max_attempts=2,
        smtp_username=USERNAME,
        smtp_password=PASSWORD,
    )
    await seed_school(clean_db)

    with structlog.testing.capture_logs() as logs:
        await record(sessionmaker, settings, concern_event())
        [notice] = await deliver_until(sessionmaker, settings, settled)

    assert (notice.status, notice.attempts) == ("failed", 2)
    attempts = await all_attempts(sessionmaker)
    assert [a.outcome for a in attempts] == ["transient", "transient"]
    assert (recorder.mail_calls, recorder.data_calls) == (0, 0)
    _assert_clean(repr(logs), notice.last_error or "", *(a.detail for a in attempts))


def _assert_clean(*texts: str) -> None:
    for text_ in texts:
        for secret in (SCHOOL_MAILBOX, PASSWORD, USERNAME, "vestbjerg.skole"):
            assert secret.lower() not in text_.lower(), secret


async def test_certificate_from_another_ca_is_not_trusted(
    database_url: str, certs: CertPaths, tmp_path: Path
) -> None:
    foreign = ensure_certs(tmp_path / "foreign-ca")
    with Mailbox(tmp_path / "mail", foreign) as box:
        notifier = SmtpNotifier(make_settings(database_url, box.port, certs.ca_file))
        result = await notifier.send(SCHOOL_MAILBOX, _mail())
        assert box.messages() == []
    assert result.outcome == "transient"
    assert result.detail.startswith("TLS certificate not trusted")
    _assert_clean(result.detail)


async def test_host_name_is_verified(database_url: str, certs: CertPaths, tmp_path: Path) -> None:
    only_localhost = ensure_certs(tmp_path / "narrow", dns_names=("localhost",), ip_addresses=())
    with Mailbox(tmp_path / "mail", only_localhost) as box:
        settings = make_settings(database_url, box.port, only_localhost.ca_file)
        result = await SmtpNotifier(settings).send(SCHOOL_MAILBOX, _mail())  # via 127.0.0.1
        assert box.messages() == []
    assert result.outcome == "transient" and "not trusted" in result.detail


async def test_system_trust_store_does_not_trust_the_local_ca(
    database_url: str, mailbox: Mailbox
) -> None:
    result = await SmtpNotifier(make_settings(database_url, mailbox.port, None)).send(
        SCHOOL_MAILBOX, _mail()
    )
    assert result.outcome == "transient" and mailbox.messages() == []


async def test_connection_refused_is_transient(database_url: str, certs: CertPaths) -> None:
    result = await SmtpNotifier(make_settings(database_url, free_port(), certs.ca_file)).send(
        SCHOOL_MAILBOX, _mail()
    )
    assert result.outcome == "transient" and result.detail.startswith("connection failed")


def _authenticator(accept: bool) -> Callable[..., AuthResult]:
    def authenticate(
        server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        ok = (
            accept
            and isinstance(auth_data, LoginPassword)
            and auth_data.login == USERNAME.encode()
            and auth_data.password == PASSWORD.encode()
        )
        return AuthResult(success=ok, handled=False)

    return authenticate


async def test_credentials_are_used_only_over_tls_and_accepted(
    database_url: str,
    certs: CertPaths,
    scripted_mailbox: Callable[..., tuple[Mailbox, ScriptedHandler]],
) -> None:
    box, _ = scripted_mailbox(authenticator=_authenticator(True), auth_required=True)
    settings = make_settings(
        database_url, box.port, certs.ca_file, smtp_username=USERNAME, smtp_password=PASSWORD
    )
    result = await SmtpNotifier(settings).send(SCHOOL_MAILBOX, _mail())
    assert result.outcome == "sent"
    assert len(box.messages()) == 1


# A webhook URL can carry secrets in its path and query; none of it may reach a log or a row.
HOOK_PATH_SECRET = "b7Kq2ZtX9pLmW4"
HOOK_TOKEN = "tok-5f1c9e2a77d3"


@pytest.fixture
def production_library_levels() -> Iterator[None]:
    """The library log levels the alerter's configure_logging sets (httpx logs URLs at INFO)."""
    saved = {name: logging.getLogger(name).level for name in LIBRARY_LEVELS}
    quiet_libraries()
    yield
    for name, level in saved.items():
        logging.getLogger(name).setLevel(level)


@pytest.mark.parametrize(
    ("accept_login", "rcpt_script", "smtp_outcome"),
    [
        (False, [], "transient"),  # 535: our configuration, kept for a retry
        (True, ["550 5.1.1 <{address}>: unknown user"], "permanent"),
        (True, ["451 4.1.1 <{address}> greylisted, password " + PASSWORD], "transient"),
    ],
)
@pytest.mark.usefixtures("production_library_levels")
async def test_no_secret_address_or_url_in_details_or_logs(
    clean_db: AsyncEngine,
    sessionmaker: async_sessionmaker[AsyncSession],
    database_url: str,
    certs: CertPaths,
    scripted_mailbox: Callable[..., tuple[Mailbox, ScriptedHandler]],
    caplog: pytest.LogCaptureFixture,
    accept_login: bool,
    rcpt_script: list[str],
    smtp_outcome: str,
) -> None:
    """An SMTP failure and a webhook failure in the same delivery round; the webhook answers
    500 with a reason phrase that quotes its token and the signing secret."""
    box, _ = scripted_mailbox(
        rcpt_script, authenticator=_authenticator(accept_login), auth_required=True
    )
    settings = make_settings(
        database_url,
        box.port,
        certs.ca_file,
        smtp_username=USERNAME,
        smtp_password=PASSWORD,
        max_attempts=1,
    )
    await seed_school(clean_db)
    caplog.set_level(logging.DEBUG)

    with WebhookReceiver(certs) as receiver:
        hook_url = receiver.url(f"/hooks/{HOOK_PATH_SECRET}/notify?token={HOOK_TOKEN}&v=1")
        await seed_webhook(clean_db, hook_url)
        receiver.script = [Reply(500, reason=f"Broken token={HOOK_TOKEN} {WEBHOOK_SECRET}")]
        with structlog.testing.capture_logs() as logs:
            await record(sessionmaker, settings, concern_event())
            notices = await deliver_until(sessionmaker, settings, settled)
        assert len(receiver.requests) == 1

    attempts = {a.notice_id: a for a in await all_attempts(sessionmaker)}
    by_channel = {n.channel: (n, attempts[n.id]) for n in notices}
    assert by_channel["smtp"][1].outcome == smtp_outcome
    assert (by_channel["webhook"][1].outcome, by_channel["webhook"][1].http_status) == (
        "transient",
        500,
    )
    assert {n.status for n in notices} == {"failed"}
    assert sum(entry["event"] == "delivery_attempt" for entry in logs) == 2
    app_records = [r for r in caplog.records if not r.name.startswith("mail.log")]
    haystacks = {
        "details": "\n".join(a.detail for a in attempts.values()),
        "last_errors": "\n".join(n.last_error or "" for n in notices),
        "structlog": repr(logs),
        "stdlib": "\n".join(r.getMessage() for r in app_records),
    }
    assert haystacks["structlog"] != "[]"
    _assert_clean(*haystacks.values())
    for text_ in haystacks.values():
        for secret in (
            WEBHOOK_SECRET,
            WEBHOOK_SECRET.removeprefix("whsec_"),
            hook_url,
            hook_url.split("://", 1)[1],  # host, path and query
            HOOK_PATH_SECRET,
            HOOK_TOKEN,
        ):
            assert secret.lower() not in text_.lower(), secret
    assert all("@" not in a.detail for a in attempts.values())
    assert box.messages() == []


def test_settings_never_show_the_password() -> None:
    settings = make_settings(
        "postgresql+asyncpg://x@127.0.0.1/x",
        25,
        None,
        smtp_username=USERNAME,
        smtp_password=PASSWORD,
    )
    assert PASSWORD not in repr(settings) and PASSWORD not in str(settings.model_dump())


def test_classification() -> None:
    import aiosmtplib

    scrub = Scrubber((PASSWORD, SCHOOL_MAILBOX))

    def c(exc: BaseException) -> tuple[str, int | None]:
        result: DeliveryResult = classify(exc, scrub)
        assert SCHOOL_MAILBOX not in result.detail and PASSWORD not in result.detail
        return result.outcome, result.smtp_code

    refused = aiosmtplib.SMTPRecipientRefused(550, f"<{SCHOOL_MAILBOX}> no", SCHOOL_MAILBOX)
    greylisted = aiosmtplib.SMTPRecipientRefused(450, "later", SCHOOL_MAILBOX)
    assert c(aiosmtplib.SMTPRecipientsRefused([refused])) == ("permanent", 550)
    assert c(aiosmtplib.SMTPRecipientsRefused([greylisted])) == ("transient", 450)
    assert c(aiosmtplib.SMTPDataError(554, "rejected")) == ("permanent", 554)
    assert c(aiosmtplib.SMTPDataError(452, "full")) == ("transient", 452)
    assert c(aiosmtplib.SMTPSenderRefused(553, "no", SENDER)) == ("permanent", 553)
    assert c(aiosmtplib.SMTPConnectResponseError(421, "busy")) == ("transient", 421)
    assert c(aiosmtplib.SMTPAuthenticationError(535, PASSWORD)) == ("transient", 535)
    assert c(aiosmtplib.SMTPServerDisconnected("gone")) == ("transient", None)
    assert c(aiosmtplib.SMTPConnectTimeoutError("slow")) == ("transient", None)
    assert c(aiosmtplib.SMTPReadTimeoutError("slow")) == ("transient", None)
    assert c(TimeoutError()) == ("transient", None)
    assert c(ConnectionRefusedError(111, "refused")) == ("transient", None)
    assert c(ssl.SSLError(1, "handshake")) == ("transient", None)
    assert c(aiosmtplib.SMTPException("SMTP STARTTLS extension not supported by server.")) == (
        "transient",
        None,
    )
    assert c(aiosmtplib.SMTPNotSupported("SMTPUTF8 is not supported")) == ("permanent", None)
    assert c(ValueError(f"bad {SCHOOL_MAILBOX}")) == ("permanent", None)
    assert c(RuntimeError(PASSWORD)) == ("transient", None)


def test_scrubber_removes_addresses_and_secrets() -> None:
    scrub = Scrubber(("s3cret",))
    out = scrub("550 <a.b+c@x.example>: no S3CRET   here\r\n more")
    assert out == "550 <[address]>: no [redacted] here more"


def test_bad_sender_is_refused_by_settings(database_url: str) -> None:
    with pytest.raises(ValueError, match="smtp_from"):
        make_settings(database_url, 25, None, smtp_from="not an address")


def test_settings_type(database_url: str) -> None:
    assert isinstance(make_settings(database_url, 25, None), AlerterSettings)
