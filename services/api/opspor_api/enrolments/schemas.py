from __future__ import annotations

from datetime import date, datetime

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from opspor_api.validation import EventId


class EnrolmentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    event_id: EventId = Field(description="The producer's unique id for this report")
    enrolled_from: date = Field(description="The pupil's first school day at this school")
    enrolled_until: date | None = Field(None, description="The last day, when the pupil left")
    recorded_at: AwareDatetime = Field(description="When the source system recorded it")

    @model_validator(mode="after")
    def _ordered(self) -> EnrolmentIn:
        if self.enrolled_until is not None and self.enrolled_until < self.enrolled_from:
            raise ValueError("enrolled_until is before enrolled_from")
        return self


class EnrolmentOut(BaseModel):
    pupil_id: str
    school_id: str
    enrolled_from: date
    enrolled_until: date | None
    recorded_at: datetime
    event_id: str
