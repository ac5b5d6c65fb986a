"""All SQL of the alerter: the notification log (notices), delivery attempts and concern revisions.

Nothing here commits; the caller's unit of work does.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, case, exists, func, literal, or_, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from opspor_alerter.models import DIGEST_PREFIX, AlerterConcern, DeliveryAttempt, Notice

_FRESH = {"populate_existing": True}


def _mail_kind() -> ColumnElement[str]:
    """SQL of opspor_alerter.render.mail_kind: a digest carries both kinds in one mail."""
    return case((Notice.group_key.startswith(DIGEST_PREFIX), literal("digest")), else_=Notice.kind)


class NoticeRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def advance_concern(
        self,
        concern_id: uuid.UUID,
        revision: int,
        status: str,
        crossing_date: date,
        withdrawn_at: datetime | None,
    ) -> bool:
        """Store the revision if it is newer than the one held; False for a stale or repeat."""
        insert = pg_insert(AlerterConcern).values(
            concern_id=concern_id,
            revision=revision,
            status=status,
            crossing_date=crossing_date,
            withdrawn_at=withdrawn_at,
        )
        stmt = insert.on_conflict_do_update(
            index_elements=[AlerterConcern.concern_id],
            set_={
                "revision": insert.excluded.revision,
                "status": insert.excluded.status,
                "crossing_date": insert.excluded.crossing_date,
                "withdrawn_at": insert.excluded.withdrawn_at,
                "updated_at": func.now(),
            },
            where=AlerterConcern.revision < insert.excluded.revision,
        ).returning(AlerterConcern.concern_id)
        return (await self._session.execute(stmt)).first() is not None

    async def concern(self, concern_id: uuid.UUID) -> AlerterConcern | None:
        return await self._session.scalar(
            select(AlerterConcern)
            .where(AlerterConcern.concern_id == concern_id)
            .execution_options(**_FRESH)
        )

    async def notices_of_concern(self, concern_id: uuid.UUID) -> list[Notice]:
        """Locks the concern's notices, so a delivery being recorded cannot race a withdrawal."""
        rows = await self._session.scalars(
            select(Notice)
            .where(Notice.concern_id == concern_id)
            .order_by(Notice.revision, Notice.id)
            .with_for_update()
            .execution_options(**_FRESH)
        )
        return list(rows)

    async def insert_notice(self, **values: Any) -> int | None:
        """The notice's id, or None when the same (concern, recipient, kind, revision) exists."""
        stmt = (
            pg_insert(Notice)
            .values(status="pending", attempts=0, **values)
            .on_conflict_do_nothing(constraint="uq_notices_identity")
            .returning(Notice.id)
        )
        return (await self._session.execute(stmt)).scalar_one_or_none()

    async def set_payload(self, notice_id: int, payload: dict[str, Any]) -> None:
        await self._session.execute(
            update(Notice)
            .where(Notice.id == notice_id, Notice.status == "pending")
            .values(payload=payload)
            .execution_options(synchronize_session=False)
        )

    async def group_has_gone_out(self, group_key: str, recipient: str, mail_kind: str) -> bool:
        """True when a mail of this group to this recipient is sent, failed or being sent."""
        return bool(
            await self._session.scalar(
                select(
                    exists().where(
                        Notice.group_key == group_key,
                        Notice.recipient == recipient,
                        _mail_kind() == mail_kind,
                        or_(
                            Notice.status.in_(("sent", "failed")),
                            Notice.lease_until >= func.now(),
                        ),
                    )
                )
            )
        )

    async def cancel_pending(self, notice_id: int) -> bool:
        stmt = (
            update(Notice)
            .where(Notice.id == notice_id, Notice.status == "pending")
            .values(status="cancelled")
            .returning(Notice.id)
            .execution_options(synchronize_session=False)
        )
        return (await self._session.execute(stmt)).first() is not None

    async def claim_due(
        self, limit: int, lease_seconds: float, owner: str | None = None
    ) -> list[Notice]:
        """Leases up to `limit` due notices; other delivery loops skip them until the lease ends.

        A notice waits while an earlier revision to the same recipient is still pending, so a
        withdrawal never overtakes the notice it withdraws.
        """
        earlier = aliased(Notice)
        # A withdrawal never overtakes the notice it withdraws (nor a raise its withdrawal).
        no_earlier_pending = ~exists().where(
            earlier.concern_id == Notice.concern_id,
            earlier.recipient == Notice.recipient,
            earlier.status == "pending",
            earlier.revision < Notice.revision,
        )
        due = (
            select(Notice.id)
            .where(
                Notice.status == "pending",
                Notice.next_attempt_at <= func.now(),
                or_(Notice.lease_until.is_(None), Notice.lease_until < func.now()),
                no_earlier_pending,
            )
            .order_by(Notice.next_attempt_at, Notice.id)
            .limit(limit)
            .with_for_update(skip_locked=True, of=Notice)
        )
        ids = list(await self._session.scalars(due))
        if not ids:
            return []
        # A mail group goes out whole: its other pending members come along (one mail).
        groups = select(Notice.group_key, Notice.recipient, _mail_kind()).where(
            Notice.id.in_(ids), Notice.group_key.is_not(None)
        )
        members = (
            select(Notice.id)
            .where(
                Notice.status == "pending",
                Notice.id.not_in(ids),
                or_(Notice.lease_until.is_(None), Notice.lease_until < func.now()),
                tuple_(Notice.group_key, Notice.recipient, _mail_kind()).in_(groups),
                no_earlier_pending,
            )
            .order_by(Notice.id)
            .with_for_update(skip_locked=True)
        )
        ids += list(await self._session.scalars(members))
        rows = await self._session.scalars(
            update(Notice)
            .where(Notice.id.in_(ids))
            .values(lease_until=func.now() + timedelta(seconds=lease_seconds), claimed_by=owner)
            .returning(Notice)
            .execution_options(synchronize_session=False, **_FRESH)
        )
        return sorted(rows, key=lambda n: ids.index(n.id))

    # --- send recording (each notice in its own short transaction) ---

    async def start_send(self, notice_id: int, owner: str | None) -> Notice | None:
        """Marks the notice as being sent, if this owner still holds it; the notice before."""
        notice = await self.lock(notice_id)
        if notice is None or notice.claimed_by != owner or notice.lease_until is None:
            return None
        await self._update(notice_id, send_started_at=func.now())
        return notice

    async def record_interrupted(self, notice_id: int, detail: str) -> None:
        """An attempt whose answer never came (the process died): counted like any attempt."""
        await self.add_attempt(notice_id, "interrupted", None, None, detail)
        await self._update(notice_id, attempts=Notice.attempts + 1)

    async def live_owners(self, host_prefix: str) -> list[str]:
        """Owners on a host that hold unexpired leases."""
        rows = await self._session.scalars(
            select(Notice.claimed_by)
            .where(
                Notice.lease_until > func.now(),
                Notice.claimed_by.startswith(host_prefix, autoescape=True),
            )
            .distinct()
        )
        return [r for r in rows if r is not None]

    async def release_claims(self, owners: list[str]) -> int:
        """Ends the leases of `owners` (dead instances): their notices are due again now."""
        rows = await self._session.execute(
            update(Notice)
            .where(Notice.claimed_by.in_(owners), Notice.lease_until.is_not(None))
            .values(lease_until=None)
            .returning(Notice.id)
            .execution_options(synchronize_session=False)
        )
        return len(rows.all())

    async def lock(self, notice_id: int) -> Notice | None:
        return await self._session.scalar(
            select(Notice)
            .where(Notice.id == notice_id)
            .with_for_update()
            .execution_options(**_FRESH)
        )

    async def add_attempt(
        self,
        notice_id: int,
        outcome: str,
        smtp_code: int | None,
        http_status: int | None,
        detail: str,
    ) -> None:
        self._session.add(
            DeliveryAttempt(
                notice_id=notice_id,
                outcome=outcome,
                smtp_code=smtp_code,
                http_status=http_status,
                detail=detail,
            )
        )
        await self._session.flush()

    async def mark_sent(self, notice_id: int, attempts: int) -> None:
        await self._update(
            notice_id,
            status="sent",
            attempts=attempts,
            sent_at=func.now(),
            lease_until=None,
            last_error=None,
        )

    async def schedule_retry(
        self, notice_id: int, attempts: int, delay_seconds: float, error: str
    ) -> None:
        await self._update(
            notice_id,
            attempts=attempts,
            next_attempt_at=func.now() + timedelta(seconds=delay_seconds),
            lease_until=None,
            last_error=error,
        )

    async def mark_failed(self, notice_id: int, attempts: int, error: str) -> None:
        await self._update(
            notice_id, status="failed", attempts=attempts, lease_until=None, last_error=error
        )

    async def record_attempt_only(self, notice_id: int, attempts: int, error: str) -> None:
        await self._update(notice_id, attempts=attempts, lease_until=None, last_error=error)

    async def count_by_channel_and_status(self) -> dict[tuple[str, str], int]:
        rows = await self._session.execute(
            select(Notice.channel, Notice.status, func.count()).group_by(
                Notice.channel, Notice.status
            )
        )
        return {(channel, status): int(n) for channel, status, n in rows}

    async def count_pending(self) -> int:
        count = await self._session.scalar(
            select(func.count()).select_from(Notice).where(Notice.status == "pending")
        )
        return int(count or 0)

    async def end_send(self, notice_id: int) -> None:
        """The answer is recorded: the send is no longer in flight."""
        await self._update(notice_id, send_started_at=None, claimed_by=None)

    async def _update(self, notice_id: int, **values: Any) -> None:
        await self._session.execute(
            update(Notice)
            .where(Notice.id == notice_id)
            .values(**values)
            .execution_options(synchronize_session=False)
        )
