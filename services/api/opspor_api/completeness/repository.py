from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from opspor_api.models import RegisterCompletion, Registration, School


class CompletenessRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def insert(self, school_id: str, day: date, class_id: str, recorded_at: datetime) -> bool:
        """True when stored now; False when (school, day, class) was declared before."""
        stored = await self.session.scalar(
            insert(RegisterCompletion)
            .values(school_id=school_id, date=day, class_id=class_id, recorded_at=recorded_at)
            .on_conflict_do_nothing()
            .returning(RegisterCompletion.school_id)
        )
        return stored is not None

    async def one(self, school_id: str, day: date, class_id: str) -> RegisterCompletion | None:
        return await self.session.get(RegisterCompletion, (school_id, day, class_id))

    async def declarations(
        self, school_ids: Sequence[str], first: date, last: date
    ) -> dict[tuple[str, date], list[str]]:
        """(school, day) -> class ids declared complete ('' is the whole school)."""
        rows = await self.session.execute(
            select(
                RegisterCompletion.school_id, RegisterCompletion.date, RegisterCompletion.class_id
            )
            .where(
                RegisterCompletion.school_id.in_(school_ids),
                RegisterCompletion.date.between(first, last),
            )
            .order_by(RegisterCompletion.class_id)
        )
        out: dict[tuple[str, date], list[str]] = {}
        for school_id, day, class_id in rows:
            out.setdefault((school_id, day), []).append(class_id)
        return out

    async def registration_counts(
        self, school_ids: Sequence[str], first: date, last: date
    ) -> dict[tuple[str, date], tuple[int, int]]:
        """(school, day) -> (registrations in force, rows held). Rows held include retraction
        tombstones: a retraction is something the school sent too."""
        rows = await self.session.execute(
            select(
                Registration.school_id,
                Registration.date,
                func.count().filter(Registration.retracted.is_(False)),
                func.count(),
            )
            .where(Registration.school_id.in_(school_ids), Registration.date.between(first, last))
            .group_by(Registration.school_id, Registration.date)
        )
        return {(s, d): (n, held) for s, d, n, held in rows}

    async def school_ids(self) -> list[str]:
        return list((await self.session.scalars(select(School.id).order_by(School.id))).all())
