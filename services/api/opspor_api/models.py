"""Tables the api service writes (and no other service does)."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Identity,
    Index,
    Numeric,
    SmallInteger,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column

from opspor_shared.db import Base, TimestampMixin
from opspor_shared.outbox import outbox_table
from opspor_shared.purge import purge_log_table
from opspor_shared.registrations import EnrolmentColumns, RegistrationStateColumns


class Municipality(TimestampMixin, Base):
    __tablename__ = "municipalities"

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    country: Mapped[str] = mapped_column(Text)
    language: Mapped[str] = mapped_column(Text)
    # Ids of built-in packs or of packs this municipality stored (table rule_packs).
    rule_packs: Mapped[list[str]] = mapped_column(ARRAY(Text))
    ppr_mailbox: Mapped[str | None] = mapped_column(Text)
    unit_mailbox: Mapped[str | None] = mapped_column(Text)
    # NULL: the country's default case model (opspor_shared.casemodels.default_model_id).
    case_model: Mapped[str | None] = mapped_column(Text)
    # Concern levels that open a case; NULL: the model's opening levels.
    case_opening_levels: Mapped[list[str] | None] = mapped_column(ARRAY(Text))
    # The municipality's routing document (opspor_shared.routing); NULL: the default table.
    routing: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now(), onupdate=func.now())


class School(TimestampMixin, Base):
    __tablename__ = "schools"

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    municipality_id: Mapped[str] = mapped_column(ForeignKey("municipalities.id"), index=True)
    name: Mapped[str] = mapped_column(Text)
    timezone: Mapped[str] = mapped_column(Text)
    # NULL: the municipality's language and pack apply (the country is always the municipality's).
    language: Mapped[str | None] = mapped_column(Text)
    rule_packs: Mapped[list[str] | None] = mapped_column(ARRAY(Text))
    mailbox: Mapped[str] = mapped_column(Text)
    # NULL: the municipality's case model applies.
    case_model: Mapped[str | None] = mapped_column(Text)
    # The school's routing overrides, level by level; NULL: the municipality's routing.
    routing: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now(), onupdate=func.now())


class RulePackRow(TimestampMixin, Base):
    """A rule pack a municipality stored through the API, in canonical form (pack_document).

    Its versions never change once stored (a concern names its version); new versions are
    added with a later effective_from."""

    __tablename__ = "rule_packs"

    # Pack ids are the municipality's own names: two municipalities may both have "lokal".
    municipality_id: Mapped[str] = mapped_column(ForeignKey("municipalities.id"), primary_key=True)
    id: Mapped[str] = mapped_column(Text, primary_key=True)
    document: Mapped[dict[str, Any]] = mapped_column(JSONB)
    digest: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now(), onupdate=func.now())


class WebhookEndpoint(TimestampMixin, Base):
    """A municipality's HTTPS endpoint for signed notices (Standard Webhooks).

    The alerter reads these through opspor_shared.reference and signs with `secret`, so the
    secret itself is stored (HMAC needs the key, a hash of it would not do), sealed with
    WEBHOOK_SECRET_KEYS where that is set (opspor_shared.secretbox).
    """

    __tablename__ = "webhook_endpoints"

    municipality_id: Mapped[str] = mapped_column(ForeignKey("municipalities.id"), primary_key=True)
    id: Mapped[str] = mapped_column(Text, primary_key=True)
    url: Mapped[str] = mapped_column(Text)
    secret: Mapped[str] = mapped_column(Text)
    # Empty: every level (school). A level or school added later is then covered too.
    levels: Mapped[list[str]] = mapped_column(JSONB, default=list)
    school_ids: Mapped[list[str]] = mapped_column(JSONB, default=list)
    enabled: Mapped[bool]
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now(), onupdate=func.now())


class SchoolYearRow(TimestampMixin, Base):
    __tablename__ = "school_years"
    __table_args__ = (
        UniqueConstraint("school_id", "label"),
        CheckConstraint("last_day >= first_day", name="ordered"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    school_id: Mapped[str] = mapped_column(ForeignKey("schools.id"), index=True)
    label: Mapped[str] = mapped_column(Text)
    first_day: Mapped[date]
    last_day: Mapped[date]
    closures: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, default=list)
    extra_days: Mapped[list[str]] = mapped_column(JSONB, default=list)


class RegistrationEvent(Base):
    """Every accepted event exactly once, keyed by the producer's event id (dedup)."""

    __tablename__ = "registration_events"
    # BRIN: events arrive roughly in date order, so the purge finds old dates cheaply, and the
    # index costs almost nothing on ingest.
    __table_args__ = (Index("ix_registration_events_date", "date", postgresql_using="brin"),)

    event_id: Mapped[str] = mapped_column(Text, primary_key=True)
    pupil_id: Mapped[str] = mapped_column(Text)
    school_id: Mapped[str] = mapped_column(Text)
    date: Mapped[date]
    slot: Mapped[str] = mapped_column(Text)
    category: Mapped[str | None] = mapped_column(Text)
    extent: Mapped[Decimal | None] = mapped_column(Numeric(5, 4))
    recorded_at: Mapped[datetime]
    retracted: Mapped[bool]
    received_at: Mapped[datetime] = mapped_column(server_default=func.now())


class Registration(RegistrationStateColumns, Base):
    """Current state per (pupil, date, slot), see opspor_shared.registrations."""

    __tablename__ = "registrations"
    __table_args__ = (
        Index("ix_registrations_school_date", "school_id", "date"),
        Index("ix_registrations_date", "date", postgresql_using="brin"),
    )


class Enrolment(EnrolmentColumns, Base):
    """A pupil's enrolment per school, as the school admin systems last reported it."""

    __tablename__ = "enrolments"
    __table_args__ = (Index("ix_enrolments_school", "school_id"),)

    # Grade and class group the reports (DOMAIN.md section 8); the worker has no use for them.
    grade: Mapped[int | None] = mapped_column(SmallInteger)
    class_name: Mapped[str | None] = mapped_column(Text)


class ConcernView(Base):
    """The api's projection of absence.concerns.v1, for frontend queries."""

    __tablename__ = "api_concerns"
    __table_args__ = (
        Index("ix_api_concerns_school_page", "school_id", "crossing_date", "concern_id"),
        Index("ix_api_concerns_pupil", "pupil_id"),
    )

    concern_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    revision: Mapped[int]
    status: Mapped[str] = mapped_column(Text)
    pupil_id: Mapped[str] = mapped_column(Text)
    school_id: Mapped[str] = mapped_column(Text)
    municipality_id: Mapped[str] = mapped_column(Text)
    level: Mapped[str] = mapped_column(Text)
    crossing_date: Mapped[date]
    pack_id: Mapped[str] = mapped_column(Text)
    rule_id: Mapped[str] = mapped_column(Text)
    rule_version: Mapped[str] = mapped_column(Text)
    explanation: Mapped[dict[str, Any]] = mapped_column(JSONB)
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now(), onupdate=func.now())
    # The withdrawn event's time while withdrawn, else NULL; the purge counts from it.
    withdrawn_at: Mapped[datetime | None]


class DeadLetterRedrive(Base):
    """A dead letter sent back to its topic: once per message, whoever asks twice."""

    __tablename__ = "dead_letter_redrives"

    topic: Mapped[str] = mapped_column(Text, primary_key=True)  # the <topic>.dlq
    dlq_offset: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    by: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(server_default=func.now())


class RoutingChange(Base):
    """Who changed which routing when, and to what (append-only; the audit of routing)."""

    __tablename__ = "routing_changes"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    municipality_id: Mapped[str] = mapped_column(Text)
    school_id: Mapped[str | None] = mapped_column(Text)
    document: Mapped[dict[str, Any] | None] = mapped_column(JSONB)  # NULL: removed
    by: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(server_default=func.now())


class ConcernAcknowledgement(Base):
    """Staff saw a concern, or handle it in a case (issue 9). Primary data beside the read
    model (which Kafka can rebuild), and purged with its concern (on delete cascade)."""

    __tablename__ = "concern_acknowledgements"

    concern_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("api_concerns.concern_id", ondelete="CASCADE"), primary_key=True
    )
    kind: Mapped[str] = mapped_column(Text)  # seen | handled
    case_id: Mapped[uuid.UUID | None]
    by: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(server_default=func.now())


class AuditEntry(Base):
    """Who read or wrote which pupil's data. Append-only: a trigger (migration 0002) refuses
    UPDATE, DELETE and TRUNCATE, for the application and superusers alike."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_pupil", "pupil_id", "id"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    at: Mapped[datetime] = mapped_column(server_default=func.now())
    subject: Mapped[str] = mapped_column(Text)
    role: Mapped[str] = mapped_column(Text)
    municipality: Mapped[str | None] = mapped_column(Text)
    client: Mapped[str | None] = mapped_column(Text)
    pupil_id: Mapped[str] = mapped_column(Text)
    school_id: Mapped[str | None] = mapped_column(Text)
    method: Mapped[str] = mapped_column(Text)
    endpoint: Mapped[str] = mapped_column(Text)
    purpose: Mapped[str] = mapped_column(Text)
    status: Mapped[int] = mapped_column(SmallInteger)


api_outbox = outbox_table("api_outbox", Base.metadata)
api_purges = purge_log_table("api_purges", Base.metadata)


class RegisterCompletion(Base):
    """A school system's statement that a day's register was taken: for the whole school
    (class_id '') or for one class. The first statement per (school, day, class) is kept."""

    __tablename__ = "register_completions"

    school_id: Mapped[str] = mapped_column(ForeignKey("schools.id"), primary_key=True)
    date: Mapped[date] = mapped_column(primary_key=True)
    # '' rather than NULL: the whole school is part of the key, and NULLs never collide.
    class_id: Mapped[str] = mapped_column(Text, primary_key=True)
    recorded_at: Mapped[datetime]
    received_at: Mapped[datetime] = mapped_column(server_default=func.now())


class WebSession(Base):
    """A browser session of the web page (/ui). The cookie carries a random id; only its SHA-256
    is stored, so a copy of this table cannot be replayed as cookies. A row without a role is a
    sign-in in progress (state, PKCE verifier and nonce waiting for the provider's answer)."""

    __tablename__ = "web_sessions"

    id_hash: Mapped[str] = mapped_column(Text, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    last_seen_at: Mapped[datetime]
    expires_at: Mapped[datetime] = mapped_column(index=True)
    csrf_token: Mapped[str] = mapped_column(Text)
    language: Mapped[str | None] = mapped_column(Text)
    login_state: Mapped[str | None] = mapped_column(Text)
    code_verifier: Mapped[str | None] = mapped_column(Text)
    nonce: Mapped[str | None] = mapped_column(Text)
    return_to: Mapped[str | None] = mapped_column(Text)
    subject: Mapped[str | None] = mapped_column(Text)
    role: Mapped[str | None] = mapped_column(Text)
    issuer: Mapped[str | None] = mapped_column(Text)
    municipality: Mapped[str | None] = mapped_column(Text)
    schools: Mapped[list[str]] = mapped_column(ARRAY(Text), default=list)
    client: Mapped[str | None] = mapped_column(Text)


class CaseModelRow(Base):
    """A case model a municipality stored (the shipped ones are files). Never changed once
    stored: cases that follow it keep meaning what they meant."""

    __tablename__ = "case_models"

    municipality_id: Mapped[str] = mapped_column(ForeignKey("municipalities.id"), primary_key=True)
    id: Mapped[str] = mapped_column(Text, primary_key=True)
    document: Mapped[dict[str, Any]] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class Case(Base):
    """One pupil's follow-up at one school (DOMAIN.md s.7). Structured fields only: free text
    lives in case_texts, so that a query for metadata can never carry it."""

    __tablename__ = "cases"
    __table_args__ = (
        Index("ix_cases_school", "school_id", "opened_on", "id"),
        Index("ix_cases_pupil", "pupil_id"),
        # At most one open case per pupil and school.
        Index(
            "uq_cases_open",
            "pupil_id",
            "school_id",
            unique=True,
            postgresql_where=text("status = 'open'"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    pupil_id: Mapped[str] = mapped_column(Text)
    school_id: Mapped[str] = mapped_column(ForeignKey("schools.id"))
    municipality_id: Mapped[str] = mapped_column(Text)
    model_id: Mapped[str] = mapped_column(Text)
    model_version: Mapped[str] = mapped_column(Text)
    phase: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(Text)  # open | closed
    source: Mapped[str] = mapped_column(Text)  # pupil | parents | team | absence-data
    coordinator: Mapped[str | None] = mapped_column(Text)
    leader: Mapped[str | None] = mapped_column(Text)
    opened_on: Mapped[date]
    opened_by: Mapped[str] = mapped_column(Text)
    planned_end: Mapped[date | None]
    next_evaluation_due: Mapped[date | None]
    outcome: Mapped[str | None] = mapped_column(Text)
    closed_on: Mapped[date | None]
    closed_at: Mapped[datetime | None]
    overdue_reasons: Mapped[list[str]] = mapped_column(ARRAY(Text), server_default="{}")
    # Per overdue reason, the day its last reminder event was published.
    reminded: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default="{}")
    # Optimistic concurrency: the ETag; every change adds one.
    version: Mapped[int]
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now(), onupdate=func.now())


class CaseEntry(Base):
    """Something recorded on a case: a phase change, goal, intervention, cause, contact,
    evaluation, referral, eligibility decision, approval or a triggering concern. `data` holds
    codes, dates, statuses and staff ids only."""

    __tablename__ = "case_entries"
    __table_args__ = (
        Index("ix_case_entries_case", "case_id", "id"),
        # A concern is attached to a case once, however often its events come.
        Index(
            "uq_case_entries_concern",
            "case_id",
            "concern_id",
            unique=True,
            postgresql_where=text("concern_id is not null"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    case_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any]] = mapped_column(JSONB)
    concern_id: Mapped[uuid.UUID | None]
    at: Mapped[datetime] = mapped_column(server_default=func.now())
    by: Mapped[str] = mapped_column(Text)


class CaseText(Base):
    """The free text of an entry (a note, a goal's text, a contact's outcome, a reason): the
    most sensitive part of a case, kept apart, never in an event, notice or log line."""

    __tablename__ = "case_texts"

    entry_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("case_entries.id", ondelete="CASCADE"), primary_key=True
    )
    text: Mapped[str] = mapped_column(Text)
