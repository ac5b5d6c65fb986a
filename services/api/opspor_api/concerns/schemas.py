from __future__ import annotations

import uuid
from datetime import date
from typing import Literal

from pydantic import BaseModel, Field

from opspor_shared.events import ExplanationData


class ConcernOut(BaseModel):
    concern_id: uuid.UUID
    status: Literal["active", "withdrawn"]
    revision: int
    pupil_id: str
    school_id: str
    level: str
    crossing_date: date
    pack_id: str
    rule_id: str
    rule_version: str
    explanation: ExplanationData = Field(
        description="Rule and version, window, measured value against the limit, contributing dates"
    )


class ConcernPage(BaseModel):
    items: list[ConcernOut]
    next_cursor: str | None = Field(
        description="Pass as `cursor` to get the next page; null at the end"
    )
