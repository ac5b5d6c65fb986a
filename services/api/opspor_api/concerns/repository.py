from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import date
from typing import Any

from sqlalchemy import ColumnElement, func, select, tuple_
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from opspor_api.models import ConcernAcknowledgement, ConcernView


class ConcernRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def apply(self, rows: Sequence[dict[str, Any]]) -> None:
        """Keeps the highest revision of each concern; stale and repeated events change nothing."""
        stmt = insert(ConcernView)
        stmt = stmt.on_conflict_do_update(
            index_elements=[ConcernView.concern_id],
            set_={c: stmt.excluded[c] for c in rows[0] if c != "concern_id"},
            where=ConcernView.revision < stmt.excluded.revision,
        )
        await self.session.execute(stmt, list(rows))

    async def for_pupil(
        self, pupil_id: str, status: str | None, visible: ColumnElement[bool]
    ) -> list[ConcernView]:
        query = select(ConcernView).where(ConcernView.pupil_id == pupil_id, visible)
        if status:
            query = query.where(ConcernView.status == status)
        rows = await self.session.scalars(
            query.order_by(ConcernView.crossing_date, ConcernView.concern_id)
        )
        return list(rows)

    async def one(self, concern_id: uuid.UUID, visible: ColumnElement[bool]) -> ConcernView | None:
        query = select(ConcernView).where(ConcernView.concern_id == concern_id, visible)
        return await self.session.scalar(query)

    async def page_for_school(
        self,
        school_id: str,
        status: str | None,
        level: str | None,
        after: tuple[date, uuid.UUID] | None,
        limit: int,
        visible: ColumnElement[bool],
    ) -> list[ConcernView]:
        # Newest crossings first; (crossing_date, concern_id) is unique, so the keyset is stable.
        query = select(ConcernView).where(ConcernView.school_id == school_id, visible)
        if status:
            query = query.where(ConcernView.status == status)
        if level:
            query = query.where(ConcernView.level == level)
        if after is not None:
            query = query.where(
                tuple_(ConcernView.crossing_date, ConcernView.concern_id) < tuple_(*after)
            )
        query = query.order_by(
            ConcernView.crossing_date.desc(), ConcernView.concern_id.desc()
        ).limit(limit)
        return list(await self.session.scalars(query))

    async def active_counts(self, visible: ColumnElement[bool]) -> list[tuple[str, str, int]]:
        """(school, level, active concerns) over the visible concerns."""
        rows = await self.session.execute(
            select(ConcernView.school_id, ConcernView.level, func.count())
            .where(ConcernView.status == "active", visible)
            .group_by(ConcernView.school_id, ConcernView.level)
        )
        return [(s, lv, n) for s, lv, n in rows]

    async def acknowledgements(
        self, concern_ids: Sequence[uuid.UUID]
    ) -> dict[uuid.UUID, ConcernAcknowledgement]:
        if not concern_ids:
            return {}
        rows = await self.session.scalars(
            select(ConcernAcknowledgement).where(ConcernAcknowledgement.concern_id.in_(concern_ids))
        )
        return {r.concern_id: r for r in rows}

    async def acknowledge(
        self, concern_id: uuid.UUID, kind: str, case_id: uuid.UUID | None, by: str
    ) -> None:
        """The latest acknowledgement holds: seen first, handled in a case later."""
        stmt = insert(ConcernAcknowledgement).values(
            concern_id=concern_id, kind=kind, case_id=case_id, by=by
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=[ConcernAcknowledgement.concern_id],
            set_={"kind": kind, "case_id": case_id, "by": by, "at": func.now()},
        )
        await self.session.execute(stmt)
