"""Routing documents in and out (the format is opspor_shared.routing's)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class RoutingOut(BaseModel):
    municipality_id: str
    school_id: str | None = Field(description="Set on a school's overrides")
    levels: dict[str, list[dict[str, Any]]] = Field(
        description="The stored document's levels; empty when nothing is stored"
    )
    effective: dict[str, list[dict[str, Any]]] = Field(
        description="For each level the municipality's packs use (and `*`): who gets it now, "
        "the default table included"
    )
