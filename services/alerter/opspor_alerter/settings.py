"""Alerter settings, read from the environment (SMTP_HOST, SMTP_PORT, ...).

There is deliberately no setting that turns TLS off: every SMTP session upgrades with STARTTLS
and verifies the relay's certificate and host name, every webhook goes over verified HTTPS, or
nothing is sent.
"""

from __future__ import annotations

from email.headerregistry import Address
from pathlib import Path
from typing import Self
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator

from opspor_shared.settings import ServiceSettings

# One send (connect, EHLO, STARTTLS, EHLO, AUTH, MAIL, RCPT, DATA; or connect, TLS, request,
# response) must finish within this many timeouts of its channel; the lease on a claimed notice
# must outlast it, or a second loop could resend.
SEND_DEADLINE_TIMEOUTS = 3
_LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1"}


class AlerterSettings(ServiceSettings):
    smtp_host: str = Field(min_length=1, description="The secure-mail relay")
    smtp_port: int = Field(ge=1, le=65535)
    smtp_from: str = Field(description="Envelope and header sender address")
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_ca_file: Path | None = Field(
        default=None, description="PEM bundle to verify the relay; None uses the system store"
    )
    smtp_timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    webhook_ca_file: Path | None = Field(
        default=None,
        description="PEM bundle trusted for webhook endpoints in addition to the system store",
    )
    webhook_timeout_seconds: float = Field(
        default=10.0, gt=0, le=300, description="Per connect, TLS handshake, write and read"
    )
    message_id_domain: str = "opspor.invalid"
    notice_link_base: str | None = Field(
        default=None, description="If set, notices link to {base}/v1/concerns/{concern_id}"
    )
    web_base_url: str | None = Field(
        default=None,
        description=(
            "The resource team's web page; if set, mail links {base}/ui/concerns/{concern_id} "
            "(and {base}/ui/cases/{case_id} in reminders), else says where to look in Opspor"
        ),
    )
    cases_topic: str = Field(default="absence.cases.v1", min_length=1)
    notice_settle_seconds: float = Field(
        default=900.0,
        ge=0,
        le=86_400,
        description="A mail notice's first attempt waits this long, so a concern raised and "
        "withdrawn again by the morning's late registrations and corrections mails nobody "
        "(DOMAIN.md s.6). Webhooks and the events on Kafka stay immediate. 0: send at once.",
    )
    retry_base_seconds: float = Field(default=5.0, gt=0)
    retry_max_seconds: float = Field(default=3600.0, gt=0)
    max_attempts: int = Field(default=10, ge=1, le=100)
    delivery_poll_seconds: float = Field(default=0.1, gt=0, le=60)
    lease_seconds: float = Field(default=120.0, gt=0)
    delivery_concurrency: int = Field(default=8, ge=1, le=256)
    consumer_group: str = Field(default="opspor-alerter", min_length=1)

    @field_validator("smtp_host")
    @classmethod
    def _plain_host(cls, value: str) -> str:
        if "://" in value or "/" in value or any(c.isspace() for c in value):
            raise ValueError("smtp_host must be a host name or IP address, not a URL")
        return value

    @field_validator("smtp_from")
    @classmethod
    def _sender_address(cls, value: str) -> str:
        if not is_plain_address(value):
            raise ValueError("smtp_from must be a plain address such as alerts@example.org")
        return value

    @field_validator("smtp_ca_file", "webhook_ca_file")
    @classmethod
    def _ca_file_exists(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"{info.field_name} does not exist or is not a file")
        return value

    @field_validator("message_id_domain")
    @classmethod
    def _domain(cls, value: str) -> str:
        labels = value.split(".")
        if (
            not value
            or len(value) > 253
            or not all(
                label and len(label) <= 63 and label.replace("-", "").isalnum() and label.isascii()
                for label in labels
            )
        ):
            raise ValueError("message_id_domain must be a DNS name such as opspor.example.org")
        return value

    @field_validator("notice_link_base", "web_base_url")
    @classmethod
    def _link_base(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None or value == "":
            return None
        parts = urlsplit(value)
        local = parts.hostname in _LOCAL_HOSTS
        if parts.scheme != "https" and not (parts.scheme == "http" and local):
            raise ValueError(f"{info.field_name} must be an https:// URL (http only for localhost)")
        if not parts.hostname or parts.query or parts.fragment or parts.username:
            raise ValueError(
                f"{info.field_name} must be a plain base URL without query or userinfo"
            )
        return value.rstrip("/")

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if (self.smtp_username is None) != (self.smtp_password is None):
            raise ValueError("smtp_username and smtp_password must be set together")
        if self.smtp_password is not None and not self.smtp_password.get_secret_value():
            raise ValueError("smtp_password must not be empty")
        if self.retry_max_seconds < self.retry_base_seconds:
            raise ValueError("retry_max_seconds must be at least retry_base_seconds")
        if self.lease_seconds < 2 * max(self.send_deadline_seconds, self.webhook_deadline_seconds):
            raise ValueError(
                f"lease_seconds must be at least {2 * SEND_DEADLINE_TIMEOUTS} x "
                "smtp_timeout_seconds and webhook_timeout_seconds, or a slow send is repeated"
            )
        return self

    @property
    def send_deadline_seconds(self) -> float:
        return self.smtp_timeout_seconds * SEND_DEADLINE_TIMEOUTS

    @property
    def webhook_deadline_seconds(self) -> float:
        return self.webhook_timeout_seconds * SEND_DEADLINE_TIMEOUTS


def is_plain_address(value: str) -> bool:
    """A bare local@domain address with nothing an SMTP command line could misread."""
    if not value.isascii() or any(c.isspace() or c in '<>,;"()[]\\' for c in value):
        return False
    local, at, domain = value.rpartition("@")
    if not at or not local or not domain or "." not in domain.strip("."):
        return False
    try:
        Address(username=local, domain=domain)
    except (ValueError, TypeError):
        return False
    return True
