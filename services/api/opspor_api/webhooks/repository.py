from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from opspor_api.config.repository import INSERTED
from opspor_api.models import Municipality, School, WebhookEndpoint


class WebhookRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def municipality_exists(self, municipality_id: str) -> bool:
        return await self.session.get(Municipality, municipality_id) is not None

    async def schools_of(self, municipality_id: str, school_ids: Sequence[str]) -> set[str]:
        """Those of `school_ids` that belong to the municipality."""
        if not school_ids:
            return set()
        rows = await self.session.scalars(
            select(School.id).where(
                School.municipality_id == municipality_id, School.id.in_(school_ids)
            )
        )
        return set(rows)

    async def upsert(self, values: dict[str, object]) -> bool:
        """Returns True when the endpoint was created."""
        stmt = insert(WebhookEndpoint).values(values)
        upsert = stmt.on_conflict_do_update(
            index_elements=[WebhookEndpoint.municipality_id, WebhookEndpoint.id],
            set_={
                **{k: stmt.excluded[k] for k in values if k not in ("municipality_id", "id")},
                "updated_at": func.now(),
            },
        ).returning(INSERTED)
        return bool((await self.session.execute(upsert)).scalar_one())

    async def get(self, municipality_id: str, webhook_id: str) -> WebhookEndpoint | None:
        return await self.session.get(WebhookEndpoint, (municipality_id, webhook_id))

    async def list(self, municipality_id: str) -> list[WebhookEndpoint]:
        rows = await self.session.scalars(
            select(WebhookEndpoint)
            .where(WebhookEndpoint.municipality_id == municipality_id)
            .order_by(WebhookEndpoint.id)
        )
        return list(rows)

    async def delete(self, municipality_id: str, webhook_id: str) -> bool:
        result = await self.session.execute(
            delete(WebhookEndpoint)
            .where(
                WebhookEndpoint.municipality_id == municipality_id,
                WebhookEndpoint.id == webhook_id,
            )
            .returning(WebhookEndpoint.id)
        )
        return result.first() is not None

    async def every_endpoint(self) -> Sequence[WebhookEndpoint]:
        """Every municipality's endpoints, locked: the reseal rewrites their secrets."""
        rows = await self.session.scalars(
            select(WebhookEndpoint)
            .order_by(WebhookEndpoint.municipality_id, WebhookEndpoint.id)
            .with_for_update()
        )
        return list(rows)

    async def set_secret(self, municipality_id: str, webhook_id: str, stored: str) -> None:
        await self.session.execute(
            update(WebhookEndpoint)
            .where(
                WebhookEndpoint.municipality_id == municipality_id,
                WebhookEndpoint.id == webhook_id,
            )
            .values(secret=stored)
        )
