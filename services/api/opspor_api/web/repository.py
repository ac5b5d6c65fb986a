"""All SQL of the web page: its server-side sessions."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from opspor_api.models import WebSession


class WebSessionRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, id_hash: str) -> WebSession | None:
        row: WebSession | None = await self.session.get(WebSession, id_hash)
        return row

    async def add(self, row: WebSession) -> None:
        self.session.add(row)
        await self.session.flush()

    async def touch(self, id_hash: str, **values: Any) -> None:
        await self.session.execute(
            update(WebSession).where(WebSession.id_hash == id_hash).values(**values)
        )

    async def remove(self, id_hash: str) -> None:
        await self.session.execute(delete(WebSession).where(WebSession.id_hash == id_hash))

    async def remove_expired(self, now: datetime, idle_before: datetime) -> None:
        await self.session.execute(
            delete(WebSession).where(
                (WebSession.expires_at <= now) | (WebSession.last_seen_at <= idle_before)
            )
        )

    async def ids_of(self, subject: str) -> list[str]:
        return list(
            await self.session.scalars(
                select(WebSession.id_hash).where(WebSession.subject == subject)
            )
        )
