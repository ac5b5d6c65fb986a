from __future__ import annotations

from datetime import date, datetime
from typing import Annotated

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, model_validator

from opspor_api.validation import EventId, NoNationalId

# Grades 0 (DK kindergarten class) to 13 cover the Nordic and English systems.
Grade = Annotated[int, Field(ge=0, le=13)]
ClassName = Annotated[
    str, StringConstraints(min_length=1, max_length=32, strip_whitespace=True), NoNationalId
]


class EnrolmentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    event_id: EventId = Field(description="The producer's unique id for this report")
    enrolled_from: date = Field(description="The pupil's first school day at this school")
    enrolled_until: date | None = Field(None, description="The last day, when the pupil left")
    recorded_at: AwareDatetime = Field(description="When the source system recorded it")
    grade: Grade | None = Field(None, description="School grade (DK 0-9, NO 1-10), for reports")
    class_name: ClassName | None = Field(None, description='The class, e.g. "4B", for reports')

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
    grade: int | None
    class_name: str | None
