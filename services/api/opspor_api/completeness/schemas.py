from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from opspor_api.validation import Identifier


class CompletionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    date: dt.date = Field(description="The school day whose register was taken")
    class_id: Identifier | None = Field(
        None, description="The class whose register is complete; omitted: the whole school"
    )
    recorded_at: AwareDatetime | None = Field(
        None, description="When the school system closed the register; default: on receipt"
    )


class CompletionOut(BaseModel):
    school_id: str
    date: dt.date
    class_id: str | None
    recorded_at: dt.datetime
    received_at: dt.datetime


DayStatus = Literal["complete", "partial", "missing"]


class CompletenessDay(BaseModel):
    date: dt.date
    status: DayStatus = Field(
        description="complete: the whole school's register was declared complete; partial: "
        "only some classes; missing: no declaration"
    )
    classes_complete: list[str] = Field(description="Classes declared complete that day")
    registrations: int = Field(description="Absence registrations held for the day (not pupils)")
    silent: bool = Field(description="Neither a declaration nor a registration for the day")


class CompletenessReport(BaseModel):
    school_id: str
    from_: dt.date = Field(alias="from")
    to: dt.date
    school_days: int
    complete: int
    partial: int
    missing: int
    days: list[CompletenessDay] = Field(description="School days of the range up to today")

    model_config = ConfigDict(populate_by_name=True)
