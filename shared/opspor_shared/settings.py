"""Settings shared by the three services.

Each service subclasses `ServiceSettings`. Connection strings have no defaults: a service that
starts without knowing where its database or broker is must fail at once, not connect to a guess.
"""

from __future__ import annotations

import sys
from typing import Literal, TypeVar

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from opspor_shared.auth import IssuerConfig


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
    purge_interval_seconds: float = Field(default=21_600, ge=60)
    # Rows per delete statement (and per transaction), so a big purge never holds long locks.
    purge_chunk_rows: int = Field(default=10_000, ge=1, le=100_000)
    # JSON list of {issuer, audience, jwks_url | public_keys}. Required, like the database: there
    # is no setting that turns authentication off.
    auth_issuers: list[IssuerConfig] = Field(min_length=1)
    auth_leeway_seconds: float = Field(default=30.0, ge=0, le=300)
    auth_jwks_timeout_seconds: float = Field(default=5.0, gt=0, le=60)

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
