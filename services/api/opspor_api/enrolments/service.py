"""Enrolments: when a pupil's school days at a school start (and end)."""

from __future__ import annotations

from opspor_api.bodies import parse, path_value, refuse
from opspor_api.enrolments.repository import EnrolmentRepository
from opspor_api.enrolments.schemas import EnrolmentIn, EnrolmentOut
from opspor_api.errors import FieldError, NotFound, field_error
from opspor_api.settings import ApiSettings
from opspor_api.tenancy import pupil_visible, school_visible, visible_schools
from opspor_api.validation import IDENTIFIER, PUPIL_ID
from opspor_shared.auth import Principal
from opspor_shared.events import ENROLMENT_RECORDED, CloudEvent, EnrolmentData
from opspor_shared.logging import correlation_id
from opspor_shared.outbox import OutboxMessage


async def put(
    repo: EnrolmentRepository,
    settings: ApiSettings,
    principal: Principal,
    school_id: str,
    pupil_id: str,
    raw: object,
) -> EnrolmentOut:
    """Checks the path, the body and the school together (every error in one answer)."""
    errors: list[FieldError] = []
    school = path_value(errors, "school_id", school_id, IDENTIFIER)
    pupil = path_value(errors, "pupil_id", pupil_id, PUPIL_ID)
    body, body_errors = parse(EnrolmentIn, raw)
    errors += body_errors
    # Another tenant's school answers exactly like one that does not exist.
    if school is not None and not await school_visible(repo.session, principal, school):
        if not errors:
            raise NotFound(f"no school {school_id!r}")
        errors.append(field_error(("path", "school_id"), f"unknown school {school_id!r}"))
    refuse(errors)
    assert body is not None and school is not None and pupil is not None
    data = EnrolmentData(pupil_id=pupil_id, school_id=school_id, **body.model_dump())
    # The newest report per (pupil, school) wins here and in the worker alike, so repeats
    # and late arrivals change nothing; every report is published and the worker decides.
    await repo.apply(data)
    await repo.publish(
        OutboxMessage(
            topic=settings.registrations_topic,
            key=pupil_id,
            event=CloudEvent(
                id=data.event_id,
                source=f"/opspor/api/schools/{school_id}",
                type=ENROLMENT_RECORDED,
                time=data.recorded_at,
                subject=pupil_id,
                data=data.model_dump(mode="json"),
            ),
            correlation_id=correlation_id.get(),
        )
    )
    # What is in force now: this report, or a newer one that arrived earlier.
    return EnrolmentOut.model_validate(await repo.one(pupil_id, school_id), from_attributes=True)


async def of_pupil(
    repo: EnrolmentRepository, principal: Principal, pupil_id: str
) -> list[EnrolmentOut]:
    """The pupil's enrolments at the principal's own schools: another school's are not theirs."""
    if not await pupil_visible(repo.session, principal, pupil_id):
        raise NotFound(f"no pupil {pupil_id!r}")
    rows = await repo.of_pupil(pupil_id, visible_schools(principal))
    return [EnrolmentOut.model_validate(r, from_attributes=True) for r in rows]
