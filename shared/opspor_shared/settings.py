"""Settings shared by the three services.

Each service subclasses `ServiceSettings`. Connection strings have no defaults: a service that
starts without knowing where its database or broker is must fail at once, not connect to a guess.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Literal, TypeVar

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from opspor_shared.auth import IssuerConfig
from opspor_shared.netguard import AllowedNetworks
from opspor_shared.secretbox import SecretBox, key_list, keys_problem


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_file=None, extra="ignore", frozen=True)

    database_url: str = Field(description="SQLAlchemy URL, postgresql+asyncpg://...")
    kafka_bootstrap_servers: str = Field(description="host:port[,host:port]")
    # On for Apache Kafka; the embedded Tansu broker does not support InitProducerId.
    kafka_enable_idempotence: bool = True
    kafka_client_id_prefix: str = "opspor"
    # Tansu answers a group join after about half the session timeout, so the embedded stack
    # uses 2 s; keep Apache Kafka's usual 10 s in production (its minimum is 6 s).
    kafka_session_timeout_ms: int = Field(default=10_000, ge=1_000)
    registrations_topic: str = "absence.registrations.v1"
    concerns_topic: str = "absence.concerns.v1"
    topic_partitions: int = Field(default=6, ge=1)
    # How often consumers check their topic for lost data and relays re-ensure their topics.
    topic_check_seconds: float = Field(default=10.0, ge=0.5, le=3600)
    # TLS and SASL of every Kafka client (opspor_shared.kafka_security; deploy/README.md).
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_ssl_ca_file: Path | None = None
    kafka_ssl_cert_file: Path | None = None
    kafka_ssl_key_file: Path | None = None
    kafka_ssl_key_password: SecretStr | None = None
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    # How often each consumer measures its lag and its dead-letter topic (metrics only).
    kafka_lag_interval_seconds: float = Field(default=15.0, gt=0)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    ops_host: str = "127.0.0.1"
    ops_port: int = Field(default=0, ge=0, le=65535)
    # Used only when a service creates a missing topic; deploy/ creates them with the same value.
    topic_retention_ms: int = Field(default=30 * 24 * 3600 * 1000, ge=3600 * 1000)

    # Retention (README "Retention"). Every service reads the same values, so each purges its
    # own copy of the data by the same rules. 400 days at least: the settle date is a year
    # after the cutoff, and a crossing needs its whole window inside the retained days.
    retention_registration_days: int = Field(default=1095, ge=400, le=36_500)
    retention_closed_concern_days: int = Field(default=365, ge=0, le=36_500)
    # A closed case (with its entries and free text) is kept this long after it closed. At least
    # as long as closed concerns are kept, so a replayed concern event never finds its case gone.
    retention_closed_case_days: int = Field(default=1095, ge=0, le=36_500)
    purge_interval_seconds: float = Field(default=21_600, ge=60)
    # Rows per delete statement (and per transaction), so a big purge never holds long locks.
    purge_chunk_rows: int = Field(default=10_000, ge=1, le=100_000)
    # JSON list of {issuer, audience, jwks_url | public_keys}. Required, like the database: there
    # is no setting that turns authentication off.
    auth_issuers: list[IssuerConfig] = Field(min_length=1)
    auth_leeway_seconds: float = Field(default=30.0, ge=0, le=300)
    auth_jwks_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    # Networks a webhook may point into although they are not globally reachable (loopback,
    # private, link-local): comma-separated CIDRs, empty by default. The api checks stored URLs
    # and the alerter the addresses it connects to against the same list (README "Webhooks").
    webhook_allowed_networks: AllowedNetworks = Field(default_factory=list)
    # Fernet keys that seal webhook secrets in the database (opspor_shared.secretbox),
    # comma-separated, the first one sealing; the api and the alerter need the same value.
    # Unset: secrets are stored as given (the api warns at start).
    webhook_secret_keys: SecretStr | None = None

    def secret_box(self) -> SecretBox:
        keys = self.webhook_secret_keys
        return SecretBox.of(keys.get_secret_value() if keys is not None else None)

    @field_validator("webhook_secret_keys")
    @classmethod
    def _fernet_keys(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and (problem := keys_problem(key_list(value.get_secret_value()))):
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _kafka_security(self) -> ServiceSettings:
        protocol = self.kafka_security_protocol
        tls = protocol in ("SSL", "SASL_SSL")
        sasl = protocol.startswith("SASL_")
        if (self.kafka_ssl_cert_file is None) != (self.kafka_ssl_key_file is None):
            raise ValueError("kafka_ssl_cert_file and kafka_ssl_key_file go together")
        if not tls and (self.kafka_ssl_ca_file or self.kafka_ssl_cert_file):
            raise ValueError(f"TLS files are set but kafka_security_protocol is {protocol}")
        for name in ("kafka_ssl_ca_file", "kafka_ssl_cert_file", "kafka_ssl_key_file"):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                raise ValueError(f"{name}: no file {path}")
        if sasl and not (
            self.kafka_sasl_mechanism and self.kafka_sasl_username and self.kafka_sasl_password
        ):
            raise ValueError(
                f"{protocol} needs kafka_sasl_mechanism, kafka_sasl_username, kafka_sasl_password"
            )
        if not sasl and (self.kafka_sasl_mechanism or self.kafka_sasl_username):
            raise ValueError(f"SASL settings are set but kafka_security_protocol is {protocol}")
        if protocol == "SASL_PLAINTEXT" and self.kafka_sasl_mechanism == "PLAIN":
            # PLAIN sends the password itself; without TLS anyone on the path reads it.
            raise ValueError("SASL PLAIN needs TLS: use SASL_SSL (or a SCRAM mechanism)")
        return self

    @field_validator("database_url")
    @classmethod
    def _async_driver(cls, value: str) -> str:
        if value.startswith("postgresql://") or value.startswith("postgres://"):
            value = "postgresql+asyncpg://" + value.split("://", 1)[1]
        if not value.startswith("postgresql+asyncpg://"):
            raise ValueError("database_url must be a PostgreSQL URL (postgresql+asyncpg://...)")
        return value


S = TypeVar("S", bound=BaseSettings)
EXIT_SETTINGS = 2


def settings_problem(command: str, exc: ValidationError) -> str:
    """One line naming what is missing or wrong in the environment, never the values (they can
    hold passwords)."""
    missing: list[str] = []
    invalid: list[str] = []
    for e in exc.errors(include_input=False, include_url=False, include_context=False):
        name = str(e["loc"][0]).upper() if e["loc"] else "(settings)"
        if e["type"] == "missing":
            missing.append(name)
        else:
            invalid.append(f"{name} ({e['msg'].removeprefix('Value error, ')})")
    parts = []
    if missing:
        parts.append("missing " + ", ".join(dict.fromkeys(missing)))
    if invalid:
        parts.append("invalid " + "; ".join(dict.fromkeys(invalid)))
    return (
        f"{command}: {'; '.join(parts)} in the environment "
        "(see the README's Settings; `make run` sets them all)"
    )


def load_settings(cls: type[S], command: str) -> S:
    """The command's settings from the environment, or one line on stderr and exit code 2."""
    try:
        return cls()
    except ValidationError as exc:
        sys.stderr.write(settings_problem(command, exc).replace("\n", " ") + "\n")
        raise SystemExit(EXIT_SETTINGS) from None
