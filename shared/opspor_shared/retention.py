"""Retention rules shared by the three services (README "Retention").

* The cutoff C is today (UTC) minus RETENTION_REGISTRATION_DAYS. Registrations dated before C
  are refused by the api, ignored by the worker and purged everywhere.
* The settle date S is C + 366 days. A concern whose crossing date is before S is *final*: its
  window could reach registrations that are gone, so re-evaluation never raises or withdraws it.
  Crossings on or after S have their whole window (anything up to a year of school days) on or
  after C, so evaluating from C gives exactly what evaluating from the first registration gives.
* A concern is *closed* when it is withdrawn or final. A closed concern is purged
  RETENTION_CLOSED_CONCERN_DAYS after it closed, and never before it is final: a withdrawn
  concern that can still be raised again must keep its id and revision history, or the re-raise
  would reuse event id `<id>:1`. As a condition on one row:

      crossing_date < S and (
          (status = withdrawn and withdrawn_at < now - RETENTION_CLOSED_CONCERN_DAYS)
          or (status = active and crossing_date < S - RETENTION_CLOSED_CONCERN_DAYS))

  (an active concern closes on the day it becomes final, that is when S passes its crossing date).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from opspor_shared.settings import ServiceSettings

SETTLE_DAYS = 366


@dataclass(frozen=True)
class RetentionWindow:
    now: datetime
    registration_days: int
    closed_concern_days: int
    cutoff: date  # C: registrations dated before it are gone
    settle: date  # S: concerns crossing before it are final
    closed_before: datetime  # withdrawn before this instant: closed long enough to purge
    active_crossing_before: date  # active and crossing before this date: closed long enough
    # Cases closed before this instant are purged with their entries and free text.
    closed_case_before: datetime

    def is_final(self, crossing_date: date) -> bool:
        return crossing_date < self.settle

    def concern_purgeable(
        self, crossing_date: date, status: str, withdrawn_at: datetime | None
    ) -> bool:
        """The purge condition of the module docstring, for one concern (used in tests)."""
        if not self.is_final(crossing_date):
            return False
        if status == "withdrawn":
            return withdrawn_at is not None and withdrawn_at < self.closed_before
        return crossing_date < self.active_crossing_before

    def event_outlived(self, crossing_date: date, event_time: datetime) -> bool:
        """A concern event that a consumer skips: a replay of a concern purged (or due for purge).

        The worker never emits an event for a final concern, and a purged concern's last event
        is older than RETENTION_CLOSED_CONCERN_DAYS. A consumer that stored such an event would
        bring a purged concern back (and the alerter would mail it again), so it skips it. An
        event that waited in the topic longer than RETENTION_CLOSED_CONCERN_DAYS is skipped
        too; with that setting at least as long as the topic retention, none can.
        """
        return self.is_final(crossing_date) and event_time < self.closed_before


def retention_window(settings: ServiceSettings, now: datetime) -> RetentionWindow:
    today = now.astimezone(UTC).date()
    cutoff = today - timedelta(days=settings.retention_registration_days)
    settle = cutoff + timedelta(days=SETTLE_DAYS)
    closed_days = settings.retention_closed_concern_days
    return RetentionWindow(
        now=now,
        registration_days=settings.retention_registration_days,
        closed_concern_days=closed_days,
        cutoff=cutoff,
        settle=settle,
        closed_before=now - timedelta(days=closed_days),
        active_crossing_before=settle - timedelta(days=closed_days),
        closed_case_before=now - timedelta(days=settings.retention_closed_case_days),
    )
