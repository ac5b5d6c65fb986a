from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

Purpose = Literal["registration", "follow-up", "referral", "access-request", "support"]
PURPOSES: dict[str, str] = {
    "registration": "recording absence or checking what was recorded (school admin systems)",
    "follow-up": "following up a pupil's concerning absence (school staff, PPR)",
    "referral": "preparing or handling a referral to PPR",
    "access-request": "answering a pupil's or parent's request to see who looked at their data",
    "support": "technical support or troubleshooting",
}


class AccessLogEntry(BaseModel):
    at: datetime
    subject: str = Field(description="The token's sub: who")
    role: str
    municipality: str | None
    client: str | None = Field(description="The client application (azp/client_id), if named")
    school_id: str | None
    method: str
    endpoint: str = Field(description="Route template, e.g. /v1/pupils/{pupil_id}/concerns")
    purpose: str
    status: int


class AccessLogPage(BaseModel):
    items: list[AccessLogEntry]
    next_cursor: str | None = Field(
        description="Pass as `cursor` to get the next (older) page; null at the end"
    )
