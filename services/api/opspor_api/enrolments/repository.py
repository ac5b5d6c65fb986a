from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from opspor_api.models import Enrolment, api_outbox
from opspor_shared.events import EnrolmentData
from opspor_shared.outbox import OutboxMessage, enqueue
from opspor_shared.registrations import apply_enrolments


class EnrolmentRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def apply(self, item: EnrolmentData) -> None:
        await apply_enrolments(self.session, Enrolment, [item])

    async def one(self, pupil_id: str, school_id: str) -> Enrolment | None:
        return await self.session.get(Enrolment, (pupil_id, school_id))

    async def of_pupil(self, pupil_id: str, schools: Select[str]) -> Sequence[Enrolment]:
        """The pupil's enrolments at the given schools (a subquery of school ids)."""
        return (
            await self.session.scalars(
                select(Enrolment)
                .where(Enrolment.pupil_id == pupil_id, Enrolment.school_id.in_(schools))
                .order_by(Enrolment.enrolled_from, Enrolment.school_id)
            )
        ).all()

    async def publish(self, message: OutboxMessage) -> None:
        await enqueue(self.session, api_outbox, [message])
