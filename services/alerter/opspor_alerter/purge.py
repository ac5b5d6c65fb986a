"""The alerter's retention purge (README "Retention"), and its command:

    python -m opspor_alerter.purge [--dry-run]

Deletes closed concerns past their retention together with their notices and delivery attempts,
logging each deletion in alerter_purges. A concern stays, with everything it has, while any of
its notices is pending or leased by a delivery loop (cancelled while its send was in flight): a
notice is never purged before its fate is recorded.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import ColumnElement, and_, delete, exists, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from opspor_alerter.models import AlerterConcern, DeliveryAttempt, Notice, alerter_purges
from opspor_alerter.reminders import REMINDER, reminder_cutoff
from opspor_shared.purge import (
    Chunk,
    PurgeStep,
    ServicePurge,
    closed_concern_condition,
    closed_concern_criteria,
    count_rows,
    rowcount,
    table_of,
)
from opspor_shared.retention import RetentionWindow

SERVICE = "alerter"
# A concern brings a few notices (one per recipient and revision) and their attempts along;
# this keeps a chunk's statements near PURGE_CHUNK_ROWS rows.
ROWS_PER_CONCERN = 10


def steps(window: RetentionWindow) -> Sequence[PurgeStep]:
    concerns = table_of(AlerterConcern)
    notices = table_of(Notice)
    attempts = table_of(DeliveryAttempt)
    busy = exists().where(
        notices.c.concern_id == concerns.c.concern_id,
        or_(notices.c.status == "pending", notices.c.lease_until > func.now()),
    )
    due: ColumnElement[bool] = and_(closed_concern_condition(concerns, window), ~busy)
    of_due = notices.c.concern_id.in_(select(concerns.c.concern_id).where(due))
    criteria = closed_concern_criteria(window) + ", no notice pending or leased"

    async def chunk(session: AsyncSession, limit: int) -> Chunk:
        wanted = max(1, limit // ROWS_PER_CONCERN)
        ids = list(
            await session.scalars(
                select(concerns.c.concern_id)
                .where(due)
                .order_by(concerns.c.concern_id)
                .limit(wanted)
                # Holds back a concurrent event for the same concern until this commits.
                .with_for_update(skip_locked=True)
            )
        )
        if not ids:
            return Chunk({concerns.name: 0}, more=False)
        of_chosen = select(notices.c.id).where(notices.c.concern_id.in_(ids))
        deleted_attempts = rowcount(
            await session.execute(delete(attempts).where(attempts.c.notice_id.in_(of_chosen)))
        )
        deleted_notices = rowcount(
            await session.execute(delete(notices).where(notices.c.concern_id.in_(ids)))
        )
        deleted_concerns = rowcount(
            await session.execute(delete(concerns).where(concerns.c.concern_id.in_(ids)))
        )
        return Chunk(
            {
                concerns.name: deleted_concerns,
                notices.name: deleted_notices,
                attempts.name: deleted_attempts,
            },
            more=len(ids) == wanted,
        )

    async def count(session: AsyncSession) -> dict[str, int]:
        return {
            concerns.name: await count_rows(session, concerns, due),
            notices.name: await count_rows(session, notices, of_due),
            attempts.name: await count_rows(
                session,
                attempts,
                attempts.c.notice_id.in_(select(notices.c.id).where(of_due)),
            ),
        }

    return [
        PurgeStep(
            {
                concerns.name: criteria,
                notices.name: f"of the purged {concerns.name}",
                attempts.name: f"of the purged {notices.name}",
            },
            chunk,
            count,
        ),
        _reminder_step(window),
    ]


def _reminder_step(window: RetentionWindow) -> PurgeStep:
    """Case reminders have no concern row: they go RETENTION_CLOSED_CONCERN_DAYS after their
    day (never while pending or in flight). opspor_alerter.reminders skips a replayed overdue
    event that old, so a purged reminder is not sent again."""
    notices = table_of(Notice)
    attempts = table_of(DeliveryAttempt)
    due: ColumnElement[bool] = and_(
        notices.c.kind == REMINDER,
        notices.c.reminder_day < reminder_cutoff(window),
        notices.c.status != "pending",
        or_(notices.c.lease_until.is_(None), notices.c.lease_until <= func.now()),
    )

    async def chunk(session: AsyncSession, limit: int) -> Chunk:
        wanted = max(1, limit // 4)
        ids = list(
            await session.scalars(
                select(notices.c.id)
                .where(due)
                .order_by(notices.c.id)
                .limit(wanted)
                .with_for_update(skip_locked=True)
            )
        )
        if not ids:
            return Chunk({notices.name: 0}, more=False)
        deleted_attempts = rowcount(
            await session.execute(delete(attempts).where(attempts.c.notice_id.in_(ids)))
        )
        deleted = rowcount(await session.execute(delete(notices).where(notices.c.id.in_(ids))))
        return Chunk(
            {notices.name: deleted, attempts.name: deleted_attempts}, more=len(ids) == wanted
        )

    async def count(session: AsyncSession) -> dict[str, int]:
        return {
            notices.name: await count_rows(session, notices, due),
            attempts.name: await count_rows(
                session, attempts, attempts.c.notice_id.in_(select(notices.c.id).where(due))
            ),
        }

    return PurgeStep(
        {
            notices.name: "case reminders whose day is before "
            f"{reminder_cutoff(window).isoformat()}, not pending or leased",
            attempts.name: f"of the purged {notices.name}",
        },
        chunk,
        count,
    )


purge_once = ServicePurge(SERVICE, alerter_purges, steps)


if __name__ == "__main__":
    purge_once.main()
