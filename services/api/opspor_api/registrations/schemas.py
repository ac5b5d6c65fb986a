from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema

from opspor_api.validation import EventId, Identifier, PupilId, Slot

EXTENT_TEXT_MAX = 16


def _short_text(value: object) -> object:
    # Bounded like every other string a client sends, before Decimal parses it.
    if isinstance(value, str) and len(value) > EXTENT_TEXT_MAX:
        raise ValueError(f'at most {EXTENT_TEXT_MAX} characters, such as "0.5"')
    return value


Extent = Annotated[
    Decimal,
    BeforeValidator(_short_text),
    Field(
        gt=0,
        le=1,
        max_digits=5,
        decimal_places=4,
        description="Fraction of the school day missed, 0 < extent <= 1",
    ),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
                {
                    "type": "string",
                    "maxLength": EXTENT_TEXT_MAX,
                    "pattern": r"^(0?\.[0-9]{1,4}|1(\.0{1,4})?|0*1)$",
                },
            ],
            "description": "Fraction of the school day missed, 0 < extent <= 1",
        },
        mode="validation",
    ),
]


class RegistrationIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    event_id: EventId = Field(description="The producer's unique id for this event (dedup key)")
    pupil_id: PupilId = Field(
        description="The school system's pupil id; a CPR number or fødselsnummer is refused"
    )
    school_id: Identifier
    date: date
    slot: Slot = Field("day", description="day, am, pm or a lesson number")
    category: Literal["illness", "authorized", "unauthorized"]
    extent: Extent = Decimal(1)
    recorded_at: AwareDatetime = Field(description="When the source system recorded it")


class RetractionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    event_id: EventId
    pupil_id: PupilId
    school_id: Identifier
    date: date
    slot: Slot = "day"
    recorded_at: AwareDatetime


class BatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[RegistrationIn] = Field(min_length=1, max_length=5000)


class IngestResult(BaseModel):
    inserted: int = Field(description="Events stored now")
    duplicates: int = Field(description="Events already stored earlier (same event id and content)")
    duplicate_event_ids: list[str] = Field(default_factory=list)


class RegistrationOut(BaseModel):
    pupil_id: str
    school_id: str
    date: date
    slot: str
    category: str | None
    extent: Decimal | None
    recorded_at: datetime
    event_id: str
    retracted: bool


class MonthAbsence(BaseModel):
    month: date = Field(description="First day of the month")
    category: str
    days: Decimal = Field(description="Sum of the extents of current registrations")
