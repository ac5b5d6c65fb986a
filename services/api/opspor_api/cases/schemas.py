"""Cases in and out. Free text (note, goal text, contact outcome) is its own field on input and
appears on output only in the full view for staff and PPR; the metadata view has none."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from opspor_api.validation import Identifier, NoNationalId, PupilId
from opspor_shared.text import control_character

Source = Literal["pupil", "parents", "team", "absence-data"]
Code = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[a-z0-9-]+$")]
StaffId = Annotated[Identifier, NoNationalId]


def _multiline(value: str) -> str:
    # Notes may have line breaks and tabs; other control and invisible characters are refused.
    found = control_character(value.replace("\n", "").replace("\r", "").replace("\t", ""))
    if found is not None:
        raise ValueError(f"contains the control character {found}")
    return value


Note = Annotated[str, StringConstraints(max_length=4000), AfterValidator(_multiline), NoNationalId]


class CaseOpen(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pupil_id: PupilId
    source: Source = Field(description="Where the worry came from (seed 001)")
    coordinator: StaffId | None = None
    note: Note | None = None


class Goal(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["goal"]
    text: Note = Field(min_length=1)
    due: date | None = None
    status: Literal["open", "achieved", "partly-achieved", "not-achieved"] = "open"
    goal_entry: int | None = Field(
        None, description="Follow up an earlier goal: its entry id; the new status replaces it"
    )


PARTIES_DESCRIPTION = "Who took part; `parents` is the family (parents or guardians)"


class Plan(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["action-plan", "agreement"]
    with_: list[Literal["pupil", "parents", "school", "ros", "ppr", "other"]] = Field(
        default_factory=list, alias="with", max_length=6, description=PARTIES_DESCRIPTION
    )
    until: date | None = Field(None, description="How long the plan runs: its last day")
    follow_up: date | None = Field(
        None, description="When the plan is followed up; the case's next follow-up date"
    )
    note: Note | None = None


class InterventionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["intervention"]
    type: Code = Field(description="A code of the model's catalogue, or `other` with a note")
    owner: StaffId
    start: date
    end: date | None = None
    note: Note | None = None


class Cause(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["cause"]
    category: Literal["individual", "family", "social", "school", "local-community", "society"]
    note: Note | None = None


class Contact(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["contact"]
    form: Literal["call", "meeting", "home-visit", "message", "sparring"]
    with_: list[Literal["pupil", "parents", "school", "resource-team", "ppr", "gp", "other"]] = (
        Field(alias="with", min_length=1, max_length=7, description=PARTIES_DESCRIPTION)
    )
    on: date
    reached: bool = Field(description="false: a failed attempt (nobody reached)")
    outcome: Note | None = None


class Evaluation(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["evaluation"]
    due: date | None = Field(None, description="A follow-up date agreed (without `done`)")
    done: date | None = None
    result: Literal["continue", "new-plan", "escalate", "resolved"] | None = None
    note: Note | None = None


class Referral(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["referral"]
    to: Literal[
        "ppr", "gp", "child-psychiatry", "child-welfare", "health-nurse", "family-department"
    ]
    type: Literal["consulted", "referred"]
    status: Literal["requested", "accepted", "declined", "completed"] = "requested"
    on: date
    note: Note | None = None


class Eligibility(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["eligibility"]
    eligible: bool
    basis: Literal["limit-crossed", "staff-judgement"] | None = Field(
        None, description="Why eligible (required then); `staff-judgement` needs its note"
    )
    exclusions: list[Code] = Field(
        default_factory=list,
        max_length=10,
        description="Why not eligible: the model's exclusion reasons (or a note instead)",
    )
    note: Note | None = None


class Assignment(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["assignment"]
    coordinator: StaffId | None = None
    leader: StaffId | None = None


class Approval(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["approval"]
    of: Literal["no-contact"]
    leader: StaffId
    note: Note | None = None


EntryIn = Annotated[
    Goal
    | Plan
    | InterventionIn
    | Cause
    | Contact
    | Evaluation
    | Referral
    | Eligibility
    | Assignment
    | Approval,
    Field(discriminator="kind"),
]


class Transition(BaseModel):
    model_config = ConfigDict(extra="forbid")

    to: Code | None = Field(None, description="The next phase")
    close: Code | None = Field(None, description="Close the case with this outcome")
    reason: Note | None = None


class EntryOut(BaseModel):
    id: int
    kind: str
    data: dict[str, object]
    concern_id: uuid.UUID | None
    at: datetime
    by: str
    text: str | None = Field(None, description="Free text; absent in the metadata view")


class CaseSummary(BaseModel):
    """What the municipality sees: metadata, no free text, no entries."""

    id: uuid.UUID
    pupil_id: str
    school_id: str
    municipality_id: str
    model_id: str
    phase: str
    responsible_role: str
    status: Literal["open", "closed"]
    source: str
    coordinator: str | None
    leader: str | None
    opened_on: date
    planned_end: date | None
    next_evaluation_due: date | None
    overdue_reasons: list[str]
    outcome: str | None
    closed_on: date | None
    version: int


class CaseOut(CaseSummary):
    entries: list[EntryOut]


class CasePage(BaseModel):
    items: list[CaseSummary]
    next_cursor: str | None


class CaseModelOut(BaseModel):
    id: str
    version: str
    source: str
    name: dict[str, str]
    opening_levels: list[str]
    default_length_days: int
    evaluation_days: int
    evaluation_from: Literal["opening", "plan"] = Field(
        description="When the evaluation clock starts: at opening, or with the first plan"
    )
    outcomes: list[str]
    exclusions: list[str]
    interventions: list[dict[str, object]]
    phases: list[dict[str, object]]
