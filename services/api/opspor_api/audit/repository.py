from __future__ import annotations

from collections.abc import Sequence
from functools import cache

from sqlalchemy import ARRAY, Insert, Integer, Table, Text, bindparam, func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from opspor_api.models import AuditEntry


@cache
def _append_statement() -> Insert:
    """append's statement: a row per pupil (the arrays `pupils` and `schools`), the request's
    fields in every row. Built once, as every audited request runs it (see
    opspor_shared.db.insert_rows)."""
    t = AuditEntry.__table__
    assert isinstance(t, Table)
    rows = select(
        bindparam("subject", type_=Text),
        bindparam("role", type_=Text),
        bindparam("municipality", type_=Text),
        bindparam("client", type_=Text),
        func.unnest(bindparam("pupils", type_=ARRAY(Text))),
        func.unnest(bindparam("schools", type_=ARRAY(Text))),
        bindparam("method", type_=Text),
        bindparam("endpoint", type_=Text),
        bindparam("purpose", type_=Text),
        bindparam("status", type_=Integer),
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
    return insert(t).from_select(columns, rows)


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
        await self.session.execute(
            _append_statement(),
            {
                "subject": subject,
                "role": role,
                "municipality": municipality,
                "client": client,
                "pupils": list(pupils),
                "schools": list(schools),
                "method": method,
                "endpoint": endpoint,
                "purpose": purpose,
                "status": status,
            },
        )

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
