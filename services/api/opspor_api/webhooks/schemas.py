"""Webhook endpoint configuration. Validation messages are fixed texts: a problem document
never quotes the secret or the URL (its query string or path can carry a token)."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr, StringConstraints

from opspor_api.validation import Identifier

SECRET_PREFIX = "whsec_"  # noqa: S105 - the format's prefix, not a secret
# The Standard Webhooks specification asks for secrets of 24 to 64 random bytes.
SECRET_MIN_BYTES = 24
SECRET_MAX_BYTES = 64
MAX_URL_LENGTH = 2048


def secret_key(secret: str) -> bytes:
    """The key bytes of a whsec_ secret; ValueError (with a text free of the secret) if bad."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError("must start with whsec_ followed by base64 of 24 to 64 random bytes")
    encoded = secret.removeprefix(SECRET_PREFIX)
    try:
        # Padding is optional, as in the reference implementation (which appends "==").
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the part after whsec_ is not valid base64") from None
    if not SECRET_MIN_BYTES <= len(key) <= SECRET_MAX_BYTES:
        raise ValueError(
            f"must decode to {SECRET_MIN_BYTES} to {SECRET_MAX_BYTES} bytes; "
            'generate one with: python -c "import base64,os;'
            "print('whsec_'+base64.b64encode(os.urandom(32)).decode())\""
        )
    return key


def _secret(value: SecretStr) -> SecretStr:
    secret_key(value.get_secret_value())
    return value


def _https_url(value: str) -> str:
    if len(value) > MAX_URL_LENGTH:
        raise ValueError(f"must be at most {MAX_URL_LENGTH} characters")
    if not value.isascii() or any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError("must be ASCII without spaces (write international host names as xn--)")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError:
        raise ValueError("is not a valid URL") from None
    if parts.scheme.lower() != "https":
        raise ValueError("must be an https:// URL; notices are never sent over plain http")
    if not parts.hostname:
        raise ValueError("must name a host")
    if parts.username is not None or parts.password is not None:
        raise ValueError("must not carry user:password; the receiver verifies the signature")
    if parts.fragment:
        raise ValueError("must not have a #fragment")
    return value


# The bounds are also checked (with their own messages) by the validators; declaring them
# documents them in the OpenAPI schema.
WebhookUrl = Annotated[
    str, StringConstraints(max_length=MAX_URL_LENGTH), AfterValidator(_https_url)
]
WebhookSecret = Annotated[SecretStr, Field(max_length=200), AfterValidator(_secret)]


class WebhookIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: WebhookUrl = Field(
        description="HTTPS only; the certificate must verify. A token may go in the query string.",
        examples=["https://integration.aalborg.example/opspor/hooks?token=..."],
    )
    secret: WebhookSecret = Field(
        description="whsec_ followed by base64 of 24 to 64 random bytes; never returned",
        examples=["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"],
    )
    levels: list[Identifier] = Field(
        default_factory=list,
        max_length=50,
        description="Concern levels to send (e.g. concern, ppr-must); empty sends every level",
    )
    school_ids: list[Identifier] = Field(
        default_factory=list,
        max_length=1000,
        description="Only concerns of these schools (of this municipality); empty means all",
    )
    enabled: bool = True


class WebhookOut(BaseModel):
    id: str
    municipality_id: str
    url: str = Field(description="The URL without its query string, which can carry a token")
    url_query_redacted: bool = Field(description="True when the stored URL has a query string")
    secret_set: Literal[True] = True
    secret_fingerprint: str = Field(
        description=(
            "First 8 hex digits of SHA-256 of the key: tells secrets apart, reveals none; "
            "`unreadable` when no key in WEBHOOK_SECRET_KEYS opens the stored secret (PUT it "
            "again)"
        ),
        examples=["sha256:3f9a0c12"],
    )
    secret_encrypted: bool = Field(
        description="True when the secret is stored sealed with WEBHOOK_SECRET_KEYS"
    )
    levels: list[str]
    school_ids: list[str]
    enabled: bool
