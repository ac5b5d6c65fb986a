"""The notifier contract shared by every channel (alertmanager's `notify.Notifier`).

A notifier never raises for a delivery outcome: it answers with a `DeliveryResult` that says
whether the notice went out, or whether a failure is worth retrying. Server replies and library
messages can echo recipient addresses, URLs or credentials, so every detail passes through a
`Scrubber` before it reaches a log line or the delivery_attempts table.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from opspor_alerter.models import Notice

Outcome = Literal["sent", "transient", "permanent"]
Channel = Literal["smtp", "webhook"]

_ADDRESS = re.compile(r"[^\s<>@:;,\"'()\[\]]+@[^\s<>@:;,\"'()\[\]]+")
_DETAIL_LIMIT = 300


@dataclass(frozen=True)
class DeliveryResult:
    outcome: Outcome
    smtp_code: int | None
    detail: str
    http_status: int | None = None
    # Seconds the receiver asked us to wait (HTTP Retry-After); the delivery loop caps it.
    retry_after: float | None = None

    @property
    def retryable(self) -> bool:
        return self.outcome == "transient"


class Notifier(Protocol):
    # `together`: other notices that go out in the same message (a mail group), if the channel
    # groups; a channel that does not is never handed any.
    async def notify(self, notice: Notice, together: Sequence[Notice] = ()) -> DeliveryResult: ...


@dataclass(frozen=True)
class Scrubber:
    """Removes the given secrets and anything shaped like an address from a text."""

    secrets: tuple[str, ...] = field(default=())

    def __call__(self, text: str) -> str:
        for secret in sorted(filter(None, self.secrets), key=len, reverse=True):
            text = re.sub(re.escape(secret), "[redacted]", text, flags=re.IGNORECASE)
        text = _ADDRESS.sub("[address]", text)
        text = " ".join(text.split())
        return text[:_DETAIL_LIMIT]


class ByChannel:
    """One notifier for the delivery loop that hands each notice to its channel's notifier."""

    def __init__(self, notifiers: Mapping[str, Notifier]) -> None:
        self._notifiers = dict(notifiers)

    async def notify(self, notice: Notice, together: Sequence[Notice] = ()) -> DeliveryResult:
        notifier = self._notifiers.get(notice.channel)
        if notifier is None:
            return DeliveryResult("permanent", None, f"no notifier for channel {notice.channel!r}")
        return await notifier.notify(notice, together)
