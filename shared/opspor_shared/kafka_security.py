"""How every Kafka client (producer, consumer, admin, readiness probe) authenticates: TLS with
a CA and optionally a client certificate, and SASL PLAIN or SCRAM. Managed Kafka services
require one or both; see deploy/README.md, "Kafka over TLS and SASL"."""

from __future__ import annotations

import ssl
from typing import Any

from aiokafka.helpers import create_ssl_context

from opspor_shared.settings import ServiceSettings


def ssl_context(settings: ServiceSettings) -> ssl.SSLContext:
    # No CA file: the system trust store (Confluent Cloud, MSK and Aiven's public CAs are in it).
    context: ssl.SSLContext = create_ssl_context(
        cafile=str(settings.kafka_ssl_ca_file) if settings.kafka_ssl_ca_file else None,
        certfile=str(settings.kafka_ssl_cert_file) if settings.kafka_ssl_cert_file else None,
        keyfile=str(settings.kafka_ssl_key_file) if settings.kafka_ssl_key_file else None,
        password=(
            settings.kafka_ssl_key_password.get_secret_value()
            if settings.kafka_ssl_key_password
            else None
        ),
    )
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def client_kwargs(settings: ServiceSettings) -> dict[str, Any]:
    """Keyword arguments for any aiokafka client, from the KAFKA_* settings."""
    protocol = settings.kafka_security_protocol
    kwargs: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap_servers,
        "security_protocol": protocol,
    }
    if protocol in ("SSL", "SASL_SSL"):
        kwargs["ssl_context"] = ssl_context(settings)
    if protocol.startswith("SASL_"):
        assert settings.kafka_sasl_password is not None  # the settings refuse it otherwise
        kwargs |= {
            "sasl_mechanism": settings.kafka_sasl_mechanism,
            "sasl_plain_username": settings.kafka_sasl_username,
            "sasl_plain_password": settings.kafka_sasl_password.get_secret_value(),
        }
    return kwargs
