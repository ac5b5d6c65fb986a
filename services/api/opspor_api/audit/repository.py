from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import ARRAY, Table, Text, bindparam, func, insert, literal, select
from sqlalchemy.ext.asyncio import AsyncSession

from opspor_api.models import AuditEntry


class AuditRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def append(
        self,
        *,
        pupils: Sequence[str],
        schools: Sequence[str | None],
        subject: str,
        role: str,
        municipality: str | None,
        client: str | None,
        method: str,
        endpoint: str,
        purpose: str,
        status: int,
    ) -> None:
        """One statement for any number of pupils: a 5,000-item batch costs one round trip."""
        t = AuditEntry.__table__
        assert isinstance(t, Table)
        rows = select(
            literal(subject, Text),
            literal(role, Text),
            literal(municipality, Text),
            literal(client, Text),
            func.unnest(bindparam("pupils", list(pupils), type_=ARRAY(Text))),
            func.unnest(bindparam("schools", list(schools), type_=ARRAY(Text))),
            literal(method, Text),
            literal(endpoint, Text),
            literal(purpose, Text),
            literal(status),
        )
        columns = [
            t.c.subject,
            t.c.role,
            t.c.municipality,
            t.c.client,
            t.c.pupil_id,
            t.c.school_id,
            t.c.method,
            t.c.endpoint,
            t.c.purpose,
            t.c.status,
        ]
        await self.session.execute(insert(t).from_select(columns, rows))

    async def page_for_pupil(
        self, pupil_id: str, municipality: str, before: int | None, limit: int
    ) -> list[AuditEntry]:
        query = select(AuditEntry).where(
            AuditEntry.pupil_id == pupil_id, AuditEntry.municipality == municipality
        )
        if before is not None:
            query = query.where(AuditEntry.id < before)
        query = query.order_by(AuditEntry.id.desc()).limit(limit)
        return list(await self.session.scalars(query))
