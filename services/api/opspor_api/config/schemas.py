from __future__ import annotations

from datetime import date
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from opspor_api.validation import FreeText, Identifier, Mailbox, Name, TimeZone

Country = Literal["DK", "NO", "GB", "US", "SE"]
Language = Literal["da", "en", "nb"]
RulePackIds = Annotated[list[Identifier], Field(min_length=1, max_length=8)]
# A shipped case model (baerum, dk-ladder, ros-herning) or one the municipality stored.
CaseModelId = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[a-z0-9-]+$")
]
Level = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[a-z0-9-]+$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MunicipalityIn(_Strict):
    name: Name
    country: Country
    language: Language = Field(description="Language of notices for schools that do not set one")
    rule_packs: RulePackIds = Field(
        description="Rule packs in force for schools without their own, e.g. "
        '["dk-aalborg-2018", "dk-national"]: shipped packs or packs this municipality stored'
    )
    ppr_mailbox: Mailbox | None = Field(None, description="Receives ppr-may / ppr-must notices")
    unit_mailbox: Mailbox | None = Field(None, description="Receives notify-municipality notices")
    case_model: CaseModelId | None = Field(
        None, description="The follow-up model of its cases; default dk-ladder (DK), baerum (NO)"
    )
    case_opening_levels: list[Level] | None = Field(
        None,
        max_length=10,
        description="Concern levels that open a case; default the model's (`concern`)",
    )


class MunicipalityOut(MunicipalityIn):
    id: str


class SchoolIn(_Strict):
    municipality_id: Identifier
    name: Name
    timezone: TimeZone = Field(examples=["Europe/Copenhagen"])
    language: Language | None = Field(None, description="Defaults to the municipality's")
    rule_packs: RulePackIds | None = Field(
        None, description="Overrides the municipality's packs for this school"
    )
    mailbox: Mailbox = Field(description="The school's secure mailbox")
    case_model: CaseModelId | None = Field(None, description="Overrides the municipality's")


class SchoolOut(_Strict):
    id: str
    municipality_id: str
    name: str
    country: Country
    timezone: str
    language: Language
    rule_packs: list[str] | None
    effective_rule_packs: list[str]
    mailbox: str
    case_model: str | None = None
    effective_case_model: str


class ClosureIn(_Strict):
    first_day: date
    last_day: date
    reason: FreeText = ""

    @model_validator(mode="after")
    def _ordered(self) -> ClosureIn:
        if self.last_day < self.first_day:
            raise ValueError("last_day is before first_day")
        return self


class SchoolYearIn(_Strict):
    first_day: date
    last_day: date
    closures: list[ClosureIn] = Field(default_factory=list, max_length=100)
    extra_days: list[date] = Field(default_factory=list, max_length=100)


class NonSchoolDay(BaseModel):
    date: date
    reason: str


class SchoolYearOut(_Strict):
    label: str
    first_day: date
    last_day: date
    closures: list[ClosureIn]
    extra_days: list[date]
    school_days: int = Field(description="Number of school days in the year")
    public_holidays: list[NonSchoolDay] = Field(description="Weekday public holidays in the year")
