"""Dead letters as an operator sees them: where from, why, when, ids; never the payload."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator


class TopicSummary(BaseModel):
    topic: str = Field(description="The topic the messages were consumed from")
    dead_letter_topic: str
    messages: int = Field(description="Messages in the dead-letter topic")
    backlog: int = Field(description="Of these, not yet re-driven")


class DeadLetter(BaseModel):
    offset: int = Field(description="Its offset in the dead-letter topic (what re-drive names)")
    reason: str = Field(
        description="undecodable | refused | unknown (dead-lettered before reasons)"
    )
    source_partition: int | None
    source_offset: int | None
    group: str | None = Field(description="The consumer group that dead-lettered it")
    at: datetime | None
    bytes: int
    key: str | None = Field(description="The message key: a pupil or concern id, when printable")
    event_id: str | None = Field(description="The CloudEvent id, when the payload has one")
    redriven_at: datetime | None
    redriven_by: str | None


class DeadLetterPage(BaseModel):
    items: list[DeadLetter]
    next_after: int | None = Field(description="Pass as `after` for the next page; null at the end")


Offset = Annotated[int, Field(ge=0)]


class RedriveIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    offsets: list[Offset] | None = Field(None, min_length=1, max_length=1000)
    all: bool = False

    @model_validator(mode="after")
    def one_of(self) -> RedriveIn:
        if (self.offsets is None) == (not self.all):
            raise ValueError("give `offsets` or `all: true`, not both")
        return self


class RedriveOut(BaseModel):
    redriven: list[int] = Field(description="Offsets sent back to their topic by this request")
    already: list[int] = Field(description="Offsets re-driven before (sent nothing)")
    missing: list[int] = Field(description="Offsets not in the dead-letter topic")
