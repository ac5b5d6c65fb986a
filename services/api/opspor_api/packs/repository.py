from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Row, Text, any_, cast, func, select, union
from sqlalchemy.dialects.postgresql import ARRAY, insert
from sqlalchemy.ext.asyncio import AsyncSession

from opspor_api.config.repository import INSERTED
from opspor_api.models import Enrolment, Registration, RulePackRow


class PackRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def stored(self, municipality_id: str) -> list[RulePackRow]:
        return list(
            await self.session.scalars(
                select(RulePackRow)
                .where(RulePackRow.municipality_id == municipality_id)
                .order_by(RulePackRow.id)
            )
        )

    async def one(
        self, municipality_id: str, pack_id: str, *, lock: bool = False
    ) -> RulePackRow | None:
        query = select(RulePackRow).where(
            RulePackRow.municipality_id == municipality_id, RulePackRow.id == pack_id
        )
        if lock:
            query = query.with_for_update()
        return await self.session.scalar(query)

    async def upsert(
        self, municipality_id: str, pack_id: str, document: dict[str, Any], digest: str
    ) -> bool:
        stmt = insert(RulePackRow).values(
            municipality_id=municipality_id, id=pack_id, document=document, digest=digest
        )
        upsert = stmt.on_conflict_do_update(
            index_elements=[RulePackRow.municipality_id, RulePackRow.id],
            set_={
                "document": stmt.excluded.document,
                "digest": stmt.excluded.digest,
                "updated_at": func.now(),
            },
        ).returning(INSERTED)
        return bool((await self.session.execute(upsert)).scalar_one())

    async def live_registrations(
        self, school_ids: Sequence[str]
    ) -> Sequence[Row[str, str, date, str, str | None, Decimal | None, datetime, str, bool]]:
        """Current registrations of every pupil registered or enrolled at one of the schools
        (all of that pupil's registrations: windows reach across a change of school, and a
        pupil without enrolments is judged at the school of their latest one)."""
        r, e = Registration, Enrolment
        pupils = union(
            select(r.pupil_id).where(r.school_id.in_(school_ids)),
            select(e.pupil_id).where(e.school_id.in_(school_ids)),
        )
        rows = await self.session.execute(
            select(
                r.pupil_id,
                r.school_id,
                r.date,
                r.slot,
                r.category,
                r.extent,
                r.recorded_at,
                r.event_id,
                r.retracted,
            )
            .where(r.pupil_id.in_(pupils), r.retracted.is_(False))
            .order_by(r.pupil_id, r.date, r.slot)
        )
        return rows.all()

    async def enrolments(
        self, pupil_ids: Sequence[str]
    ) -> dict[str, list[tuple[str, date, date | None]]]:
        """(school, enrolled_from, enrolled_until) of each of the pupils' enrolments."""
        e = Enrolment
        rows = await self.session.execute(
            select(e.pupil_id, e.school_id, e.enrolled_from, e.enrolled_until).where(
                e.pupil_id == any_(cast(list(pupil_ids), ARRAY(Text)))
            )
        )
        out: dict[str, list[tuple[str, date, date | None]]] = {}
        for pupil_id, school_id, enrolled_from, enrolled_until in rows:
            out.setdefault(pupil_id, []).append((school_id, enrolled_from, enrolled_until))
        return out
