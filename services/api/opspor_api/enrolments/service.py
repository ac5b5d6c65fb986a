"""Enrolments: when a pupil's school days at a school start (and end)."""

from __future__ import annotations

from opspor_api.enrolments.repository import EnrolmentRepository
from opspor_api.enrolments.schemas import EnrolmentIn, EnrolmentOut
from opspor_api.errors import NotFound
from opspor_api.settings import ApiSettings
from opspor_shared.events import ENROLMENT_RECORDED, CloudEvent, EnrolmentData
from opspor_shared.logging import correlation_id
from opspor_shared.outbox import OutboxMessage
from opspor_shared.reference import ReferenceRepository


async def put(
    repo: EnrolmentRepository,
    settings: ApiSettings,
    school_id: str,
    pupil_id: str,
    body: EnrolmentIn,
) -> EnrolmentOut:
    if await ReferenceRepository(repo.session).school(school_id) is None:
        raise NotFound(f"no school {school_id!r}")
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
    held = next(e for e in await repo.of_pupil(pupil_id) if e.school_id == school_id)
    return EnrolmentOut.model_validate(held, from_attributes=True)


async def of_pupil(repo: EnrolmentRepository, pupil_id: str) -> list[EnrolmentOut]:
    rows = await repo.of_pupil(pupil_id)
    if not rows:
        raise NotFound(f"no enrolments of pupil {pupil_id!r}")
    return [EnrolmentOut.model_validate(r, from_attributes=True) for r in rows]
