"""CloudEvents 1.0 JSON envelopes and the data of every event Opspor publishes.

Documented for integrators in deploy/asyncapi.yaml. Every message is keyed by pupil id.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

REGISTRATION_RECORDED = "dk.absence.registration.recorded"
REGISTRATION_RETRACTED = "dk.absence.registration.retracted"
# On the registrations topic too, keyed by pupil, so it is ordered with their registrations.
ENROLMENT_RECORDED = "dk.absence.enrolment.recorded"
CONCERN_RAISED = "dk.absence.concern.raised"
CONCERN_WITHDRAWN = "dk.absence.concern.withdrawn"
# A new revision of an active concern whose explanation changed (still active, no new notice).
CONCERN_UPDATED = "dk.absence.concern.updated"
# Case events (topic absence.cases.v1, published by the api): ids, phases, dates, roles and
# codes only, never free text (DOMAIN.md s.9).
CASE_OPENED = "dk.absence.case.opened"
CASE_PHASE_CHANGED = "dk.absence.case.phase-changed"
CASE_EVALUATION_DUE = "dk.absence.case.evaluation-due"
CASE_OVERDUE = "dk.absence.case.overdue"
CASE_REFERRED = "dk.absence.case.referred"
CASE_CLOSED = "dk.absence.case.closed"


class CloudEvent(BaseModel):
    model_config = ConfigDict(frozen=True)

    specversion: Literal["1.0"] = "1.0"
    id: str
    source: str
    type: str
    time: datetime
    subject: str
    datacontenttype: Literal["application/json"] = "application/json"
    data: dict[str, Any]

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> CloudEvent:
        return cls.model_validate_json(raw)


class RegistrationData(BaseModel):
    """A registration or a retraction as the worker needs it.

    `retracted` marks a tombstone: it takes part in last-writer-wins ordering like any
    registration, so a late copy of the retracted registration cannot bring it back.
    """

    model_config = ConfigDict(frozen=True)

    event_id: str
    pupil_id: str
    school_id: str
    date: date
    slot: str
    category: Literal["illness", "authorized", "unauthorized"] | None
    extent: Decimal | None
    recorded_at: datetime
    retracted: bool = False


class RegistrationEvent(CloudEvent):
    """A registration's CloudEvent with its data typed: built from a RegistrationData without
    dumping it to a dict first (a 1,000-item batch builds 1,000 of these); the bytes are the
    same as a CloudEvent with the dumped dict."""

    data: RegistrationData  # type: ignore[assignment]


def registration_event(data: RegistrationData) -> RegistrationEvent:
    """The event the api publishes for an accepted registration or retraction."""
    return RegistrationEvent(
        id=data.event_id,
        source=f"/opspor/api/schools/{data.school_id}",
        type=REGISTRATION_RETRACTED if data.retracted else REGISTRATION_RECORDED,
        time=data.recorded_at,
        subject=data.pupil_id,
        data=data,
    )


class EnrolmentData(BaseModel):
    """A pupil's enrolment at one school: their school days there start at `enrolled_from`
    (and end before `enrolled_until`'s next day, when set). One per (pupil, school); the
    latest `recorded_at` wins, ties by event id."""

    model_config = ConfigDict(frozen=True)

    event_id: str
    pupil_id: str
    school_id: str
    enrolled_from: date
    enrolled_until: date | None = None
    recorded_at: datetime
    # For the api's reports only; the threshold-worker does not store them.
    grade: int | None = None
    class_name: str | None = None


class ContributionData(BaseModel):
    date: date
    slot: str
    category: str
    extent: Decimal


class ExplanationData(BaseModel):
    pack_id: str
    rule_id: str
    rule_version: str
    rule: str = Field(description="Human description of the rule")
    kind: str
    level: str
    window_first: date
    window_last: date
    window_days: int
    value: Decimal
    threshold: Decimal
    summary: str
    contributing: list[ContributionData]


class ConcernData(BaseModel):
    """Data of concern.raised, concern.updated and concern.withdrawn.

    `revision` grows by one each time the concern changes status or explanation, so consumers
    can ignore stale or repeated events: apply an event only if its revision is higher than the
    one held. An updated event has status `active` and carries the whole current explanation.
    """

    model_config = ConfigDict(frozen=True)

    concern_id: str
    status: Literal["active", "withdrawn"]
    revision: int
    pupil_id: str
    school_id: str
    municipality_id: str
    level: str
    crossing_date: date
    explanation: ExplanationData


def dumps(obj: Any) -> str:
    return json.dumps(obj, default=_default, separators=(",", ":"))


def _default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def utcnow() -> datetime:
    return datetime.now(UTC)
