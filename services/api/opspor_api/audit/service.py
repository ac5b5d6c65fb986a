"""Who looked at or changed which pupil's data, when, through which endpoint and why.

Rows are written in the request's own transaction, so an access that failed (and stored nothing)
leaves no row and a stored one always has its row. The table is append-only in the database
(migration 0002): the application cannot change or delete what it wrote.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from opspor_api.audit.repository import AuditRepository
from opspor_api.audit.schemas import AccessLogEntry, AccessLogPage
from opspor_api.cursors import decode_cursor, encode_cursor
from opspor_shared.auth import Principal


@dataclass
class Auditor:
    repo: AuditRepository
    principal: Principal
    method: str
    endpoint: str
    purpose: str

    async def record(self, accesses: Iterable[tuple[str, str | None]], status: int) -> None:
        """One row per distinct (pupil, school) of the request, however many items named it."""
        pairs = sorted(set(accesses), key=lambda p: (p[0], p[1] or ""))
        if not pairs:
            return
        p = self.principal
        await self.repo.append(
            pupils=[pupil for pupil, _ in pairs],
            schools=[school for _, school in pairs],
            subject=p.subject,
            role=p.role.value,
            municipality=p.municipality,
            client=p.client,
            method=self.method,
            endpoint=self.endpoint,
            purpose=self.purpose,
            status=status,
        )


async def access_log(
    repo: AuditRepository, pupil_id: str, municipality: str, cursor: str | None, limit: int
) -> AccessLogPage:
    before = decode_cursor(cursor, int) if cursor else None
    rows = await repo.page_for_pupil(pupil_id, municipality, before, limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    return AccessLogPage(
        items=[AccessLogEntry.model_validate(r, from_attributes=True) for r in rows],
        next_cursor=encode_cursor(str(rows[-1].id)) if more and rows else None,
    )
