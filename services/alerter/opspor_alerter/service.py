"""The alerter pipeline: route -> dedup against the notification log -> deliver -> record.

`record_concern_events` runs inside the consumer's unit of work and only decides: it writes
notices (the persisted notification log) and never talks to a mailbox. `deliver_due` runs after
that transaction has committed (ARCHITECTURE.md rule 3): it claims due notices, hands each to the
notifier of its channel (secure mail or webhook), and records one attempt per send. Each notice
is recorded on its own: "send starting" is committed before the send and the answer right after.
A crash between them resends that notice (same Message-ID / webhook-id) and records the resend
(an "interrupted" attempt and opspor_alerter_resends_total): at least once, never lost, every
duplicate visible. A restarted alerter takes back its dead predecessor's claims at once.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal, NamedTuple
from zoneinfo import ZoneInfo

from pydantic import ValidationError
from sqlalchemy import func
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from opspor_alerter import metrics
from opspor_alerter.claims import Instance, dead_owners
from opspor_alerter.models import Notice
from opspor_alerter.notify import DeliveryResult, Notifier
from opspor_alerter.reminders import CASE_EVENT_PREFIX, ReminderOutcome, record_case_event
from opspor_alerter.render import NoticeContent, digest_group, mail_kind, message_id
from opspor_alerter.repository import NoticeRepository
from opspor_alerter.routing import Route, Unroutable, role_for_level, routes_for
from opspor_alerter.settings import AlerterSettings
from opspor_alerter.webhook import webhook_message_id
from opspor_shared.clock import Clock, system_clock
from opspor_shared.db import unit_of_work
from opspor_shared.events import (
    CONCERN_RAISED,
    CONCERN_UPDATED,
    CONCERN_WITHDRAWN,
    CloudEvent,
    ConcernData,
)
from opspor_shared.faults import fault_point
from opspor_shared.logging import get_logger
from opspor_shared.outage import Outage
from opspor_shared.reference import PackCache, ReferenceRepository, SchoolRef
from opspor_shared.retention import retention_window
from opspor_shared.routing import next_digest
from opspor_shared.wording import RuleSpec, spec_in

log = get_logger(__name__)


# --- consumer stage: route and dedup -------------------------------------------------------


@dataclass
class RecordOutcome:
    """What one batch of concern events decided; metrics are counted after the commit."""

    applied: int = 0
    stale: int = 0
    ignored: int = 0
    past_retention: int = 0
    rejected: list[CloudEvent] = field(default_factory=list)
    recorded: list[tuple[str, str, str]] = field(default_factory=list)  # (channel, kind, role)
    cancelled: int = 0
    unroutable: list[tuple[str, str]] = field(default_factory=list)  # (role, reason)

    def count(self) -> None:
        metrics.EVENTS.labels("applied").inc(self.applied)
        metrics.EVENTS.labels("stale").inc(self.stale)
        metrics.EVENTS.labels("ignored").inc(self.ignored)
        metrics.EVENTS.labels("past_retention").inc(self.past_retention)
        metrics.EVENTS.labels("rejected").inc(len(self.rejected))
        for channel, kind, role in self.recorded:
            metrics.NOTICES_RECORDED.labels(channel, kind, role).inc()
        metrics.NOTICES_CANCELLED.inc(self.cancelled)
        for role, reason in self.unroutable:
            metrics.UNROUTABLE.labels(role, reason).inc()


async def record_concern_events(
    session: AsyncSession,
    events: Sequence[CloudEvent],
    settings: AlerterSettings,
    *,
    clock: Clock = system_clock,
) -> RecordOutcome:
    """Apply concern and case events in order. Stale and repeated revisions change nothing.

    Case events (the cases topic) are handed to opspor_alerter.reminders: an overdue case is
    recorded as a reminder notice; the other case types are ignored, not dead-lettered.

    Neither do events that can only be replays of a concern the purge has removed (see
    RetentionWindow.event_outlived): without its notices the alerter would mail it again.
    """
    outcome = RecordOutcome()
    repo = NoticeRepository(session)
    now = clock()
    window = retention_window(settings, now)
    reminders = ReminderOutcome(outcome.recorded, outcome.unroutable)
    for event in events:
        if event.type.startswith(CASE_EVENT_PREFIX):
            result = await record_case_event(session, event, settings, reminders, window)
            if result == "rejected":
                outcome.rejected.append(event)
            elif result == "past_retention":
                outcome.past_retention += 1
            elif result == "duplicate":
                outcome.stale += 1
            elif result == "applied":
                outcome.applied += 1
            else:
                outcome.ignored += 1
            continue
        if event.type not in (CONCERN_RAISED, CONCERN_UPDATED, CONCERN_WITHDRAWN):
            outcome.ignored += 1
            continue
        expected = "withdrawn" if event.type == CONCERN_WITHDRAWN else "active"
        try:
            concern = ConcernData.model_validate(event.data)
            concern_uuid = uuid.UUID(concern.concern_id)
        except (ValidationError, ValueError):
            log.warning("concern_event_rejected", event_id=event.id, reason="invalid data")
            outcome.rejected.append(event)
            continue
        if concern.status != expected:
            log.warning("concern_event_rejected", event_id=event.id, reason="type/status mismatch")
            outcome.rejected.append(event)
            continue
        if window.event_outlived(concern.crossing_date, event.time):
            log.info("concern_event_past_retention", event_id=event.id)
            outcome.past_retention += 1
            continue
        withdrawn_at = event.time if concern.status == "withdrawn" else None
        if not await repo.advance_concern(
            concern_uuid, concern.revision, concern.status, concern.crossing_date, withdrawn_at
        ):
            log.debug(
                "concern_event_stale", concern_id=concern.concern_id, revision=concern.revision
            )
            outcome.stale += 1
            continue
        outcome.applied += 1
        group = group_key(concern, event)
        if event.type == CONCERN_UPDATED:
            await _update(session, repo, concern, concern_uuid, settings, outcome, group, now)
        elif concern.status == "active":
            await _raise(session, repo, concern, concern_uuid, settings, outcome, group, now)
        else:
            await _withdraw(session, repo, concern, concern_uuid, settings, outcome, group, now)
    return outcome


def group_key(concern: ConcernData, event: CloudEvent) -> str:
    """Which mail a concern's notice joins: the concerns of one pupil from one evaluation.

    The threshold-worker evaluates a pupil in one transaction and stamps every event it decides
    there with the same `time` (its clock reading for that evaluation), and that time is stored
    in its outbox, so a replay carries it again. (pupil, event time) therefore names one
    evaluation, whatever batches the events arrive in; the notice kind and the recipient are
    added where the key is used, so raises and withdrawals never share a mail.
    """
    return f"{concern.pupil_id}|{event.time.isoformat()}"


async def _raise(
    session: AsyncSession,
    repo: NoticeRepository,
    concern: ConcernData,
    concern_uuid: uuid.UUID,
    settings: AlerterSettings,
    outcome: RecordOutcome,
    group: str | None,
    now: datetime,
) -> None:
    reference = ReferenceRepository(session)
    school, targets, missing = await _routes(reference, concern)
    for gap in missing:
        log.warning(
            "concern_unroutable",
            concern_id=concern.concern_id,
            school_id=concern.school_id,
            level=concern.level,
            role=gap.role,
            reason=gap.reason,
        )
        outcome.unroutable.append((gap.role, gap.reason))
    if school is None:
        return
    latest = _latest_by_recipient(await repo.notices_of_concern(concern_uuid))
    content = NoticeContent.from_concern(concern, school.name).model_copy(
        update={"spec": await rule_spec(reference, school, concern)}
    )
    for target in targets:
        held = latest.get(target.recipient)
        # Withdrawn and raised again inside the settle period: the withdrawal never goes out,
        # and the recipient's mail of the concern (sent, or it would not have been withdrawn)
        # holds again.
        if (
            held is not None
            and held.kind == "withdrawn"
            and held.status == "pending"
            and await repo.cancel_pending(held.id)
        ):
            outcome.cancelled += 1
            log.info("withdrawal_cancelled", notice_id=held.id, concern_id=concern.concern_id)
            continue
        if held is not None and held.kind == "raised" and held.status in ("pending", "sent"):
            # The recipient has (or is about to get) a notice of this concern that still holds.
            log.info("notice_already_recorded", concern_id=concern.concern_id, notice_id=held.id)
            continue
        schedule = _schedule(settings, target, school.timezone, now, group)
        if await _record_notice(
            repo,
            settings,
            concern_id=concern_uuid,
            kind="raised",
            revision=concern.revision,
            channel=target.channel,
            recipient=target.recipient,
            recipient_role=target.role,
            school_id=concern.school_id,
            language=school.language,
            content=content,
            group=schedule.group,
            due=schedule.due,
        ):
            outcome.recorded.append((target.channel, "raised", target.role))


async def _routes(
    reference: ReferenceRepository, concern: ConcernData
) -> tuple[SchoolRef | None, list[Route], list[Unroutable]]:
    """The concern's school, who gets its level there, and who could not be reached."""
    school = await reference.school(concern.school_id)
    if school is None:
        return None, [], [Unroutable(role_for_level(concern.level), "unknown_school")]
    endpoints = await reference.webhook_endpoints(school.municipality_id)
    targets, missing = routes_for(concern.level, school, endpoints)
    return school, targets, missing


async def _update(
    session: AsyncSession,
    repo: NoticeRepository,
    concern: ConcernData,
    concern_uuid: uuid.UUID,
    settings: AlerterSettings,
    outcome: RecordOutcome,
    group: str,
    now: datetime,
) -> None:
    """A revised explanation of an active concern: no new notice (DOMAIN.md section 5).

    A notice still pending carries the current explanation when it goes out (same Message-ID).
    Only when the alerter holds no notice of the concern at all (the raised event was never
    applied: it arrived later, or was lost to a replay of a partial topic) is the update
    treated as the raise it implies, so an active concern always reaches its recipients.
    """
    notices = await repo.notices_of_concern(concern_uuid)
    if not notices:
        await _raise(session, repo, concern, concern_uuid, settings, outcome, group, now)
        return
    for notice in _latest_by_recipient(notices).values():
        if notice.kind == "raised" and notice.status == "pending":
            held = NoticeContent.model_validate(notice.payload)
            fresh = _carry_spec(held, NoticeContent.from_concern(concern, held.school_name))
            await repo.set_payload(notice.id, fresh.model_dump(mode="json"))
    log.info("concern_explanation_revised", concern_id=concern.concern_id)


async def _withdraw(
    session: AsyncSession,
    repo: NoticeRepository,
    concern: ConcernData,
    concern_uuid: uuid.UUID,
    settings: AlerterSettings,
    outcome: RecordOutcome,
    group: str | None,
    now: datetime,
) -> None:
    """Whoever got the notice gets a withdrawal; a notice that never went out is cancelled.

    A recipient who takes a digest (by the routing as it is now) finds the withdrawal in the
    next one."""
    notices = _latest_by_recipient(await repo.notices_of_concern(concern_uuid))
    # Only a recipient who got the notice gets a withdrawal, so only then is routing looked up.
    sent = any(n.kind == "raised" and n.status == "sent" for n in notices.values())
    school, targets, _ = (
        await _routes(ReferenceRepository(session), concern) if sent else (None, [], [])
    )
    digests = {t.recipient: t for t in targets if t.digest is not None}
    for notice in notices.values():
        if notice.kind != "raised":
            continue
        if notice.status == "sent":
            content = NoticeContent.model_validate(notice.payload)
            fresh = _carry_spec(content, NoticeContent.from_concern(concern, content.school_name))
            target = digests.get(notice.recipient)
            schedule = (
                _schedule(settings, target, school.timezone, now, group)
                if target is not None and school is not None
                else Schedule(group, None)
            )
            if await _insert_withdrawal(
                repo, notice, fresh, concern.revision, settings, schedule.group, schedule.due
            ):
                outcome.recorded.append((notice.channel, "withdrawn", notice.recipient_role))
        elif notice.status == "pending" and await repo.cancel_pending(notice.id):
            outcome.cancelled += 1
            log.info("notice_cancelled", notice_id=notice.id, concern_id=concern.concern_id)
        # failed or cancelled: the recipient never got it, so there is nothing to withdraw.


async def _insert_withdrawal(
    repo: NoticeRepository,
    raised: Notice,
    content: NoticeContent,
    revision: int,
    settings: AlerterSettings,
    group: str | None,
    due: datetime | None = None,
) -> bool:
    return await _record_notice(
        repo,
        settings,
        concern_id=raised.concern_id,
        kind="withdrawn",
        revision=revision,
        channel=raised.channel,
        recipient=raised.recipient,
        recipient_role=raised.recipient_role,
        school_id=raised.school_id,
        language=raised.language,
        content=content.model_copy(update={"replaces_message_id": raised.message_id}),
        group=group,
        due=due,
    )


async def _record_notice(
    repo: NoticeRepository,
    settings: AlerterSettings,
    *,
    concern_id: uuid.UUID,
    kind: Literal["raised", "withdrawn"],
    revision: int,
    channel: str,
    recipient: str,
    recipient_role: str,
    school_id: str,
    language: str,
    content: NoticeContent,
    group: str | None,
    due: datetime | None = None,
) -> bool:
    """Writes one notice to the log; False when the same one is there already. `due`: its
    first attempt (a send window's opening); default the end of the settle period.

    A mail notice with a group shares its Message-ID with the group's other notices to the same
    recipient: they are one mail (a digest: raises and withdrawals together). A notice whose
    group has already gone out (its evaluation's events came in two batches, the first already
    mailed) gets a group of its own, so a mail with other content never reuses a Message-ID.
    """
    if channel == "webhook":
        group = None  # integrations get one event per concern
    elif group is not None and await repo.group_has_gone_out(
        group, recipient, mail_kind(group, kind)
    ):
        group = f"{group}|{concern_id}"
    if channel == "webhook":
        notice_message_id = webhook_message_id(str(concern_id), recipient, kind, revision)
    elif group is not None:
        notice_message_id = message_id(
            f"group:{group}", recipient, mail_kind(group, kind), 0, settings.message_id_domain
        )
    else:
        notice_message_id = message_id(
            str(concern_id), recipient, kind, revision, settings.message_id_domain
        )
    # Trust over speed for people: a mail waits out the settle period, and a withdrawal or a
    # newer revision inside it cancels the mail before anyone reads it.
    settle = 0.0 if channel == "webhook" else settings.notice_settle_seconds
    notice_id = await repo.insert_notice(
        next_attempt_at=due or func.now() + timedelta(seconds=settle),
        concern_id=concern_id,
        kind=kind,
        revision=revision,
        channel=channel,
        recipient=recipient,
        recipient_role=recipient_role,
        school_id=school_id,
        language=language,
        message_id=notice_message_id,
        payload=content.model_dump(mode="json"),
        group_key=group,
    )
    if notice_id is None:
        return False
    log.info(
        "notice_recorded",
        notice_id=notice_id,
        concern_id=str(concern_id),
        kind=kind,
        channel=channel,
        role=recipient_role,
    )
    return True


class Schedule(NamedTuple):
    """Which mail a notice joins (`group`) and its first attempt (`due`; None: at the end of
    the settle period, by the database's clock)."""

    group: str | None
    due: datetime | None


def _schedule(
    settings: AlerterSettings, target: Route, timezone: str, now: datetime, group: str | None
) -> Schedule:
    """A digest recipient gets a mail notice in the first digest after the settle period; a
    recipient with a send window when the window is open after it; anyone else at the end of
    the settle period. Webhooks are immediate."""
    if target.channel == "webhook":
        return Schedule(group, None)
    after = now + timedelta(seconds=settings.notice_settle_seconds)
    if target.digest is not None:
        zone = ZoneInfo(timezone)
        slot = next_digest(target.digest, target.window, after, timezone).astimezone(zone)
        return Schedule(digest_group(slot), slot)
    if target.window is not None:
        return Schedule(group, target.window.next_open(after, timezone))
    return Schedule(group, None)


# Rule packs by digest, for describing a notice's rule in the school's language.
_PACKS = PackCache(size=64)


async def rule_spec(
    reference: ReferenceRepository, school: SchoolRef, concern: ConcernData
) -> RuleSpec | None:
    """The definition of the concern's rule in its pack version, or None when that version
    cannot be found (the notice then names the rule in the engine's English words)."""
    e = concern.explanation
    key = (school.municipality_id, e.pack_id)
    found = (await reference.packs([key], _PACKS)).get(key)
    return spec_in(found.pack if found else None, e.rule_version, e.rule_id)


def _carry_spec(held: NoticeContent, fresh: NoticeContent) -> NoticeContent:
    """A newer revision of the same rule keeps the definition looked up for the notice."""
    same = (held.pack_id, held.rule_id, held.rule_version) == (
        fresh.pack_id,
        fresh.rule_id,
        fresh.rule_version,
    )
    return fresh.model_copy(update={"spec": held.spec}) if same else fresh


def _latest_by_recipient(notices: Sequence[Notice]) -> dict[str, Notice]:
    latest: dict[str, Notice] = {}
    for notice in notices:
        held = latest.get(notice.recipient)
        if held is None or (notice.revision, notice.id) > (held.revision, held.id):
            latest[notice.recipient] = notice
    return latest


# --- delivery stage: claim, deliver, record --------------------------------------------------


def retry_delay(
    attempts: int, settings: AlerterSettings, jitter: Callable[[], float] | None = None
) -> float:
    """Seconds until the next try after `attempts` failed tries: base * 2^(n-1), capped, +-20%."""
    factor = jitter() if jitter is not None else random.uniform(0.8, 1.2)
    exponent = min(attempts - 1, 62)
    return min(settings.retry_max_seconds, settings.retry_base_seconds * 2.0**exponent) * factor


Transition = Literal["sent", "retry", "failed_permanent", "failed_max_attempts", "noop"]


@dataclass(frozen=True)
class Recorded:
    notice_id: int
    kind: str
    channel: str
    outcome: str
    transition: Transition
    attempts: int


async def send_notice(
    notice: Notice,
    notifier: Notifier,
    settings: AlerterSettings,
    together: Sequence[Notice] = (),
) -> DeliveryResult:
    try:
        return await notifier.notify(notice, together)
    except Exception as exc:
        # A notifier bug must not take the round (and the other notices' results) with it.
        return DeliveryResult("transient", None, f"unexpected error: {type(exc).__name__}")


def next_delay(attempts: int, result: DeliveryResult, settings: AlerterSettings) -> float:
    """The backoff, or longer when the receiver asked for it (Retry-After, capped)."""
    delay = retry_delay(attempts, settings)
    if result.retry_after is not None:
        delay = max(delay, min(result.retry_after, settings.retry_max_seconds))
    return delay


async def claim_due(session: AsyncSession, settings: AlerterSettings) -> list[Notice]:
    return await NoticeRepository(session).claim_due(
        settings.delivery_concurrency, settings.lease_seconds
    )


async def record_results(
    session: AsyncSession,
    results: Sequence[tuple[Notice, DeliveryResult]],
    settings: AlerterSettings,
) -> list[Recorded]:
    repo = NoticeRepository(session)
    recorded: list[Recorded] = []
    for claimed, result in results:
        notice = await repo.lock(claimed.id)
        if notice is None:
            continue
        attempts = notice.attempts + 1
        await repo.add_attempt(
            notice.id, result.outcome, result.smtp_code, result.http_status, result.detail
        )
        transition: Transition
        if result.outcome == "sent":
            await repo.mark_sent(notice.id, attempts)
            transition = "sent"
            if notice.status == "cancelled":
                await _sent_after_cancel(repo, notice, settings)
        elif notice.status != "pending":
            # Cancelled (or finished elsewhere) while this attempt was in flight.
            await repo.record_attempt_only(notice.id, attempts, result.detail)
            transition = "noop"
        elif result.outcome == "transient" and attempts < settings.max_attempts:
            await repo.schedule_retry(
                notice.id, attempts, next_delay(attempts, result, settings), result.detail
            )
            transition = "retry"
        else:
            await repo.mark_failed(notice.id, attempts, result.detail)
            permanent = result.outcome == "permanent"
            transition = "failed_permanent" if permanent else "failed_max_attempts"
        await repo.end_send(notice.id)
        recorded.append(
            Recorded(notice.id, notice.kind, notice.channel, result.outcome, transition, attempts)
        )
    return recorded


async def _sent_after_cancel(
    repo: NoticeRepository, notice: Notice, settings: AlerterSettings
) -> None:
    """A withdrawal cancelled this notice while it was being sent, and it went out anyway."""
    state = await repo.concern(notice.concern_id)
    if state is None:
        return
    content = NoticeContent.model_validate(notice.payload)
    if state.status == "withdrawn":
        await _insert_withdrawal(repo, notice, content, state.revision, settings, None)
        return
    # Raised again since: the recipient now holds a valid notice, so a newer one is redundant.
    for other in await repo.notices_of_concern(notice.concern_id):
        if (
            other.recipient == notice.recipient
            and other.kind == "raised"
            and other.status == "pending"
            and other.revision > notice.revision
        ):
            await repo.cancel_pending(other.id)


async def deliver_due(
    sessionmaker: async_sessionmaker[AsyncSession],
    notifier: Notifier,
    settings: AlerterSettings,
    instance: Instance | None = None,
) -> int:
    """One round: claim up to `delivery_concurrency` notices (commit), then deliver each on its
    own (see deliver_one), all at once. Returns notices claimed.

    `delivery_concurrency` bounds the notices in flight in this process, and so the notices a
    crash can send twice.
    """
    owner = instance.owner if instance is not None else None
    async with unit_of_work(sessionmaker) as session:
        claimed = await NoticeRepository(session).claim_due(
            settings.delivery_concurrency, settings.lease_seconds, owner
        )
    if not claimed:
        return 0
    await asyncio.gather(
        *(
            deliver_one(sessionmaker, notifier, settings, unit, owner)
            for unit in mail_units(claimed)
        )
    )
    return len(claimed)


def mail_units(claimed: Sequence[Notice]) -> list[list[Notice]]:
    """The sends of a round: each group's notices to one recipient together, others alone."""
    units: dict[object, list[Notice]] = {}
    for notice in claimed:
        key: object = (
            (notice.group_key, notice.recipient, mail_kind(notice.group_key, notice.kind))
            if notice.group_key is not None and notice.channel == "smtp"
            else notice.id
        )
        units.setdefault(key, []).append(notice)
    return list(units.values())


INTERRUPTED_DETAIL = (
    "the alerter stopped while this notice was being sent; the receiver may have it; sent again"
)


async def deliver_one(
    sessionmaker: async_sessionmaker[AsyncSession],
    notifier: Notifier,
    settings: AlerterSettings,
    unit: Sequence[Notice],
    owner: str | None,
) -> None:
    """One send: a notice alone, or a group's notices to one recipient in one mail.

    Record "send starting" for each (commit), send, record the answer for each (commit): a
    crash leaves at most this send to be made again, and the next send of it is recorded as a
    resend. Every notice of a mail shares its result: one attempt each, one mail.
    """
    resent: list[Notice] = []
    sending: list[Notice] = []
    async with unit_of_work(sessionmaker) as session:
        repo = NoticeRepository(session)
        for notice in unit:
            before = await repo.start_send(notice.id, owner)
            if before is None:
                continue  # the claim was lost (lease ran out and another loop took it)
            sending.append(notice)
            if before.send_started_at is not None:
                await repo.record_interrupted(notice.id, INTERRUPTED_DETAIL)
                resent.append(notice)
    if not sending:
        return
    for notice in resent:
        metrics.RESENDS.labels(notice.channel).inc()
        log.warning(
            "notice_resend",
            notice_id=notice.id,
            concern_id=str(notice.concern_id),
            channel=notice.channel,
            reason="the previous send was interrupted",
        )
    result = await send_notice(sending[0], notifier, settings, sending[1:])
    if result.outcome == "sent":
        fault_point("alerter_after_accept_before_record")
    recorded = await _record_with_retry(sessionmaker, [(n, result) for n in sending], settings)
    by_id = {n.id: n for n in sending}
    for rec in recorded:  # notices purged since they were claimed are not recorded
        _count(rec)
        _log_attempt(by_id[rec.notice_id], result, rec)


def reason_class(result: DeliveryResult) -> str:
    """connection | tls | 4xx | 5xx | notice: what an operator needs to know first."""
    code = result.smtp_code or result.http_status
    if code is not None and 400 <= code < 600 and result.outcome != "sent":
        return f"{code // 100}xx"
    detail = result.detail.lower()
    if "tls" in detail or "certificate" in detail:
        return "tls"
    if "connect" in detail or "timed out" in detail or "refused" in detail:
        return "connection"
    return "notice"


_OUTAGES: dict[str, Outage] = {}


def _log_attempt(notice: Notice, result: DeliveryResult, rec: Recorded) -> None:
    fields = {
        "notice_id": notice.id,
        "concern_id": str(notice.concern_id),
        "kind": notice.kind,
        "channel": notice.channel,
        "role": notice.recipient_role,
        "attempt": rec.attempts,
        "outcome": result.outcome,
        "smtp_code": result.smtp_code,
        "http_status": result.http_status,
        "transition": rec.transition,
    }
    outage = _OUTAGES.setdefault(notice.channel, Outage(notice.channel, "delivery"))
    if result.outcome == "sent":
        outage.succeeded()
        log.info("delivery_attempt", **fields)
        return
    reason = reason_class(result)
    if reason in ("connection", "tls"):
        outage.failed(reason)
    # The detail is scrubbed of the address and credentials by the notifier.
    log.warning("delivery_attempt", reason=reason, detail=result.detail, **fields)


async def _record_with_retry(
    sessionmaker: async_sessionmaker[AsyncSession],
    pairs: list[tuple[Notice, DeliveryResult]],
    settings: AlerterSettings,
    tries: int = 3,
) -> list[Recorded]:
    # The mail has gone out: try hard to record it, so the lease does not expire into a resend.
    for attempt in range(tries):
        try:
            async with unit_of_work(sessionmaker) as session:
                return await record_results(session, pairs, settings)
        except DBAPIError as exc:
            if attempt == tries - 1:
                raise
            log.warning("record_results_retry", error=type(exc).__name__, attempt=attempt + 1)
            await asyncio.sleep(0.05 * 2**attempt)
    raise AssertionError("unreachable")


def _count(rec: Recorded) -> None:
    metrics.DELIVERY_ATTEMPTS.labels(rec.channel, rec.outcome).inc()
    if rec.transition == "sent":
        metrics.NOTICES_SENT.labels(rec.channel, rec.kind).inc()
    elif rec.transition == "failed_permanent":
        metrics.NOTICES_FAILED.labels(rec.channel, rec.kind, "permanent").inc()
    elif rec.transition == "failed_max_attempts":
        metrics.NOTICES_FAILED.labels(rec.channel, rec.kind, "max_attempts").inc()


async def refresh_pending_gauge(sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    async with unit_of_work(sessionmaker) as session:
        repo = NoticeRepository(session)
        metrics.NOTICES_PENDING.set(await repo.count_pending())
        counts = await repo.count_by_channel_and_status()
    # Every channel shows every status, zeros included, so rules see a series from the start.
    channels = {"smtp", "webhook"} | {c for c, _ in counts}
    statuses = {"pending", "sent", "failed", "cancelled"} | {s for _, s in counts}
    for channel in channels:
        for status in statuses:
            metrics.NOTICES.labels(channel, status).set(counts.get((channel, status), 0))


RECLAIM_EVERY_SECONDS = 30.0


async def reclaim_dead_claims(
    sessionmaker: async_sessionmaker[AsyncSession], instance: Instance
) -> int:
    """Ends the leases of gone alerter instances on this host (see opspor_alerter.claims)."""
    async with unit_of_work(sessionmaker) as session:
        repo = NoticeRepository(session)
        dead = dead_owners(instance, await repo.live_owners(instance.host_prefix))
        released = await repo.release_claims(dead) if dead else 0
    if released:
        log.warning("claims_reclaimed", notices=released, instances=len(dead))
    return released


async def deliver_forever(
    sessionmaker: async_sessionmaker[AsyncSession],
    notifier: Notifier,
    settings: AlerterSettings,
    stop: asyncio.Event,
    wake: asyncio.Event | None = None,
    *,
    gauge_every_seconds: float = 5.0,
) -> None:
    """Deliver until `stop`; sleeps `delivery_poll_seconds` when idle unless `wake` is set."""
    wake = wake or asyncio.Event()
    backoff = settings.delivery_poll_seconds
    gauge_at = 0.0
    instance = Instance.this_process()
    reclaim_at = 0.0
    database = Outage("database", "delivery")
    while not stop.is_set():
        try:
            if time.monotonic() >= reclaim_at:
                await reclaim_dead_claims(sessionmaker, instance)
                reclaim_at = time.monotonic() + RECLAIM_EVERY_SECONDS
            claimed = await deliver_due(sessionmaker, notifier, settings, instance)
            if time.monotonic() >= gauge_at:
                await refresh_pending_gauge(sessionmaker)
                gauge_at = time.monotonic() + gauge_every_seconds
            backoff = settings.delivery_poll_seconds
            database.succeeded()
        except Exception as exc:
            # Only the type: database errors can quote statement parameters (addresses).
            database.failed(type(exc).__name__)
            metrics.DELIVERY_LOOP_ERRORS.inc()
            claimed = 0
            backoff = min(30.0, backoff * 2)
        if claimed:
            continue
        await _wait_any(stop, wake, seconds=backoff)
        wake.clear()


async def _wait_any(stop: asyncio.Event, wake: asyncio.Event, *, seconds: float) -> None:
    waiters = [asyncio.create_task(stop.wait()), asyncio.create_task(wake.wait())]
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)
