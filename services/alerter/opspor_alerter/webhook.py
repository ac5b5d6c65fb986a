"""Deliver stage for HTTPS webhooks signed per Standard Webhooks (www.standardwebhooks.com).

Each POST carries `webhook-id` (the notice's stable id, so a receiver can drop a retry it has
already processed), `webhook-timestamp` (seconds since the epoch, at sending) and
`webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`. The endpoint's URL and
secret are read when the notice is sent, never stored with it: a URL can carry a token, and a
rotated secret applies to retries at once.

Classification (alertmanager style): 2xx delivered; connection errors, timeouts, TLS failures,
408, 429 and 5xx retryable (Retry-After honoured); 3xx (redirects are not followed) and every
other 4xx permanent. TLS failures are retryable because nothing has been sent when verification
fails, and their usual causes (an expired or renewed certificate, a missing intermediate) are
fixed at the receiver within the retry window; after MAX_ATTEMPTS the notice fails all the same.
"""

from __future__ import annotations

import asyncio
import json
import math
import ssl
import uuid
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
from httpx_secure import SSRFProtectionError, httpx_ssrf_protection
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from standardwebhooks import Webhook
from standardwebhooks.webhooks import EmptyWebhookSecretError

from opspor_alerter.models import Notice
from opspor_alerter.notify import DeliveryResult, Scrubber
from opspor_alerter.render import NoticeContent
from opspor_alerter.routing import parse_webhook_recipient
from opspor_alerter.settings import AlerterSettings
from opspor_shared.logging import get_logger
from opspor_shared.netguard import IPAddress, address_allowed
from opspor_shared.reference import ReferenceRepository, WebhookRef
from opspor_shared.secretbox import SecretUnreadable

log = get_logger(__name__)

EVENT_TYPES = {"raised": "concern.raised", "withdrawn": "concern.withdrawn"}
USER_AGENT = "Opspor-Webhooks/1"
_MESSAGE_ID_NAMESPACE = uuid.UUID("0b3c7d0e-5a55-4c8e-9a43-8f7f6a1c2d90")
# Scrubbing a one- or two-letter path or query value would shred every detail text.
_MIN_SCRUB_LENGTH = 4


def webhook_message_id(concern_id: str, recipient: str, kind: str, revision: int) -> str:
    """The same notice always gets the same webhook-id, so a retry is recognisably a retry."""
    name = f"{concern_id}|{recipient}|{kind}|{revision}"
    return f"msg_{uuid.uuid5(_MESSAGE_ID_NAMESPACE, name).hex}"


def payload(notice: Notice, content: NoticeContent, link_base: str | None) -> str:
    """The body: the minimum a mail carries (no categories, no extents), as compact JSON."""
    data: dict[str, Any] = {
        "concern_id": content.concern_id,
        "revision": notice.revision,
        "pupil_id": content.pupil_id,
        "school_id": content.school_id,
        "level": content.level,
        "pack_id": content.pack_id,
        "rule_id": content.rule_id,
        "rule_version": content.rule_version,
        "rule": content.rule,
        "crossing_date": content.crossing_date.isoformat(),
        "window_first": content.window_first.isoformat(),
        "window_last": content.window_last.isoformat(),
        # For integrations: the API resource (NOTICE_LINK_BASE), not the web page mails link to.
        "link": f"{link_base}/v1/concerns/{content.concern_id}" if link_base else None,
    }
    if notice.kind == "withdrawn":
        data["withdraws"] = content.replaces_message_id
    document = {
        "type": EVENT_TYPES[notice.kind],
        # The notice's creation time: a retry carries the same body.
        "timestamp": notice.created_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "data": data,
    }
    return json.dumps(document, separators=(",", ":"), sort_keys=True)


def webhook_tls_context(settings: AlerterSettings) -> ssl.SSLContext:
    """The system store plus webhook_ca_file; chain and host name are always verified."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if settings.webhook_ca_file is not None:
        context.load_verify_locations(cafile=str(settings.webhook_ca_file))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def make_http_client(settings: AlerterSettings) -> httpx.AsyncClient:
    """Built in main() and closed at shutdown. trust_env=False: no proxy, netrc or CA bundle
    from the environment can change where a notice goes or which certificates are trusted.

    Every new connection goes only to an address that is globally reachable or inside
    WEBHOOK_ALLOWED_NETWORKS: httpx-secure resolves the host, checks the address and connects to
    that very address, so DNS cannot send a stored URL to loopback or the private network."""
    client = httpx.AsyncClient(
        verify=webhook_tls_context(settings),
        timeout=httpx.Timeout(settings.webhook_timeout_seconds),
        follow_redirects=False,
        trust_env=False,
        limits=httpx.Limits(max_connections=settings.delivery_concurrency),
        headers={"user-agent": USER_AGENT},
    )
    allowed = tuple(settings.webhook_allowed_networks)

    def permitted(hostname: str, address: IPAddress, port: int) -> bool:
        return address_allowed(address, allowed)

    # The library's own check would refuse the allow-listed networks, so ours replaces it.
    return httpx_ssrf_protection(
        client, check_globally_reachable=False, custom_validator=permitted, dns_cache_ttl=60
    )


def scrubber_for(endpoint: WebhookRef, secret: str) -> Scrubber:
    parts = urlsplit(endpoint.url)
    pieces = [
        endpoint.url,
        secret,
        secret.removeprefix("whsec_"),
        parts.netloc,
        parts.hostname or "",
        parts.path,
        parts.query,
        *(v for _, v in parse_qsl(parts.query, keep_blank_values=True)),
        *parts.path.split("/"),
    ]
    return Scrubber(tuple(p for p in pieces if len(p) >= _MIN_SCRUB_LENGTH))


def retry_after_seconds(value: str | None, now: datetime) -> float | None:
    """Retry-After as delta-seconds or an HTTP date; None when absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, (when - now).total_seconds())


def classify_response(status: int, headers: Mapping[str, str], now: datetime) -> DeliveryResult:
    # Only the status: a reason phrase or body is the receiver's text and may quote anything.
    if 200 <= status < 300:
        return DeliveryResult("sent", None, f"accepted: HTTP {status}", http_status=status)
    if status in (408, 429) or 500 <= status < 600:
        wait = retry_after_seconds(headers.get("retry-after"), now)
        return DeliveryResult(
            "transient", None, f"HTTP {status}", http_status=status, retry_after=wait
        )
    if 300 <= status < 400:
        return DeliveryResult(
            "permanent", None, f"redirect not followed: HTTP {status}", http_status=status
        )
    return DeliveryResult("permanent", None, f"refused: HTTP {status}", http_status=status)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def classify_error(exc: BaseException, scrub: Scrubber) -> DeliveryResult:
    if isinstance(exc, SSRFProtectionError):
        # Permanent: only an operator (WEBHOOK_ALLOWED_NETWORKS) or the endpoint's DNS can change
        # it. The text names neither the host nor the address.
        return DeliveryResult(
            "permanent", None, "refused: the endpoint resolves to a non-public address"
        )
    for cause in _chain(exc):
        if isinstance(cause, ssl.SSLCertVerificationError):
            reason = cause.verify_message or "unknown reason"
            return DeliveryResult(
                "transient", None, scrub(f"TLS certificate not trusted: {reason}")
            )
    for cause in _chain(exc):
        if isinstance(cause, ssl.SSLError):
            reason = cause.reason or type(cause).__name__
            return DeliveryResult("transient", None, scrub(f"TLS handshake failed: {reason}"))
    if isinstance(exc, httpx.TimeoutException | TimeoutError):
        return DeliveryResult("transient", None, "timed out")
    if isinstance(exc, httpx.UnsupportedProtocol | httpx.InvalidURL):
        return DeliveryResult("permanent", None, "webhook URL cannot be used")
    if isinstance(exc, httpx.TransportError | OSError):
        return DeliveryResult(
            "transient", None, scrub(f"connection failed: {type(exc).__name__}: {exc}")
        )
    return DeliveryResult("transient", None, f"unexpected error: {type(exc).__name__}")


class WebhookNotifier:
    def __init__(
        self,
        settings: AlerterSettings,
        sessionmaker: async_sessionmaker[AsyncSession],
        client: httpx.AsyncClient,
    ) -> None:
        self._settings = settings
        self._sessionmaker = sessionmaker
        self._client = client
        self._box = settings.secret_box()

    async def endpoint(self, recipient: str) -> WebhookRef | None:
        key = parse_webhook_recipient(recipient)
        if key is None:
            return None
        async with self._sessionmaker() as session:
            return await ReferenceRepository(session).webhook_endpoint(*key)

    async def notify(self, notice: Notice, together: Sequence[Notice] = ()) -> DeliveryResult:
        try:
            endpoint = await self.endpoint(notice.recipient)
        except Exception as exc:
            # Only the type: database errors can quote statement parameters.
            return DeliveryResult(
                "transient", None, f"endpoint lookup failed: {type(exc).__name__}"
            )
        if endpoint is None:
            return DeliveryResult("permanent", None, "webhook endpoint no longer configured")
        if not endpoint.enabled:
            return DeliveryResult("permanent", None, "webhook endpoint disabled")
        if urlsplit(endpoint.url).scheme.lower() != "https":
            return DeliveryResult("permanent", None, "webhook URL is not https")
        try:
            secret = self._box.open(endpoint.stored_secret)
        except SecretUnreadable as exc:
            # The operator's to mend (the key of a sealed secret left WEBHOOK_SECRET_KEYS), so
            # the notice waits for it, retried with the others.
            log.error("webhook_secret_unreadable", webhook=endpoint.id, reason=str(exc))
            return DeliveryResult("transient", None, f"webhook secret unreadable: {exc}")
        try:
            signer = Webhook(secret)
            content = NoticeContent.model_validate(notice.payload)
            body = payload(notice, content, self._settings.notice_link_base)
        except (
            ValidationError,
            ValueError,
            TypeError,
            KeyError,
            RuntimeError,
            EmptyWebhookSecretError,
        ) as exc:
            return DeliveryResult(
                "permanent", None, f"notice cannot be signed: {type(exc).__name__}"
            )
        return await self._post(endpoint, secret, notice.message_id, signer, body)

    async def _post(
        self, endpoint: WebhookRef, secret: str, webhook_id: str, signer: Webhook, body: str
    ) -> DeliveryResult:
        now = datetime.now(UTC)
        headers = {
            "content-type": "application/json",
            "webhook-id": webhook_id,
            "webhook-timestamp": str(math.floor(now.timestamp())),
            "webhook-signature": signer.sign(webhook_id, now, body),
        }
        try:
            async with (
                asyncio.timeout(self._settings.webhook_deadline_seconds),
                self._client.stream(
                    "POST", endpoint.url, content=body.encode(), headers=headers
                ) as response,
            ):
                # The body is never read: its size and content are the receiver's.
                return classify_response(response.status_code, response.headers, now)
        except Exception as exc:
            return classify_error(exc, scrubber_for(endpoint, secret))
