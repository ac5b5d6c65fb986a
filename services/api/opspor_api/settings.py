from __future__ import annotations

from typing import Self

from pydantic import Field, model_validator

from opspor_shared.settings import ServiceSettings

LOCAL_HTTP = ("http://127.0.0.1", "http://localhost", "http://[::1]")


class ApiSettings(ServiceSettings):
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    max_batch_items: int = Field(default=5000, ge=1, le=5000)
    concern_consumer_group: str = "opspor-api-concerns"
    db_pool_size: int = Field(default=10, ge=1)
    # Per client (the token's azp/client_id, else its sub), per api process.
    rate_limit_per_second: float = Field(default=50.0, gt=0)
    rate_limit_burst: int = Field(default=200, ge=1)
    # Case events (README "Cases"); how often open cases are judged overdue.
    cases_topic: str = Field(default="absence.cases.v1", min_length=1)
    case_check_seconds: float = Field(default=60.0, gt=0)
    # How often the api recomputes opspor_school_silent_school_days (register completeness).
    completeness_interval_seconds: float = Field(default=300.0, gt=0)

    # The resource team's web page (/ui, README "Web page"). Sign-in through the municipality's
    # OpenID Connect provider; without OIDC_ISSUER the pages answer 503 and the API is unchanged.
    oidc_issuer: str | None = None
    oidc_client_id: str | None = None
    # Empty: a public client, protected by PKCE alone.
    oidc_client_secret: str | None = None
    # Where browsers reach the api, e.g. https://opspor.aalborg.dk; the callback is
    # {WEB_BASE_URL}/ui/callback and https here makes the session cookie Secure and __Host-.
    web_base_url: str | None = None
    web_session_idle_minutes: int = Field(default=30, ge=1, le=24 * 60)
    web_session_max_hours: int = Field(default=10, ge=1, le=24)

    @model_validator(mode="after")
    def _web_complete(self) -> Self:
        if self.oidc_issuer is None:
            return self
        missing = [
            name
            for name, value in (
                ("oidc_client_id", self.oidc_client_id),
                ("web_base_url", self.web_base_url),
            )
            if not value
        ]
        if missing:
            raise ValueError(f"OIDC_ISSUER is set: also set {', '.join(missing)}")
        for name, url in (("oidc_issuer", self.oidc_issuer), ("web_base_url", self.web_base_url)):
            if not str(url).startswith(("https://", *LOCAL_HTTP)):
                raise ValueError(f"{name} must be an https:// URL (http only for localhost)")
        return self
