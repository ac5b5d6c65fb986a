"""Deliver stage for secure mail: SMTP with STARTTLS required and the relay's certificate verified.

Follows the notifier contract of opspor_alerter.notify. Server replies and library messages can
echo the recipient address, so every detail passes through a `Scrubber`.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Sequence
from contextlib import suppress
from email.message import EmailMessage

import aiosmtplib
from aiosmtplib import (
    SMTPAuthenticationError,
    SMTPConnectError,
    SMTPException,
    SMTPNotSupported,
    SMTPRecipientsRefused,
    SMTPResponseException,
    SMTPServerDisconnected,
    SMTPTimeoutError,
)
from pydantic import ValidationError

from opspor_alerter.models import Notice
from opspor_alerter.notify import DeliveryResult, Scrubber
from opspor_alerter.reminders import REMINDER, ReminderContent, build_reminder_email
from opspor_alerter.render import NoticeContent, build_digest_email, build_email, mail_kind
from opspor_alerter.settings import AlerterSettings, is_plain_address


def client_tls_context(settings: AlerterSettings) -> ssl.SSLContext:
    """Verifies the chain (against smtp_ca_file, or the system store) and the host name."""
    cafile = str(settings.smtp_ca_file) if settings.smtp_ca_file else None
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cafile)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def _by_code(code: int, what: str, scrub: Scrubber, message: str) -> DeliveryResult:
    text = scrub(f"{what}: {code} {message}")
    if 400 <= code < 500:
        return DeliveryResult("transient", code, text)
    if 500 <= code < 600:
        return DeliveryResult("permanent", code, text)
    return DeliveryResult("transient", code, text)


def classify(exc: BaseException, scrub: Scrubber) -> DeliveryResult:
    """Transient: connection trouble, timeouts, 4xx, no STARTTLS offered, TLS failures.
    Permanent: 5xx and addresses that cannot be sent."""
    if isinstance(exc, SMTPRecipientsRefused):
        first = exc.recipients[0] if exc.recipients else None
        if first is None:
            return DeliveryResult("transient", None, "recipient refused")
        return _by_code(first.code, "recipient refused", scrub, first.message)
    if isinstance(exc, SMTPAuthenticationError):
        # Wrong credentials are our configuration, not the notice's fault: keep it for a retry.
        return DeliveryResult("transient", exc.code, scrub(f"authentication refused: {exc.code}"))
    if isinstance(exc, SMTPResponseException):
        what = {
            "SMTPSenderRefused": "sender refused",
            "SMTPRecipientRefused": "recipient refused",
            "SMTPDataError": "message refused",
            "SMTPHeloError": "greeting refused",
            "SMTPConnectResponseError": "connection refused by relay",
        }.get(type(exc).__name__, "relay refused")
        return _by_code(exc.code, what, scrub, exc.message)
    if isinstance(exc, ssl.SSLCertVerificationError):
        reason = getattr(exc, "verify_message", None) or "unknown reason"
        return DeliveryResult("transient", None, scrub(f"TLS certificate not trusted: {reason}"))
    if isinstance(exc, ssl.SSLError):
        reason = getattr(exc, "reason", None) or type(exc).__name__
        return DeliveryResult("transient", None, scrub(f"TLS handshake failed: {reason}"))
    if isinstance(exc, SMTPTimeoutError | TimeoutError):
        return DeliveryResult("transient", None, "timed out")
    if isinstance(exc, SMTPConnectError | SMTPServerDisconnected | ConnectionError):
        return DeliveryResult("transient", None, scrub(f"connection failed: {exc}"))
    if isinstance(exc, SMTPNotSupported):
        return DeliveryResult("permanent", None, scrub(f"not supported by relay: {exc}"))
    if isinstance(exc, SMTPException):
        if "STARTTLS" in str(exc):
            return DeliveryResult("transient", None, "relay does not offer STARTTLS")
        return DeliveryResult("transient", None, scrub(f"SMTP error: {exc}"))
    if isinstance(exc, OSError):
        return DeliveryResult("transient", None, scrub(f"connection failed: {exc}"))
    if isinstance(exc, ValueError):
        return DeliveryResult("permanent", None, "bad recipient address")
    return DeliveryResult("transient", None, f"unexpected error: {type(exc).__name__}")


def _content(notice: Notice) -> NoticeContent:
    return NoticeContent.model_validate(notice.payload)


class SmtpNotifier:
    def __init__(self, settings: AlerterSettings) -> None:
        self._settings = settings
        self._tls = client_tls_context(settings)
        self._local_hostname: str | None = None
        password = settings.smtp_password.get_secret_value() if settings.smtp_password else None
        self._secrets = tuple(s for s in (password, settings.smtp_username) if s)

    def scrubber(self, recipient: str) -> Scrubber:
        return Scrubber((*self._secrets, recipient))

    async def notify(self, notice: Notice, together: Sequence[Notice] = ()) -> DeliveryResult:
        try:
            mail = self._build(notice, together)
        except (ValidationError, ValueError, TypeError) as exc:
            # The message header constructor rejects malformed addresses with ValueError.
            detail = f"notice cannot be rendered: {type(exc).__name__}"
            return DeliveryResult("permanent", None, detail)
        return await self.send(notice.recipient, mail)

    def _build(self, notice: Notice, together: Sequence[Notice]) -> EmailMessage:
        if notice.kind == REMINDER:
            return build_reminder_email(
                content=ReminderContent.model_validate(notice.payload),
                language=notice.language,
                role=notice.recipient_role,
                sender=self._settings.smtp_from,
                recipient=notice.recipient,
                message_id=notice.message_id,
                created_at=notice.created_at,
                web_base_url=self._settings.web_base_url,
            )
        if notice.group_key is not None and mail_kind(notice.group_key, notice.kind) == "digest":
            # A digest carries raises and withdrawals of many concerns (render.render_digest).
            return build_digest_email(
                items=[
                    ("withdrawn" if n.kind == "withdrawn" else "raised", _content(n))
                    for n in (notice, *together)
                ],
                group=notice.group_key,
                language=notice.language,
                sender=self._settings.smtp_from,
                recipient=notice.recipient,
                message_id=notice.message_id,
                link_base=self._settings.web_base_url,
            )
        return build_email(
            kind="withdrawn" if notice.kind == "withdrawn" else "raised",
            content=[_content(n) for n in (notice, *together)],
            language=notice.language,
            sender=self._settings.smtp_from,
            recipient=notice.recipient,
            message_id=notice.message_id,
            created_at=notice.created_at,
            link_base=self._settings.web_base_url,
        )

    async def send(self, recipient: str, message: EmailMessage) -> DeliveryResult:
        scrub = self.scrubber(recipient)
        if not is_plain_address(recipient):
            return DeliveryResult("permanent", None, "bad recipient address")
        s = self._settings
        if self._local_hostname is None:
            self._local_hostname = await asyncio.to_thread(socket.getfqdn)
        client = aiosmtplib.SMTP(
            hostname=s.smtp_host,
            port=s.smtp_port,
            start_tls=True,  # upgrade or fail: there is no plaintext path
            tls_context=self._tls,
            timeout=s.smtp_timeout_seconds,
            local_hostname=self._local_hostname,
            username=s.smtp_username,
            password=s.smtp_password.get_secret_value() if s.smtp_password else None,
        )
        accepted: str | None = None
        try:
            async with asyncio.timeout(s.send_deadline_seconds):
                await client.connect()
                _refused, reply = await client.send_message(
                    message, sender=s.smtp_from, recipients=[recipient]
                )
                accepted = reply
                with suppress(SMTPException, OSError):
                    await client.quit()
        except Exception as exc:
            if accepted is None:
                return classify(exc, scrub)
        finally:
            client.close()
        return DeliveryResult("sent", 250, scrub(f"accepted: {accepted}"))
