from __future__ import annotations

from datetime import date
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from opspor_api.validation import Identifier

LIST_LIMIT = 500


class VersionSummary(BaseModel):
    version: str
    effective_from: date


class RulePackSummary(BaseModel):
    id: str
    name: str
    source: str
    stored: bool = Field(description="Stored by the municipality (else shipped with Opspor)")
    digest: str = Field(description="Changes whenever the pack's content changes")
    versions: list[VersionSummary]


class RulePackOut(RulePackSummary):
    document: dict[str, Any] = Field(description="The pack in canonical form")


class DryRunIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pack: dict[str, Any] = Field(description="The candidate pack document (as for PUT)")
    replaces: Identifier | None = Field(
        None,
        description="The pack in force that the candidate would replace; null tries the "
        "candidate alongside the packs in force at every school of the municipality",
    )
    first_day: date = Field(description="Crossings from this day on are compared")
    last_day: date = Field(description="... up to this day (and never beyond today)")


class DryRunConcern(BaseModel):
    pupil_id: str
    school_id: str
    pack_id: str
    rule_id: str
    rule_version: str
    level: str
    crossing_date: date
    summary: str


class DryRunCount(BaseModel):
    school_id: str
    level: str
    added: int
    removed: int


class DryRunOut(BaseModel):
    schools: list[str] = Field(description="Schools whose pupils were evaluated")
    pupils_evaluated: int
    added: int = Field(description="Concerns the candidate would raise that are not raised now")
    removed: int = Field(description="Concerns raised now that the candidate would not raise")
    unchanged: int
    counts: list[DryRunCount] = Field(description="Per school and level")
    concerns_added: list[DryRunConcern] = Field(description=f"At most {LIST_LIMIT}")
    concerns_removed: list[DryRunConcern] = Field(description=f"At most {LIST_LIMIT}")
    truncated: bool
