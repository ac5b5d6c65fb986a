from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from opspor_shared.events import ExplanationData


class AcknowledgementIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    as_: Literal["seen", "handled"] = Field(
        alias="as", description="`seen`, or `handled` in the case named by `case_id`"
    )
    case_id: uuid.UUID | None = Field(
        None, description="The pupil's case at the concern's school; required for `handled`"
    )


class AcknowledgementOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    as_: Literal["seen", "handled"] = Field(alias="as")
    case_id: uuid.UUID | None
    by: str = Field(description="Who acknowledged it (the token's subject)")
    at: datetime


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
    acknowledgement: AcknowledgementOut | None = Field(
        None, description="Who saw the concern or handles it in a case, and when"
    )


class ConcernPage(BaseModel):
    items: list[ConcernOut]
    next_cursor: str | None = Field(
        description="Pass as `cursor` to get the next page; null at the end"
    )
