from __future__ import annotations

from datetime import date
from typing import Any

from pydantic import BaseModel, Field


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
