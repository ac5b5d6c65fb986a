from __future__ import annotations

from pydantic import Field

from opspor_shared.settings import ServiceSettings


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
    # How often the api recomputes opspor_school_silent_school_days (register completeness).
    completeness_interval_seconds: float = Field(default=300.0, gt=0)
