"""Tables the alerter writes (and no other service does)."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, Text, UniqueConstraint, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from opspor_shared.db import Base, TimestampMixin
from opspor_shared.purge import purge_log_table

# The group key of a recipient's daily digest starts with this (render.digest_group).
DIGEST_PREFIX = "digest:"


class Notice(TimestampMixin, Base):
    """One notice per (concern, recipient, kind, concern revision): the notification log.

    The unique constraint is what makes a repeated concern event send nothing new. A case
    reminder (kind `reminder`) is a notice too, so it shares the delivery loop, attempts and
    retries: its `concern_id` holds the reminder's own id (opspor_alerter.reminders.reminder_id,
    derived from case, reason and day) and `uq_notices_reminder` keeps one per (case, reason,
    day, recipient).
    """

    __tablename__ = "notices"
    __table_args__ = (
        UniqueConstraint("concern_id", "recipient", "kind", "revision", name="uq_notices_identity"),
        UniqueConstraint(
            "case_id", "reason", "reminder_day", "recipient", name="uq_notices_reminder"
        ),
        Index("ix_notices_due", "status", "next_attempt_at"),
        Index("ix_notices_group", "group_key"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    concern_id: Mapped[uuid.UUID]
    kind: Mapped[str] = mapped_column(Text)  # raised | withdrawn | reminder
    revision: Mapped[int]
    channel: Mapped[str] = mapped_column(Text)  # smtp | webhook
    # smtp: the mailbox address. webhook: webhook:<municipality id>/<webhook id>, never the URL
    # (it can carry a token); URL and secret are looked up when the notice is sent.
    recipient: Mapped[str] = mapped_column(Text)
    recipient_role: Mapped[str] = mapped_column(Text)  # school | ppr | municipality | integration
    school_id: Mapped[str] = mapped_column(Text)
    language: Mapped[str] = mapped_column(Text)
    # pending -> sent | failed; pending -> cancelled (withdrawn before it went out)
    status: Mapped[str] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(server_default=func.now())
    # Set while a delivery loop holds the notice; a cancel keeps it, so the purge can tell a
    # cancelled notice whose send is still in flight (its result is yet to be recorded).
    lease_until: Mapped[datetime | None]
    # Delivery recording (migration 0006): set and committed just before a send, cleared with
    # its answer. Set on a claimed notice = its last send was interrupted: the next is a resend.
    send_started_at: Mapped[datetime | None]
    # The process instance holding the lease ("host:pid:random"), see opspor_alerter.claims.
    claimed_by: Mapped[str | None] = mapped_column(Text)
    # smtp: the Message-ID header. webhook: the webhook-id header (receivers dedup on it).
    message_id: Mapped[str] = mapped_column(Text)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    sent_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    # Mail notices of concerns raised (or withdrawn) by the same evaluation share a group key and
    # go out as one mail per recipient: see opspor_alerter.service.group_key.
    group_key: Mapped[str | None] = mapped_column(Text)
    # Set for reminders only (NULL for concern notices, which the reminder constraint ignores).
    case_id: Mapped[uuid.UUID | None]
    reason: Mapped[str | None] = mapped_column(Text)
    reminder_day: Mapped[date | None]


class DeliveryAttempt(Base):
    __tablename__ = "delivery_attempts"

    id: Mapped[int] = mapped_column(primary_key=True)
    notice_id: Mapped[int] = mapped_column(ForeignKey("notices.id"), index=True)
    attempted_at: Mapped[datetime] = mapped_column(server_default=func.now())
    # sent | transient | permanent | interrupted (the process died during the send; resent)
    outcome: Mapped[str] = mapped_column(Text)
    smtp_code: Mapped[int | None]
    http_status: Mapped[int | None]
    # Never contains the recipient address, a webhook URL or credentials.
    detail: Mapped[str] = mapped_column(Text)


class AlerterConcern(Base):
    """Highest concern revision the alerter has applied: a stale or repeated event is ignored."""

    __tablename__ = "alerter_concerns"

    concern_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    revision: Mapped[int]
    status: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now(), onupdate=func.now())
    # For retention (opspor_shared.retention): the concern's crossing date, and the withdrawn
    # event's time while withdrawn (NULL while active).
    crossing_date: Mapped[date]
    withdrawn_at: Mapped[datetime | None]


alerter_purges = purge_log_table("alerter_purges", Base.metadata)
