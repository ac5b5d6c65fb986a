"""Registrations accepted and refused, for the operator's dashboard."""

from __future__ import annotations

from prometheus_client import Counter

ACCEPTED = Counter(
    "opspor_registrations_accepted_total",
    "Registrations and retractions accepted, stored now or already stored (duplicate)",
    ["result"],
)
REFUSED = Counter(
    "opspor_registrations_refused_total",
    "Problems found in refused registration requests (one per bad field), by reason",
    ["reason"],
)
