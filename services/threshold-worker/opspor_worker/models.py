"""Tables the threshold-worker writes (and no other service does)."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any

from sqlalchemy import Index, Text, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from opspor_shared.db import Base, TimestampMixin
from opspor_shared.outbox import outbox_table
from opspor_shared.purge import purge_log_table
from opspor_shared.registrations import EnrolmentColumns, RegistrationStateColumns


class WorkerRegistration(RegistrationStateColumns, Base):
    """The worker's own last-writer-wins copy of the registrations it consumed."""

    __tablename__ = "worker_registrations"
    # BRIN: rows arrive roughly in date order, so the purge finds old dates cheaply, and the
    # index costs almost nothing on ingest.
    __table_args__ = (Index("ix_worker_registrations_date", "date", postgresql_using="brin"),)


class WorkerEnrolment(EnrolmentColumns, Base):
    """The worker's last-writer-wins copy of enrolments (decides a pupil's school days)."""

    __tablename__ = "worker_enrolments"
    __table_args__ = (Index("ix_worker_enrolments_school", "school_id"),)


class WorkerPupil(Base):
    """Pupils the worker knows, with the school whose calendar and pack apply."""

    __tablename__ = "worker_pupils"
    __table_args__ = (Index("ix_worker_pupils_school", "school_id"),)

    pupil_id: Mapped[str] = mapped_column(Text, primary_key=True)
    school_id: Mapped[str] = mapped_column(Text)
    evaluated_horizon: Mapped[date | None]
    # The first day after evaluated_horizon on which the pupil's concerns change if no new
    # registration comes (a share rule reaching min_days, a registration dated ahead); the
    # day-change tick evaluates only pupils whose day has come. NULL: not known yet (evaluate).
    next_change_on: Mapped[date | None]


class SchoolHorizon(Base):
    """Last horizon every pupil of a school in one partition was evaluated up to; the
    day-change tick moves it."""

    __tablename__ = "worker_school_horizons"

    school_id: Mapped[str] = mapped_column(Text, primary_key=True)
    # The registrations topic's partition whose pupils this mark covers: each worker process
    # evaluates and marks the pupils of the partitions it consumes (opspor_worker.service.tick).
    partition: Mapped[int] = mapped_column(primary_key=True)
    horizon: Mapped[date | None]
    # Hash of the pack id and calendar rows: a changed calendar or pack re-evaluates the school.
    fingerprint: Mapped[str] = mapped_column(Text)
    # The same hash without the horizon: when only the day moved on, only pupils whose
    # next_change_on has come are evaluated (NULL: evaluate every pupil).
    basis: Mapped[str | None] = mapped_column(Text)


class Concern(TimestampMixin, Base):
    __tablename__ = "concerns"
    __table_args__ = (Index("ix_concerns_pupil", "pupil_id"),)

    concern_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    pupil_id: Mapped[str] = mapped_column(Text)
    school_id: Mapped[str] = mapped_column(Text)
    municipality_id: Mapped[str] = mapped_column(Text)
    pack_id: Mapped[str] = mapped_column(Text)
    rule_id: Mapped[str] = mapped_column(Text)
    rule_version: Mapped[str] = mapped_column(Text)
    level: Mapped[str] = mapped_column(Text)
    crossing_date: Mapped[date]
    status: Mapped[str] = mapped_column(Text)
    revision: Mapped[int]
    explanation: Mapped[dict[str, Any]] = mapped_column(JSONB)
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now(), onupdate=func.now())
    # When the current withdrawal happened (the withdrawn event's time); NULL while active.
    # The purge counts retention of a withdrawn concern from it.
    withdrawn_at: Mapped[datetime | None]


worker_outbox = outbox_table("worker_outbox", Base.metadata)
worker_purges = purge_log_table("worker_purges", Base.metadata)
