"""Prometheus metrics of the alerter (served on /metrics). Labels never carry addresses or URLs.

`channel` is smtp or webhook."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

NOTICES_RECORDED = Counter(
    "opspor_alerter_notices_recorded_total",
    "Notices recorded for delivery",
    ["channel", "kind", "role"],
)
NOTICES_SENT = Counter(
    "opspor_alerter_notices_sent_total", "Notices delivered", ["channel", "kind"]
)
NOTICES_FAILED = Counter(
    "opspor_alerter_notices_failed_total",
    "Notices given up on",
    ["channel", "kind", "reason"],  # reason: permanent | max_attempts
)
NOTICES_CANCELLED = Counter(
    "opspor_alerter_notices_cancelled_total", "Pending notices cancelled by a withdrawal"
)
DELIVERY_ATTEMPTS = Counter(
    "opspor_alerter_delivery_attempts_total", "Delivery attempts", ["channel", "outcome"]
)
NOTICES_PENDING = Gauge("opspor_alerter_notices_pending", "Notices waiting to be delivered")
# failed is the alerter's dead letter: given up on, needs a person.
NOTICES = Gauge(
    "opspor_alerter_notices",
    "Notices held, by channel and status (pending, sent, failed, cancelled)",
    ["channel", "status"],
)
UNROUTABLE = Counter(
    "opspor_alerter_unroutable_total",
    "Recipients a concern's level routes to that could not be reached (no mailbox, or a "
    "webhook endpoint removed or disabled since the routing was stored)",
    ["role", "reason"],
)
EVENTS = Counter(
    "opspor_alerter_concern_events_total",
    "Concern events by result",
    ["result"],  # applied | stale | ignored | rejected | past_retention
)
DELIVERY_LOOP_ERRORS = Counter(
    "opspor_alerter_delivery_loop_errors_total", "Delivery rounds that failed and were retried"
)
RESENDS = Counter(
    "opspor_alerter_resends_total",
    "Notices sent again because the process stopped while sending them (possible duplicates)",
    ["channel"],
)
