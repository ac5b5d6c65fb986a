"""All SQL of routing: the documents on municipalities and schools, their change log, and what
the deliverability check reads (mailboxes, schools, webhook endpoints)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from opspor_api.models import Municipality, RoutingChange, School, WebhookEndpoint


class RoutingRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def municipality(self, municipality_id: str) -> Municipality | None:
        return await self.session.get(Municipality, municipality_id)

    async def school(self, school_id: str) -> School | None:
        return await self.session.get(School, school_id)

    async def schools_of(self, municipality_id: str) -> list[School]:
        rows = await self.session.scalars(
            select(School).where(School.municipality_id == municipality_id).order_by(School.id)
        )
        return list(rows)

    async def webhooks_of(self, municipality_id: str) -> list[WebhookEndpoint]:
        rows = await self.session.scalars(
            select(WebhookEndpoint).where(WebhookEndpoint.municipality_id == municipality_id)
        )
        return list(rows)

    async def set_municipality_routing(
        self, municipality_id: str, document: dict[str, Any] | None
    ) -> None:
        await self.session.execute(
            update(Municipality)
            .where(Municipality.id == municipality_id)
            .values(routing=document)
            .execution_options(synchronize_session=False)
        )

    async def set_school_routing(self, school_id: str, document: dict[str, Any] | None) -> None:
        await self.session.execute(
            update(School)
            .where(School.id == school_id)
            .values(routing=document)
            .execution_options(synchronize_session=False)
        )

    async def log_change(
        self,
        municipality_id: str,
        school_id: str | None,
        document: dict[str, Any] | None,
        by: str,
    ) -> None:
        self.session.add(
            RoutingChange(
                municipality_id=municipality_id, school_id=school_id, document=document, by=by
            )
        )
